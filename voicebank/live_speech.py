"""The ear of a live session: PCM chunks in, the speech among them out, at the model's rate.

Chunks of any size at 8 to 48 kHz are resampled as one stream (soxr, the quality
``decode.resample`` uses, its filter state carried between chunks) to the speech detector's rate,
then each 32 ms frame is judged by silero-vad with its recurrent state carried too
(:class:`voicebank.vad.Stream`) and marked speech with the detector's own hysteresis
(``vad.THRESHOLD`` to enter, ``vad.NEG_THRESHOLD`` to leave). Only the speech frames are passed on.
Unlike a whole recording's decisions (``vad.decide``), runs shorter than a quarter second are
not dropped: that would hold every answer back by as long; a click adds 32 ms of "speech".
"""

from __future__ import annotations

import hashlib

import numpy as np

from . import vad
from .errors import InvalidInputError

MIN_RATE, MAX_RATE = 8_000, 48_000  # Hz: telephone to studio


def check_rate(sample_rate: object) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) \
            or not MIN_RATE <= sample_rate <= MAX_RATE:
        raise InvalidInputError(f"a live stream's sample rate is a whole number of Hz from {MIN_RATE} to "
                                f"{MAX_RATE}, not {sample_rate!r}.")
    return int(sample_rate)


def as_samples(chunk: object) -> np.ndarray:
    """A chunk as float32 mono in [-1, 1]: a 1-D (or one-column) float32/float64 array in [-1, 1],
    an int16 array, or ``bytes`` of little-endian 16-bit PCM (what a socket or a pipe carries)."""
    if isinstance(chunk, (bytes, bytearray, memoryview)):
        raw = bytes(chunk)
        if len(raw) % 2:
            raise InvalidInputError(f"16-bit PCM comes in whole samples of 2 bytes; this chunk has {len(raw)} bytes.")
        return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if not isinstance(chunk, np.ndarray):
        raise InvalidInputError(f"a chunk is a numpy array or bytes of 16-bit PCM, not {type(chunk).__name__}.")
    samples = chunk[:, 0] if chunk.ndim == 2 and chunk.shape[1] == 1 else chunk
    if samples.ndim != 1:
        raise InvalidInputError(f"a chunk is mono: one dimension (or one column), not the shape {chunk.shape}.")
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    if samples.dtype not in (np.float32, np.float64):
        raise InvalidInputError(f"a chunk's samples are float32 in [-1, 1] or int16, not {samples.dtype}.")
    samples = samples.astype(np.float32)
    if not np.all(np.isfinite(samples)) or (samples.size and np.max(np.abs(samples)) > 1.0):
        raise InvalidInputError("a float chunk's samples are finite numbers from -1 to 1 (scale int16 by 1/32768).")
    return samples


class Ear:
    """Chunks at ``sample_rate`` in, speech at :data:`voicebank.vad.SAMPLE_RATE` out. Counts what it
    heard (``seconds`` of audio and ``received`` samples, ``speech`` seconds, when speech ``started``) and hashes what it
    was given (``sha256``)."""

    def __init__(self, sample_rate: int):
        import soxr

        self.sample_rate = check_rate(sample_rate)
        self._resampler = None if self.sample_rate == vad.SAMPLE_RATE else \
            soxr.ResampleStream(self.sample_rate, vad.SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        self._detector = vad.Stream()
        self._waiting = np.zeros(0, dtype=np.float32)  # resampled, not yet judged (under a frame)
        self._inside = False
        self._hash = hashlib.sha256()
        self.received = 0  # samples, at ``sample_rate``
        self.speech = 0.0
        self.started: float | None = None  # seconds into the stream of the first speech frame
        self._frames = 0

    @property
    def seconds(self) -> float:
        return self.received / self.sample_rate

    @property
    def sha256(self) -> str:
        """The SHA-256 of the stream as received, as 16-bit PCM (float chunks rounded to it)."""
        return self._hash.hexdigest()

    def hear(self, chunk: object, last: bool = False) -> np.ndarray:
        """The speech among ``chunk`` (and what earlier chunks left short of a frame), float32 at
        ``vad.SAMPLE_RATE``; ``last`` flushes the resampler (the stream has ended)."""
        samples = as_samples(chunk)
        self._hash.update(np.round(samples.astype(np.float64) * 32767.0).astype("<i2").tobytes())
        self.received += len(samples)
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples, last=last)
        self._waiting = np.concatenate([self._waiting, samples])
        probabilities = self._detector.feed(samples)
        frames = len(probabilities)
        judged, self._waiting = self._waiting[: frames * vad.FRAME], self._waiting[frames * vad.FRAME:]
        keep = np.zeros(frames, dtype=bool)
        for i, p in enumerate(probabilities.tolist()):
            self._inside = p >= vad.THRESHOLD or (self._inside and p >= vad.NEG_THRESHOLD)
            keep[i] = self._inside
        if self.started is None and keep.any():
            self.started = (self._frames + int(np.argmax(keep))) * vad.FRAME_SECONDS
        self._frames += frames
        self.speech += float(keep.sum()) * vad.FRAME_SECONDS
        return judged.reshape(frames, vad.FRAME)[keep].ravel()
