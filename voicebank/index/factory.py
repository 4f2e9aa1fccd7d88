"""The one place a candidate search is made: :func:`make` by kind, :func:`bank_search` for both
channels of a bank; and what switching a bank's kind asks of its database
(:func:`refuse_unless_usable`, :func:`switch_kind`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..store import BankRow, Store
from . import pgvector
from .faiss_search import FaissSearch
from .file import IndexInfo
from .search import Search
from .switch import WIDEBAND, BankSearch


def make(store: Store, info: IndexInfo, path: Path | None, where: str) -> Search:
    """The search of ``info.kind`` over ``info.channel``'s voiceprints in ``store``: a FAISS index
    cached in a file (``path``, the wideband one's; the telephone one's beside it,
    :func:`telephone_path`; None: in memory only), or PostgreSQL itself (pgvector, wideband only;
    ``where``: the database as messages name it)."""
    if info.kind == pgvector.KIND:
        if info.channel != WIDEBAND:
            raise ValueError(f"the pgvector column holds the wideband voiceprints, not the {info.channel} ones")
        return pgvector.PgVectorSearch(store, info.dimension, where)
    return FaissSearch(store, info, path if info.channel == WIDEBAND else telephone_path(path))


def bank_search(store: Store, info: IndexInfo, path: Path | None, where: str) -> BankSearch:
    """Both channels' search of the bank ``info`` describes (its kind as its settings name it now)."""
    return BankSearch(lambda kind, channel: make(store, replace(info, kind=kind, channel=channel), path, where),
                      info.kind)


def refuse_unless_usable(store: Store, kind: str, where: str) -> None:
    """Raise, before anything changes, if the database in ``store`` (``where``, for messages)
    cannot hold index ``kind``: pgvector needs a PostgreSQL server that offers it."""
    if kind == pgvector.KIND:
        pgvector.refuse_unless_usable(store, where)


def switch_kind(row: BankRow, kind: str, dimension: int) -> None:
    """Make the database match index ``kind`` inside the transaction that is editing ``row`` (the
    bank's settings row): on PostgreSQL, pgvector's column, trigger and index are made for that kind
    or dropped for any other (:func:`pgvector.switch`); SQLite holds nothing of any kind."""
    from sqlalchemy.orm import object_session

    session = object_session(row)
    if session is not None and session.get_bind().dialect.name == "postgresql":
        pgvector.switch(session, kind, dimension)


def telephone_path(path: Path | None) -> Path | None:
    """Where the telephone voiceprints' index file lives, beside the wideband one's ``path``."""
    if path is None:
        return None
    stem = path.name[: -len(".faiss")] if path.name.endswith(".faiss") else path.name
    return path.with_name(f"{stem}.telephone.faiss")
