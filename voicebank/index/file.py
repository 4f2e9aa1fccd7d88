"""The FAISS index of voiceprints: a cache of SQL, keyed by SQL speaker ids.

Inner product over L2-normalized vectors is cosine similarity. The index is persisted as a FAISS
file plus a JSON sidecar saying what it was built from (bank, model, dimension, change sequence,
SHA-256 of the index file); both are written atomically (temp file, fsync, rename) under a file
lock, and :meth:`SpeakerIndex.load` refuses anything that does not match, so the caller rebuilds.
No pickle anywhere. The structure behind an index is its *kind* (``flat``, ``hnsw``, ``ivf``; see
:mod:`voicebank.index.kinds`); the kind is part of :class:`IndexInfo`, so a file of another kind is
refused like a foreign one and rebuilt.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import logging
import os
import stat
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from . import kinds as index_kinds

log = logging.getLogger(__name__)

FORMAT = 1
KINDS = tuple(index_kinds.KIND_CLASSES)  # ("flat", "hnsw", "ivf")


class IndexFileError(Exception):
    """The index file is missing, damaged, or was built for something else. Rebuild it from SQL."""


@dataclass(frozen=True)
class IndexInfo:
    """What an index was built from: written to the sidecar, checked on load."""

    bank_uid: str
    model_id: str
    dimension: int
    kind: str = "flat"
    channel: str = "wideband"  # whose voiceprints: wideband, or telephone (voicebank.channel)


class SpeakerIndex:
    """An inner-product index of (speaker id -> voiceprint). Not thread-safe: lock around it.

    ``info.kind`` picks the structure (see :mod:`voicebank.index.kinds`): ``flat`` is exact;
    ``hnsw`` and ``ivf`` are approximate (they may miss the best match now and then) but answer with
    the same ids and true cosine scores, and never return a removed or replaced voiceprint.
    """

    def __init__(self, info: IndexInfo, seq: int = 0, _backend=None, history: str | None = None):
        if info.kind not in KINDS:
            raise ValueError(f"unknown index kind {info.kind!r}; known: {', '.join(KINDS)}")
        self.info = info
        self.seq = seq  # the change sequence this index reflects
        # Which change row that sequence was (see cache.py): after a database is restored from a
        # backup, the same sequence numbers can come back meaning other changes.
        self.history = history
        self.backend = _backend or index_kinds.make(info.kind, info.dimension)

    def __len__(self) -> int:
        """The number of voiceprints held (live ones: replaced or removed ones do not count)."""
        return len(self.backend)

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert or replace the voiceprints of ``ids`` (int64, (n,)) with ``vectors`` ((n, d) float32,
        L2-normalized). An id given twice keeps its last vector."""
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        vectors = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        if vectors.shape != (len(ids), self.info.dimension):
            raise ValueError(f"{len(ids)} ids need ({len(ids)}, {self.info.dimension}) vectors, not {vectors.shape}")
        if ids.size == 0:
            return
        _, last = np.unique(ids[::-1], return_index=True)
        if len(last) < len(ids):
            keep = np.sort(len(ids) - 1 - last)
            ids, vectors = ids[keep], np.ascontiguousarray(vectors[keep])
        self.backend.upsert(ids, vectors)

    def remove(self, ids: np.ndarray) -> None:
        """Remove the voiceprints of ``ids`` (int64, (n,)); absent ids are ignored."""
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        if ids.size:
            self.backend.remove(ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) for each row of ``queries`` ((n, d) or (d,)), best first: both
        (n, min(k, len)), scores float32 cosines in [-1, 1], ids int64, no -1 padding."""
        k = min(k, len(self))
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if k == 0:
            empty = np.zeros((queries.shape[0], 0))
            return empty.astype(np.float32), empty.astype(np.int64)
        return self.backend.search(queries, k)

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """All live (ids (n,) int64, vectors (n, d) float32, exactly as given), in storage order."""
        return self.backend.items()

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write the index and its sidecar atomically; concurrent savers and loaders are serialized."""
        import faiss

        data = memoryview(faiss.serialize_index(self.backend.faiss_index))  # no second copy of ~2 KB/speaker
        sidecar = {
            "format": FORMAT,
            "kind": self.info.kind,
            "bank_uid": self.info.bank_uid,
            "model_id": self.info.model_id,
            "dimension": self.info.dimension,
            "channel": self.info.channel,
            "count": len(self),
            "seq": self.seq,
            "history": self.history,
            "sha256": hashlib.sha256(data).hexdigest(),
            "structure": self.backend.describe(),  # for people: load does not read it
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path):
            # Temp files of a writer killed mid-save (every writer holds this lock, so none is live).
            for stale in path.parent.glob(glob.escape(path.name) + ".*.tmp"):
                stale.unlink(missing_ok=True)
            _atomic_write(path, data)
            _atomic_write(_sidecar(path), json.dumps(sidecar, indent=1).encode())
        log.debug("saved index of %d voiceprints at seq %d to %s", len(self), self.seq, path)

    @classmethod
    def load(cls, path: Path, expected: IndexInfo) -> "SpeakerIndex":
        """Load an index written by :meth:`save`; :class:`IndexFileError` unless it is intact and
        was built for ``expected`` (same bank, model, dimension and kind)."""
        import faiss

        if not path.exists() and not path.is_symlink():
            raise IndexFileError(f"no index file at {path}")
        try:
            with _locked(path):
                meta = json.loads(_read_regular(_sidecar(path), MAX_SIDECAR_BYTES))
                if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                    raise IndexFileError(f"{_sidecar(path)} is not a voicebank index sidecar of format {FORMAT}")
                count, dimension = meta.get("count"), expected.dimension
                if not isinstance(count, int) or not 0 <= count < 2**40:
                    raise IndexFileError(f"{_sidecar(path)} gives no sane count of voiceprints")
                data = _read_regular(path, MAX_SIDECAR_BYTES + count * (8 * dimension + BYTES_PER_ENTRY))
        except (OSError, ValueError, RecursionError) as exc:  # a held lock too: the file is only a cache
            raise IndexFileError(f"unreadable index sidecar or file at {path}: {exc}") from exc
        found = IndexInfo(meta.get("bank_uid"), meta.get("model_id"), meta.get("dimension"), meta.get("kind"),
                          meta.get("channel", "wideband"))
        if found != expected:
            raise IndexFileError(f"{path} was built for {found}, not {expected}")
        if expected.kind not in KINDS:
            raise IndexFileError(f"{path} is an index of kind {expected.kind!r}, which this voicebank does not know")
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            raise IndexFileError(f"{path} does not match the checksum in its sidecar (damaged or half-written)")
        try:
            backend = index_kinds.adopt(expected.kind, expected.dimension, faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8)))
        except Exception as exc:  # FAISS raises RuntimeError on garbage; adopt ValueError on a foreign structure
            raise IndexFileError(f"FAISS cannot read {path} as a {expected.kind} index: {exc}") from exc
        if len(backend) != meta.get("count") or not isinstance(meta.get("seq"), int):
            raise IndexFileError(f"{path} disagrees with its sidecar")
        history = meta.get("history")
        return cls(expected, seq=meta["seq"], _backend=backend, history=history if isinstance(history, str) else None)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


