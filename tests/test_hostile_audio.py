"""Hostile audio (hardening 1 and 5): decoding bombs, files that are not files, names that break
temporary files. Each is refused with one clear AudioError, or decoded in bounded memory."""

from __future__ import annotations

import os
import threading
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from voicebank import decode as decoding
from voicebank.audio import AudioLimits, load
from voicebank.errors import AudioError

SR = 16_000


def flac_bytes(samples: np.ndarray, rate: int) -> bytes:
    import io

    out = io.BytesIO()
    sf.write(out, samples, rate, format="FLAC")
    return out.getvalue()


def unknown_length(flac: bytes) -> bytes:
    """The same FLAC with STREAMINFO's total-samples field zeroed: "length unknown", as a streaming
    encoder writes it (the 36 low bits of the 8 bytes after the 18-byte header prefix)."""
    data = bytearray(flac)
    assert data[:4] == b"fLaC"
    packed = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)
    data[18:26] = packed.to_bytes(8, "big")
    return bytes(data)


def test_a_sample_rate_or_channel_count_out_of_range_is_refused_before_decoding():
    import io

    tiny_bomb = io.BytesIO()  # 0.1 s of the 8-channel, 655,350 Hz bomb (as WAV: libsndfile writes no such FLAC)
    sf.write(tiny_bomb, np.zeros((65_535, 8), dtype=np.int16), 655_350, format="WAV")
    with pytest.raises(AudioError, match="a sample rate of 655350 Hz; voicebank takes 1000 to 384000 Hz"):
        decoding.decode(tiny_bomb.getvalue(), "bomb.wav", 1800, SR)
    wide = io.BytesIO()
    sf.write(wide, np.zeros((SR, 40), dtype=np.int16), SR, format="WAV")
    with pytest.raises(AudioError, match="40 channels; voicebank takes 1 to 32"):
        decoding.decode(wide.getvalue(), "wide.wav", 1800, SR)


@pytest.mark.parametrize("fmt", ["WAV", "WAVEX", "RF64"])
def test_a_wav_whose_header_declares_a_sample_rate_of_0_says_so(tmp_path, fmt):
    """libsndfile refuses such a file, and librosa's fallback divided by the rate: the error was
    "ZeroDivisionError" (with or without ffmpeg, which the fallback may use)."""
    import io
    import struct

    out = io.BytesIO()
    sf.write(out, (0.3 * np.sin(np.arange(SR) / 5)).astype(np.float32), SR, format=fmt, subtype="PCM_16")
    data = bytearray(out.getvalue())
    fmt_chunk = data.index(b"fmt ")
    struct.pack_into("<II", data, fmt_chunk + 12, 0, 0)  # the sample rate, and the byte rate made from it
    path = tmp_path / "zero.wav"
    path.write_bytes(data)
    with pytest.raises(AudioError) as refused:
        load(path, SR)
    assert str(refused.value) == (f"{path}: its WAV header declares a sample rate of 0 Hz, so its audio cannot be read "
                                  "(the file is damaged, or its recorder wrote a broken header). Export or record it again.")
    assert decoding.wav_sample_rate(bytes(data)) == 0 and decoding.wav_sample_rate(out.getvalue()) == SR


def test_a_flac_of_unknown_length_is_counted_as_it_decodes():
    voice = (0.3 * np.sin(2 * np.pi * 220 * np.arange(3 * 48_000) / 48_000)).astype(np.float32)
    data = unknown_length(flac_bytes(voice, 48_000))
    samples, seconds = decoding.decode(data, "stream.flac", 1800, SR)
    assert seconds == pytest.approx(3.0, abs=0.01) and abs(len(samples) - 3 * SR) < 64
    with pytest.raises(AudioError, match=r"is 3 s long, longer than the maximum of 2 s.*counted while decoding"):
        decoding.decode(data, "stream.flac", 2.0, SR)


