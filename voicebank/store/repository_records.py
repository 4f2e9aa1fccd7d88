"""The queries on the bank's records besides speakers: the change log the index follows, the
audit trail of decisions, and the HTTP API keys. (Speakers, the cohort and the settings row are
in ``repository.py``.)"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from .engine import Store
from .models import ApiKeyRow, AuditRow, BankRow, ChangeRow, SpeakerRow, as_utc

SNAPSHOT_ROWS = 5_000  # voiceprints fetched at a time when an index is built from SQL


@dataclass
class Snapshot:
    """Every voiceprint as of change sequence ``seq`` (``ids`` (n,) int64, ``vectors`` (n, dim) float32)."""

    seq: int
    history: str | None  # the identity of the last change row of ``seq`` (see :func:`_history`)
    ids: np.ndarray
    vectors: np.ndarray


@dataclass
class Delta:
    """What changed since an index's sequence. ``reason`` set: the index cannot be caught up (rebuild
    it, for that reason); else ``changed`` speaker ids, of which ``ids``/``vectors`` still exist."""

    head: int
    history: str | None
    reason: str | None
    changed: list[int]
    ids: np.ndarray
    vectors: np.ndarray


class ChangeLog:
    """Reading voiceprints by the change sequence: what an index is built and caught up from."""

    def __init__(self, store: Store, dimension: int, telephone: bool = False):
        """``telephone``: read the speakers' telephone voiceprints (those who have one) instead of
        the wideband ``voiceprint`` column (voicebank.channel)."""
        self.store, self.dimension = store, dimension
        self.column = SpeakerRow.telephone if telephone else SpeakerRow.voiceprint

    def snapshot(self) -> Snapshot:
        with self.store.read() as session:
            # Read the sequence first: what is read after it is at least that new, and applying a
            # newer state twice is harmless; the other order could miss a change.
            seq = session.execute(select(BankRow.change_seq)).scalar_one()
            history = _history(session, seq)
            query = select(SpeakerRow.id, self.column).where(self.column.is_not(None))
            expected = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
            ids, vectors = self._filled(session.execute(query.execution_options(yield_per=SNAPSHOT_ROWS)), expected)
        return Snapshot(seq, history, ids, vectors)

    def _filled(self, rows: Any, expected: int) -> tuple[np.ndarray, np.ndarray]:
        """``rows`` streamed into (ids, vectors) arrays made for ``expected`` of them: a list of every
        row first would hold the bank three times over (row objects, their bytes, then the arrays:
        over 600 MB for 100,000 voiceprints of 512 dimensions, against 200 MB here). More rows than
        counted can come under PostgreSQL's READ COMMITTED (the count is another statement): the
        arrays then grow."""
        ids = np.empty(expected, dtype=np.int64)
        vectors = np.empty((expected, self.dimension), dtype=np.float32)
        n = 0
        for speaker_id, vector in rows:
            if n == len(ids):
                more = max(16, n // 4)
                ids = np.concatenate([ids, np.empty(more, dtype=np.int64)])
                vectors = np.concatenate([vectors, np.empty((more, self.dimension), dtype=np.float32)])
            ids[n], vectors[n] = speaker_id, vector
            n += 1
        return ids[:n], vectors[:n]

    def since(self, seq: int, history: str | None, size: int, read_chunk: int) -> Delta | None:
        """The changes after ``seq`` for an index of ``size`` voiceprints at (``seq``, ``history``);
        None when it is up to date. Changed voiceprints are read ``read_chunk`` at a time. More than half of the index changed (and more than a read chunk)
        is a reason to rebuild rather than catch up: catching up costs one index update per changed
        speaker, a rebuild one per speaker in the bank."""
        with self.store.read() as session:
            head = session.execute(select(BankRow.change_seq)).scalar_one()
            # A database restored from a backup reuses sequence numbers (and speaker ids) for other
            # changes; the change row the index was built at tells the two histories apart.
            at_index = _history(session, seq) if history is not None else None
            if head == seq and at_index == history:
                return None
            changed = None
            if head > seq:
                changed = session.execute(
                    select(ChangeRow.speaker_id).where(ChangeRow.seq > seq).distinct()
                ).scalars().all()
            # The change log is pruned (store.KEEP_CHANGES): an index from before the oldest change
            # kept can be neither caught up nor checked against SQL's history. Read last: under
            # READ COMMITTED a prune committed while the statements above ran shows here.
            oldest = session.execute(select(func.min(ChangeRow.seq))).scalar()
            if oldest is not None and oldest > max(seq, 1):
                reason = f"older than the change log kept (from seq {oldest})"
            elif at_index != history or changed is None:
                reason = "from another history than SQL's (a restored backup?)"
            elif len(changed) > max(read_chunk, size // 2):
                reason = f"{len(changed)} of its {size} speakers changed"
            else:
                reason = None
            if reason is not None:
                return Delta(head, None, reason, [], *self._arrays([]))
            rows = [row for start in range(0, len(changed), read_chunk) for row in session.execute(
                select(SpeakerRow.id, self.column)
                .where(SpeakerRow.id.in_(changed[start:start + read_chunk]), self.column.is_not(None))
            )]
            return Delta(head, _history(session, head), None, list(changed), *self._arrays(rows))

    def _arrays(self, rows: list) -> tuple[np.ndarray, np.ndarray]:
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vectors = np.zeros((len(rows), self.dimension), dtype=np.float32)
        for i, row in enumerate(rows):
            vectors[i] = row[1]
        return ids, vectors


def _history(session: Session, seq: int) -> str | None:
    """The identity of the last change row of transaction ``seq`` (None before any change)."""
    row = session.execute(
        select(ChangeRow.id, ChangeRow.speaker_id, ChangeRow.at).where(ChangeRow.seq == seq)
        .order_by(ChangeRow.id.desc()).limit(1)
    ).first()
    return None if row is None else f"{row[0]}:{row[1]}@{as_utc(row[2]).isoformat()}"


class AuditLog:
    """The append-only table of identification and verification decisions."""

    def __init__(self, store: Store):
        self.store = store

    def add(self, **fields: Any) -> None:
        """Append one decision (on the primary, when this process reads a replica)."""
        with self.store.write() as session:
            session.add(AuditRow(**fields))

    def rows(self, speaker: str | None = None, since: datetime | None = None, until: datetime | None = None,
             limit: int | None = None, *, operation: str | None = None, client: str | None = None,
             offset: int = 0) -> list[AuditRow]:
        """Decisions, newest first; ``speaker`` matches the claimed or the returned name, ``operation``
        is identify or verify, ``client`` the asking API key's name; ``offset`` skips the newest."""
        query = select(AuditRow).order_by(AuditRow.at.desc(), AuditRow.id.desc())
        if speaker is not None:
            query = query.where(or_(AuditRow.claimed == speaker, AuditRow.returned == speaker))
        if operation is not None:
            query = query.where(AuditRow.operation == operation)
        if client is not None:
            query = query.where(AuditRow.client == client)
        if offset:
            query = query.offset(offset)
        if since is not None:
            query = query.where(AuditRow.at >= _stored(since))
        if until is not None:
            query = query.where(AuditRow.at < _stored(until))
        if limit is not None:
            query = query.limit(limit)
        with self.store.read() as session:
            return list(session.execute(query).scalars().all())

    def purge(self, before: datetime) -> int:
        """Delete decisions older than ``before``; returns how many."""
        with self.store.edit("purge the audit trail") as session:
            return session.execute(delete(AuditRow).where(AuditRow.at < _stored(before))).rowcount


