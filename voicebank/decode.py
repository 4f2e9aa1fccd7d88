"""Decoding a file's bytes to mono samples at the model's rate, in bounded memory (used by ``audio.load``).

A small file can announce a large decode: a 667 KB FLAC of 8 channels at 655,350 Hz is 119 s of
silence that decodes to 2.5 GB of float32. So the header is checked first (channels, sample rate,
announced length), and the audio is read in blocks of ``BLOCK_SECONDS``: each block is mixed to
mono and resampled before the next is read, and reading stops as soon as the count of samples
passes the duration cap (a header that does not say how long the audio is, as a streamed FLAC,
is counted as it decodes). One decode holds one block of the source plus the mono result at the
model's rate: 2 s x 32 channels x 384 kHz at worst (98 MB), then 16 kHz mono; and the decodes
of a process share a budget (``BUDGET``, 1 GiB), so many uploads at once wait rather than pile up.

Formats libsndfile cannot open (M4A, MP4, MKV, WebM, ...) go to ffmpeg, under the same rules:
ffprobe reads the header first (channels, rate, declared length), and ffmpeg itself mixes to mono,
resamples to the model's rate and stops at the duration cap, so this process holds only the
result. A file libsndfile opens but cannot decode to its end (a truncated FLAC) is damaged, and
refused: another decoder would only return its first part.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np

from .compat import sndfile_error, sndfile_read_float
from .errors import AudioError

log = logging.getLogger(__name__)

MAX_CHANNELS = 32
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 384_000
BLOCK_SECONDS = 2.0
_UNKNOWN_LENGTH = 2**40  # libsndfile reports an unknown length as a huge frame count
SHORTFALL = 0.01  # the share of a header's announced length that may fail to decode (encoder padding)
CODEC_DELAY = 0.1  # seconds of it that may, whatever the length (Opus's 6.5 ms is more than 1% of 0.5 s)


def decode(source: bytes | Path, label: str, max_seconds: float, rate: int) -> tuple[np.ndarray, float]:
    """(float32 mono samples at ``rate``, the recording's duration in seconds) of a file's bytes, or
    of the file at a path (read as it decodes, never whole). Raises :class:`AudioError` naming
    ``label`` when the file cannot or must not be decoded."""
    on_disk = isinstance(source, Path)
    head = _head(source, label) if on_disk else source[: 1 << 16]
    if not head:
        raise AudioError(f"{label}: the file is empty (0 bytes). Record again.")
    if wav_sample_rate(head) == 0:  # libsndfile refuses it, and the fallback decoders divide by it
        raise AudioError(f"{label}: its WAV header declares a sample rate of 0 Hz, so its audio cannot be read (the "
                         "file is damaged, or its recorder wrote a broken header). Export or record it again.")
    import soundfile as sf

    try:
        f = sf.SoundFile(os.fsencode(source) if on_disk else io.BytesIO(source))  # bytes: a name that is not UTF-8 too
    except Exception as first:  # not a format libsndfile knows: ffmpeg may
        log.debug("libsndfile cannot open %s (%s); trying ffmpeg", label, first)
        return _with_ffmpeg(source, label, max_seconds, rate)
    try:
        with f:
            known = 0 < f.frames < _UNKNOWN_LENGTH and f.samplerate > 0
            _check_header(f.channels, f.samplerate, f.frames / f.samplerate if known else None, label, max_seconds)
            _refuse_truncated(f, label)
            # what this decode holds at once: a block in float32 (and its copy), and the result
            held = 2 * int(BLOCK_SECONDS * f.samplerate) * f.channels * 4 + int(max_seconds * rate) * 4
            with BUDGET.reserve(held):
                return _blocks(f, label, max_seconds, rate)
    except AudioError:
        raise
    except MemoryError as exc:
        raise AudioError(f"{label}: too large to decode in this process's memory. Cut it up.") from exc
    except Exception as exc:  # opened, but its frames do not decode: damaged, truncated
        raise AudioError(f"{label}: the file is damaged: its audio stops decoding part way ({exc}). Copy or export "
                         "it again.") from exc


class Budget:
    """Memory for audio being decoded at once, across the threads of a process (a server decodes
    many uploads at a time): a decode waits until its share fits. One decode larger than the whole
    budget still runs, alone."""

    def __init__(self, capacity: int):
        self.capacity, self.used = capacity, 0
        self._free = threading.Condition()

    @contextmanager
    def reserve(self, amount: int) -> Iterator[None]:
        with self._free:
            self._free.wait_for(lambda: self.used == 0 or self.used + amount <= self.capacity)
            self.used += amount
        try:
            yield
        finally:
            with self._free:
                self.used -= amount
                self._free.notify_all()


BUDGET = Budget(1 << 30)  # 1 GiB of decoding at once per process


def too_long(label: str, duration: float, max_seconds: float) -> str:
    return (f"{label}: the recording is {duration:.0f} s long, longer than the maximum of {max_seconds:g} s. "
            "Cut it into shorter recordings.")


def _check_header(channels: int, samplerate: float, seconds: float | None, label: str, max_seconds: float) -> None:
    """Refuse, before decoding, what a header announces: too many channels, a rate out of range,
    a declared length (None: not declared) past the cap."""
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioError(f"{label}: {channels} channels; voicebank takes 1 to {MAX_CHANNELS}. "
                         "Export it as mono or stereo.")
    if not MIN_SAMPLE_RATE <= samplerate <= MAX_SAMPLE_RATE:
        raise AudioError(f"{label}: a sample rate of {samplerate:g} Hz; voicebank takes {MIN_SAMPLE_RATE} to "
                         f"{MAX_SAMPLE_RATE} Hz. Export it at 16 or 48 kHz.")
    if seconds is not None and seconds > max_seconds:
        raise AudioError(too_long(label, seconds, max_seconds))


def wav_sample_rate(data: bytes) -> int | None:
    """The sample rate a RIFF/RF64 (or big-endian RIFX) WAVE header declares in its fmt chunk;
    None when ``data`` is no WAV or has no fmt chunk in its first 64 KiB."""
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX", b"RF64") or data[8:12] != b"WAVE":
        return None
    order = "big" if data[:4] == b"RIFX" else "little"
    at = 12
    while at + 8 <= min(len(data), 1 << 16):
        size = int.from_bytes(data[at + 4:at + 8], order)
        if data[at:at + 4] == b"fmt ":
            field = data[at + 12:at + 16]  # after the format tag (2 bytes) and the channel count (2)
            return int.from_bytes(field, order) if len(field) == 4 else None
        at += 8 + size + (size & 1)  # chunks are padded to an even size
    return None


def _blocks(f: Any, label: str, max_seconds: float, rate: int) -> tuple[np.ndarray, float]:
    import soxr

    stream = soxr.ResampleStream(f.samplerate, rate, 1, dtype="float32", quality="HQ") if f.samplerate != rate else None
    out, count = [], 0
    size = max(1, int(BLOCK_SECONDS * f.samplerate))
    for block in _read_blocks(f, size, label):
        count += len(block)
        if count / f.samplerate > max_seconds:
            raise AudioError(too_long(label, count / f.samplerate, max_seconds) + " (counted while decoding)")
        mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
        out.append(stream.resample_chunk(mono) if stream is not None else mono.copy())
    if 0 < f.frames < _UNKNOWN_LENGTH and count < f.frames * (1 - SHORTFALL):
        raise AudioError(f"{label}: the file is truncated: its header announces {f.frames / f.samplerate:.2f} s of "
                         f"audio but only {count / f.samplerate:.2f} s decode. Copy or export it again.")
    if stream is not None:
        out.append(stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    samples = np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
    return samples.astype(np.float32, copy=False), count / f.samplerate


def _read_blocks(f: Any, size: int, label: str):
    """The frames of ``f`` in blocks of at most ``size``, each only as many as were decoded (a
    header may announce more than the file holds: soundfile's ``blocks()`` hands on the whole block
    whether or not it was filled, memory never written, as audio). Reading stops at the length the
    header announces, when it announces one (what follows is not audio), and a decoder fault (a
    FLAC cut short: "lost sync") is raised, not taken for the end. A file whose length is unknown
    (a streamed FLAC) or that cannot seek (GSM 6.10 in WAV) is read by libsndfile's own read:
    soundfile's ask libsndfile where they are, which such a file cannot answer."""
    if 0 < f.frames < _UNKNOWN_LENGTH and f.seekable():
        left = f.frames
        while left > 0:
            block = f.read(min(size, left), dtype="float32", always_2d=True)  # checks libsndfile's error
            if not len(block):
                return
            left -= len(block)
            yield block
        return
    while True:
        block = np.empty((size, f.channels), dtype=np.float32)
        got = sndfile_read_float(f, block)
        fault = sndfile_error(f)
        if fault is not None:
            raise AudioError(f"{label}: the file is damaged: its audio stops decoding part way ({fault}). Copy or "
                             "export it again.")
        if got <= 0:
            return
        yield block[:got]


# libsndfile reads what there is of a WAV whose data chunk was cut short, and only logs the shortfall.
_SHORT_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_PLACEHOLDER_SIZES = {0, 0xFFFFFFFF, 0x7FFFFFFF}  # written by streaming recorders that never seek back


def _refuse_truncated(f: Any, label: str) -> None:
    match = _SHORT_DATA.search(f.extra_info)
    if match:
        declared, present = int(match.group(1)), int(match.group(2))
        if declared not in _PLACEHOLDER_SIZES and present < declared:
            raise AudioError(
                f"{label}: the file is truncated: its header announces {declared} bytes of audio but only "
                f"{present} are there. Copy or export it again."
            )


def resample(samples: np.ndarray, rate: int, to_rate: int) -> np.ndarray:
    """float32 mono ``samples`` at ``rate`` Hz, resampled to ``to_rate`` by soxr (high quality):
    ``ceil(len * to_rate / rate)`` samples, as ``librosa.resample(..., res_type="soxr_hq")``."""
    if rate == to_rate or samples.size == 0:
        return samples
    import soxr

    out = soxr.resample(samples, rate, to_rate, quality="HQ")
    size = int(np.ceil(samples.shape[0] * to_rate / rate))
    out = out[:size] if out.shape[0] >= size else np.pad(out, (0, size - out.shape[0]))
    return np.asarray(out, dtype=np.float32)


# The containers ffmpeg may open, and only from a file: a demuxer that reads a list of other files
# (an HLS playlist, a concat script) would let an uploaded text file make the server decode
# recordings on its own disk, or wait on a FIFO there. The whitelist holds nested opens too.
# ffmpeg and ffprobe allocate no block over MAX_ALLOC: both decode a frame of every stream while
# probing, video too, and a 3 MB file holding one 16000 x 16000 PNG frame took 1.5 GB in each; a
# container may also hold its audio in one packet (20 MB of 32 channels took 175 MB). Audio frames
# are far smaller: FLAC's largest, 65,535 samples of 8 channels, is 2 MB as float32.
MAX_ALLOC = 64 << 20
# ffmpeg's own memory counts against the decoding budget beside its output, so that many uploads at
# once start a few ffmpeg processes at a time, not one each: three of its largest blocks (the huge
# frame above took it under 200 MB: tests/test_hostile_ffmpeg.py).
FFMPEG_MEMORY = 3 * MAX_ALLOC
FFMPEG_INPUT = ("-max_alloc", str(MAX_ALLOC), "-protocol_whitelist", "file", "-format_whitelist",
                ("aac,ac3,aiff,amr,amrnb,amrwb,ape,asf,au,avi,caf,dts,eac3,flac,flv,gsm,matroska,mov,mp3,mpc,mpc8,"
                 "mpeg,mpegts,oma,ogg,qcp,rm,tak,tta,voc,w64,wav,wv,xwma"))

# How long ffprobe may take to read a header, and ffmpeg beyond real time to decode (a file built
# to make a decoder spin is cut off, not waited for).
PROBE_SECONDS, DECODE_SECONDS = 30.0, 120.0


def _head(path: Path, label: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 16)
    except OSError as exc:
        raise AudioError(f"{label}: cannot read the file ({exc.strerror or exc}).") from exc


def _with_ffmpeg(source: bytes | Path, label: str, max_seconds: float, rate: int) -> tuple[np.ndarray, float]:
    """A format libsndfile does not open (M4A, MP4, MKV, WebM, ...) through ffmpeg: its first audio
    stream's header read by ffprobe and refused as libsndfile's would be, then decoded by ffmpeg
    straight to mono at ``rate``, at most ``max_seconds`` + 1 s of it; this process holds the result only."""
    ffmpeg, ffprobe = shutil.which("ffmpeg"), shutil.which("ffprobe")
    if ffmpeg is None or ffprobe is None:  # without ffprobe's header, no limit holds before decoding
        raise AudioError(f"{label}: not a readable audio file here: not a format libsndfile reads (WAV, FLAC, OGG, "
                         "MP3, ...), and ffmpeg, which reads the others (M4A, MP4, MKV, WebM, ...) with its ffprobe, "
                         "is not installed: convert it to WAV or FLAC, or install ffmpeg.")
    with _on_disk(source, label) as path:
        header = _probe(ffprobe, path, label)
        _check_header(header.channels, header.rate, header.seconds, label, max_seconds)
        mix = ["-ac", "1"]
        if not header.layout:  # ffmpeg cannot downmix channels it has no names for (9 of them, or 17 to 23, ...)
            mix = ["-af", "pan=mono|c0<" + "+".join(f"c{i}" for i in range(header.channels))]  # their mean
        limit = int((max_seconds + 1) * rate) * 4  # float32 bytes of mono at the model's rate
        with BUDGET.reserve(limit + FFMPEG_MEMORY), tempfile.TemporaryFile() as errors:
            command = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", *FFMPEG_INPUT, "-i", path,
                       "-map", "0:a:0",
                       "-t", f"{max_seconds + 1:.3f}", *mix, "-ar", str(rate), "-f", "f32le", "-"]
            out, late = bytearray(), threading.Event()
            with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors) as proc:
                timer = threading.Timer(DECODE_SECONDS + max_seconds, lambda: (late.set(), proc.kill()))
                timer.start()
                try:
                    while chunk := proc.stdout.read(1 << 16):
                        out += chunk
                        if len(out) > limit:  # -t should stop it; a decoder that does not is stopped here
                            proc.kill()
                            break
                finally:
                    timer.cancel()
                code = proc.wait()
            errors.seek(max(0, errors.seek(0, os.SEEK_END) - 4096))  # its last words: a damaged file makes many
            said = _last_line(errors.read(), path)
    if late.is_set():  # not unreadable: what ffmpeg said last is no reason
        raise AudioError(f"{label}: its audio could not be decoded within {DECODE_SECONDS + max_seconds:g} s. Convert "
                         "it to WAV or FLAC.")
    if code != 0 and len(out) <= limit:
        why = said or f"exit status {code}"
        raise AudioError(f"{label}: not a readable audio file (ffmpeg: {why[:200]}). Give WAV, FLAC, OGG, MP3, or "
                         "another format ffmpeg decodes.")
    del out[len(out) // 4 * 4:]
    duration = len(out) // 4 / rate
    if duration > max_seconds:
        raise AudioError(too_long(label, duration, max_seconds) + " (counted while decoding)")
    # a view of ffmpeg's output, not a copy: the budget holds one (three copies took 330 MB for 30 minutes)
    samples = np.frombuffer(out, dtype="<f4").astype(np.float32, copy=False)
    # ffmpeg decodes what there is of a file cut short, and says so only on its log
    if header.exact and duration < header.exact - max(SHORTFALL * header.exact, CODEC_DELAY):
        raise AudioError(f"{label}: the file is truncated: its header announces {header.exact:.2f} s of audio but "
                         f"only {duration:.2f} s decode. Copy or export it again.")
    return samples, duration


_ADDRESSED = re.compile(r"\[[^\]\n]* @ (0x)?[0-9a-fA-F]+\] ?")


def _last_line(output: bytes, path: str) -> str:
    """ffmpeg's or ffprobe's last line of complaint, without the path it names (a temporary copy's
    for an upload: the same file must read the same from the CLI and over HTTP) or the addresses
    of its parts in memory ("[flac @ 0x55d0c1e2f040] ")."""
    lines = output.decode("utf-8", "replace").strip().splitlines()
    last = _ADDRESSED.sub("", lines[-1] if lines else "")
    for name in (path, path.removeprefix("file:")):
        last = last.replace(name + ": ", "").replace(name, "the file")
    return last.strip()


@contextmanager
def _on_disk(source: bytes | Path, label: str) -> Iterator[str]:
    """A path ffmpeg can read ``source`` at: the file's own, or a temporary copy of the bytes."""
    if isinstance(source, Path):  # "file:": a name like "concat:a|b" or "http:x" is a file here, not a protocol
        yield "file:" + os.path.abspath(source)
        return
    suffix = Path(label).suffix if "<" not in label else ""
    with tempfile.NamedTemporaryFile(suffix=suffix if len(suffix) <= 16 else "") as tmp:
        tmp.write(source)
        tmp.flush()
        yield "file:" + tmp.name


class Header(NamedTuple):
    """What ffprobe reads of a file's first audio stream: ``seconds`` is its declared length (None:
    not declared), ``layout`` whether its channels are named (front left, ...), as ffmpeg's own
    downmix needs. ``exact``: its length where the container records it per stream (Matroska,
    MP4), which the decoded audio must reach; elsewhere it may be estimated from the bit rate."""

    channels: int
    rate: float
    seconds: float | None
    layout: bool
    exact: float | None = None


def _probe(ffprobe: str, path: str, label: str) -> Header:
    """The :class:`Header` of the first audio stream, by ffprobe."""
    entries = ("stream=channels,channel_layout,sample_rate,duration,start_time:stream_tags=DURATION"
               ":format=format_name,duration")
    command = [ffprobe, "-v", "error", *FFMPEG_INPUT, "-select_streams", "a:0", "-show_entries", entries, "-of", "json",
               path]
    try:
        found = subprocess.run(command, capture_output=True, timeout=PROBE_SECONDS, check=False)
        info = json.loads(found.stdout or b"{}")
    except subprocess.TimeoutExpired:
        raise AudioError(f"{label}: its header could not be read within {PROBE_SECONDS:g} s. Convert it to WAV or "
                         "FLAC.") from None
    except ValueError:
        info = {}
    streams = info.get("streams") or []
    if not streams:
        why = _last_line(found.stderr, path)
        raise AudioError(f"{label}: not a readable audio file: no audio stream found"
                         f"{' (ffprobe: ' + why[:200] + ')' if why else ''}. Give WAV, FLAC, OGG, MP3, or "
                         "another format ffmpeg decodes.")

    stream, container = streams[0], info.get("format") or {}
    own = _positive(stream.get("duration")) or _matroska_length(stream)
    seconds = own or _positive(container.get("duration"))
    layout = stream.get("channel_layout") not in (None, "", "unknown")
    exact = own if str(container.get("format_name")).startswith(("matroska", "mov")) else None
    return Header(int(_positive(stream.get("channels")) or 0), _positive(stream.get("sample_rate")) or 0.0, seconds,
                  layout, exact)


def _matroska_length(stream: dict) -> float | None:
    """A Matroska stream's length: its DURATION tag (H:MM:SS.fraction) is where it ends, so less
    where it starts; audio cut from a longer recording may start hours in."""
    match = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d*)?)", str((stream.get("tags") or {}).get("DURATION", "")))
    if not match:
        return None
    end = int(match.group(1)) * 3600 + int(match.group(2)) * 60 + float(match.group(3))
    return _positive(end - (_positive(stream.get("start_time")) or 0.0))


def _positive(value: Any) -> float | None:
    """``value`` as a finite number above 0, or None (ffprobe writes "N/A" for what it does not know)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) and out > 0 else None
