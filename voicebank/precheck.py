"""Checking recordings for an enrollment without storing anything (``VoiceBank.check_recordings``).

The same rules as :meth:`VoiceBank.enroll` and :meth:`VoiceBank.add_recordings`, read from the same
verdicts (``enrollment_rules``), but every verdict is reported instead of the first raised, take by
take, so that an operator sees as they record whether a take is usable, in the words enrollment
would use, and how much speech the takes hold against what enrollment needs: a take that cannot
be decoded, is too short or holds too little speech; a take given twice or already enrolled for
someone; a take that does not sound like the others; too little speech in all; and the voice as a
whole already matching an enrolled speaker.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from .audio import Recording
from .encoding import both_channels
from .enrollment import recording_list, row, verdicts
from .services import Services
from .store import UtteranceRow


@dataclass(frozen=True)
class RecordingCheck:
    """One take: its label, and when it could be decoded its length, speech and consistency."""

    label: str
    duration_s: float | None = None
    speech_s: float | None = None  # seconds silero-vad hears as speech; None when unreadable
    consistency: float | None = None  # cosine against the voiceprint of the other takes (and stored recordings)
    problems: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        r = lambda v: None if v is None else round(float(v), 4)  # noqa: E731
        return {"label": self.label, "duration_s": r(self.duration_s), "speech_s": r(self.speech_s),
                "consistency": r(self.consistency), "usable": self.usable, "problems": list(self.problems)}


@dataclass(frozen=True)
class EnrollmentCheck:
    """Takes checked together: ``speech_s`` sums the usable ones (with a named speaker's stored
    recordings), against ``needed_s``; ``problems`` and ``warnings`` are about the takes as a
    whole: what stops enrollment (too little speech; a stored recording unlike the takes), and the
    voice already enrolled as ``duplicate_of`` (enrollment warns, or refuses when strict)."""

    recordings: tuple[RecordingCheck, ...]
    speech_s: float
    needed_s: float
    speaker: str | None = None
    duplicate_of: str | None = None
    problems: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())

    @property
    def ready(self) -> bool:
        """Would :meth:`VoiceBank.enroll` (or ``add_recordings``) take these takes now (not strict)?"""
        return not self.problems and all(c.usable for c in self.recordings)

    def to_dict(self) -> dict[str, Any]:
        return {"speaker": self.speaker, "recordings": [c.to_dict() for c in self.recordings],
                "speech_s": round(self.speech_s, 4), "needed_s": self.needed_s, "ready": self.ready,
                "duplicate_of": self.duplicate_of, "problems": list(self.problems), "warnings": list(self.warnings)}


def check(services: Services, recordings: Sequence[Recording], name: str | None = None) -> EnrollmentCheck:
    """Check ``recordings`` (a new speaker's takes, or with ``name`` more takes of an enrolled
    speaker) as enrollment would, storing nothing. Raises only for bad arguments (no recordings,
    an unknown ``name``); every problem with the audio is reported in the result."""
    recordings = recording_list(recordings)
    stored = list(services.repository.speaker(name).utterances) if name is not None else []
    found: list[RecordingCheck] = []
    takes: list[UtteranceRow] = []
    where: list[int] = []  # each take's place among the recordings (one not decoded is no take)
    with services.encoder.stream(recordings, both_channels) as stream:
        for item in stream:
            if item.error is not None:
                found.append(RecordingCheck(_label(recordings[item.index], item.index), problems=(str(item.error),)))
            else:
                where.append(len(found))
                takes.append(row(item))
                found.append(RecordingCheck(item.audio.label, item.audio.duration, item.audio.speech_seconds))
    result = verdicts(services, name, takes, stored, stored[0].speaker_id if stored else None)
    problems: list[tuple[str, ...]] = [c.problems for c in found]
    for verdict in result.found:
        if verdict.take is not None and verdict.blocking:
            problems[where[verdict.take]] += (verdict.message,)
    consistency = dict(zip(where, result.consistency))
    checks = tuple(replace(c, consistency=consistency.get(i), problems=problems[i]) for i, c in enumerate(found))
    whole = tuple(v.message for v in result.found if v.take is None and v.blocking)
    return EnrollmentCheck(checks, result.speech_s, result.needed_s, name, result.duplicate_of, whole,
                           tuple(result.warnings()))


def _label(recording: Recording, index: int) -> str:
    name = getattr(recording, "name", None)
    return str(name) if isinstance(name, str) else f"recording {index + 1}"
