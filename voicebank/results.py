"""What the facade returns. Plain frozen dataclasses; ``to_dict`` gives the CLI's JSON shapes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence


@dataclass(frozen=True)
class Candidate:
    name: str
    score: float  # cosine similarity in [-1, 1]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "score": round(self.score, 6)}


@dataclass(frozen=True)
class Identification:
    """Open-set 1:N result: ``match`` is the best candidate if it clears ``threshold``, else None."""

    match: Candidate | None
    candidates: list[Candidate]
    threshold: float
    # what the threshold means: the bank's identification operating point (method, target,
    # gallery at calibration), with the false-alarm rate expected at today's gallery size and
    # whether the bank has outgrown its calibration (OperatingPoint.status)
    calibration: dict[str, Any] | None = None
    # what the threshold was compared with: the best score, or under the margin rule
    # 2 * best - second best (voicebank.calibration.decide); None with no candidates
    rule: str = "best"
    decision: float | None = None
    # what ``decision`` is: the bank's score (``cosine``, ``asnorm``) under the best-score rule,
    # ``margin`` (or ``asnorm margin``) under the margin rule: the threshold applies to it
    decision_kind: str = "cosine"
    # the channel heard (as measured) and the one decided in, with a note when they differ
    channel: dict[str, Any] | None = None
    # the speech behind the probe, which the threshold was read at (OperatingPoint.at); None: not known
    speech_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "match": self.match.to_dict() if self.match else None,
            "candidates": [c.to_dict() for c in self.candidates],
            "threshold": self.threshold,
            "threshold_kind": "identify",
            "decision": {"rule": self.rule, "kind": self.decision_kind,
                         "score": None if self.decision is None else round(self.decision, 6)},
        }
        if self.calibration is not None:
            out["calibration"] = self.calibration
        return _heard(out, self.channel, self.speech_seconds)


@dataclass(frozen=True)
class Verification:
    """1:1 result: ``accepted`` is ``score >= threshold``."""

    name: str
    score: float
    threshold: float
    accepted: bool
    channel: dict[str, Any] | None = None  # as Identification.channel
    speech_seconds: float | None = None  # as Identification.speech_seconds

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "score": round(self.score, 6), "threshold": self.threshold,
               "accepted": self.accepted, "threshold_kind": "verify"}
        return _heard(out, self.channel, self.speech_seconds)


def _heard(out: dict[str, Any], channel: dict[str, Any] | None, seconds: float | None) -> dict[str, Any]:
    if channel is not None:
        out["channel"] = channel
    if seconds is not None:
        out["speech_seconds"] = round(seconds, 3)
    return out


@dataclass(frozen=True)
class RecordingInfo:
    """One of a speaker's utterances. ``sha256``, ``duration_s`` and ``speech_s`` are None for an
    embedding imported without its recording (``voicebank import FILE.npz``)."""

    label: str
    sha256: str | None
    duration_s: float | None
    speech_s: float | None
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "sha256": self.sha256,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
            "speech_s": None if self.speech_s is None else round(self.speech_s, 3),
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Speaker:
    id: int
    name: str
    metadata: dict[str, Any]
    recordings: tuple[RecordingInfo, ...]
    created_at: datetime
    updated_at: datetime
    warnings: tuple[str, ...] = ()  # from enrollment: e.g. the voice also matches another speaker

    @property
    def speech_seconds(self) -> float:
        """Speech in the recordings (imported embeddings, which have none known, count none)."""
        return sum(r.speech_s or 0.0 for r in self.recordings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metadata": self.metadata,
            "recordings": [r.to_dict() for r in self.recordings],
            "speech_s": round(self.speech_seconds, 3),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class Enrollment:
    """One speaker to enroll with :meth:`VoiceBank.enroll_many`."""

    name: str
    recordings: Sequence[Any]  # paths, bytes, file objects or (samples, sample_rate) pairs
    metadata: dict[str, Any] | None = None


ENROLLED, SKIPPED, FAILED = "enrolled", "skipped", "failed"


@dataclass(frozen=True)
class EnrollmentOutcome:
    """What :meth:`VoiceBank.enroll_many` did with one speaker: ``enrolled`` (``speaker`` is set),
    ``skipped`` (already enrolled, nothing changed) or ``failed`` (``message`` says why; nothing
    was stored for this speaker)."""

    name: str
    status: str
    speaker: Speaker | None = None
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "status": self.status}
        if self.speaker is not None:
            out["recordings"] = len(self.speaker.recordings)
            out["speech_s"] = round(self.speaker.speech_seconds, 3)
            out["warnings"] = list(self.speaker.warnings)
        if self.message is not None:
            out["message"] = self.message
        return out


@dataclass(frozen=True)
class CheckReport:
    """``check``: does the FAISS index agree with SQL?"""

    speakers_in_sql: int
    speakers_in_index: int
    index_file: str  # what was found on disk: "ok", "missing", "behind by N changes", "damaged: ..."
    missing_from_index: list[str]
    not_in_sql: list[int]
    wrong_vectors: list[str]
    # the operating points and what they promise at today's size: {"verify": {...}, "identify": {...}}
    calibration: dict[str, Any] | None = None
    # speakers without a voiceprint in a channel: {"telephone": imported from embeddings or enrolled
    # before channels were measured, "wideband": enrolled over the telephone only} (up to 1,000)
    lacking: dict[str, int] | None = None
    telephone_calibration: dict[str, Any] | None = None  # as ``calibration``, for the telephone channel
    # the telephone voiceprints' index against SQL's: {"index_file", "speakers_in_sql",
    # "speakers_in_index", "missing_from_index", "not_in_sql", "wrong_vectors"} as above
    telephone_index: dict[str, Any] | None = None
    # (label, speaker names) of recordings enrolled under more than one speaker (Repository.shared_recordings)
    shared_recordings: list[tuple[str, list[str]]] | None = None

    @property
    def outgrown(self) -> bool:
        """Has the bank grown past what its identification threshold was calibrated for?"""
        return bool(self.calibration and self.calibration.get("identify", {}).get("outgrown"))

    @property
    def ok(self) -> bool:
        telephone = self.telephone_index or {}
        return not (self.missing_from_index or self.not_in_sql or self.wrong_vectors or telephone.get("missing_from_index")
                    or telephone.get("not_in_sql") or telephone.get("wrong_vectors"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "speakers_in_sql": self.speakers_in_sql,
            "speakers_in_index": self.speakers_in_index,
            "index_file": self.index_file,
            "missing_from_index": self.missing_from_index,
            "not_in_sql": self.not_in_sql,
            "wrong_vectors": self.wrong_vectors,
            "calibration": self.calibration,
            "channels": {"telephone": self.telephone_calibration, "lacking": self.lacking,
                         "telephone_index": self.telephone_index},
            "shared_recordings": [{"recording": label, "speakers": names} for label, names in self.shared_recordings or []],
        }
