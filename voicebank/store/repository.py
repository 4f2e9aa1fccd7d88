"""Every query on speakers, their recordings, the cohort and the bank's settings row.

The repository speaks in rows and numpy arrays; what a row means (thresholds, checks, decisions)
is decided above it. Vectors come back as read-only (dimension,) float32 arrays (``models.Vector``).
Writes that change voiceprints run inside :meth:`Store.change`, so each is recorded in the change
log in the same transaction (see ``engine.py``).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np
from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from ..channel import TELEPHONE, WIDEBAND, speaker_prints
from ..confusable import skeleton
from ..errors import DuplicateRecordingError, DuplicateSpeakerError, SpeakerNotFoundError
from .engine import Store, record
from .models import BankRow, CohortRow, SpeakerRow, UtteranceRow, utcnow


def name_taken(name: str) -> str:
    return f"a speaker named {name!r} is already enrolled: choose another name, or add recordings to it (`voicebank add`)."


def looks_like(name: str, twin: str) -> str:
    return (f"{name!r} looks like the enrolled {twin!r} (they differ only in look-alike characters, "
            f"e.g. a Cyrillic 'а' for a Latin 'a'): choose a name that cannot be mistaken for it.")


def no_such_speaker(name: str) -> str:
    return f"no speaker named {name!r} is enrolled (`voicebank list` shows who is)."


def recording_taken(label: str, owner: str) -> str:
    """The rule "one recording, one person" broken, in the words both enrollment and its dry run use."""
    return (f"{label} is already enrolled for {owner} (the same recording: the same file, or the same audio in another one); a recording belongs to "
            "one person.")


class Repository:
    """The bank's rows in one database. Safe to share between threads (each call is one transaction)."""

    def __init__(self, store: Store):
        self.store = store

    # -- the settings row ----------------------------------------------------------------------
    def settings(self) -> BankRow | None:
        """The bank's settings row (detached: reading it later issues no query); None in a database
        whose schema is made but whose bank is not."""
        with self.store.read() as session:
            return session.get(BankRow, 1)

    def create_settings(self, row: BankRow) -> None:
        """Store a new bank's settings row; ``IntegrityError`` if another process stored one first."""
        with self.store.edit("create a bank") as session:
            session.add(row)

    @contextmanager
    def editing_settings(self) -> Iterator[BankRow]:
        """The settings row inside a write transaction: what the block changes is committed on exit."""
        with self.store.edit("change the bank's settings") as session:
            yield session.get(BankRow, 1)

    # -- speakers: reading ---------------------------------------------------------------------
    def speaker_id(self, name: str) -> int | None:
        with self.store.read() as session:
            return session.execute(select(SpeakerRow.id).where(SpeakerRow.name == name)).scalar_one_or_none()

    def look_alike(self, name: str) -> str | None:
        """The enrolled name that ``name`` differs from only in look-alike characters, if any (``name``
        itself, when enrolled, is not its own look-alike)."""
        with self.store.read() as session:
            return session.execute(select(SpeakerRow.name).where(SpeakerRow.skeleton == skeleton(name),
                                                                 SpeakerRow.name != name).limit(1)).scalar()

    def has_speakers(self) -> bool:
        with self.store.read() as session:  # not COUNT(*): enrollment must not cost O(bank size)
            return session.execute(select(SpeakerRow.id).limit(1)).first() is not None

    def count(self) -> int:
        with self.store.read() as session:
            return session.execute(select(func.count()).select_from(SpeakerRow)).scalar_one()

    def speakers(self) -> list[SpeakerRow]:
        """Every speaker with its utterances loaded, by name."""
        with self.store.read() as session:
            return list(session.execute(
                select(SpeakerRow).order_by(SpeakerRow.name).options(selectinload(SpeakerRow.utterances))
            ).scalars().all())

    def speaker(self, name: str) -> SpeakerRow:
        """One speaker with its utterances loaded; :class:`SpeakerNotFoundError` if there is none."""
        with self.store.read() as session:
            row = session.execute(
                select(SpeakerRow).where(SpeakerRow.name == name).options(selectinload(SpeakerRow.utterances))
            ).scalar_one_or_none()
        if row is None:
            raise SpeakerNotFoundError(no_such_speaker(name))
        return row

    def voiceprint(self, name: str, channel: str = WIDEBAND) -> tuple[int, np.ndarray | None]:
        """(speaker id, (dimension,) voiceprint in ``channel``) of ``name``; the voiceprint is None
        when the speaker has none in that channel (see :meth:`voiceprints`)."""
        with self.store.read() as session:
            row = session.execute(select(SpeakerRow.id, *_print_columns(channel)).where(SpeakerRow.name == name)).first()
        if row is None:
            raise SpeakerNotFoundError(no_such_speaker(name))
        return row[0], _in_channel(row[1], row[2], channel)

    def voiceprints(self, ids: np.ndarray | Sequence[int], channel: str = WIDEBAND) -> dict[int, tuple[str, np.ndarray]]:
        """{speaker id: (name, voiceprint in ``channel``)} of those ``ids`` that exist and have a
        voiceprint in that channel (negative ids are skipped). Wideband: none for a speaker enrolled
        over the telephone only; telephone: none for a speaker enrolled before voicebank knew channels."""
        wanted = [int(i) for i in ids if i >= 0]
        with self.store.read() as session:
            rows = session.execute(
                select(SpeakerRow.id, SpeakerRow.name, *_print_columns(channel)).where(SpeakerRow.id.in_(wanted))
            ).all()
        found = {r[0]: (r[1], _in_channel(r[2], r[3], channel)) for r in rows}
        return {i: (name, vector) for i, (name, vector) in found.items() if vector is not None}

    def lacking(self, channel: str) -> int:
        """How many speakers have no voiceprint in ``channel`` (counted up to 1,000: it answers
        "are there any?" cheaply, through the index on ``channels``)."""
        without = TELEPHONE if channel == WIDEBAND else WIDEBAND
        with self.store.read() as session:
            return session.execute(select(func.count()).select_from(
                select(SpeakerRow.id).where(SpeakerRow.channels == without).limit(1000).subquery())).scalar_one()

    def all_voiceprints(self, channel: str = WIDEBAND) -> list[tuple[int, str, np.ndarray]]:
        """(speaker id, name, voiceprint) of every speaker, as the index of ``channel`` holds them:
        wideband, every speaker's ``voiceprint`` column; telephone, those with a telephone voiceprint."""
        column = SpeakerRow.telephone if channel == TELEPHONE else SpeakerRow.voiceprint
        with self.store.read() as session:
            return [tuple(r) for r in session.execute(select(SpeakerRow.id, SpeakerRow.name, column)
                                                      .where(column.is_not(None)))]

    def utterance_embeddings(self, channel: str = WIDEBAND) -> list[tuple[int, str, np.ndarray]]:
        """(speaker id, name, (n, dimension) utterance embeddings in ``channel``) of every speaker
        that has some, by id: wideband, the recordings that came through a wideband channel as they
        came; telephone, every recording through the telephone channel."""
        grouped: dict[tuple[int, str], list[np.ndarray]] = {}
        for speaker_id, name, vector in self._utterances(channel, None):
            grouped.setdefault((speaker_id, name), []).append(vector)
        return [(sid, name, np.stack(vectors)) for (sid, name), vectors in grouped.items()]

    def utterance_speech(self, channel: str = WIDEBAND) -> dict[int, np.ndarray]:
        """{speaker id: seconds of speech of each recording}, the recordings and their order as
        :meth:`utterance_embeddings` gives them; NaN for an embedding imported without its recording."""
        grouped: dict[int, list[float]] = {}
        for speaker_id, _, seconds in self._utterances(channel, UtteranceRow.speech_s):
            grouped.setdefault(speaker_id, []).append(np.nan if seconds is None else float(seconds))
        return {sid: np.array(seconds) for sid, seconds in grouped.items()}

    def _utterances(self, channel: str, what: Any) -> list[Any]:
        """(speaker id, name, ``what`` or the embedding in ``channel``) of every recording in that channel."""
        column = UtteranceRow.telephone if channel == TELEPHONE else UtteranceRow.embedding
        query = select(SpeakerRow.id, SpeakerRow.name, column if what is None else what).join(UtteranceRow)
        query = query.where(column.is_not(None)) if channel == TELEPHONE else query.where(
            or_(UtteranceRow.channel.is_(None), UtteranceRow.channel != TELEPHONE))
        with self.store.read() as session:
            return list(session.execute(query.order_by(SpeakerRow.id, UtteranceRow.id)).all())

    def owners(self, hashes: Sequence[str], other_than: int | None) -> dict[str, str]:
        """{hash: speaker name} for those recordings already enrolled for another speaker, found by
        their file's SHA-256 or by what they sound like (``content_sha256``)."""
        with self.store.read() as session:
            rows = session.execute(_taken_by(hashes, other_than, UtteranceRow.sha256, UtteranceRow.content_sha256,
                                             SpeakerRow.name)).all()
        return {h: name for sha, content, name in rows for h in (sha, content) if h in hashes}

    def shared_recordings(self) -> list[tuple[str, list[str]]]:
        """(label, speaker names) of each recording enrolled for more than one speaker: only in a bank
        where two processes enrolled it at once before voicebank checked it inside the write
        (migration 0007)."""
        with self.store.read() as session:
            shared = (select(UtteranceRow.sha256).where(UtteranceRow.sha256.is_not(None))  # imported: none
                      .group_by(UtteranceRow.sha256).having(func.count() > 1))
            rows = session.execute(select(UtteranceRow.sha256, UtteranceRow.label, SpeakerRow.name).join(SpeakerRow)
                                   .where(UtteranceRow.sha256.in_(shared)).order_by(UtteranceRow.sha256)).all()
        found: dict[str, tuple[str, list[str]]] = {}
        for sha, label, name in rows:
            found.setdefault(sha, (label, []))[1].append(name)
        return list(found.values())

    @staticmethod
    def _refuse_taken(session, name: str, utterances: Sequence[UtteranceRow], speaker_id: int | None = None) -> None:
        """The rule "one recording, one person", checked under the write lock: the check before it
        (``enrollment_rules``) cannot see a process that enrolls the same file at the same moment."""
        given = {h: u.label for u in utterances for h in (u.sha256, u.content_sha256) if h}
        taken = session.execute(_taken_by(list(given), speaker_id, UtteranceRow.sha256, UtteranceRow.content_sha256,
                                          SpeakerRow.name)).first()
        if taken is not None:
            label = given.get(taken[0]) or given[taken[1]]
            raise DuplicateRecordingError(f"{recording_taken(label, taken[2])} Nothing was stored for {name}.")

    # -- speakers: writing (each in a change transaction) --------------------------------------
    def add_speaker(self, name: str, metadata: dict[str, Any], utterances: list[UtteranceRow]) -> None:
        """Store a new speaker and its voiceprint. A taken name, or one that differs from an enrolled
        name only in look-alike characters, is a :class:`DuplicateSpeakerError`, checked under the
        write lock so two processes cannot both take it."""
        try:
            with self.store.change("enroll") as (session, seq):  # writers are serialized here: no race
                if session.execute(select(SpeakerRow.id).where(SpeakerRow.name == name)).first():
                    raise DuplicateSpeakerError(name_taken(name))
                shape = skeleton(name)
                twin = session.execute(select(SpeakerRow.name).where(SpeakerRow.skeleton == shape)).scalar()
                if twin is not None:
                    raise DuplicateSpeakerError(looks_like(name, twin))
                self._refuse_taken(session, name, utterances)
                row = SpeakerRow(name=name, skeleton=shape, meta=metadata, utterances=utterances)
                _set_voiceprints(row, utterances)
                session.add(row)
                session.flush()
                record(session, seq, row.id, "upsert")
        except IntegrityError as exc:  # the checks above hold the write lock: the database's own rules, a last line
            if "sha256" in str(exc.orig):
                raise DuplicateRecordingError(f"a recording given is already enrolled for another speaker; nothing "
                                              f"was stored for {name}.") from exc
            raise DuplicateSpeakerError(name_taken(name)) from exc

    def extend_speaker(self, name: str, known: set[str], utterances: list[UtteranceRow]) -> None:
        """Add ``utterances`` to ``name`` and recompute its voiceprint from all of them, provided its
        recordings are still exactly ``known`` (their SHA-256s) when the write lock is taken."""
        with self.store.change("add recordings") as (session, seq):
            row = session.execute(
                select(SpeakerRow).where(SpeakerRow.name == name).options(selectinload(SpeakerRow.utterances))
            ).scalar_one_or_none()
            if row is None or {u.sha256 for u in row.utterances} != known:
                raise SpeakerNotFoundError(f"{name} was removed or changed while the recordings were embedded; try again.")
            self._refuse_taken(session, name, utterances, row.id)
            row.utterances.extend(utterances)
            _set_voiceprints(row, row.utterances)
            row.updated_at = utcnow()
            record(session, seq, row.id, "upsert")

    def remove_speaker(self, name: str) -> None:
        with self.store.change("remove a speaker") as (session, seq):
            row = session.execute(select(SpeakerRow).where(SpeakerRow.name == name)).scalar_one_or_none()
            if row is None:
                raise SpeakerNotFoundError(no_such_speaker(name))
            record(session, seq, row.id, "delete")
            session.delete(row)

    # -- the cohort ----------------------------------------------------------------------------
    def add_cohort(self, rows: Sequence[CohortRow]) -> None:
        """Add cohort recordings; those already in the cohort (same SHA-256) are skipped, except that
        one added before voicebank measured channels gets its channel and telephone embedding now."""
        with self.store.edit("change the cohort") as session:
            present = {r.sha256: r for r in session.execute(select(CohortRow)).scalars()}
            for row in rows:
                old = present.get(row.sha256)
                if old is None:
                    session.add(row)
                elif old.telephone is None and row.telephone is not None:
                    old.channel, old.telephone = row.channel, row.telephone

    def cohort_size(self) -> int:
        with self.store.read() as session:
            return session.execute(select(func.count()).select_from(CohortRow)).scalar_one()

    def cohort_embeddings(self, dimension: int, channel: str = WIDEBAND) -> np.ndarray:
        """(m, dimension) float32 embeddings of the cohort in ``channel`` (as ``utterance_embeddings``),
        in the order they were added."""
        column = CohortRow.telephone if channel == TELEPHONE else CohortRow.embedding
        query = select(column).where(column.is_not(None)) if channel == TELEPHONE else select(column).where(
            or_(CohortRow.channel.is_(None), CohortRow.channel != TELEPHONE))
        with self.store.read() as session:
            vectors = session.execute(query.order_by(CohortRow.id)).scalars().all()
        return np.stack(vectors) if vectors else np.zeros((0, dimension), dtype=np.float32)

    def clear_cohort(self) -> None:
        with self.store.edit("change the cohort") as session:
            session.execute(delete(CohortRow))


