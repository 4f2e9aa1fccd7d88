"""Decode, validate and measure recordings.

A *recording* is a path, raw file bytes, a binary file object, or a ``(samples, sample_rate)``
pair. :func:`load` turns any of them into a :class:`Audio`: float32 mono samples in [-1, 1] at the
model's rate, the SHA-256 of what was given, and how much of it is speech (by silero-vad,
:mod:`voicebank.vad`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np

from . import channel as channel_mod
from . import vad
from .decode import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, decode, resample, too_long
from .errors import AudioError, NarrowbandError, NotEnoughSpeechError

log = logging.getLogger(__name__)

Recording = Union[str, os.PathLike, bytes, BinaryIO, "tuple[np.ndarray, int]"]

MAX_FILE_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class AudioLimits:
    """What a recording must satisfy before it is embedded.

    ``min_seconds``: shortest accepted recording. ``min_speech_seconds``: least detected speech.
    ``max_seconds``: longest accepted recording (longer input is refused before decoding when the
    container says how long it is). ``min_enroll_speech_seconds``: least speech a speaker's
    recordings must hold together to enroll.

    Chosen by bench/quality.py's enrollment-length sweep on real speech (resemblyzer, the `speech`
    corpus; docs/benchmarks.md, Recognition quality): enrollment EER falls from 4.8% with 3 s of
    audio in all to 1.3% at 4.5 s (3.2 s of speech as silero-vad counts it), the point chosen, and
    0.4% at 6 s (4.5 s of speech); probe EER is 11% with 0.6 s of speech, 3.9% with 1.1 s and 0.8%
    with 2.4 s. 1 s per recording is the floor below which answers are mostly noise, not a
    recommendation: longer is better. The point was chosen when speech was counted by loudness,
    which counted about all of the audio; held at 4.5 s of silero-vad's speech it had moved to the
    0.4% point and refused 12 of 300 genuine `speechocean` enrollments of three short prompts.

    ``min_bandwidth_hz``: speech that does not reach this frequency (a recording sampled at 4 kHz,
    or filtered below the telephone band) is refused: a telephone line carries 3.4 kHz, and below
    2 kHz the formants that tell voices apart are cut off.
    """

    min_seconds: float = 0.5
    min_speech_seconds: float = 1.0
    max_seconds: float = 30 * 60.0
    min_enroll_speech_seconds: float = 3.2
    min_bandwidth_hz: float = 2_000.0


@dataclass(frozen=True)
class Audio:
    """A decoded recording: ``samples`` is float32 mono in [-1, 1] at ``sample_rate`` Hz.

    ``speech_seconds`` is how much of it silero-vad hears as speech; ``speech_frames``, when
    set, holds its decision per 32 ms frame (as :func:`voiced_frames`), kept so that no caller
    has to run the detector twice. ``channel``: which channel it came through, measured from its
    speech (:func:`voicebank.channel.measure`); None only for audio made without :func:`load`.
    """

    samples: np.ndarray
    sample_rate: int
    sha256: str
    label: str
    speech_seconds: float
    speech_frames: np.ndarray | None = field(default=None, repr=False, compare=False)
    channel: channel_mod.Reading | None = field(default=None, compare=False)

    @property
    def content_sha256(self) -> str:
        """The SHA-256 of what the recording sounds like, not of its file: its samples as decoded
        here (mono, at ``sample_rate``), to 16 bits. The same audio saved as WAV or FLAC, or with
        bytes added after its end, has one; one recording belongs to one person by either hash."""
        quantized = np.round(np.asarray(self.samples, dtype=np.float64) * 32767.0).astype("<i2")
        return hashlib.sha256(quantized.tobytes()).hexdigest()

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    @property
    def telephone(self) -> bool:
        """Did it come through a telephone channel (as measured)?"""
        return self.channel is not None and self.channel.channel == channel_mod.TELEPHONE


# Non-speech kept on each side of a stretch of speech when a recording is embedded: a pause of up
# to twice this inside speech stays whole (it is part of how people talk), and longer silence or
# noise is cut to it, so that minutes of silence or hum around a word cannot change its embedding.
SPEECH_PAD_SECONDS = 1.0


def speech_only(audio: "Audio") -> np.ndarray:
    """What of ``audio`` is embedded (:func:`near_speech` of its samples and speech frames)."""
    return near_speech(audio.samples, audio.sample_rate, audio.speech_frames)


def near_speech(samples: np.ndarray, sample_rate: int, voiced: np.ndarray | None) -> np.ndarray:
    """``samples`` with every non-speech stretch farther than ``SPEECH_PAD_SECONDS`` from speech
    left out (``voiced``: the detector's 32 ms frames, :func:`voiced_frames`); all of them when
    there are no frames or no speech."""
    if voiced is None or not voiced.any():
        return samples
    pad = int(round(SPEECH_PAD_SECONDS / vad.FRAME_SECONDS))
    near = np.convolve(voiced.astype(np.int32), np.ones(2 * pad + 1, dtype=np.int32), mode="same") > 0
    if near.all():
        return samples
    frame, _ = frame_sizes(sample_rate)
    keep = np.repeat(near, frame)
    if len(keep) < len(samples):  # the tail shorter than a frame goes with the last frame
        keep = np.concatenate([keep, np.full(len(samples) - len(keep), near[-1])])
    return samples[keep[: len(samples)]]


def describe(recording: Recording) -> str:
    """A short human label for a recording, used in error messages."""
    if isinstance(recording, (str, os.PathLike)):
        # a name that is not UTF-8 (café.wav written in Latin-1) holds lone surrogates, which no
        # database, terminal or JSON takes: its bytes are written as escapes, caf\udce9.wav
        return os.fsdecode(recording).encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(recording, (bytes, bytearray, memoryview)):
        return f"<{len(recording)} bytes>"
    if isinstance(recording, tuple):
        return "<array>"
    return str(getattr(recording, "name", "<file object>"))


def load(recording: Recording, sample_rate: int, limits: AudioLimits = AudioLimits()) -> Audio:
    """Decode ``recording``, mix to mono, resample to ``sample_rate`` and validate it.

    Raises :class:`AudioError` (or :class:`NotEnoughSpeechError`) with a message naming the
    recording when it cannot be used.
    """
    label = describe(recording)
    if isinstance(recording, tuple):
        samples, rate = _from_array(recording, label)
        digest = hashlib.sha256(np.ascontiguousarray(samples, dtype=np.float32).tobytes()).hexdigest()
        samples = _to_mono(samples)
        duration = samples.shape[0] / rate
        if duration > limits.max_seconds:
            raise AudioError(_too_long(label, duration, limits))
        samples = resample(samples, rate, sample_rate)
    else:
        source = _source(recording, label)  # a file on disk is decoded from disk, not read whole first
        samples, duration = decode(source, label, limits.max_seconds, sample_rate)  # mono, at sample_rate
        digest = _digest(source, label)
    if samples.size == 0:
        raise AudioError(f"{label}: the recording is empty (no samples). Record again.")
    if not np.all(np.isfinite(samples)):
        raise AudioError(
            f"{label}: the recording contains NaN or infinite samples; it is corrupt. Export or record it again."
        )
    samples = np.clip(samples, -1.0, 1.0).astype(np.float32, copy=False)
    if duration < limits.min_seconds:
        raise AudioError(
            f"{label}: the recording is {duration:.2f} s long, shorter than the minimum of "
            f"{limits.min_seconds:g} s. Use a longer recording."
        )
    if float(np.max(np.abs(samples))) < 10 ** (-70 / 20):
        raise AudioError(f"{label}: the recording is silent. Check the microphone and record again.")
    voiced = voiced_frames(samples, sample_rate)
    speech = _seconds(voiced, samples, sample_rate)
    if speech < limits.min_speech_seconds:
        raise NotEnoughSpeechError(_not_enough_speech(label, speech, duration, limits))
    reading = channel_mod.measure(samples, sample_rate, voiced)
    if reading.high_db is not None and reading.bandwidth_hz < limits.min_bandwidth_hz:  # None: nothing measured
        raise NarrowbandError(
            f"{label}: its speech reaches only {reading.bandwidth_hz:.0f} Hz, below the minimum of "
            f"{limits.min_bandwidth_hz:.0f} Hz (a telephone line carries 3,400 Hz): too narrowband to tell voices "
            "apart. Use a recording made at 8 kHz or more, without a low-pass filter.")
    return Audio(samples, sample_rate, digest, label, speech, voiced, reading)


def speech_seconds(samples: np.ndarray, sample_rate: int) -> float:
    """Seconds of speech in ``samples`` (float32 mono at ``sample_rate``), by silero-vad: the
    speech frames of :func:`voiced_frames` times their 32 ms, at most the recording's duration."""
    return _seconds(voiced_frames(samples, sample_rate), samples, sample_rate)


def _seconds(voiced: np.ndarray, samples: np.ndarray, sample_rate: int) -> float:
    return float(min(np.count_nonzero(voiced) * vad.FRAME_SECONDS, len(samples) / sample_rate))


def voiced_frames(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """One bool per 32 ms frame: is it speech? Frame ``i`` starts at ``i * vad.FRAME_SECONDS``.

    Decided by a trained detector (silero-vad), not by loudness: noise, tones, hum, clicks and
    music are not speech however loud they are.
    """
    return vad.speech_frames(samples, sample_rate)


def frame_sizes(sample_rate: int) -> tuple[int, int]:
    """(frame length, hop) of :func:`voiced_frames` in samples at ``sample_rate``, rounded;
    frames do not overlap."""
    frame = round(vad.FRAME_SECONDS * sample_rate)
    return frame, frame


def _not_enough_speech(label: str, speech: float, duration: float, limits: AudioLimits) -> str:
    if speech == 0.0:
        return (
            f"{label}: no speech detected in {duration:.2f} s of audio (noise, tones, music and silence are "
            "not speech). Use a recording of the person speaking."
        )
    return (
        f"{label}: only {speech:.2f} s of speech detected in {duration:.2f} s, below the minimum of "
        f"{limits.min_speech_seconds:g} s. Use a recording with more speech."
    )


def file_sha256(recording: Recording) -> str | None:
    """The SHA-256 :func:`load` records for a path or bytes, read without decoding (a recording
    already enrolled is refused before anything is embedded); None for a file object (reading it
    would use it up), an array, or a recording :func:`load` refuses (it says why in its turn)."""
    if not isinstance(recording, (bytes, bytearray, memoryview, str, os.PathLike)):
        return None
    label = describe(recording)
    try:
        return _digest(_source(recording, label), label)
    except AudioError:
        return None


def _too_long(label: str, duration: float, limits: AudioLimits) -> str:
    return too_long(label, duration, limits.max_seconds)


def _digest(source: bytes | Path, label: str) -> str:
    """The SHA-256 of a recording's bytes, a file's read in chunks."""
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    try:
        digest = hashlib.sha256()
        with open(source, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        return digest.hexdigest()
    except OSError as exc:
        raise AudioError(f"{label}: cannot read the file ({exc.strerror or exc}).") from exc


def _source(recording: Recording, label: str) -> bytes | Path:
    """What :func:`decoding.decode` reads: a regular file's path (checked), or the bytes given."""
    if isinstance(recording, (bytes, bytearray, memoryview)):
        return bytes(recording)
    if isinstance(recording, (str, os.PathLike)):
        path = Path(recording)
        try:
            if not path.exists():
                raise AudioError(f"{label}: no such file. Check the path.")
            if path.is_dir():
                raise AudioError(f"{label}: is a directory, not an audio file. Give the path of a recording.")
            if not path.is_file():  # a pipe would hang, a device (/dev/zero) read for ever
                raise AudioError(f"{label}: not a regular file (a pipe, device or socket). Give the path of a recording.")
            if path.stat().st_size > MAX_FILE_BYTES:
                raise AudioError(f"{label}: the file is larger than {MAX_FILE_BYTES >> 30} GiB. Cut it up.")
            return path
        except OSError as exc:  # permissions, a path too long, a vanished network share, ...
            raise AudioError(f"{label}: cannot read the file ({exc.strerror or exc}).") from exc
    if hasattr(recording, "read"):
        try:
            data = recording.read(MAX_FILE_BYTES + 1)
        except UnicodeDecodeError:  # a text-mode file decodes its bytes as it reads them
            data = None
        if not isinstance(data, (bytes, bytearray)):
            raise AudioError(f"{label}: the file object must be opened in binary mode ('rb').")
        if len(data) > MAX_FILE_BYTES:
            raise AudioError(f"{label}: more than {MAX_FILE_BYTES >> 30} GiB of data. Cut it up.")
        return bytes(data)
    raise AudioError(
        f"unsupported recording type {type(recording).__name__}: give a path, bytes, a binary file "
        "object or a (samples, sample_rate) pair."
    )


def _from_array(recording: tuple, label: str) -> tuple[np.ndarray, int]:
    if len(recording) != 2:
        raise AudioError(f"{label}: an array recording is a (samples, sample_rate) pair.")
    samples, rate = np.asarray(recording[0]), recording[1]
    if not isinstance(rate, (int, np.integer)) or isinstance(rate, bool) or rate <= 0:
        raise AudioError(f"{label}: the sample rate must be a positive integer, not {rate!r}.")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:  # as a file's header: 2**62 Hz kept the resampler busy for ever
        raise AudioError(f"{label}: a sample rate of {rate} Hz; voicebank takes {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz.")
    if samples.ndim not in (1, 2):
        raise AudioError(f"{label}: samples must be 1-D, or 2-D (samples, channels); got {samples.shape}.")
    if samples.ndim == 2 and samples.shape[0] <= 8 < samples.shape[1]:
        samples = samples.T  # (channels, samples), as librosa returns it
    if np.issubdtype(samples.dtype, np.integer):
        samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max + 1)
    elif not np.issubdtype(samples.dtype, np.floating):
        raise AudioError(f"{label}: samples must be numbers, not {samples.dtype}.")
    return samples.astype(np.float32, copy=False), int(rate)


def _to_mono(samples: np.ndarray) -> np.ndarray:
    if samples.ndim == 2:
        samples = samples.mean(axis=1) if samples.shape[1] > 0 else samples.reshape(-1)
    return np.asarray(samples, dtype=np.float32)
