"""Many recordings through decode -> embed, with decoding running ahead of the model.

Recordings are decoded by a few threads (libsndfile, the resampler and numpy release the GIL)
while the model embeds the chunk before; decoded audio is gathered into chunks of about
``chunk_seconds`` so that the embedder can batch utterances of different recordings. Memory is
bounded: the decoders stop once about two chunks of decoded audio wait to be embedded (plus the
recordings in the decoders' hands, one per thread, each at most ``AudioLimits.max_seconds``).

Results come back in the order of the recordings. A recording that cannot be used (unreadable,
too short, no speech, ...) comes back with its error instead of an embedding, so the caller
decides whether that ends the whole job (``enroll``) or only one item of it (``import``).
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .audio import Audio, Recording, describe, speech_only
from .errors import AudioError, VoiceBankError

DEFAULT_CHUNK_SECONDS = 120.0
_DONE = object()


@dataclass(frozen=True)
class Embedded:
    """One recording's outcome: ``audio`` and its (dimension,) float32 ``embedding``, or ``error``.
    ``views``: the embedding of each waveform the stream's ``views`` made of it (the first is
    ``embedding``)."""

    index: int
    audio: Audio | None
    embedding: np.ndarray | None
    error: VoiceBankError | None = None
    views: tuple[np.ndarray, ...] = ()


Views = Callable[[Audio], Sequence[np.ndarray]]  # what to embed of a recording: one waveform or more


def as_recorded(audio: Audio) -> list[np.ndarray]:
    """A recording as it came (its speech: ``audio.speech_only``)."""
    return [speech_only(audio)]


def decoders(model_on_gpu: bool = False) -> int:
    """Decoding threads. Beside a model on the CPU, decoding is about 1% of the work and shares the
    cores with it: two threads at most. Beside a GPU, decoding is what can hold the model back
    (one thread decodes about 1,200x real time, the GPU target is 10,000x): every core."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores if model_on_gpu else min(2, cores))


def embed_stream(
    recordings: Iterable[Recording],
    load: Callable[[Recording], Audio],
    embed: Callable[[Sequence[np.ndarray]], np.ndarray],
    sample_rate: int,
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    threads: int | None = None,
    views: Views = as_recorded,
    admit: Callable[[Audio], None] | None = None,
    fail_fast: bool = False,
) -> Iterator[Embedded]:
    """Decode ``recordings`` with ``load`` in background threads and embed them with ``embed``
    (waveforms -> (n, dimension) float32) in chunks of about ``chunk_seconds`` of audio; of each
    recording, the waveforms ``views`` makes of it (the recording as it came, by default), all
    in one batch.

    Yields one :class:`Embedded` per recording, in order, each as soon as its chunk is embedded.
    Errors of ``load`` that are :class:`VoiceBankError` are yielded; any other error, and any
    error of ``embed``, is raised. Closing the generator early stops the decoders. ``admit`` looks
    at each decoded recording before it is embedded, in the calling thread, and refuses it by
    raising a :class:`VoiceBankError`, yielded as its error. With ``fail_fast`` (a caller that
    gives up at the first unusable recording) the first error is yielded as soon as it is known,
    and the stream ends there: the recordings decoded before it are not embedded at all.
    """
    chunk = max(1, int(chunk_seconds * sample_rate))
    budget = _Budget(2 * chunk)
    out: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()
    threads = threads or decoders()
    pool = ThreadPoolExecutor(threads, thread_name_prefix="voicebank-decode")

    def produce() -> None:
        window: list = []
        objects: dict[int, int] = {}  # id of each file object given -> its index
        try:
            for i, recording in enumerate(recordings):
                if stop.is_set():
                    return
                if hasattr(recording, "read") and id(recording) in objects:
                    # read from two threads at once it would be garbage; read twice, empty
                    window.append((i, _failed(AudioError(
                        f"{describe(recording)}: the same file object is given again (as recording "
                        f"{objects[id(recording)] + 1}, then {i + 1}); give each recording once."))))
                else:
                    if hasattr(recording, "read"):
                        objects[id(recording)] = i
                    window.append((i, pool.submit(load, recording)))
                if len(window) > threads:  # keep every decoder busy, the oldest result first
                    hand_over(*window.pop(0))
            for item in window:
                hand_over(*item)
            out.put(_DONE)
        except BaseException as exc:  # a bug, not bad input: the consumer raises it
            out.put(exc)

    def hand_over(i: int, future) -> None:
        try:
            audio = future.result()
        except VoiceBankError as exc:
            out.put(Embedded(i, None, None, exc))
            return
        budget.take(len(audio.samples), stop)
        out.put(Embedded(i, audio, None))

    producer = threading.Thread(target=produce, name="voicebank-decode-ahead", daemon=True)
    producer.start()
    try:
        pending: list[Embedded] = []
        size = 0  # samples in pending
        while True:
            item = out.get()
            last = item is _DONE or isinstance(item, BaseException)
            samples = len(item.audio.samples) if not last and item.audio is not None else 0
            if admit is not None and samples:
                try:
                    admit(item.audio)
                except VoiceBankError as exc:
                    item = Embedded(item.index, None, None, exc)
            if fail_fast and not last and item.error is not None:
                yield item
                return
            if not last:
                pending.append(item)
                size += samples  # a refused recording's too: the decoders' budget counted it
            if pending and (last or size >= chunk):
                yield from _embedded(pending, embed, views)  # what came before a failure is still answered
                budget.give(size)
                pending, size = [], 0
            if isinstance(item, BaseException):
                raise item
            if last:
                return
    finally:
        stop.set()
        budget.give(0)  # wakes a producer waiting for room, which then sees ``stop``
        pool.shutdown(wait=False, cancel_futures=True)
        producer.join()
        pool.shutdown(wait=True)


def shutdown() -> None:
    """Stop the threads that outlive a call: the embedding workers (``embedding/parallel.py``),
    which start again when next needed. The decoding threads of :func:`embed_stream` are its own
    and stop when the stream ends or is closed. Safe to call while other banks are in use."""
    from .embedding import parallel

    parallel.shutdown()


def _failed(error: BaseException) -> Future:
    future: Future = Future()
    future.set_exception(error)
    return future


def _embedded(items: list[Embedded], embed: Callable[[Sequence[np.ndarray]], np.ndarray],
              views: Views) -> list[Embedded]:
    usable = [p for p in items if p.audio is not None]
    waves = [list(views(p.audio)) for p in usable]
    flat = [w for ws in waves for w in ws]
    vectors = embed(flat) if flat else np.zeros((0, 0), np.float32)
    ends = np.cumsum([len(ws) for ws in waves])
    by_index = {p.index: tuple(vectors[end - len(ws):end]) for p, ws, end in zip(usable, waves, ends)}
    return [Embedded(p.index, p.audio, by_index[p.index][0] if p.index in by_index else None, p.error,
                     by_index.get(p.index, ())) for p in items]


class _Budget:
    """Samples decoded but not yet embedded. The producer waits while at least ``limit`` are
    held, then adds its audio whatever its size: a recording longer than the limit still passes
    (the consumer can always empty the queue, so this cannot deadlock)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0
        self._cond = threading.Condition()

    def take(self, samples: int, stop: threading.Event) -> None:
        with self._cond:
            while self.held >= self.limit and not stop.is_set():
                self._cond.wait()
            self.held += samples

    def give(self, samples: int) -> None:
        with self._cond:
            self.held -= samples
            self._cond.notify_all()
