"""Hostile files for the ffmpeg path (formats libsndfile does not open: MKV, WebM, MP4, M4A):
each is decoded in bounded memory, or refused with one clear AudioError. Skipped without ffmpeg."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from test_hostile_audio import ffmpeg_make, needs_ffmpeg, traced_peak

from voicebank import decode as decoding
from voicebank.errors import AudioError

SR = 16_000
pytestmark = needs_ffmpeg


def png(width: int, height: int) -> bytes:
    """A black 16-bit RGB PNG: a few hundred KB that decode to width x height x 6 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    squeeze, row = zlib.compressobj(1), bytes(1 + width * 6)  # each row: its filter byte, then its pixels
    body = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def children_peak(path, seconds: float = 120) -> tuple[str, int]:
    """(what decoding ``path`` gave, the largest peak RSS of ffprobe and ffmpeg in bytes), in a
    fresh interpreter, so that no other child of this process counts."""
    code = ("import json, resource, sys\nfrom pathlib import Path\nfrom voicebank import decode\n"
            "try:\n    got = '%.2f s' % decode.decode(Path(sys.argv[1]), 'x', float(sys.argv[2]), 16000)[1]\n"
            "except Exception as exc:\n    got = type(exc).__name__ + ': ' + str(exc)\n"
            "print(json.dumps([got, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024]))")
    done = subprocess.run([sys.executable, "-c", code, str(path), str(seconds)], capture_output=True, check=True,
                          timeout=60, text=True)
    got, peak = json.loads(done.stdout.strip().splitlines()[-1])
    return got, peak


def test_a_huge_video_frame_beside_the_audio_is_not_decoded_in_gigabytes(tmp_path):
    """ffprobe and ffmpeg decode a frame of every stream while probing: an 8000 x 8000 PNG frame
    (370 KB) beside 1 s of audio made each of them take 430 MB (a 16000 x 16000 one, 1.5 GB)."""
    (tmp_path / "frame.png").write_bytes(png(8000, 8000))
    path = tmp_path / "clip.mkv"
    ffmpeg_make(path, "-f", "png_pipe", "-i", str(tmp_path / "frame.png"), "-f", "lavfi", "-i",
                "sine=frequency=300:duration=1", "-map", "0", "-map", "1", "-c:v", "copy", "-c:a", "flac")
    got, peak = children_peak(path)
    assert got == "1.00 s"  # the audio still decodes
    assert peak < 200 << 20, f"ffprobe or ffmpeg took {peak / 1e6:.0f} MB"


@pytest.mark.parametrize("channels", [9, 32])
def test_channels_without_names_are_mixed_to_their_mean_not_refused(tmp_path, channels):
    """9 or 17 to 23 channels, or up to 32 in Opus: no layout ffmpeg knows, so its own downmix
    failed ("Error while processing the decoded data"), refusing counts libsndfile takes."""
    levels = np.arange(1, channels + 1, dtype=np.float32) / (2 * channels)  # a different DC level per channel
    tone = np.sin(2 * np.pi * 300 * np.arange(SR) / SR)[:, None] * 0.2
    (tmp_path / "raw").write_bytes((np.clip(tone + levels, -1, 1) * 32767).astype("<i2").tobytes())
    path = tmp_path / "array.mkv"
    ffmpeg_make(path, "-f", "s16le", "-ar", str(SR), "-ac", str(channels), "-i", str(tmp_path / "raw"),
                "-c:a", "pcm_s16le")
    samples, duration = decoding.decode(path, "array.mkv", 120, SR)
    assert duration == pytest.approx(1.0, abs=0.01)
    assert float(samples.mean()) == pytest.approx(float(levels.mean()), abs=2e-3)  # every channel counted once


