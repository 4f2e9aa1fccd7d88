"""The audit trail: every identification and verification decision, append-only until purged.

It answers "who was let in, when, with what score and threshold, by which model and which client".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select

from .store import AuditRow, Store, as_utc


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    operation: str  # identify or verify
    claimed: str | None  # verify: the name claimed
    returned: str | None  # the speaker accepted, or None
    score: float | None
    threshold: float
    score_kind: str
    accepted: bool
    model_id: str
    recording_sha256: str
    client: str | None  # who asked (e.g. the HTTP API key's name)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "at": self.at.isoformat()}


def record(store: Store, **fields: Any) -> None:
    with store.write() as session:
        session.add(AuditRow(**fields))


def entries(store: Store, speaker: str | None = None, since: datetime | None = None,
            until: datetime | None = None, limit: int | None = None, *, operation: str | None = None,
            client: str | None = None, offset: int = 0) -> list[AuditEntry]:
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
    with store.read() as session:
        rows = session.execute(query).scalars().all()
    return [AuditEntry(as_utc(r.at), r.operation, r.claimed, r.returned, r.score, r.threshold, r.score_kind,
                       r.accepted, r.model_id, r.recording_sha256, r.client) for r in rows]


def purge(store: Store, before: datetime) -> int:
    """Delete decisions older than ``before`` (retention); returns how many."""
    with store.write() as session:
        return session.execute(delete(AuditRow).where(AuditRow.at < _stored(before))).rowcount


def _stored(moment: datetime) -> datetime:
    # Compare in UTC; a naive datetime is taken as UTC. SQLite compares the stored text, which
    # has no offset, so the bound must be naive UTC there too.
    return as_utc(moment).replace(tzinfo=None)
