"""Enrollment: recordings checked and embedded before anything is written, then stored.

Every recording is decoded, checked and embedded first; then the speaker's recordings as a whole
must hold enough speech, sound like one another, and (a warning, or an error in strict mode) not
already be identified as another enrolled speaker. The cohort (people who are not enrolled, for
AS-norm) is filled the same way.

Like every use case, each function takes what it uses as its first argument (:class:`Services`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np

from . import scoring, validate
from .audio import Recording
from .channel import TELEPHONE, WIDEBAND, speaker_prints
from .encoding import Encoder, OnError, both_channels
from .errors import (
    DuplicateRecordingError,
    DuplicateSpeakerError,
    DuplicateVoiceError,
    EmptyBankError,
    InconsistentRecordingError,
    InvalidInputError,
    NotEnoughSpeechError,
    VoiceBankError,
)
from .index.search import Search
from .pipeline import Embedded
from .results import ENROLLED, FAILED, SKIPPED, Enrollment, EnrollmentOutcome, RecordingInfo, Speaker
from .store import CohortRow, SpeakerRow, UtteranceRow, as_utc
from .store.repository import Repository, name_taken, recording_taken

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (done, total, label of the recording just done)


class Services(Protocol):
    """What enrollment uses: the rows, the candidate search (for the duplicate-voice check), the
    model over recordings, and the enrollment checks' (consistency, duplicate) cosine thresholds."""

    @property
    def repository(self) -> Repository: ...
    @property
    def search(self) -> Search: ...
    @property
    def encoder(self) -> Encoder: ...
    def checks(self) -> tuple[float, float]: ...


def enroll(services: Services, name: str, recordings: Sequence[Recording], metadata: dict[str, Any] | None,
           progress: Progress | None, allow_inconsistent: bool, strict: bool) -> Speaker:
    """Enroll a new speaker (see :meth:`voicebank.VoiceBank.enroll`)."""
    name, metadata = validate.new_name(name), validate.metadata(metadata)
    if services.repository.speaker_id(name) is not None:
        raise DuplicateSpeakerError(name_taken(name))
    return _store(services, name, metadata, prepare(services, recordings, progress), allow_inconsistent, strict)


def add_recordings(services: Services, name: str, recordings: Sequence[Recording], progress: Progress | None,
                   allow_inconsistent: bool, strict: bool) -> Speaker:
    """Add recordings to an enrolled speaker (see :meth:`voicebank.VoiceBank.add_recordings`)."""
    name = validate.name(name)
    existing = list(services.repository.speaker(name).utterances)
    utterances = prepare(services, recordings, progress)
    known = {u.sha256: u.label for u in existing}
    for utterance in utterances:
        if utterance.sha256 in known:
            raise DuplicateRecordingError(
                f"{utterance.label} is already enrolled for {name} (as {known[utterance.sha256]}); nothing was added."
            )
    warnings = check(services, name, existing + utterances, existing[0].speaker_id, allow_inconsistent, strict)
    services.repository.extend_speaker(name, set(known), utterances)
    return replace(to_speaker(services.repository.speaker(name)), warnings=tuple(warnings))


def add_cohort(services: Services, recordings: Sequence[Recording], progress: Progress | None,
               on_error: OnError | None) -> int:
    """Add recordings of people who are NOT enrolled to the cohort; returns its size."""
    items = list(services.encoder.usable(recording_list(recordings), progress, on_error, both_channels))
    services.repository.add_cohort([CohortRow(embedding=u.embedding, channel=u.channel, telephone=u.telephone,
                                              sha256=u.sha256, label=u.label) for u in utterances(items)])
    return services.repository.cohort_size()


def to_speaker(row: SpeakerRow) -> Speaker:
    """A speaker row, its utterances loaded, as the facade returns it."""
    recordings = tuple(RecordingInfo(u.label, u.sha256, u.duration_s, u.speech_s, as_utc(u.created_at))
                       for u in row.utterances)
    return Speaker(row.id, row.name, dict(row.meta or {}), recordings, as_utc(row.created_at), as_utc(row.updated_at))


