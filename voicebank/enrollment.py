"""Enrollment: recordings checked and embedded before anything is written, then stored.

Embedding is the costly step (seconds a recording on a busy CPU), so what can be refused without
it is refused first: before any audio is decoded, the name (its rules, taken, or a look-alike of
an enrolled one) and a recording whose file was given twice or is already enrolled (its SHA-256);
as each is decoded, one unusable or whose audio is already enrolled (its content hash), and the
recordings not yet embedded stay so. Then every recording is embedded; then the enrollment rules
(``enrollment_rules``: each recording given once and enrolled for one person, the recordings alike,
enough speech in all, and, a warning or in strict mode an error, the voice not already enrolled as
someone else) are read against the bank, and the first one broken is raised. The cohort (people
who are not enrolled, for AS-norm) is filled the same way.

Like every use case, each function takes what it uses as its first argument (:class:`Services`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from functools import partial
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from . import enrollment_rules as rules
from . import validate
from .audio import Audio, Recording, describe, file_sha256
from .encoding import OnError, Progress, both_channels
from .errors import DuplicateSpeakerError, EmptyBankError, InvalidInputError, VoiceBankError
from .pipeline import Embedded
from .results import ENROLLED, FAILED, SKIPPED, Enrollment, EnrollmentOutcome, RecordingInfo, Speaker
from .services import Services
from .store import CohortRow, SpeakerRow, UtteranceRow, as_utc
from .store.repository import looks_like, name_taken

log = logging.getLogger(__name__)


def enroll(services: Services, name: str, recordings: Sequence[Recording], metadata: dict[str, Any] | None,
           progress: Progress | None, allow_inconsistent: bool, strict: bool) -> Speaker:
    """Enroll a new speaker (see :meth:`voicebank.VoiceBank.enroll`)."""
    name, metadata = validate.new_name(name), validate.metadata(metadata)
    if services.repository.speaker_id(name) is not None:
        raise DuplicateSpeakerError(name_taken(name))
    refuse_look_alike(services, name)
    recordings = recording_list(recordings)
    refuse_known(services, name, recordings, [], None)
    utterances = prepare(services, recordings, progress, partial(refuse_heard, services, name, [], None))
    return _store(services, name, metadata, utterances, allow_inconsistent, strict)


def add_recordings(services: Services, name: str, recordings: Sequence[Recording], progress: Progress | None,
                   allow_inconsistent: bool, strict: bool) -> Speaker:
    """Add recordings to an enrolled speaker (see :meth:`voicebank.VoiceBank.add_recordings`)."""
    name = validate.name(name)
    existing = list(services.repository.speaker(name).utterances)
    recordings = recording_list(recordings)
    refuse_known(services, name, recordings, existing, existing[0].speaker_id)
    utterances = prepare(services, recordings, progress,
                         partial(refuse_heard, services, name, existing, existing[0].speaker_id))
    warnings = check(services, name, utterances, existing, existing[0].speaker_id, allow_inconsistent, strict)
    services.repository.extend_speaker(name, {u.sha256 for u in existing}, utterances)
    return replace(to_speaker(services.repository.speaker(name)), warnings=tuple(warnings))


def add_cohort(services: Services, recordings: Sequence[Recording], progress: Progress | None,
               on_error: OnError | None) -> int:
    """Add recordings of people who are NOT enrolled to the cohort; returns its size."""
    rows = [row(item) for item in services.encoder.usable(recording_list(recordings), progress, on_error, both_channels)]
    repeats = rules.repeated(rows, [], None)
    if repeats:
        raise repeats[0].exception()
    services.repository.add_cohort([CohortRow(embedding=u.embedding, channel=u.channel, telephone=u.telephone,
                                              sha256=u.sha256, label=u.label) for u in rows])
    return services.repository.cohort_size()


def refuse_look_alike(services: Services, name: str) -> None:
    """A new ``name`` that differs from an enrolled one only in look-alike characters is refused now;
    the store asks again under its write lock, for a process that enrolls the twin meanwhile."""
    twin = services.repository.look_alike(name)
    if twin is not None:
        raise DuplicateSpeakerError(looks_like(name, twin))


def refuse_known(services: Services, name: str, recordings: Sequence[Recording], stored: Sequence[UtteranceRow],
                 speaker_id: int | None) -> None:
    """Raise, before any audio is decoded or embedded, for a recording whose file is given twice or
    already enrolled (for ``name``, whose ``stored`` recordings these are, or anyone else), told by
    the file's SHA-256 in the rules' own words. The same audio in another file needs decoding: the
    rules find it by its content hash after."""
    takes = [UtteranceRow(sha256=digest, label=validate.printable(describe(r))[-1024:])
             for r in recordings if (digest := file_sha256(r)) is not None]
    if not takes:
        return
    found = rules.known(takes, stored, name, services.repository.owners([t.sha256 for t in takes], speaker_id))
    if found:
        raise found[0].exception()


def refuse_heard(services: Services, name: str, stored: Sequence[UtteranceRow], speaker_id: int | None,
                 audio: Audio) -> None:
    """Raise, once ``audio`` is decoded and before it is embedded, when what it sounds like
    (``content_sha256``) is already enrolled: the same audio in another file or format."""
    take = UtteranceRow(content_sha256=audio.content_sha256, label=validate.printable(audio.label)[-1024:])
    found = rules.known([take], stored, name, services.repository.owners([take.content_sha256], speaker_id))
    if found:
        raise found[0].exception()


def to_speaker(row: SpeakerRow) -> Speaker:
    """A speaker row, its utterances loaded, as the facade returns it."""
    recordings = tuple(RecordingInfo(u.label, u.sha256, u.duration_s, u.speech_s, as_utc(u.created_at))
                       for u in row.utterances)
    return Speaker(row.id, row.name, dict(row.meta or {}), recordings, as_utc(row.created_at), as_utc(row.updated_at))


def _store(services: Services, name: str, metadata: dict[str, Any], utterances: list[UtteranceRow],
           allow_inconsistent: bool, strict: bool) -> Speaker:
    warnings = check(services, name, utterances, [], None, allow_inconsistent, strict)
    services.repository.add_speaker(name, metadata, utterances)
    log.info("enrolled %s from %d recordings", name, len(utterances))
    return replace(to_speaker(services.repository.speaker(name)), warnings=tuple(warnings))


def prepare(services: Services, recordings: Sequence[Recording], progress: Progress | None,
            admit: Callable[[Audio], None] | None = None) -> list[UtteranceRow]:
    """Decode, check (with ``admit`` too, before embedding) and embed every recording; the first
    unusable one is raised at once, the recordings not yet embedded left so."""
    recordings = recording_list(recordings)
    rows = []
    with services.encoder.stream(recordings, both_channels, admit, fail_fast=True) as stream:
        for item in stream:
            if item.error is not None:
                raise item.error
            rows.append(row(item))  # not the item: its decoded audio (7.7 MB a 2-minute take) goes now
            if progress:
                progress(item.index + 1, len(recordings), item.audio.label)
    return rows


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


def row(item: Embedded) -> UtteranceRow:
    """One embedded recording as the row it would be stored as (what the enrollment rules read)."""
    audio = item.audio
    heard = audio.channel.channel if audio.channel is not None else None
    return UtteranceRow(embedding=item.embedding, channel=heard,
                        telephone=item.views[1] if len(item.views) > 1 else None, sha256=audio.sha256,
                        content_sha256=audio.content_sha256,
                        label=validate.printable(audio.label)[-1024:], duration_s=audio.duration,
                        speech_s=audio.speech_seconds)


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
            try:  # before the model: what can be refused without embedding anything
                refuse_look_alike(services, name)
                refuse_known(services, name, recordings, [], None)
                todo.append((k, name, metadata, recordings))
            except VoiceBankError as exc:
                outcomes[k] = EnrollmentOutcome(name, FAILED, message=str(exc))
        names.add(name)
    flat = [r for _, _, _, recordings in todo for r in recordings]
    owner = [j for j, (_, _, _, recordings) in enumerate(todo) for _ in recordings]
    if not flat:  # nothing new: a re-run of the same import need not load the model
        return [o for o in outcomes if o is not None]
    rows: list[UtteranceRow] = []  # the speaker's so far: rows, not items, whose decoded audio would pile up
    error: VoiceBankError | None = None  # the speaker's first unusable recording
    with services.encoder.stream(flat, both_channels) as stream:
        for item in stream:
            if item.error is None and error is None:
                rows.append(row(item))
            error = error or item.error
            if progress:
                progress(item.index + 1, len(flat), item.audio.label if item.audio else "")
            j = owner[item.index]
            if item.index + 1 < len(flat) and owner[item.index + 1] == j:
                continue  # this speaker has more recordings to come
            k, name, metadata, _ = todo[j]
            try:
                if error is not None:
                    raise error
                speaker = _store(services, name, metadata, rows, allow_inconsistent, strict)
                outcomes[k] = EnrollmentOutcome(name, ENROLLED, speaker=speaker)
            except VoiceBankError as exc:
                outcomes[k] = EnrollmentOutcome(name, FAILED, message=str(exc))
            rows, error = [], None
    return [o for o in outcomes if o is not None]


def check(services: Services, name: str, takes: Sequence[UtteranceRow], stored: Sequence[UtteranceRow],
          speaker_id: int | None, allow_inconsistent: bool, strict: bool) -> list[str]:
    """Raise the first enrollment rule ``takes`` break (``enrollment_rules``); returns the warnings."""
    found = verdicts(services, name, takes, stored, speaker_id, allow_inconsistent, strict)
    refusal = found.refusal()
    if refusal is not None:
        raise refusal.exception()
    for warning in found.warnings():
        log.warning("%s", warning)
    return found.warnings()


def verdicts(services: Services, name: str | None, takes: Sequence[UtteranceRow], stored: Sequence[UtteranceRow],
             speaker_id: int | None, allow_inconsistent: bool = False, strict: bool = False) -> rules.Verdicts:
    """The enrollment rules' verdicts on ``takes`` (with ``stored``, the recordings of the enrolled
    ``speaker_id``), read against this bank: its speech limit, its checks' thresholds
    (``services.checks()``, not the decision thresholds), who owns which recording, who sounds alike."""
    owners = services.repository.owners([h for t in takes for h in rules.hashes(t)], speaker_id)
    return rules.evaluate(takes, stored, name, owners, partial(nearest, services, other_than=speaker_id),
                          services.encoder.limits.min_enroll_speech_seconds, services.checks(), allow_inconsistent, strict)


def nearest(services: Services, vector: np.ndarray, channel: str, other_than: int | None) -> tuple[str, float] | None:
    """(name, cosine) of the enrolled voiceprint in ``channel`` nearest to ``vector``, rescored from
    SQL (the index only proposes), ``other_than`` left out; None when no one else has one there."""
    if not services.repository.has_speakers():
        return None
    try:
        _, ids, _ = services.search.search(vector[None, :], 2, channel=channel)
    except EmptyBankError:  # no one has a voiceprint in this channel yet (all enrolled before channels)
        return None
    others = services.repository.voiceprints([int(i) for i in ids[0] if i >= 0 and i != other_than], channel)
    if not others:
        return None
    other, found = max(others.values(), key=lambda each: float(vector @ each[1]))
    return other, float(vector @ found)
