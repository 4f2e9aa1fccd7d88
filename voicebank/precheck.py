"""Checking recordings for an enrollment without storing anything (``VoiceBank.check_recordings``).

The same checks as :meth:`VoiceBank.enroll` and :meth:`VoiceBank.add_recordings`, but each one's
outcome is reported instead of raised, recording by recording, so that an operator sees as they
record whether a take is usable, and how much speech the takes hold against what enrollment needs:
a take that cannot be decoded, is too short or holds too little speech; a take given twice or
already enrolled for someone; a take that does not sound like the others (leave-one-out cosine
below the consistency check); and the voice as a whole already matching an enrolled speaker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from . import scoring
from .audio import Recording
from .channel import TELEPHONE
from .encoding import both_channels
from .enrollment import recording_list
from .enrollment_rules import in_one_channel
from .vectors import voiceprint

if TYPE_CHECKING:
    from .enrollment import Services


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
    recordings), against ``needed_s``; ``warnings`` are about the takes as a whole (the voice
    already enrolled as ``duplicate_of``: enrollment warns, or refuses when strict)."""

    recordings: tuple[RecordingCheck, ...]
    speech_s: float
    needed_s: float
    speaker: str | None = None
    duplicate_of: str | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def ready(self) -> bool:
        """Would :meth:`VoiceBank.enroll` (or ``add_recordings``) take these takes now (not strict)?"""
        return self.speech_s >= self.needed_s and all(c.usable for c in self.recordings)

    def to_dict(self) -> dict[str, Any]:
        return {"speaker": self.speaker, "recordings": [c.to_dict() for c in self.recordings],
                "speech_s": round(self.speech_s, 4), "needed_s": self.needed_s, "ready": self.ready,
                "duplicate_of": self.duplicate_of, "warnings": list(self.warnings)}


def check(services: "Services", recordings: Sequence[Recording], name: str | None = None) -> EnrollmentCheck:
    """Check ``recordings`` (a new speaker's takes, or with ``name`` more takes of an enrolled
    speaker) as enrollment would, storing nothing. Raises only for bad arguments (no recordings,
    an unknown ``name``); every problem with the audio is reported in the result."""
    recordings = recording_list(recordings)
    stored = list(services.repository.speaker(name).utterances) if name is not None else []
    speaker_id = stored[0].speaker_id if stored else None
    found: list[dict[str, Any]] = []
    with services.encoder.stream(recordings, both_channels) as stream:
        for item in stream:
            if item.error is not None:
                found.append({"label": _label(recordings[item.index], item.index), "problems": [str(item.error)]})
            else:
                found.append({"label": item.audio.label, "duration_s": item.audio.duration, "problems": [],
                              "speech_s": item.audio.speech_seconds, "sha256": item.audio.sha256, "vector": item.embedding,
                              "channel": item.audio.channel.channel if item.audio.channel else None,
                              "telephone": item.views[1]})
    usable = [f for f in found if not f["problems"]]
    _repeats(usable, {u.sha256: u.label for u in stored}, name)
    owners = services.repository.owners([f["sha256"] for f in usable], speaker_id)
    for f in usable:
        if f["sha256"] in owners:
            f["problems"].append(f"{f['label']} is already enrolled for {owners[f['sha256']]} (the same recording, "
                                 "byte for byte); a recording belongs to one person.")
    usable = [f for f in usable if not f["problems"]]
    vectors = [f["vector"] for f in usable] + [np.asarray(u.embedding, dtype=np.float32) for u in stored]
    channels = [f["channel"] for f in usable] + [u.channel for u in stored]
    consistency, duplicate = services.checks()
    if len(vectors) >= 2:  # compared as enrollment compares them (enrollment_rules.in_one_channel)
        compared = in_one_channel(vectors, channels, [f["telephone"] for f in usable] + [u.telephone for u in stored])
        scores = scoring.leave_one_out(compared)
        for f, score in zip(usable, scores):
            f["consistency"] = float(score)
            if not scoring.accept(score, consistency):
                f["problems"].append(f"{f['label']} does not sound like the other recordings (cosine {score:.3f} "
                                     f"against them, consistency threshold {consistency:.3f}).")
    warnings, twin = [], None
    wideband = [v for v, c in zip(vectors, channels) if c != TELEPHONE]
    if wideband and services.repository.has_speakers():
        twin, score = _nearest(services, voiceprint(np.stack(wideband)), speaker_id)
        if twin is not None and scoring.accept(score, duplicate):
            warnings.append(f"this voice already matches {twin} (cosine {score:.3f} between the voiceprints, "
                            f"duplicate threshold {duplicate:.3f}): the same person enrolled twice?")
        else:
            twin = None
    speech = sum(f["speech_s"] for f in found if not f["problems"]) + sum(u.speech_s for u in stored)
    checks = tuple(RecordingCheck(f["label"], f.get("duration_s"), f.get("speech_s"), f.get("consistency"),
                                  tuple(f["problems"])) for f in found)
    return EnrollmentCheck(checks, float(speech), services.encoder.limits.min_enroll_speech_seconds, name, twin, tuple(warnings))


def _repeats(usable: list[dict[str, Any]], stored: dict[str, str], name: str | None) -> None:
    seen = dict(stored)
    for f in usable:
        if f["sha256"] in seen:
            where = f"already enrolled for {name} as" if f["sha256"] in stored else "the same recording as"
            f["problems"].append(f"{f['label']} is {where} {seen[f['sha256']]}; give each recording once.")
        else:
            seen[f["sha256"]] = f["label"]


def _nearest(services: "Services", vector: np.ndarray, speaker_id: int | None) -> tuple[str | None, float]:
    """The enrolled speaker (other than ``speaker_id``) nearest to ``vector``, rescored from SQL."""
    _, ids, _ = services.search.search(vector[None, :], 2)
    nearest = [int(i) for i in ids[0] if i >= 0 and i != speaker_id][:1]
    if not nearest:
        return None, 0.0
    found = services.repository.voiceprints(np.array(nearest)).get(nearest[0])
    if found is None:  # enrolled over the telephone only: no wideband voiceprint to compare with
        return None, 0.0
    return found[0], float(vector @ found[1])


def _label(recording: Recording, index: int) -> str:
    name = getattr(recording, "name", None)
    return str(name) if isinstance(name, str) else f"recording {index + 1}"
