"""Batching concurrent requests: many threads' ``embed`` calls become one call of the model.

:class:`BatchingEmbedder` wraps a bank's embedder. Every request thread that needs embeddings
queues its waveforms and waits; one worker thread runs the model over everything queued at the
moment it becomes free. An idle server therefore adds no delay (a lone request runs at once), and a
busy one runs each waiting group of requests as one call. Results are unchanged by batching: the
backends batch only what padding cannot disturb (see ``XVectorEmbedder.embed``). Should one batch
fail, each request in it is run again on its own, so one bad input cannot fail the others.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..embedding import Embedder

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Job:
    waveforms: list[np.ndarray]
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None


class BatchingEmbedder:
    """An :class:`Embedder` that coalesces concurrent calls into batches of at most ``max_batch``
    waveforms. Same surface and results as ``inner``; call :meth:`close` when done."""

    def __init__(self, inner: Embedder, max_batch: int = 32):
        self.inner = inner
        self.source = inner.source
        self.max_batch = max(1, max_batch)
        self.batches = 0  # model calls made; with ``waveforms`` it tells how well batching works
        self.waveforms = 0
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def sample_rate(self) -> int:
        return self.inner.sample_rate

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def __getattr__(self, name: str) -> Any:  # kind, device, ...: whatever else the backend offers
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def embed(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """(n, dimension) float32 L2-normalized embeddings, as ``inner.embed`` gives them."""
        job = _Job(list(waveforms))
        if not job.waveforms:
            return self.inner.embed([])
        self._start()
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def close(self) -> None:
        """Stop the worker thread (after the queued work is done)."""
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            self._queue.put(None)
            worker.join()

    # -- the worker ----------------------------------------------------------------------------
    def _start(self) -> None:
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="voicebank-embed", daemon=True)
                self._worker.start()

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs, count = [job], len(job.waveforms)
            while count < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:  # close() was called: finish this batch, then stop
                    self._queue.put(None)
                    break
                jobs.append(more)
                count += len(more.waveforms)
            self._run(jobs)

    def _run(self, jobs: list[_Job]) -> None:
        try:
            out = self.inner.embed([w for job in jobs for w in job.waveforms])
            self.batches += 1
            self.waveforms += sum(len(job.waveforms) for job in jobs)
            start = 0
            for job in jobs:
                job.result, start = out[start : start + len(job.waveforms)], start + len(job.waveforms)
        except BaseException as exc:
            if len(jobs) == 1:
                jobs[0].error = exc
            else:
                log.debug("a batch of %d requests failed (%s); running them one by one", len(jobs), exc)
                for job in jobs:
                    self._run([job])
                return
        for job in jobs:
            job.done.set()
