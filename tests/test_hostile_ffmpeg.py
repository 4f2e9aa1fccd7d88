"""Hostile files for the ffmpeg path (formats libsndfile does not open: MKV, WebM, MP4, M4A):
each is decoded in bounded memory, or refused with one clear AudioError. Skipped without ffmpeg."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib

from test_hostile_audio import ffmpeg_make, needs_ffmpeg

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