def _store(services: Services, name: str, metadata: dict[str, Any], utterances: list[UtteranceRow],
           allow_inconsistent: bool, strict: bool) -> Speaker:
    warnings = check(services, name, utterances, None, allow_inconsistent, strict)
    services.repository.add_speaker(name, metadata, utterances)
    log.info("enrolled %s from %d recordings", name, len(utterances))
    return replace(to_speaker(services.repository.speaker(name)), warnings=tuple(warnings))


def prepare(services: Services, recordings: Sequence[Recording], progress: Progress | None) -> list[UtteranceRow]:
    """Decode, check and embed every recording; refuse the same recording given twice."""
    recordings = recording_list(recordings)
    items = []
    with services.encoder.stream(recordings, both_channels) as stream:
        for item in stream:
            if item.error is not None:
                raise item.error
            items.append(item)
            if progress:
                progress(item.index + 1, len(recordings), item.audio.label)
    return utterances(items)


def recording_list(recordings: Sequence[Recording]) -> list[Recording]:
    """The recordings as a list; one recording given bare (a path, bytes, a (samples, rate) pair)
    is refused, since it would otherwise be read as a list of something else."""
    pair = isinstance(recordings, tuple) and len(recordings) == 2 and isinstance(recordings[1], (int, np.integer))
    if pair or isinstance(recordings, (str, bytes, os.PathLike)) or not isinstance(recordings, Iterable):
        raise InvalidInputError("recordings must be a list of recordings (paths, bytes, file objects or arrays).")
    recordings = list(recordings)
    if not recordings:
        raise InvalidInputError("no recordings were given: give at least one (.wav, .flac, .mp3, ...).")
    return recordings


def utterances(items: Sequence[Embedded]) -> list[UtteranceRow]:
    """One speaker's embedded recordings as rows; the first unusable or repeated recording is an error."""
    rows: list[UtteranceRow] = []
    seen: dict[str, str] = {}
    for item in items:
        if item.error is not None:
            raise item.error
        audio = item.audio
        if audio.sha256 in seen:
            raise DuplicateRecordingError(f"{audio.label} is the same recording as {seen[audio.sha256]}; give each once.")
        seen[audio.sha256] = audio.label
        heard = audio.channel.channel if audio.channel is not None else None
        rows.append(UtteranceRow(embedding=item.embedding, channel=heard,
                                 telephone=item.views[1] if len(item.views) > 1 else None, sha256=audio.sha256,
                                 label=validate.printable(audio.label)[-1024:], duration_s=audio.duration,
                                 speech_s=audio.speech_seconds))
    return rows


def enroll_many(services: Services, entries: Sequence[Enrollment], progress: Progress | None,
                allow_inconsistent: bool, strict: bool) -> list[EnrollmentOutcome]:
    """Enroll many speakers, all their recordings streamed through one decode/embed pipeline so
    that the model batches across speakers. Each speaker is stored in its own transaction as soon
    as its last recording is embedded; one speaker's bad recording fails only that speaker."""
    outcomes: list[EnrollmentOutcome | None] = [None] * len(entries)
    todo: list[tuple[int, str, dict, list[Recording]]] = []
    names: set[str] = set()
    for k, entry in enumerate(entries):
        try:
            name, metadata = validate.new_name(entry.name), validate.metadata(entry.metadata)
            recordings = recording_list(entry.recordings)
        except VoiceBankError as exc:
            outcomes[k] = EnrollmentOutcome(str(entry.name), FAILED, message=str(exc))
            continue
        if name in names:
            outcomes[k] = EnrollmentOutcome(name, FAILED, message=f"{name} is given more than once; give each speaker once.")
        elif services.repository.speaker_id(name) is not None:
            outcomes[k] = EnrollmentOutcome(name, SKIPPED, message=f"{name} is already enrolled; nothing was changed.")
        else:
            todo.append((k, name, metadata, recordings))
        names.add(name)
    flat = [r for _, _, _, recordings in todo for r in recordings]
    owner = [j for j, (_, _, _, recordings) in enumerate(todo) for _ in recordings]
    if not flat:  # nothing new: a re-run of the same import need not load the model
        return [o for o in outcomes if o is not None]
    items: list[Embedded] = []
    with services.encoder.stream(flat, both_channels) as stream:
        for item in stream:
            items.append(item)
            if progress:
                progress(item.index + 1, len(flat), item.audio.label if item.audio else "")
            j = owner[item.index]
            if item.index + 1 < len(flat) and owner[item.index + 1] == j:
                continue  # this speaker has more recordings to come
            k, name, metadata, _ = todo[j]
            try:
                speaker = _store(services, name, metadata, utterances(items), allow_inconsistent, strict)
                outcomes[k] = EnrollmentOutcome(name, ENROLLED, speaker=speaker)
            except VoiceBankError as exc:
                outcomes[k] = EnrollmentOutcome(name, FAILED, message=str(exc))
            items = []
    return [o for o in outcomes if o is not None]