def test_a_streamed_flac_cut_short_is_refused_not_decoded_to_its_first_part():
    """A FLAC of unknown length stops decoding where it was cut ("lost sync"): that was taken for
    its end, and its first 1.3 s of 3 s used."""
    voice = (0.3 * np.sin(2 * np.pi * 220 * np.arange(3 * SR) / SR)).astype(np.float32)
    data = unknown_length(flac_bytes(voice, SR))
    with pytest.raises(AudioError, match=r"cut.flac: the file is damaged: its audio stops decoding part way \(.*lost sync"):
        decoding.decode(data[: len(data) // 2], "cut.flac", 1800, SR)


def test_an_mp3_cut_short_is_refused_not_padded_with_memory_never_written():
    """An MP3 whose header announces 3 s and holds 1 s: the frames that were not there came back
    as whatever the decoding buffer held (NaN one run, louder than the speech the next)."""
    import io

    voice = (0.3 * np.sin(2 * np.pi * 220 * np.arange(3 * SR) / SR)).astype(np.float32)
    out = io.BytesIO()
    sf.write(out, voice, SR, format="MP3", subtype="MPEG_LAYER_III")
    data = out.getvalue()
    assert decoding.decode(data, "whole.mp3", 1800, SR)[1] == pytest.approx(3.0, abs=0.1)
    with pytest.raises(AudioError, match=r"cut.mp3: the file is truncated: its header announces 3.00 s of audio "
                                         r"but only 0.\d\d s decode"):
        decoding.decode(data[: len(data) // 3], "cut.mp3", 1800, SR)


def traced_peak(work):
    """(what ``work()`` returns, the most memory Python and numpy held at once while it ran)."""
    tracemalloc.start()
    try:
        out = work()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_decoding_holds_one_block_not_the_whole_file():
    """60 s of 8 channels at 48 kHz is 92 MB of float32 decoded whole; block by block, with each
    block mixed to mono and resampled, far less is held at once."""
    seconds, channels, rate = 60, 8, 48_000
    data = flac_bytes(np.zeros((seconds * rate, channels), dtype=np.int16), rate)
    (samples, duration), peak = traced_peak(lambda: decoding.decode(data, "long.flac", 1800, SR))
    assert duration == pytest.approx(seconds) and samples.shape == (seconds * SR,)
    whole = seconds * rate * channels * 4
    assert peak < whole / 5, (peak, whole)  # 13 MB against 92 MB, measured


def test_running_out_of_memory_is_a_clear_error(monkeypatch):
    def no_memory(*_args, **_kwargs):
        raise MemoryError

    monkeypatch.setattr(sf.SoundFile, "read", no_memory)
    data = flac_bytes(np.zeros(SR, dtype=np.float32), SR)
    with pytest.raises(AudioError, match="too large to decode in this process's memory"):
        decoding.decode(data, "big.flac", 1800, SR)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_path_that_is_not_a_regular_file_is_refused_without_reading_it(tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "pipe.wav"
        os.mkfifo(path)
    else:
        path = "/dev/zero"
    done: list = []
    worker = threading.Thread(target=lambda: done.append(_refusal(path)), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert done, "reading it hung"
    assert "not a regular file (a pipe, device or socket)" in done[0]


def _refusal(path) -> str:
    try:
        load(path, SR)
    except AudioError as exc:
        return str(exc)
    return "accepted"


def test_a_file_name_with_a_very_long_extension_is_a_clear_error(tmp_path):
    path = tmp_path / ("take." + "x" * 240)
    path.write_bytes(b"not audio at all" * 100)
    with pytest.raises(AudioError, match="not a readable audio file"):
        load(path, SR, AudioLimits())


def test_decodes_share_a_memory_budget():
    """A decode waits until its share of the budget is free; one larger than all of it runs alone."""
    budget = decoding.Budget(100)
    order: list[str] = []
    held = budget.reserve(50)  # entered on the thread below, kept here so it is not released early

    with budget.reserve(80):
        waiting = threading.Thread(target=lambda: held.__enter__() or order.append("second"))
        waiting.start()
        waiting.join(timeout=0.3)
        assert waiting.is_alive() and order == []  # 80 + 50 > 100: it waits
        order.append("first done")
    waiting.join(timeout=5)
    assert order == ["first done", "second"] and budget.used == 50
    held.__exit__(None, None, None)
    assert budget.used == 0
    alone = decoding.Budget(10)
    with alone.reserve(1000):  # bigger than the budget, but nothing else runs: it goes
        assert alone.used == 1000


# -- formats libsndfile does not open: ffmpeg, under the same rules ----------------------------

FFMPEG = __import__("shutil").which("ffmpeg") is not None and __import__("shutil").which("ffprobe") is not None
needs_ffmpeg = pytest.mark.skipif(not FFMPEG, reason="ffmpeg and ffprobe are not installed (apt-get install ffmpeg)")
MKV = b"\x1a\x45\xdf\xa3" + bytes(64)  # an EBML header: a Matroska file as far as libsndfile can tell


def ffmpeg_make(path, *args: str) -> bytes:
    import subprocess

    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args, str(path)], check=True, timeout=120)
    return path.read_bytes()


def test_a_format_only_ffmpeg_reads_without_ffmpeg_says_what_to_do(monkeypatch):
    monkeypatch.setattr(decoding.shutil, "which", lambda name: None)
    with pytest.raises(AudioError, match="call.mkv: not a readable audio file here: not a format libsndfile reads .* ffmpeg, which reads the others .* "
                                         "is not installed: convert it to WAV or FLAC, or install ffmpeg"):
        decoding.decode(MKV, "call.mkv", 120, SR)


def test_ffmpeg_without_its_ffprobe_is_not_used(monkeypatch):
    """Without ffprobe no header is read before decoding: a file at 768 kHz was decoded, one cut
    short taken whole, a 3000 s one decoded for its first 1801 s before being refused."""
    which = decoding.shutil.which
    monkeypatch.setattr(decoding.shutil, "which", lambda name: None if name == "ffprobe" else which(name) or name)
    with pytest.raises(AudioError, match="call.mkv: not a readable audio file here: .* ffmpeg, which reads the "
                                         r"others \(M4A, MP4, MKV, WebM, ...\) with its ffprobe, is not installed: "
                                         "convert it"):
        decoding.decode(MKV, "call.mkv", 120, SR)


@needs_ffmpeg
def test_ffmpeg_decodes_to_mono_at_the_model_s_rate_holding_the_output_not_the_input(tmp_path):
    """8 channels at 384 kHz in Matroska: ffmpeg mixes and resamples, so this process holds 60 s of
    16 kHz mono (3.8 MB), not 60 s of the source (737 MB as float32; 1.5 GB through librosa)."""
    rate, seconds = 384_000, 60
    tone = f"sine=frequency=440:sample_rate={rate}:duration={seconds}"
    data = ffmpeg_make(tmp_path / "wide.mkv", "-f", "lavfi", "-i", tone, "-ac", "8", "-c:a", "flac")
    (samples, duration), peak = traced_peak(lambda: decoding.decode(data, "wide.mkv", 120, SR))
    assert samples.dtype == np.float32 and samples.ndim == 1 and duration == pytest.approx(seconds, abs=0.05)
    assert peak < 8 * seconds * SR * 4, f"{peak / 1e6:.0f} MB held for {seconds * SR * 4 / 1e6:.1f} MB of output"
    spectrum = np.abs(np.fft.rfft(samples[:SR]))
    assert abs(np.argmax(spectrum) - 440) <= 2  # the tone, at the model's rate


@needs_ffmpeg
def test_ffmpeg_s_own_memory_counts_against_the_decoding_budget(tmp_path, monkeypatch):
    """Many uploads at once start a few ffmpeg processes, not one each: each reserves its output
    and ffmpeg's own memory."""
    reserved: list[int] = []

    class Recording(decoding.Budget):
        def reserve(self, amount):
            reserved.append(amount)
            return super().reserve(amount)

    monkeypatch.setattr(decoding, "BUDGET", Recording(1 << 30))
    data = ffmpeg_make(tmp_path / "tone.mka", "-f", "lavfi", "-i", "sine=frequency=300:duration=2", "-c:a", "flac")
    decoding.decode(data, "tone.mka", 120, SR)
    assert reserved == [int(121 * SR) * 4 + decoding.FFMPEG_MEMORY] and decoding.FFMPEG_MEMORY >= 128 << 20


@needs_ffmpeg
def test_ffmpeg_s_files_are_refused_by_their_header_before_decoding(tmp_path, monkeypatch):
    silence = "anullsrc=r=48000:cl=mono"
    long = ffmpeg_make(tmp_path / "long.mka", "-f", "lavfi", "-i", silence, "-t", "130", "-c:a", "flac")
    real = decoding.subprocess.Popen

    def popen(command, *args, **kwargs):  # ffprobe may run (subprocess.run opens a Popen); ffmpeg may not
        assert not str(command[0]).endswith("ffmpeg"), "decoded before the header was checked"
        return real(command, *args, **kwargs)

    monkeypatch.setattr(decoding.subprocess, "Popen", popen)
    with pytest.raises(AudioError, match="long.mka: the recording is 130 s long, longer than the maximum of 120 s"):
        decoding.decode(long, "long.mka", 120, SR)
    with pytest.raises(AudioError, match="not a readable audio file: no audio stream found"):
        decoding.decode(MKV, "junk.mkv", 120, SR)


@needs_ffmpeg
def test_a_truncated_flac_is_refused_even_where_ffmpeg_would_return_its_first_part(tmp_path):
    voice = np.sin(2 * np.pi * 180 * np.arange(3 * SR) / SR).astype(np.float32) * 0.3
    data = flac_bytes(voice, SR)
    with pytest.raises(AudioError, match="damaged|truncated"):
        decoding.decode(data[: len(data) // 2], "cut.flac", 120, SR)


def test_a_huge_file_on_disk_is_refused_by_its_header_without_being_read(tmp_path):
    """A 1.9 GB (sparse) WAV: its header says 16.5 hours; refused before its bytes are read (it
    cost 2.1 GB of memory when files were read whole first)."""
    import struct

    path = tmp_path / "huge.wav"
    size = 1_900_000_000
    header = b"RIFF" + struct.pack("<I", size + 36) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, SR, 2 * SR, 2, 16) \
        + b"data" + struct.pack("<I", size)
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + size)
    def refused():
        with pytest.raises(AudioError, match="huge.wav: the recording is 59375 s long, longer than the maximum"):
            load(path, SR, AudioLimits())

    _, peak = traced_peak(refused)
    assert peak < 64 << 20, f"{peak / 1e6:.0f} MB held to refuse it"


@needs_ffmpeg
def test_a_file_named_like_an_ffmpeg_protocol_is_read_as_a_file(tmp_path):
    data = ffmpeg_make(tmp_path / "tone.mka", "-f", "lavfi", "-i", "sine=frequency=300:duration=2", "-c:a", "flac")
    odd = tmp_path / "concat:tone.mka"
    odd.write_bytes(data)
    samples, duration = decoding.decode(odd, str(odd), 120, SR)
    assert duration == pytest.approx(2.0, abs=0.05)


@needs_ffmpeg
def test_a_playlist_of_files_on_this_machine_is_not_decoded(tmp_path):
    """An upload that is an HLS playlist naming a real recording on the server's disk: ffmpeg would
    decode that recording, so a caller could identify or enroll files the server holds; it is
    refused as an unreadable file, as bytes and as a path."""
    target = tmp_path / "private.flac"
    ffmpeg_make(target, "-f", "lavfi", "-i", "sine=frequency=300:duration=3", "-c:a", "flac")
    text = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:3,\n{target}\n#EXT-X-ENDLIST\n"
    playlist = tmp_path / "upload.bin"
    playlist.write_text(text)
    for source in (playlist, text.encode()):
        with pytest.raises(AudioError, match="upload.bin: not a readable audio file"):
            decoding.decode(source, "upload.bin", 120, SR)


@pytest.mark.parametrize("rate", [2**62, 10**30, 999, 384_001])
def test_an_array_at_a_rate_no_file_could_have_is_refused_not_resampled_for_ever(rate):
    """(samples, 2**62) kept soxr busy past any timeout: the array's rate is held to a file's range."""
    samples = np.zeros(SR, dtype=np.float32)
    with pytest.raises(AudioError, match=f"<array>: a sample rate of {rate} Hz; voicebank takes 1000 to 384000 Hz"):
        load((samples, rate), SR)
    with pytest.raises(AudioError, match="the sample rate must be a positive integer, not True"):
        load((samples, True), SR)


def test_a_file_opened_in_text_mode_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "take.wav"
    sf.write(path, np.sin(np.arange(SR) / 5).astype(np.float32) * 0.3, SR)
    with open(path) as text, pytest.raises(AudioError, match=r"must be opened in binary mode \('rb'\)"):
        load(text, SR)
