"""Recordings to embeddings with one bank's model: decoding and checks (``audio.py``), the check
that the model is the bank's, windows for long recordings, and the decode-ahead pipeline.

This is the "embedding stream" the use cases receive; it knows nothing of SQL or the index.
"""

from __future__ import annotations

import threading
from contextlib import closing
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from . import audio as audio_mod
from . import channel as channel_mod
from . import pipeline
from .audio import Audio, AudioLimits, Recording
from .embedding import Embedder, embed_recordings
from .errors import ModelMismatchError, VoiceBankError

Progress = Callable[[int, int, str], None]  # (done, total, label of the recording just done)
OnError = Callable[[int, VoiceBankError], None]  # (index of the recording, its error)


class Encoder:
    """One bank's model over recordings. Thread-safe. The model is loaded on first use, and checked
    then against the ``model_id`` and ``dimension`` the bank was created with."""

    def __init__(self, embedder: Embedder, model_id: str, model_source: str, dimension: int, limits: AudioLimits,
                 window_seconds: float):
        self.embedder = embedder
        self.model_id, self.model_source, self.dimension = model_id, model_source, dimension
        self.limits = limits
        self.window_seconds = window_seconds
        self._checked = False
        self._lock = threading.Lock()

    @property
    def sample_rate(self) -> int:
        return self.embedder.sample_rate

    def load(self, recording: Recording) -> Audio:
        """Decode and check one recording at the model's rate (:func:`voicebank.audio.load`)."""
        return audio_mod.load(recording, self.embedder.sample_rate, self.limits)

    def embed_samples(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """(n, dimension) float32 L2-normalized embeddings of mono waveforms at :attr:`sample_rate`."""
        self._check_model()
        return embed_recordings(self.embedder, [np.asarray(w, dtype=np.float32) for w in waveforms], self.window_seconds)

    def embed(self, audios: Sequence[Audio]) -> np.ndarray:
        return self.embed_samples([to_embed(a, channel_mod.WIDEBAND) for a in audios])

    def stream(self, recordings: Iterable[Recording], views: pipeline.Views = pipeline.as_recorded,
               admit: Callable[[Audio], None] | None = None,
               fail_fast: bool = False) -> closing[Iterator[pipeline.Embedded]]:
        """Recordings decoded ahead of the model and embedded in chunks (``pipeline.py``), in order;
        of each, the waveforms ``views`` makes of it (:func:`both_channels` for enrollment).
        ``admit`` looks at each recording once decoded, before it is embedded, and raises a
        :class:`VoiceBankError` to refuse it; ``fail_fast``: the stream ends at the first refusal,
        nothing after it embedded (``pipeline.embed_stream``). Use as a context manager: leaving it
        early stops the decoding threads at once."""
        chunk = getattr(self.embedder, "chunk_seconds", pipeline.DEFAULT_CHUNK_SECONDS)
        on_gpu = str(getattr(self.embedder, "device", "cpu")).startswith("cuda")
        return closing(pipeline.embed_stream(recordings, self.load, self.embed_samples, self.sample_rate, chunk,
                                             pipeline.decoders(on_gpu), views, admit, fail_fast))

    def embed_many(self, recordings: Iterable[Recording], progress: Progress | None,
                   on_error: OnError | None) -> np.ndarray:
        """(n, dimension) embeddings of ``recordings``, NaN rows for those reported to ``on_error``."""
        recordings = list(recordings)
        out = np.full((len(recordings), self.dimension), np.nan, dtype=np.float32)
        for item in self.usable(recordings, progress, on_error):
            out[item.index] = item.embedding
        return out

    def usable(self, recordings: list[Recording], progress: Progress | None, on_error: OnError | None,
               views: pipeline.Views = pipeline.as_recorded) -> Iterator[pipeline.Embedded]:
        """The embedded recordings (``views`` of each, as :meth:`stream`), in order; an unusable one
        raises its error, or with ``on_error`` is reported there (its index, the error) and skipped."""
        with self.stream(recordings, views) as stream:
            for item in stream:
                if item.error is not None and on_error is None:
                    raise item.error
                if item.error is not None:
                    on_error(item.index, item.error)
                if progress:
                    progress(item.index + 1, len(recordings), item.audio.label if item.audio else "")
                if item.error is None:
                    yield item

    def embed_in(self, audios: Sequence[Audio], channel: str) -> np.ndarray:
        """(n, dimension) embeddings of ``audios`` as heard in ``channel``: as they came for
        wideband, through the simulated telephone channel for telephone (:func:`to_embed`)."""
        return self.embed_samples([to_embed(a, channel) for a in audios])

    def _check_model(self) -> None:
        if self._checked:
            return
        with self._lock:
            found, dim = self.embedder.model_id, self.embedder.dimension
            if found != self.model_id or dim != self.dimension:
                raise ModelMismatchError(
                    f"this bank was made with the model {self.model_source} ({self.model_id}, {self.dimension}-dim), "
                    f"but {self.embedder.source} ({found}, {dim}-dim) was given. Open it with "
                    f"--model {self.model_source} (or unset VOICEBANK_MODEL), or create a new bank for the other model."
                )
            self._checked = True


def in_channel(audio: Audio, channel: str) -> np.ndarray:
    """All of ``audio`` as heard in ``channel`` (scan cuts its windows from it, at the recording's
    own times). Telephone: every recording passes through voicebank's simulated telephone channel,
    a call that already came through one too, so that probe and voiceprint share one channel
    whatever line or codec the call took."""
    return _through(audio.samples, audio.sample_rate, channel)


def to_embed(audio: Audio, channel: str) -> np.ndarray:
    """What is embedded of ``audio`` for a decision in ``channel``: its speech with no more than a
    second of anything else around it (:func:`voicebank.audio.speech_only`: minutes of silence or
    hum around a word must not change its embedding), as heard in ``channel``."""
    return _through(audio_mod.speech_only(audio), audio.sample_rate, channel)


def _through(samples: np.ndarray, rate: int, channel: str) -> np.ndarray:
    return channel_mod.telephone(samples, rate) if channel == channel_mod.TELEPHONE else samples


def both_channels(audio: Audio) -> list[np.ndarray]:
    """What enrollment embeds of a recording: as it came, and through the telephone channel."""
    return [to_embed(audio, channel_mod.WIDEBAND), to_embed(audio, channel_mod.TELEPHONE)]