def check(services: Services, name: str, utterances: Sequence[UtteranceRow], speaker_id: int | None,
          allow_inconsistent: bool, strict: bool) -> list[str]:
    """Refuse too little speech and inconsistent recordings; warn of (or refuse) a voice that
    already matches another speaker. Returns the warnings.

    Both voice checks score by cosine against thresholds of their own (``services.checks()``),
    not the decision thresholds: a recording against the voiceprint of the speaker's other
    recordings, and the new voiceprint against the nearest enrolled one."""
    limits = services.encoder.limits
    speech = sum(u.speech_s for u in utterances)
    if speech < limits.min_enroll_speech_seconds:
        raise NotEnoughSpeechError(
            f"{name}: the recordings hold {speech:.1f} s of speech in all; enrollment needs at least "
            f"{limits.min_enroll_speech_seconds:g} s. Add more recordings."
        )
    owners = services.repository.owners([u.sha256 for u in utterances], speaker_id)
    for u in utterances:  # a recording belongs to one person
        if u.sha256 in owners:
            raise DuplicateRecordingError(recording_taken(u.label, owners[u.sha256], name))
    consistency, duplicate = services.checks()
    vectors = in_one_channel([u.embedding for u in utterances], [u.channel for u in utterances],
                             [u.telephone for u in utterances])
    if len(vectors) >= 2 and not allow_inconsistent:
        scores = scoring.leave_one_out(vectors)
        worst = int(np.argmin(scores))
        if not scoring.accept(scores[worst], consistency):
            raise InconsistentRecordingError(
                f"{utterances[worst].label} does not sound like the other recordings of {name} (cosine "
                f"{scores[worst]:.3f} against them, consistency threshold {consistency:.3f}). Check that it is the "
                "same person and a clean recording, or enroll anyway with --allow-inconsistent."
            )
    if not services.repository.has_speakers():
        return []
    # Would this voice be taken for someone already enrolled? The new voiceprint against the
    # nearest other one, rescored from SQL (the index only proposes). Voiceprint against voiceprint
    # averages out each recording's noise on both sides: it separates the same person enrolled
    # twice from two people better than any single recording does (docs/calibration.md, Enrollment checks).
    wide, telephone, has = speaker_prints([u.embedding for u in utterances], [u.channel for u in utterances],
                                          [u.telephone for u in utterances])
    channel = TELEPHONE if has == TELEPHONE else WIDEBAND
    new_print = telephone if channel == TELEPHONE else wide
    try:
        _, ids, _ = services.search.search(new_print[None, :], 2, channel=channel)
    except EmptyBankError:  # no one has a voiceprint in this channel yet (all enrolled before channels)
        return []
    others = services.repository.voiceprints([int(i) for i in ids[0] if i >= 0 and i != speaker_id], channel)
    if not others:
        return []
    other, other_print = max(others.values(), key=lambda found: float(new_print @ found[1]))
    score = float(new_print @ other_print)
    if not scoring.accept(score, duplicate):
        return []
    message = (f"the voice of {name} already matches {other} (cosine {score:.3f} between the voiceprints, duplicate "
               f"threshold {duplicate:.3f}): the same person enrolled twice?")
    if strict:
        raise DuplicateVoiceError(message + " Refused (strict).")
    log.warning("%s", message)
    return [message]


def in_one_channel(embeddings: Sequence[np.ndarray], channels: Sequence[str | None],
                   telephones: Sequence[np.ndarray | None]) -> np.ndarray:
    """One speaker's recordings' embeddings to compare with one another (the consistency check):
    as they came when all came through a wideband channel, else all through the telephone line
    (where they can be compared)."""
    if any(c == TELEPHONE for c in channels) and all(t is not None for t in telephones):
        return np.stack(telephones)
    return np.stack(embeddings)
