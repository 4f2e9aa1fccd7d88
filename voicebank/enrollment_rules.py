"""The enrollment rules, each written once, as verdicts that both of their readers share.

``enrollment`` raises the first verdict that blocks; ``precheck`` reports every verdict, take by
take, so an operator reads before enrolling the very words enrollment would raise. The rules read
recordings already decoded and embedded (rows not yet stored) and what the caller looked up in the
bank; every number they decide by (the speech needed, the consistency and duplicate-voice
thresholds) is the bank's, passed in, never a copy kept here.

The order of ``Verdicts.found`` is the order enrollment meets them: first what is wrong with a
take on its own (given twice, already enrolled, not like the others: worst first), then what is
wrong with the takes as a whole (too little speech in the takes that pass, the voice already
enrolled). A take one rule refuses is left out of the rules after it, so the speech counted is the
speech that could be enrolled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from . import scoring
from .channel import TELEPHONE, WIDEBAND, speaker_prints
from .errors import (
    DuplicateRecordingError,
    DuplicateVoiceError,
    InconsistentRecordingError,
    NotEnoughSpeechError,
    VoiceBankError,
)
from .store import UtteranceRow
from .store.repository import recording_taken

REPEATED = "repeated"  # the same bytes given twice, or already one of the named speaker's recordings
TAKEN = "taken"  # already enrolled for another speaker: a recording belongs to one person
INCONSISTENT = "inconsistent"  # does not sound like the speaker's other recordings
SPEECH = "speech"  # too little speech in all
VOICE = "duplicate voice"  # the voice already matches an enrolled speaker: a warning, refused when strict

# (vector, channel) -> (name, cosine) of the nearest other enrolled voiceprint in that channel, or None
Nearest = Callable[[np.ndarray, str], "tuple[str, float] | None"]


@dataclass(frozen=True)
class Verdict:
    """One rule broken: which, in words, the error enrollment raises for it, and the take it is
    about (its index in the takes given; None: the takes as a whole, or a stored recording)."""

    rule: str
    message: str
    error: type[VoiceBankError]
    take: int | None = None
    blocking: bool = True

    def exception(self) -> VoiceBankError:
        return self.error(self.message)


@dataclass(frozen=True)
class Verdicts:
    """Every rule the takes break, in the order enrollment meets them, and what the rules measured."""

    found: tuple[Verdict, ...]
    consistency: tuple[float | None, ...]  # each take's cosine against the others; None: not compared
    speech_s: float  # in the takes no rule refuses, with the named speaker's stored recordings
    needed_s: float
    duplicate_of: str | None = None  # the enrolled speaker the voice already matches

    def refusal(self) -> Verdict | None:
        """The verdict enrollment raises: the first that blocks."""
        return next((v for v in self.found if v.blocking), None)

    def warnings(self) -> list[str]:
        return [v.message for v in self.found if not v.blocking]


def evaluate(takes: Sequence[UtteranceRow], stored: Sequence[UtteranceRow], name: str | None,
             owners: dict[str, str], nearest: Nearest, needed_s: float, thresholds: tuple[float, float],
             allow_inconsistent: bool = False, strict: bool = False) -> Verdicts:
    """The verdicts on ``takes`` (new recordings of ``name``, a named speaker's ``stored`` ones
    beside them; ``name`` None: a new speaker not yet named). ``owners``: {sha256: the other
    speaker it is enrolled for}, by either of :func:`hashes`; ``thresholds``: the bank's (consistency, duplicate voice) cosines."""
    consistency_threshold, duplicate_threshold = thresholds
    found = known(takes, stored, name, owners)
    kept = [k for k in range(len(takes)) if not _refused(found, k)]
    rows = [takes[k] for k in kept] + list(stored)
    scores = _leave_one_out(rows)
    if not allow_inconsistent:
        found += [_unlike(rows[j].label, kept[j] if j < len(kept) else None, name, float(scores[j]),
                          consistency_threshold)
                  for j in np.argsort(scores, kind="stable") if not scoring.accept(scores[j], consistency_threshold)]
    speech = float(sum(t.speech_s or 0.0 for k, t in enumerate(takes) if not _refused(found, k))
                   + sum(u.speech_s or 0.0 for u in stored))  # an imported embedding has no speech known
    if speech < needed_s:
        found.append(Verdict(SPEECH, f"{f'{name}: ' if name else ''}the recordings hold {speech:.1f} s of speech in "
                             f"all; enrollment needs at least {needed_s:g} s. Add more recordings.", NotEnoughSpeechError))
    twin = _twin(rows, nearest, duplicate_threshold)
    if twin is not None:
        found.append(_voice(name, *twin, duplicate_threshold, strict))
    consistency = dict(zip(kept, map(float, scores)))
    return Verdicts(tuple(found), tuple(consistency.get(k) for k in range(len(takes))), speech, needed_s,
                    twin[0] if twin else None)


