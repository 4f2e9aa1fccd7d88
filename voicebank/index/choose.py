"""One search object per bank whatever its index kind: the per-process FAISS cache (flat, hnsw, ivf)
or PostgreSQL itself (pgvector), switched when the bank's kind changes (``reindex --index``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .cache import IndexCache
from .file import KINDS as FAISS_KINDS, IndexInfo
from .pgvector import KIND as PGVECTOR, PgVectorSearch
from ..store import Store


class IndexChoice:
    """Delegates the :class:`IndexCache` interface to the search for the bank's current kind."""

    def __init__(self, store: Store, info: IndexInfo, path: Path | None, where: str):
        self.store, self.where, self.dimension = store, where, info.dimension
        self.kind = info.kind
        self.faiss = IndexCache(store, replace(info, kind=info.kind if info.kind in FAISS_KINDS else "flat"), path)
        self.pg = None
        if info.kind == PGVECTOR:  # a bank created with this kind gets its column and index now
            self.pg = PgVectorSearch(store, info.dimension, where)
            self.pg.current()

    @property
    def active(self):
        return self.pg if self.kind == PGVECTOR else self.faiss

    @property
    def lock(self):
        """The FAISS cache's lock; none for pgvector (each search is its own transaction)."""
        return self.active.lock

    @property
    def info(self) -> IndexInfo:
        return replace(self.faiss.info, kind=self.kind)

    @property
    def path(self) -> Path | None:
        """The FAISS cache file (unused while the kind is pgvector)."""
        return self.faiss.path

    @property
    def file_status(self) -> str:
        return self.active.file_status

    def use_kind(self, kind: str) -> None:
        if kind == self.kind:
            return
        if kind == PGVECTOR:
            self.pg = self.pg or PgVectorSearch(self.store, self.dimension, self.where)
            self.pg.use_kind(kind)
        else:
            self.faiss.use_kind(kind)
        self.kind = kind

    def current(self):
        return self.active.current()

    def forget(self) -> None:
        self.active.forget()

    def rebuild(self):
        return self.active.rebuild()

    def save(self) -> None:
        self.faiss.save()