def _stored(moment: datetime) -> datetime:
    # Compare in UTC; a naive datetime is taken as UTC. SQLite compares the stored text, which
    # has no offset, so the bound must be naive UTC there too.
    return as_utc(moment).replace(tzinfo=None)


class KeyRecords:
    """The rows of the HTTP API keys (their hashes; the keys themselves are never stored)."""

    def __init__(self, store: Store):
        self.store = store

    def add(self, row: ApiKeyRow) -> bool:
        """Store a new key; False (nothing stored) when its name is taken. A race with another
        process for the name raises ``IntegrityError``."""
        with self.store.edit("create an API key") as session:
            if session.execute(select(ApiKeyRow.id).where(ApiKeyRow.name == row.name)).first():
                return False
            session.add(row)
        return True

    def all(self) -> list[ApiKeyRow]:
        with self.store.read() as session:
            return list(session.execute(select(ApiKeyRow).order_by(ApiKeyRow.name)).scalars())

    def with_prefix(self, prefix: str) -> list[ApiKeyRow]:
        with self.store.read() as session:
            return list(session.execute(select(ApiKeyRow).where(ApiKeyRow.prefix == prefix)).scalars().all())

    def discard(self, key_hash: str) -> None:
        """Delete the key with this hash, and only it: a key nobody was shown is not kept."""
        with self.store.edit("discard an API key") as session:
            session.execute(delete(ApiKeyRow).where(ApiKeyRow.key_hash == key_hash))

    def revoke(self, name: str, at: datetime) -> tuple[ApiKeyRow | None, datetime | None]:
        """Mark ``name`` revoked at ``at``. Returns (its row, when it had already been revoked):
        (None, None) when no key has that name, and nothing is changed when it was revoked before."""
        with self.store.edit("revoke an API key") as session:
            row = session.execute(select(ApiKeyRow).where(ApiKeyRow.name == name)).scalar_one_or_none()
            if row is None or row.revoked_at is not None:
                return row, None if row is None else row.revoked_at
            row.revoked_at = at
            return row, None