def in_one_channel(embeddings: Sequence[np.ndarray], channels: Sequence[str | None],
                   telephones: Sequence[np.ndarray | None]) -> np.ndarray:
    """One speaker's recordings' embeddings to compare with one another (the consistency rule):
    as they came when all came through a wideband channel, else all through the telephone line
    (where they can be compared)."""
    if any(c == TELEPHONE for c in channels) and all(t is not None for t in telephones):
        return np.stack(telephones)
    return np.stack(embeddings)


def known(takes: Sequence[UtteranceRow], stored: Sequence[UtteranceRow], name: str | None,
          owners: dict[str, str]) -> list[Verdict]:
    """The takes that came before, told by their hashes alone (so enrollment can ask before it
    embeds anything, by the files' SHA-256): given twice or already ``name``'s (:func:`repeated`),
    or enrolled for another speaker (``owners``, as :func:`evaluate`)."""
    found = repeated(takes, stored, name)
    found += [Verdict(TAKEN, recording_taken(t.label, owner), DuplicateRecordingError, k)
              for k, t in enumerate(takes)
              if (owner := next((owners[h] for h in hashes(t) if h in owners), None)) and not _refused(found, k)]
    return found


def repeated(takes: Sequence[UtteranceRow], stored: Sequence[UtteranceRow], name: str | None) -> list[Verdict]:
    """The takes whose bytes came before: among ``name``'s stored recordings, or as an earlier take
    (the one rule the cohort keeps too)."""
    ours = {h: u.label for u in stored for h in hashes(u)}
    seen: dict[str, str] = {}
    found = []
    for k, take in enumerate(takes):
        mine = next((ours[h] for h in hashes(take) if h in ours), None)
        earlier = next((seen[h] for h in hashes(take) if h in seen), None)
        if mine is not None:
            found.append(Verdict(REPEATED, f"{take.label} is already enrolled for {name} (as {mine}); "
                                 "nothing was added: give each recording once.", DuplicateRecordingError, k))
        elif earlier is not None:
            found.append(Verdict(REPEATED, f"{take.label} is the same recording as {earlier}; "
                                 "give each once.", DuplicateRecordingError, k))
        else:
            seen.update(dict.fromkeys(hashes(take), take.label))
    return found


def hashes(row: UtteranceRow) -> list[str]:
    """What tells a recording again: its file's SHA-256 and what it sounds like (the same audio in
    another file; None for recordings stored before voicebank kept it)."""
    return [h for h in (row.sha256, row.content_sha256) if h]


def _leave_one_out(rows: Sequence[UtteranceRow]) -> np.ndarray:
    if len(rows) < 2:
        return np.zeros(0)
    return scoring.leave_one_out(in_one_channel([u.embedding for u in rows], [u.channel for u in rows],
                                                [u.telephone for u in rows]))


def _unlike(label: str, take: int | None, name: str | None, score: float, threshold: float) -> Verdict:
    return Verdict(INCONSISTENT, f"{label} does not sound like the other recordings{f' of {name}' if name else ''} "
                   f"(cosine {score:.3f} against them, consistency threshold {threshold:.3f}). Check that it is the "
                   "same person and a clean recording, or enroll anyway with --allow-inconsistent.",
                   InconsistentRecordingError, take)


def _voice(name: str | None, other: str, score: float, threshold: float, strict: bool) -> Verdict:
    message = (f"{f'the voice of {name}' if name else 'this voice'} already matches {other} (cosine {score:.3f} "
               f"between the voiceprints, duplicate threshold {threshold:.3f}): the same person enrolled twice?")
    return Verdict(VOICE, message + (" Refused (strict)." if strict else ""), DuplicateVoiceError, blocking=strict)


def _twin(rows: Sequence[UtteranceRow], nearest: Nearest, threshold: float) -> tuple[str, float] | None:
    """The enrolled speaker the voice of ``rows`` would be taken for, with the cosine, if any.

    Voiceprint against voiceprint averages out each recording's noise on both sides: it separates
    the same person enrolled twice from two people better than any single recording does
    (docs/calibration.md, Enrollment checks)."""
    if not rows:
        return None
    wide, telephone, has = speaker_prints([u.embedding for u in rows], [u.channel for u in rows],
                                          [u.telephone for u in rows])
    found = nearest(telephone, TELEPHONE) if has == TELEPHONE else nearest(wide, WIDEBAND)
    return found if found is not None and scoring.accept(found[1], threshold) else None


def _refused(found: Sequence[Verdict], take: int) -> bool:
    return any(v.take == take and v.blocking for v in found)
