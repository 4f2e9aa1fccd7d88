"""Process-wide settings, in one place, and only when asked: :func:`configure`.

A library shares its process with its host: an access-control backend that embeds voicebank keeps
its own torch thread count, FAISS globals, warnings filters, Hugging Face progress bars and
logging. So voicebank's modules change none of these. The ``voicebank`` command and its server own
their process and call :func:`configure`; a host that wants the same settings calls it too::

    import voicebank.runtime
    voicebank.runtime.configure()          # before or after opening a bank

Settings for torch and FAISS are applied as soon as the module is imported, and not before:
configuring does not import either (``voicebank list`` never loads torch). The modules that load
them call :func:`torch_loaded` / :func:`faiss_loaded`, which do nothing unless :func:`configure`
was called.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from .compat import warnings_filters_changed

# The quieter third parties under the CLI: their debug output is not voicebank's.
NOISY = ("numba", "urllib3", "filelock", "fsspec", "httpx", "httpcore", "asyncio", "multipart", "PIL", "matplotlib")
BLAS_FROM = 16 * 512  # faiss >= 1.15 counts queries x dimension: 16 queries of 512 dims


@dataclass(frozen=True)
class Settings:
    """What :func:`configure` asked for (see there)."""

    threads: int | None
    blas_batches: bool
    quiet: bool


_lock = threading.Lock()
_wanted: Settings | None = None
_applied: set[str] = set()


def configure(threads: int | None = None, *, blas_batches: bool = True, quiet: bool = True,
              log_level: int | None = None) -> Settings:
    """Set voicebank's preferred process-wide settings. Call it once, early, in a process you own.

    - ``threads``: CPU threads of torch (intra-op) and of FAISS (OpenMP). ``None``: the cores
      other work leaves free (:func:`idle_cores`), only ever lowering the libraries' defaults,
      and an explicit ``OMP_NUM_THREADS`` is left alone. More threads than free cores only make
      them wait for one another: torch's threads meet at a barrier after each operation, and one
      lent to another process stalls them all.
    - ``blas_batches``: FAISS flat search scores a batch of 16 or more queries (of 512 dims) with
      one matrix product; faiss 1.15's own cut-off is 250, and a batch of 64 queries over 100k
      voiceprints ran 7x slower without it. Single queries are not affected.
    - ``quiet``: no Hugging Face progress bars (downloads, checkpoint loading).
    - ``log_level``: when given, log to stderr: voicebank's loggers at this level, every other
      library at WARNING (so ``DEBUG`` shows voicebank's debug output, not numba's).

    Settings for a module not yet imported (torch, faiss, transformers) are applied when voicebank
    first loads it. Returns the settings in force.
    """
    global _wanted
    with _lock:
        _wanted = Settings(threads, blas_batches, quiet)
        _applied.clear()
    if quiet:
        # read by huggingface_hub and transformers at import; set only if the user did not
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if log_level is not None:
        _log_to_stderr(log_level)
    for name, apply in (("torch", torch_loaded), ("faiss", faiss_loaded), ("transformers", transformers_loaded)):
        if name in sys.modules:
            apply(sys.modules[name])
    return _wanted


def settings() -> Settings | None:
    """The settings :func:`configure` was called with, or None if it was not."""
    return _wanted


def torch_loaded(torch: Any) -> None:
    """Called by voicebank when it loads a torch model: applies the configured thread count."""
    if not _first("torch"):
        return
    threads = _wanted.threads
    if threads is None:
        if "OMP_NUM_THREADS" in os.environ:
            return
        threads = min(torch.get_num_threads(), idle_cores())
    torch.set_num_threads(threads)


def faiss_loaded(faiss: Any) -> None:
    """Called by voicebank when it makes a FAISS index: applies threads and the batch cut-off."""
    if not _first("faiss"):
        return
    threads = _wanted.threads
    if threads is None and "OMP_NUM_THREADS" not in os.environ:
        threads = min(faiss.omp_get_max_threads(), idle_cores())
    if threads is not None:
        faiss.omp_set_num_threads(threads)
    if _wanted.blas_batches and faiss.cvar.distance_compute_blas_threshold > BLAS_FROM:
        # older faiss compared the query count alone with a default of 20: left alone
        faiss.cvar.distance_compute_blas_threshold = BLAS_FROM


def transformers_loaded(transformers: Any) -> None:
    """Called by voicebank when it loads a transformers model: no progress bars if ``quiet``."""
    if not _first("transformers") or not _wanted.quiet:
        return
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _first(name: str) -> bool:
    with _lock:
        if _wanted is None or name in _applied:
            return False
        _applied.add(name)
        return True


def usable_cores() -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            count = min(count, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def idle_cores() -> int:
    """The usable cores (:func:`usable_cores`) that other work leaves free, at least one: each
    is counted busy in the share the last minute's load average takes of the machine's CPUs.

    On an idle machine all usable cores; on a 2-core machine whose load average is 1 (another
    process computing), one; at 2 or more, one. Read once, when :func:`configure` applies its
    settings: a server keeps the count it started with. Why it matters, measured:
    docs/deployment.md, "Threads"."""
    usable = usable_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on Unix, or no load average to read
        return usable
    busy = min(1.0, max(0.0, load) / (os.cpu_count() or usable))
    return max(1, min(usable, round(usable * (1.0 - busy))))


def _log_to_stderr(level: int) -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("voicebank").setLevel(level)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    if level > logging.INFO:  # its retries on a machine without the hub: dozens of lines before our one error
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


# -- warnings silenced around one call, not for the process -------------------------------------
_quiet_lock = threading.Lock()
_quiet_count: dict[tuple, int] = {}
_quiet_entry: dict[tuple, tuple] = {}


@contextmanager
def quietly(message: str, category: type[Warning]) -> Iterator[None]:
    """Ignore warnings of ``category`` whose text starts with ``message`` (a regex) while the
    block runs, then leave the filters exactly as they were.

    ``warnings.catch_warnings`` restores a copy of the whole filter list, which is wrong when
    threads overlap (recordings are decoded and embedded in several at once): one thread's exit
    puts back a list saved while another's filter was in it. Here the filter is inserted once for
    all overlapping calls and the very entry inserted is removed when the last one ends; filters
    the host adds meanwhile stay.
    """
    import re

    key = (message, category)
    with _quiet_lock:
        if _quiet_count.get(key, 0) == 0:
            entry = ("ignore", re.compile(message, re.I), category, None, 0)
            warnings.filters.insert(0, entry)
            _quiet_entry[key] = entry
            _filters_changed()
        _quiet_count[key] = _quiet_count.get(key, 0) + 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_count[key] -= 1
            if _quiet_count[key] == 0:
                entry = _quiet_entry.pop(key)
                for i, f in enumerate(warnings.filters):
                    if f is entry:
                        del warnings.filters[i]
                        break
                _filters_changed()


def _filters_changed() -> None:
    # what warnings.filterwarnings calls after editing the list: forget the "already shown" cache
    warnings_filters_changed()
