"""The FAISS kinds of :class:`~voicebank.index.search.Search`: one process's index, kept in step with SQL.

The index reflects SQL as of a change sequence number. Before every search it reads the bank's
current sequence; if the index is behind, it re-reads from SQL the voiceprints of just the speakers
changed since, so another process's enrollments and removals are seen without a restart. A
missing, damaged, foreign or ahead-of-SQL index file is rebuilt from SQL with a warning.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
from ..store import Store
from ..store.repository_records import ChangeLog
from .file import IndexFileError, IndexInfo, SpeakerIndex

log = logging.getLogger(__name__)

# Changed speakers are re-read from SQL this many at a time (an IN (...) list of bounded length).
# Catching up costs one index update per changed speaker, a rebuild one per speaker in the bank:
# an index is rebuilt only when more than half of the bank has changed (an HNSW graph of a million
# voiceprints takes about half an hour to build, so it must not be rebuilt for a few thousand).
READ_CHUNK = 5_000


class FaissSearch:
    """:class:`~voicebank.index.search.Search` over a :class:`SpeakerIndex` of ``info.kind`` (flat, hnsw
    or ivf) holding ``info.channel``'s voiceprints, read from the file ``path`` on first use (None:
    built in memory) and caught up with SQL before each use. Thread-safe: one lock around the index."""

    def __init__(self, store: Store, info: IndexInfo, path: Path | None):
        self.changes = ChangeLog(store, info.dimension, telephone=info.channel == "telephone")
        self.info = info
        self.path = path
        self._lock = threading.RLock()
        self._index: SpeakerIndex | None = None
        self._saved_seq: int | None = None
        self._rebuild_reason: str | None = None  # why the last catch-up rebuilt, if it did
        self.file_status = "not loaded"
        self._unwritable: str | None = None  # why the index file could not be written, if it could not

    @property
    def kind(self) -> str:
        return self.info.kind

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, int]:
        with self._lock:
            index = self._current()
            scores, ids = index.search(queries, k)
            return scores, ids, len(index)

    def rebuild(self) -> int:
        """Replace the index with one built from SQL, and save it."""
        with self._lock:
            self._index = self._build()
            self._saved_seq = None  # the file may be damaged at the same seq: write it regardless
            self.save()
            return len(self._index)

    def contents(self) -> tuple[np.ndarray, np.ndarray, str]:
        with self._lock:
            self._index = None  # read the file again, so the report says what was on disk
            ids, vectors = self._current().items()
            return ids, vectors, self.file_status

    def catch_up(self) -> None:
        with self._lock:
            self._current()

    def save(self) -> None:
        """Write the index file if it has changed since it was read or last written. The file is
        a cache: when it cannot be written (a folder in its place, a read-only or full disk) the
        index is kept in memory, with one warning, and decisions are unaffected."""
        with self._lock:
            if self._index is not None and self.path is not None and self._saved_seq != self._index.seq:
                try:
                    self._index.save(self.path)
                except OSError as exc:
                    if self._unwritable is None:
                        log.warning("cannot write the index cache file %s (%s): keeping the index in memory; "
                                    "remove what is in the way, or set VOICEBANK_CACHE", self.path, exc.strerror or exc)
                    self._unwritable = f"cannot be written ({exc.strerror or exc})"
                    self.file_status = f"{self.file_status}; {self._unwritable}"
                    return
                self._unwritable = None
                self._saved_seq = self._index.seq

    def _current(self) -> SpeakerIndex:
        """The index, caught up with SQL. Call with ``self._lock`` held."""
        just_loaded = self._index is None
        if just_loaded:
            self._index = self._load_file()
        loaded_seq = self._index.seq
        self._index = self._catch_up(self._index)
        if just_loaded and self.file_status == "ok" and self._rebuild_reason is not None:
            how = "ahead of SQL (a restored backup?)" if loaded_seq > self._index.seq else self._rebuild_reason
            self.file_status = f"{how} (seq {loaded_seq}, SQL {self._index.seq}): rebuilt"
        elif just_loaded and self.file_status == "ok" and self._index.seq > loaded_seq:
            self.file_status = f"ok, was behind SQL (seq {loaded_seq} < {self._index.seq}): caught up"
        return self._index

    def _load_file(self) -> SpeakerIndex:
        if self.path is None:
            self.file_status = "none (in memory)"
            return self._build()
        try:
            index = SpeakerIndex.load(self.path, self.info)
        except IndexFileError as exc:
            if self.path.exists():
                log.warning("rebuilding the index from SQL: %s", exc)
                self.file_status = f"damaged or foreign, rebuilt: {exc}"
            else:
                self.file_status = "missing, rebuilt"
            self.rebuild()
            return self._index
        self._saved_seq = index.seq
        self.file_status = "ok"
        return index

    def _build(self) -> SpeakerIndex:
        snapshot = self.changes.snapshot()
        index = SpeakerIndex(self.info, seq=snapshot.seq, history=snapshot.history)
        index.upsert(snapshot.ids, snapshot.vectors)
        log.info("built the index from SQL: %d voiceprints at seq %d", len(index), snapshot.seq)
        return index

    def _catch_up(self, index: SpeakerIndex) -> SpeakerIndex:
        self._rebuild_reason = None
        delta = self.changes.since(index.seq, index.history, len(index), READ_CHUNK)
        if delta is None:
            return index
        if delta.reason is not None:
            (log.warning if "backup" in delta.reason else log.info)(
                "rebuilding the index (seq %d, SQL at seq %d): %s", index.seq, delta.head, delta.reason)
            self._rebuild_reason = delta.reason
            return self._build()
        gone = np.setdiff1d(np.asarray(delta.changed, dtype=np.int64), delta.ids)
        index.remove(gone)
        index.upsert(delta.ids, delta.vectors)
        log.debug("caught up %d changed speakers, seq %d -> %d", len(delta.changed), index.seq, delta.head)
        index.seq, index.history = delta.head, delta.history
        return index
