"""CPU parallelism by utterance: one worker thread per core, each running torch single-threaded.

Splitting every operation across the cores (torch's default) makes the cores meet at a barrier
after each of the hundreds of operations of a forward pass; when anything else runs on the
machine, a core that is lent to another process stalls the other at every barrier. Workers that
each embed their own utterances with one thread never wait for one another. A single piece of
work still runs in the calling thread with all of torch's threads.

Only with torch's OpenMP backend, where the thread count is per thread: ``torch.set_num_threads``
in a worker sets that worker's count. It also sets the default that threads started later begin
with, which is put back as soon as the workers are running.
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable

_lock = threading.Lock()
_pools: dict[int, "Workers"] = {}


def _forget_after_fork() -> None:
    """A forked child has none of its parent's threads: it starts its own pool when it needs one."""
    global _lock
    _lock = threading.Lock()
    _pools.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


_STOP = None


class Workers:
    """``count`` daemon threads, each with torch single-threaded, taking work from one queue."""

    def __init__(self, count: int):
        import torch

        self.count = count
        self.closed = False
        self._guard = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        ready = threading.Barrier(count + 1)
        before = torch.get_num_threads()
        self._threads = [threading.Thread(target=self._run, args=(ready,), name=f"voicebank-embed-{i}", daemon=True)
                         for i in range(count)]
        for thread in self._threads:
            thread.start()
        ready.wait()
        torch.set_num_threads(before)  # the calling thread's count, and the default for new threads

    def _run(self, ready: threading.Barrier) -> None:
        import torch

        torch.get_num_threads()  # torch sets a thread's count from the default on its first use: now,
        torch.set_num_threads(1)  # not after this
        ready.wait()
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fn, args, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the caller
                future.set_exception(exc)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        with self._guard:
            if not self.closed:
                self._queue.put((fn, args, future))
                return future
        try:  # shut down while its caller held it: the work runs here, as no worker will take it
            future.set_result(fn(*args))
        except BaseException as exc:
            future.set_exception(exc)
        return future

    def close(self) -> None:
        """Stop the threads once the work already submitted is done; later work runs in the caller."""
        with self._guard:
            self.closed = True
            for _ in self._threads:
                self._queue.put(_STOP)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()


def workers(count: int) -> Workers | None:
    """The shared pool of ``count`` workers (created once), or None where one thread is all
    there is or torch's parallel backend is not OpenMP."""
    if count < 2 or not _openmp():
        return None
    with _lock:
        if count not in _pools:
            _pools[count] = Workers(count)
        return _pools[count]


def shutdown() -> None:
    """Stop every pool's threads (``VoiceBank.close``); the next embedding starts a new pool."""
    with _lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


def _openmp() -> bool:
    import torch

    try:
        return "parallel backend: OpenMP" in torch.__config__.parallel_info()
    except Exception:  # pragma: no cover - very old or unusual builds
        return False