def _print_columns(channel: str) -> tuple[Any, Any]:
    return (SpeakerRow.telephone, SpeakerRow.channels) if channel == TELEPHONE else (SpeakerRow.voiceprint,
                                                                                    SpeakerRow.channels)


def _in_channel(vector: np.ndarray | None, channels: str, channel: str) -> np.ndarray | None:
    """A speaker's voiceprint as read for ``channel``: none in wideband for a telephone-only speaker
    (its ``voiceprint`` column holds its telephone voiceprint, for the index)."""
    return None if channel == WIDEBAND and channels == TELEPHONE else vector


def _set_voiceprints(row: SpeakerRow, utterances: Sequence[UtteranceRow]) -> None:
    row.voiceprint, row.telephone, row.channels = speaker_prints(
        [u.embedding for u in utterances], [u.channel for u in utterances], [u.telephone for u in utterances])


def _taken_by(hashes: Sequence[str], other_than: int | None, *columns: Any) -> Any:
    """``columns`` of the recordings of speakers other than ``other_than`` whose file's or content's
    SHA-256 is one of ``hashes``."""
    hashes = list(hashes)
    return (select(*columns).join(SpeakerRow)
            .where(or_(UtteranceRow.sha256.in_(hashes), UtteranceRow.content_sha256.in_(hashes)),
                   SpeakerRow.id != (other_than or -1)))