@pytest.mark.parametrize("name, codec", [("cut.mkv", "flac"), ("cut.webm", "libopus"), ("cut.m4a", "aac")])
def test_a_file_cut_short_is_refused_not_decoded_to_its_first_part(tmp_path, name, codec):
    """Matroska and MP4 record each stream's length; ffmpeg decodes what there is of a file cut
    short (an upload that broke off) and says so only on its log, so half a recording was taken."""
    path = tmp_path / name
    ffmpeg_make(path, "-f", "lavfi", "-i", "sine=frequency=300:duration=4", "-c:a", codec, "-movflags", "+faststart")
    whole = decoding.decode(path, name, 120, SR)[1]
    assert whole == pytest.approx(4.0, abs=0.1)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(AudioError, match=rf"{name}: the file is truncated: its header announces 4\.\d\d s of audio but "
                                         r"only [12]\.\d\d s decode"):
        decoding.decode(path, name, 120, SR)


def test_audio_that_starts_hours_into_its_timeline_is_measured_from_its_start(tmp_path):
    """A clip cut from a long recording keeps its timestamps: Matroska records where it ends, and
    3 s of audio starting 100,000 s in was refused as "100003 s long" (in MP4 it decoded)."""
    for name in ("late.mkv", "late.webm", "late.mp4"):
        path = tmp_path / name
        ffmpeg_make(path, "-f", "lavfi", "-i", "sine=frequency=300:duration=3", "-output_ts_offset", "100000")
        assert decoding.decode(path, name, 120, SR)[1] == pytest.approx(3.0, abs=0.1)


def test_a_container_that_names_the_wrong_codec_is_one_stable_line(tmp_path):
    """Opus data in a WebM that says FLAC: ffmpeg logs an error per packet, and the message showed
    the first 4 KiB's last line cut mid-word, with an address that changed each run
    ("ffmpeg: [flac @ 0x55adb6e6f)")."""
    path = tmp_path / "opus.webm"
    data = ffmpeg_make(path, "-f", "lavfi", "-i", "sine=frequency=300:duration=3", "-c:a", "libopus")
    assert data.count(b"A_OPUS") == 1
    path.write_bytes(data.replace(b"A_OPUS", b"A_FLAC"))
    with pytest.raises(AudioError) as refused:
        decoding.decode(path, "lies.webm", 120, SR)
    message = str(refused.value)
    assert message.startswith("lies.webm: not a readable audio file (ffmpeg: ") and "\n" not in message
    assert " @ 0x" not in message and message.endswith("). Give WAV, FLAC, OGG, MP3, or another format ffmpeg decodes.")


def test_a_decode_past_its_time_is_stopped_and_says_so(tmp_path, monkeypatch):
    """A file that keeps ffmpeg busy (here, an ffmpeg that never answers) is stopped after
    DECODE_SECONDS plus the length cap; it was then called unreadable, quoting ffmpeg's last line."""
    path = tmp_path / "slow.mka"
    ffmpeg_make(path, "-f", "lavfi", "-i", "sine=frequency=300:duration=0.5", "-c:a", "flac")
    stuck = tmp_path / "ffmpeg"
    stuck.write_text("#!/bin/sh\necho 'Press [q] to stop' >&2\nexec sleep 60\n")
    stuck.chmod(0o755)
    which = decoding.shutil.which
    monkeypatch.setattr(decoding.shutil, "which", lambda name: str(stuck) if name == "ffmpeg" else which(name))
    monkeypatch.setattr(decoding, "DECODE_SECONDS", 0.5)
    with pytest.raises(AudioError, match=r"^slow.mka: its audio could not be decoded within 1.5 s. Convert it to "
                                         r"WAV or FLAC.$"):
        decoding.decode(path, "slow.mka", 1, SR)


def test_ffmpeg_s_output_is_held_once(tmp_path):
    """The decoding budget reserves room for ffmpeg's output once; it was copied three times over
    (330 MB held for a file decoded to the 30-minute cap, which reserved 115 MB)."""
    path = tmp_path / "long.mka"
    ffmpeg_make(path, "-f", "lavfi", "-i", "anoisesrc=r=16000:a=0.1:d=50", "-c:a", "flac")
    (samples, duration), peak = traced_peak(lambda: decoding.decode(path, "long.mka", 120, SR))
    assert duration == pytest.approx(50.0, abs=0.05)
    assert peak < 1.3 * samples.nbytes, f"{peak / 1e6:.1f} MB held for {samples.nbytes / 1e6:.1f} MB of output"
