"""The audit trail: every identification and verification decision, append-only until purged.

It answers "who was let in, when, with what score and threshold, by which model and which client".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .store import Store, as_utc
from .store.repository_records import AuditLog


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    operation: str  # identify, verify, or scan (one row per segment of a scan)
    claimed: str | None  # verify: the name claimed
    returned: str | None  # the speaker accepted, or None
    score: float | None
    threshold: float
    score_kind: str
    accepted: bool
    model_id: str
    recording_sha256: str
    client: str | None  # who asked (e.g. the HTTP API key's name)
    channel: str | None = None  # the channel decided in (voicebank.channel); None before channels
    detail: str | None = None  # why a probe was refused (nothing decided); a scan segment's span

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "at": self.at.isoformat()}


def record(store: Store, **fields: Any) -> None:
    AuditLog(store).add(**fields)


class Audit:
    """Read and prune one bank's audit trail (``bank.audit``)."""

    def __init__(self, store: Store):
        self._store = store

    def entries(self, speaker: str | None = None, since: datetime | None = None, until: datetime | None = None,
                limit: int | None = None, *, operation: str | None = None, client: str | None = None,
                offset: int = 0) -> list[AuditEntry]:
        """Identification and verification decisions, newest first (``speaker``: claimed or returned;
        ``operation``: identify, verify or scan; ``client``: who asked, e.g. the API key's name), a page at
        a time with ``offset`` (how many of the newest to skip)."""
        rows = AuditLog(self._store).rows(speaker, since, until, limit, operation=operation, client=client,
                                          offset=offset)
        return [AuditEntry(as_utc(r.at), r.operation, r.claimed, r.returned, r.score, r.threshold, r.score_kind,
                           r.accepted, r.model_id, r.recording_sha256, r.client, r.channel, r.detail) for r in rows]

    def purge(self, before: datetime) -> int:
        """Delete decisions older than ``before`` (retention); returns how many were deleted."""
        return AuditLog(self._store).purge(before)