MAX_SIDECAR_BYTES = 1 << 20
# What an index may hold per voiceprint beyond its vector (twice over: HNSW keeps a float32 copy
# and its graph links, IVF its list ids): far above any FAISS structure voicebank writes.
BYTES_PER_ENTRY = 4096


def _read_regular(path: Path, limit: int) -> bytes:
    """The bytes of ``path`` if it is a regular file (not a link, a FIFO or a device: opened
    without following a link and without blocking) of at most ``limit`` bytes; else OSError or
    ValueError, and the index is rebuilt from SQL."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(f"{path} is a symbolic link") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path} is not a regular file")
        if info.st_size > limit:
            raise ValueError(f"{path} holds {info.st_size} bytes, more than an index of its size could ({limit})")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(info.st_size)
    finally:
        os.close(fd)


# How long a reader or writer of an index file waits for another one: a save of a large index
# takes a few seconds; a lock held longer (a process stopped with Ctrl-Z, or another program
# holding the lock file) costs a rebuild from SQL or an index kept in memory, never a request
# that waits for ever.
LOCK_SECONDS = 5.0


@contextmanager
def _locked(path: Path, seconds: float | None = None) -> Iterator[None]:
    """The index file's lock (a regular file beside it, opened without following a link), taken
    within ``seconds`` (default :data:`LOCK_SECONDS`), else :class:`TimeoutError`."""
    try:
        import fcntl
    except ImportError:  # not POSIX: atomic renames and checksums still protect readers
        yield
        return
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK, 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{lock} is not a regular file")
        deadline = time.monotonic() + (LOCK_SECONDS if seconds is None else seconds)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(errno.ETIMEDOUT, f"{lock} is held by another process") from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes | memoryview) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
