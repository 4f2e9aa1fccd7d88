"""The VoiceBank facade: the one object a backend embeds, and the one module that knows every layer.

Data flows one way: recording -> audio -> embedding -> SQL (source of truth) -> FAISS -> decision.
Writes go to SQL only; the index follows SQL through the change sequence (see ``cache.py``).
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import closing
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.exc import ArgumentError, IntegrityError
from sqlalchemy.orm import selectinload

from . import audio as audio_mod
from . import audit as audit_mod
from . import calibration, enrollment, norm, opening, pipeline, scoring, validate
from .audio import Audio, AudioLimits, Recording
from .index.choose import IndexChoice
from .confusable import skeleton
from .embedding import MARGIN_OFFSET, Embedder, default_threshold, embed_recordings, enrollment_checks
from .embedding.base import DEFAULT_WINDOW_SECONDS
from .errors import (
    BankNotFoundError,
    DatabaseError,
    DuplicateRecordingError,
    DuplicateSpeakerError,
    EmptyBankError,
    InvalidInputError,
    ModelMismatchError,
    SpeakerNotFoundError,
    VoiceBankError,
)
from .index import IndexInfo
from .index import pgvector as index_pgvector
from .results import (Candidate, CheckReport, Enrollment, EnrollmentOutcome, Identification, RecordingInfo, Speaker,
                      Verification)
from .store import (BankRow, CohortRow, SpeakerRow, Store, UtteranceRow, as_utc, database_error, record, resolve_url,
                    sqlite_path, utcnow)
from .vectors import voiceprint

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (done, total, label of the recording just done)


class VoiceBank:
    """Enrolled speakers in SQL, searchable through FAISS. Thread-safe; use as a context manager.

    Open with :meth:`open`. Every recording argument may be a path, bytes, a binary file object,
    or a ``(samples, sample_rate)`` pair.
    """

    def __init__(self, store: Store, bank: BankRow, embedder: Embedder, index_path: Path | None,
                 limits: AudioLimits, window_seconds: float):
        self._store = store
        self.model_id = bank.model_id
        self.model_source = bank.model_source
        self.dimension = bank.dimension
        self._embedder = embedder
        self._model_checked = False
        self._model_lock = threading.Lock()
        self.limits = limits
        self.window_seconds = window_seconds
        self._cache = IndexChoice(store, IndexInfo(bank.uid, bank.model_id, bank.dimension, bank.index_kind), index_path,
                                  opening.public(store.url))

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        db: str | os.PathLike | None = None,
        model: str | Embedder | None = None,
        *,
        create: bool = False,
        threshold: float | None = None,
        identify_rule: str = "margin",
        index: str = "flat",
        device: str | None = None,
        index_path: str | os.PathLike | None = None,
        limits: AudioLimits = AudioLimits(),
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
    ) -> "VoiceBank":
        """Open the bank in ``db`` (a SQLAlchemy URL or a SQLite file path; default ``VOICEBANK_DB``
        or ./voicebank.db).

        ``model``: a hub id, a local model directory, ``"resemblyzer"`` or an :class:`Embedder`;
        default ``VOICEBANK_MODEL``, else the model the bank was created with. With ``create=True``
        a missing bank is created (schema migrated to the newest revision, ``threshold`` or the
        model's default stored for both decisions, ``identify_rule`` what identification decides
        on: ``margin`` or ``best``, ``index`` the FAISS index kind: flat, hnsw or ivf). The model is
        loaded only when something must be embedded.
        """
        url = resolve_url(db)
        db_file = sqlite_path(url)
        if not create and db_file is not None and not db_file.exists():
            raise BankNotFoundError(f"no voicebank at {db_file}: create one with `voicebank init`.")
        if db_file is not None and db_file.exists() and not db_file.is_file():
            raise BankNotFoundError(f"{db_file} is {'a folder' if db_file.is_dir() else 'not a regular file'}: "
                                    "give the path of a voicebank database file.")
        new_file = db_file is not None and not db_file.exists()
        try:
            store = Store(url)
        except (ValueError, ImportError, ArgumentError) as exc:  # a URL its driver cannot parse, or no such driver
            raise _unusable_url(url, exc) from exc
        try:
            if create:
                if index == index_pgvector.KIND:  # before anything is created: say now what it needs
                    index_pgvector.refuse_unless_usable(store, opening.public(url))
                bank = opening.read_or_create_bank(store, url, model, device, threshold, index, identify_rule)
            else:
                bank = opening.read_bank(store, url)
            embedder = opening.embedder_for(model or os.environ.get("VOICEBANK_MODEL") or bank.model_source, device)
            return cls(store, bank, embedder, opening.index_path(index_path, url, bank.uid), limits, window_seconds)
        except BaseException as exc:
            store.dispose()
            if new_file:  # a bank that could not be created leaves no file behind
                for leftover in (db_file, *(db_file.with_name(db_file.name + s) for s in ("-wal", "-shm", "-journal"))):
                    leftover.unlink(missing_ok=True)
            translated = database_error(exc, url) if isinstance(exc, Exception) else exc
            if translated is exc and isinstance(exc, (ValueError, ImportError, ArgumentError)) \
                    and not isinstance(exc, VoiceBankError):  # the driver parses its URL on connecting
                translated = _unusable_url(url, exc)
            if translated is not exc:
                raise translated from exc
            raise

    def close(self) -> None:
        """Save the index cache if it changed, and release the database connections."""
        self._cache.save()
        self._store.dispose()

    def __enter__(self) -> "VoiceBank":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- settings ------------------------------------------------------------------------------
    @property
    def threshold(self) -> float:
        """The verification (1:1) threshold on the bank's score, as stored in the database."""
        return self._settings().threshold

    @property
    def identify_threshold(self) -> float:
        """The identification (1:N open set) threshold, as stored in the database."""
        return self._settings().identify_threshold

    @property
    def identify_rule(self) -> str:
        """What the identification threshold applies to: ``best`` (the best score) or ``margin``
        (2 x best - second best; see :func:`voicebank.calibration.decide`)."""
        return self._settings().identify_rule

    @property
    def score_kind(self) -> str:
        """``cosine`` or ``asnorm``: what scores and the thresholds mean in this bank."""
        return self._settings().score

    def operating_points(self) -> dict[str, calibration.OperatingPoint]:
        """The two thresholds and what each means: ``{"verify": ..., "identify": ...}``."""
        return _operating_points(self._settings())

    def set_threshold(self, value: float, purpose: str | None = None) -> None:
        """Set a threshold by hand: ``purpose`` ``"verify"``, ``"identify"``, or None for both."""
        if purpose not in (None, calibration.VERIFY, calibration.IDENTIFY):
            raise InvalidInputError(f"a threshold is for verify or identify (or both), not {purpose!r}.")
        with self._store.write() as session:
            bank = session.get(BankRow, 1)
            points = dict(bank.operating or {})
            for which in (calibration.VERIFY, calibration.IDENTIFY) if purpose is None else (purpose,):
                rule = bank.identify_rule if which == calibration.IDENTIFY else None
                value = validate.threshold(value, bank.score, rule)
                setattr(bank, _COLUMN[which], value)
                points[which] = calibration.OperatingPoint(which, value, bank.score, "manual", None, None, rule=rule).to_dict()
            bank.operating = points
        log.info("%s threshold set to %.4f", purpose or "verify and identify", value)

    def set_operating_point(self, point: calibration.OperatingPoint) -> None:
        """Store a calibrated threshold with what it means (see :mod:`voicebank.calibration`)."""
        with self._store.write() as session:
            bank = session.get(BankRow, 1)
            if point.kind != bank.score:
                raise VoiceBankError(f"that threshold is on the {point.kind} score, but the bank now scores by "
                                     f"{bank.score}; calibrate again.")
            setattr(bank, _COLUMN[point.purpose], validate.threshold(point.threshold, bank.score, point.rule))
            if point.purpose == calibration.IDENTIFY and point.rule:
                bank.identify_rule = point.rule
            bank.operating = {**(bank.operating or {}), point.purpose: point.to_dict()}
        log.info("%s threshold set to %.4f by calibration", point.purpose, point.threshold)

    @property
    def enrollment_checks(self) -> tuple[float, float]:
        """The (consistency, duplicate voice) cosine thresholds of the enrollment checks, set when
        the bank was made (fixed offsets from its starting threshold; ``embedding.CHECK_OFFSETS``)."""
        settings = self._settings()
        consistency, duplicate = enrollment_checks(default_threshold(self._embedder))  # a migrated bank's
        return (consistency if settings.consistency_threshold is None else settings.consistency_threshold,
                duplicate if settings.duplicate_threshold is None else settings.duplicate_threshold)

    def set_enrollment_checks(self, consistency: float | None = None, duplicate: float | None = None,
                              *, reset: bool = False) -> tuple[float, float]:
        """Set the enrollment checks' cosine thresholds (None keeps one as it is; ``reset`` goes
        back to the model's defaults, from its default threshold). Returns them as
        :attr:`enrollment_checks` does."""
        with self._store.write() as session:
            bank = session.get(BankRow, 1)
            if reset:
                bank.consistency_threshold = bank.duplicate_threshold = None
            if consistency is not None:
                bank.consistency_threshold = validate.threshold(consistency)
            if duplicate is not None:
                bank.duplicate_threshold = validate.threshold(duplicate)
        return self.enrollment_checks

    def set_score_normalization(self, kind: str, top_n: int = 100, threshold: float | None = None) -> float:
        """Switch the score to ``cosine`` or ``asnorm`` (top-``top_n`` cohort). The old threshold
        means nothing on the new score, so it is replaced by ``threshold`` or that score's
        starting default; calibrate afterwards. Returns the new threshold."""
        if kind not in norm.KINDS:
            raise InvalidInputError(f"the score is one of {', '.join(norm.KINDS)}, not {kind!r}.")
        if not isinstance(top_n, int) or not norm.MIN_COHORT <= top_n <= 10_000:
            raise InvalidInputError(
                f"the AS-norm cohort top-N is a whole number from {norm.MIN_COHORT} to 10000, not {top_n!r}.")
        with self._store.write() as session:
            bank = session.get(BankRow, 1)
            default = norm.DEFAULT_ASNORM_THRESHOLD if kind == norm.ASNORM else default_threshold(self._embedder)
            bank.score, bank.cohort_top_n = kind, top_n
            bank.threshold = validate.threshold(default if threshold is None else threshold, kind)
            margin = MARGIN_OFFSET if bank.identify_rule == calibration.MARGIN and kind == norm.COSINE else 0.0
            bank.identify_threshold = validate.threshold(bank.threshold + margin, kind, bank.identify_rule)
            bank.operating = None
            return bank.threshold

    # -- enrollment ----------------------------------------------------------------------------
    def enroll(
        self,
        name: str,
        recordings: Sequence[Recording],
        metadata: dict[str, Any] | None = None,
        progress: Progress | None = None,
        *,
        allow_inconsistent: bool = False,
        strict: bool = False,
    ) -> Speaker:
        """Enroll a new speaker from one or more recordings.

        Every recording is checked and embedded before anything is written; on any error nothing is
        stored. Refused: a taken ``name`` (:class:`DuplicateSpeakerError`), less speech in all than
        ``limits.min_enroll_speech_seconds``, and a recording that does not sound like the others
        (:class:`InconsistentRecordingError`, unless ``allow_inconsistent``). A voice that already
        matches another speaker is a warning in ``Speaker.warnings``, or with ``strict`` a
        :class:`DuplicateVoiceError`.
        """
        name, metadata = validate.name(name), validate.metadata(metadata)
        if self._find(name) is not None:
            raise DuplicateSpeakerError(_taken(name))
        utterances = enrollment.prepare(self, recordings, progress)
        return self._store_speaker(name, metadata, utterances, allow_inconsistent, strict)

    def enroll_many(self, speakers: Iterable[Enrollment], progress: Progress | None = None, *,
                    allow_inconsistent: bool = False, strict: bool = False) -> list[EnrollmentOutcome]:
        """Enroll many speakers at once (an organization, a dataset), each as :meth:`enroll` would.

        All recordings go through one pipeline: decoded ahead of the model and batched across
        speakers (this pays where the model is fast, on a GPU; on a CPU it runs about as fast as
        one :meth:`enroll` per speaker). Each speaker is stored in its own transaction as soon as its
        recordings are embedded, so an interruption keeps every speaker already done. A speaker
        that fails a check, or is already enrolled, does not stop the others: each gets an
        :class:`EnrollmentOutcome` (``enrolled``, ``skipped`` or ``failed``), in the given order.
        ``progress`` is called per recording.
        """
        return enrollment.enroll_many(self, list(speakers), progress, allow_inconsistent, strict)

    def _store_speaker(self, name: str, metadata: dict[str, Any], utterances: list[UtteranceRow],
                       allow_inconsistent: bool, strict: bool) -> Speaker:
        warnings = enrollment.check(self, name, utterances, None, allow_inconsistent, strict)
        try:
            with self._store.change() as (session, seq):  # writers are serialized here: no race
                if session.execute(select(SpeakerRow.id).where(SpeakerRow.name == name)).first():
                    raise DuplicateSpeakerError(_taken(name))
                shape = skeleton(name)
                twin = session.execute(select(SpeakerRow.name).where(SpeakerRow.skeleton == shape)).scalar()
                if twin is not None:
                    raise DuplicateSpeakerError(
                        f"{name!r} looks like the enrolled {twin!r} (they differ only in look-alike characters, "
                        f"e.g. a Cyrillic 'а' for a Latin 'a'): choose a name that cannot be mistaken for it.")
                row = SpeakerRow(name=name, skeleton=shape, meta=metadata, utterances=utterances,
                                 voiceprint=_voiceprint_bytes(utterances))
                session.add(row)
                session.flush()
                record(session, seq, row.id, "upsert")
        except IntegrityError as exc:  # another process won a race for the name
            raise DuplicateSpeakerError(_taken(name)) from exc
        log.info("enrolled %s from %d recordings", name, len(utterances))
        return replace(self.speaker(name), warnings=tuple(warnings))

    def add_recordings(self, name: str, recordings: Sequence[Recording], progress: Progress | None = None,
                       *, allow_inconsistent: bool = False, strict: bool = False) -> Speaker:
        """Add recordings to an enrolled speaker and recompute the voiceprint from all of them.
        The same checks as :meth:`enroll` apply to the speaker's recordings taken together."""
        name = validate.name(name)
        existing = self._utterances_of(name)
        utterances = enrollment.prepare(self, recordings, progress)
        known = {u.sha256: u.label for u in existing}
        for utterance in utterances:
            if utterance.sha256 in known:
                raise DuplicateRecordingError(
                    f"{utterance.label} is already enrolled for {name} (as {known[utterance.sha256]}); nothing was added."
                )
        warnings = enrollment.check(self, name, existing + utterances, existing[0].speaker_id, allow_inconsistent, strict)
        with self._store.change() as (session, seq):
            row = session.execute(
                select(SpeakerRow).where(SpeakerRow.name == name).options(selectinload(SpeakerRow.utterances))
            ).scalar_one_or_none()
            if row is None or {u.sha256 for u in row.utterances} != set(known):
                raise SpeakerNotFoundError(f"{name} was removed or changed while the recordings were embedded; try again.")
            row.utterances.extend(utterances)
            row.voiceprint = _voiceprint_bytes(row.utterances)
            row.updated_at = utcnow()
            record(session, seq, row.id, "upsert")
        return replace(self.speaker(name), warnings=tuple(warnings))

    def remove(self, name: str) -> None:
        """Remove a speaker: its voiceprint and every utterance embedding, from SQL and the index."""
        name = validate.name(name)
        with self._store.change() as (session, seq):
            row = session.execute(select(SpeakerRow).where(SpeakerRow.name == name)).scalar_one_or_none()
            if row is None:
                raise SpeakerNotFoundError(_unknown(name))
            record(session, seq, row.id, "delete")
            session.delete(row)
        log.info("removed %s", name)

    # -- the audit trail -----------------------------------------------------------------------
    def audit(self, speaker: str | None = None, since: datetime | None = None, until: datetime | None = None,
              limit: int | None = None) -> list[audit_mod.AuditEntry]:
        """Identification and verification decisions, newest first (``speaker``: claimed or returned)."""
        return audit_mod.entries(self._store, speaker, since, until, limit)

    def purge_audit(self, before: datetime) -> int:
        """Delete decisions older than ``before``; returns how many were deleted."""
        return audit_mod.purge(self._store, before)

    # -- the cohort ----------------------------------------------------------------------------
    def add_cohort(self, recordings: Sequence[Recording], progress: Progress | None = None,
                   on_error: Callable[[int, VoiceBankError], None] | None = None) -> int:
        """Add recordings of people who are NOT enrolled to the AS-norm cohort; returns its size.
        Recordings already in the cohort are skipped. An unusable recording raises its error, or
        with ``on_error`` is reported there (its index, the error) and left out."""
        items = list(self._usable(enrollment.recording_list(recordings), progress, on_error))
        rows = [CohortRow(embedding=u.embedding, sha256=u.sha256, label=u.label) for u in enrollment.utterances(items)]
        with self._store.write() as session:
            present = set(session.execute(select(CohortRow.sha256)).scalars())
            session.add_all(r for r in rows if r.sha256 not in present)
        return self.cohort_size()

    def cohort_size(self) -> int:
        with self._store.read() as session:
            return session.execute(select(func.count()).select_from(CohortRow)).scalar_one()

    def cohort_embeddings(self) -> np.ndarray:
        """(m, dimension) embeddings of the cohort: recordings of people who are not enrolled."""
        with self._store.read() as session:
            blobs = session.execute(select(CohortRow.embedding).order_by(CohortRow.id)).scalars().all()
        return (np.stack([np.frombuffer(b, dtype=np.float32) for b in blobs]) if blobs
                else np.zeros((0, self.dimension), dtype=np.float32))

    def clear_cohort(self) -> None:
        with self._store.write() as session:
            session.execute(delete(CohortRow))

    # -- reading -------------------------------------------------------------------------------
    def speakers(self) -> list[Speaker]:
        """Every enrolled speaker, by name."""
        with self._store.read() as session:
            rows = session.execute(
                select(SpeakerRow).order_by(SpeakerRow.name).options(selectinload(SpeakerRow.utterances))
            ).scalars().all()
            return [_speaker(row) for row in rows]

    def speaker(self, name: str) -> Speaker:
        with self._store.read() as session:
            row = session.execute(
                select(SpeakerRow).where(SpeakerRow.name == validate.name(name)).options(selectinload(SpeakerRow.utterances))
            ).scalar_one_or_none()
            if row is None:
                raise SpeakerNotFoundError(_unknown(name))
            return _speaker(row)

    def __len__(self) -> int:
        with self._store.read() as session:
            return session.execute(select(func.count()).select_from(SpeakerRow)).scalar_one()

    def utterance_embeddings(self) -> list[tuple[int, str, np.ndarray]]:
        """(speaker id, speaker name, (n, dimension) embeddings) of every enrolled speaker."""
        with self._store.read() as session:
            rows = session.execute(
                select(SpeakerRow.id, SpeakerRow.name, UtteranceRow.embedding).join(UtteranceRow).order_by(SpeakerRow.id, UtteranceRow.id)
            ).all()
        grouped: dict[tuple[int, str], list[np.ndarray]] = {}
        for speaker_id, name, blob in rows:
            grouped.setdefault((speaker_id, name), []).append(np.frombuffer(blob, dtype=np.float32))
        return [(sid, name, np.stack(vectors)) for (sid, name), vectors in grouped.items()]

    def voiceprint(self, name: str) -> tuple[int, np.ndarray]:
        """(speaker id, (dimension,) voiceprint) of an enrolled speaker."""
        with self._store.read() as session:
            row = session.execute(select(SpeakerRow.id, SpeakerRow.voiceprint).where(SpeakerRow.name == validate.name(name))).first()
        if row is None:
            raise SpeakerNotFoundError(_unknown(name))
        return row[0], np.frombuffer(row[1], dtype=np.float32)

    # -- decisions -----------------------------------------------------------------------------
    def identify(self, recording: Recording, top_k: int = 5, client: str | None = None) -> Identification:
        """Who is speaking? The ``top_k`` closest voiceprints, and a match only if the best score
        clears the threshold (open set: an unknown voice gets ``match=None``). Audited."""
        top_k = validate.top_k(top_k)
        audio = self._load(recording)
        settings = self._settings()
        return self._identify_audited(audio, self._embed([audio])[0], top_k, settings, _identify_point(settings), client)

    def identify_many(self, recordings: Iterable[Recording], top_k: int = 5, client: str | None = None,
                      progress: Progress | None = None) -> list[Identification | VoiceBankError]:
        """:meth:`identify` for many recordings (decoded ahead of the model and batched), in order.
        A recording that cannot be used does not stop the others: its error is returned in its
        place (as ``asyncio.gather(..., return_exceptions=True)`` does). Audited, each."""
        top_k = validate.top_k(top_k)
        recordings = list(recordings)
        settings = self._settings()
        point = _identify_point(settings)
        out: list[Identification | VoiceBankError] = []
        with self._stream(recordings) as stream:
            for item in stream:
                out.append(item.error if item.error is not None
                           else self._identify_audited(item.audio, item.embedding, top_k, settings, point, client))
                if progress:
                    progress(item.index + 1, len(recordings), item.audio.label if item.audio else "")
        return out

    def _identify_audited(self, audio: Audio, embedding: np.ndarray, top_k: int, settings: BankRow,
                          point: calibration.OperatingPoint, client: str | None) -> Identification:
        result = self._identify(embedding, top_k, settings, point)  # the audited score is what met the threshold
        self._audit("identify", None, result.match.name if result.match else None, result.decision, result.threshold,
                    settings,
                    result.match is not None, audio.sha256, client)
        return result

    def identify_embeddings(self, embeddings: np.ndarray, top_k: int = 5) -> list[Identification]:
        """:meth:`identify` for precomputed (n, dimension) embeddings of this bank's model, e.g.
        the windows of a long recording. Not written to the audit trail."""
        top_k = validate.top_k(top_k)
        embeddings = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dimension or not np.all(np.isfinite(embeddings)):
            raise InvalidInputError(f"embeddings must be finite numbers shaped (n, {self.dimension}) for this bank's "
                                    f"model, not {embeddings.shape}.")
        settings = self._settings()
        point = _identify_point(settings)  # once, not per window
        return [self._identify(e, top_k, settings, point) for e in embeddings]

    def _identify(self, embedding: np.ndarray, top_k: int, settings: BankRow,
                  point: calibration.OperatingPoint) -> Identification:
        ranked, found, gallery = self._candidates(embedding, max(top_k, 2), settings)  # the margin rule needs two
        if settings.score == norm.ASNORM and ranked:
            kept = [i for _, i in ranked]
            vectors = np.stack([found[i][1] for i in kept])
            normed = self.scorer(settings).score(np.repeat(embedding[None, :], len(kept), 0), vectors, kept, kept)
            ranked = sorted(zip(normed.tolist(), kept), key=lambda pair: -pair[0])
        candidates = [Candidate(found[i][0], s) for s, i in ranked]
        threshold, rule = settings.identify_threshold, settings.identify_rule
        decision = (calibration.decide(candidates[0].score, candidates[1].score if len(candidates) > 1 else None, rule)
                    if candidates else None)
        match = candidates[0] if decision is not None and scoring.accept(decision, threshold) else None
        return Identification(match, candidates[:top_k], threshold, point.status(gallery), rule, decision)

    def _candidates(self, embedding: np.ndarray, top_k: int, settings: BankRow
                    ) -> tuple[list[tuple[float, int]], dict[int, tuple[str, np.ndarray]], int]:
        """The index's top-k candidates, rescored as exact cosines against their voiceprints in
        SQL, best first, and how many voiceprints the index holds (the N of 1:N). The index only
        proposes: a stale or tampered index file (a candidate whose score or existence disagrees
        with SQL) is logged, rebuilt from SQL and searched again."""
        for attempt in (1, 2):
            scores, ids, gallery = self._search_sized(embedding[None, :], top_k, settings)
            proposed = [(float(s), int(i)) for s, i in zip(scores[0], ids[0]) if i >= 0]
            found = self._rows_by_id(np.array([i for _, i in proposed], dtype=np.int64))
            exact = {i: float(np.dot(embedding.astype(np.float64), vector)) for i, (_, vector) in found.items()}
            # float32 search against float64 rescoring differ by ~1e-6; another voice's vector by far more
            wrong = [i for s, i in proposed if i not in exact or abs(s - exact[i]) > 1e-4]
            if not wrong or attempt == 2:
                break
            log.warning("the index disagreed with SQL on %d of %d candidates (stale or damaged index file); "
                        "rebuilding it from SQL", len(wrong), len(proposed))
            with self._cache.lock:
                self._cache.rebuild()
        ranked = sorted(((exact[i], i) for _, i in proposed if i in exact), key=lambda pair: -pair[0])
        return ranked, found, gallery

    def verify(self, name: str, recording: Recording, client: str | None = None) -> Verification:
        """Is this ``name``? The recording scored against that speaker's voiceprint."""
        name = validate.name(name)
        speaker_id, stored = self.voiceprint(name)
        audio = self._load(recording)
        embedding = self._embed([audio])[0]
        settings = self._settings()
        score = float(self.scorer(settings).score(embedding, stored, [speaker_id], [speaker_id])[0])
        accepted = scoring.accept(score, settings.threshold)
        self._audit("verify", name, name if accepted else None, score, settings.threshold, settings, accepted,
                    audio.sha256, client)
        return Verification(name, score, settings.threshold, accepted)

    def embed(self, recording: Recording) -> np.ndarray:
        """The (dimension,) float32 L2-normalized embedding of one recording, with this bank's model."""
        return self._embed([self._load(recording)])[0]

    def embed_many(self, recordings: Iterable[Recording], progress: Progress | None = None,
                   on_error: Callable[[int, VoiceBankError], None] | None = None) -> np.ndarray:
        """(n, dimension) embeddings of many recordings, as :meth:`embed` gives them one by one,
        but decoded ahead of the model and batched. The first unusable recording raises its error;
        with ``on_error`` each one is reported there (its index, the error) and its row is NaN."""
        recordings = list(recordings)
        out = np.full((len(recordings), self.dimension), np.nan, dtype=np.float32)
        for item in self._usable(recordings, progress, on_error):
            out[item.index] = item.embedding
        return out

    def _usable(self, recordings: list[Recording], progress: Progress | None,
                on_error: Callable[[int, VoiceBankError], None] | None) -> Iterator[pipeline.Embedded]:
        """The embedded recordings, in order; an unusable one raises its error, or with ``on_error``
        is reported there (its index, the error) and skipped."""
        with self._stream(recordings) as stream:
            for item in stream:
                if item.error is not None and on_error is None:
                    raise item.error
                if item.error is not None:
                    on_error(item.index, item.error)
                if progress:
                    progress(item.index + 1, len(recordings), item.audio.label if item.audio else "")
                if item.error is None:
                    yield item

    @property
    def sample_rate(self) -> int:
        """The model's input rate in Hz (what :meth:`embed_samples` expects)."""
        return self._embedder.sample_rate

    def embed_samples(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """(n, dimension) embeddings of mono float32 waveforms already at :attr:`sample_rate`,
        without the recording checks of :meth:`embed` (the caller has done its own)."""
        self._check_model()
        return embed_recordings(self._embedder, [np.asarray(w, dtype=np.float32) for w in waveforms], self.window_seconds)

    def scorer(self, settings: BankRow | None = None) -> norm.Normalizer:
        """The bank's score function (cosine, or AS-norm against the cohort or the enrolled speakers)."""
        settings = settings or self._settings()
        if settings.score == norm.COSINE:
            return norm.Normalizer(norm.COSINE, 0)
        cohort = self.cohort_embeddings()
        return norm.Normalizer(norm.ASNORM, settings.cohort_top_n, cohort if len(cohort) else None, self._search)

    @property
    def api_keys(self):  # -> voicebank.apikeys.ApiKeys
        """The HTTP API keys stored in this bank's database."""
        from .apikeys import ApiKeys

        return ApiKeys(self._store)

    # -- the index -----------------------------------------------------------------------------
    def check(self) -> CheckReport:
        """Compare the FAISS index (as found on disk, then caught up) with SQL, voiceprint by voiceprint."""
        with self._cache.lock:
            self._cache.forget()  # re-read the file, so the report says what was on disk
            ids, vectors = self._cache.current().items()
            status = self._cache.file_status
        with self._store.read() as session:
            rows = session.execute(select(SpeakerRow.id, SpeakerRow.name, SpeakerRow.voiceprint)).all()
        held = {int(i): v for i, v in zip(ids, vectors)}
        missing, wrong = [], []
        for speaker_id, name, blob in rows:
            if speaker_id not in held:
                missing.append(name)
            elif not np.allclose(held[speaker_id], np.frombuffer(blob, dtype=np.float32), atol=1e-5):
                wrong.append(name)
        extra = sorted(set(held) - {r[0] for r in rows})
        return CheckReport(len(rows), len(held), status, missing, extra, wrong, self.calibration_status(len(rows)))

    def calibration_status(self, gallery: int | None = None) -> dict[str, dict[str, Any]]:
        """Each threshold with what it promises with ``gallery`` speakers (default: as many as
        are enrolled), and for identification whether the bank has outgrown its calibration."""
        gallery = len(self) if gallery is None else gallery
        return {which: {"threshold": point.threshold, **point.status(gallery)}
                for which, point in self.operating_points().items()}

    def reindex(self, kind: str | None = None) -> int:
        """Rebuild the index from SQL and save it, as ``kind`` (flat, hnsw, ivf) if given, which
        every process then uses; returns the number of voiceprints indexed."""
        if kind is not None:
            kind = validate.index_kind(kind)
            if kind == index_pgvector.KIND:
                index_pgvector.refuse_unless_usable(self._store, opening.public(self._store.url))
            with self._store.write() as session:
                if self._store.engine.url.get_backend_name() == "postgresql":  # the column goes with the kind
                    index_pgvector.switch(session, kind, self.dimension)
                session.get(BankRow, 1).index_kind = kind
        self._cache.use_kind(self._settings().index_kind)
        return len(self._cache.rebuild())

    @property
    def index_kind(self) -> str:
        return self._settings().index_kind

    def save_index(self) -> None:
        """Write the index cache file now (it is also written on :meth:`close`)."""
        self._cache.save()

    # -- internals -----------------------------------------------------------------------------
    def _settings(self) -> BankRow:
        with self._store.read() as session:
            return session.get(BankRow, 1)

    def _search(self, queries: np.ndarray, k: int, settings: BankRow | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self._search_sized(queries, k, settings)[:2]

    def _search_sized(self, queries: np.ndarray, k: int, settings: BankRow | None = None
                      ) -> tuple[np.ndarray, np.ndarray, int]:
        """(scores, ids) of the top ``k``, and how many voiceprints the caught-up index holds."""
        with self._cache.lock:
            if settings is not None:  # another process may have switched the index kind (reindex --index)
                self._cache.use_kind(settings.index_kind)
            index = self._cache.current()
            if len(index) == 0:
                raise EmptyBankError("the bank has no speakers yet: enroll some first (`voicebank enroll NAME FILE...`).")
            scores, ids = index.search(queries, k)
            return scores, ids, len(index)

    def _load(self, recording: Recording) -> Audio:
        return audio_mod.load(recording, self._embedder.sample_rate, self.limits)

    def _stream(self, recordings: Iterable[Recording]) -> closing[Iterator[pipeline.Embedded]]:
        """Recordings decoded ahead of the model and embedded in chunks (``pipeline.py``), in order.
        Use as a context manager: leaving it early stops the decoding threads at once."""
        chunk = getattr(self._embedder, "chunk_seconds", pipeline.DEFAULT_CHUNK_SECONDS)
        on_gpu = str(getattr(self._embedder, "device", "cpu")).startswith("cuda")
        return closing(pipeline.embed_stream(recordings, self._load, self.embed_samples, self.sample_rate, chunk,
                                             pipeline.decoders(on_gpu)))

    def _embed(self, audios: Sequence[Audio]) -> np.ndarray:
        return self.embed_samples([a.samples for a in audios])

    def _check_model(self) -> None:
        if self._model_checked:
            return
        with self._model_lock:
            found, dim = self._embedder.model_id, self._embedder.dimension
            if found != self.model_id or dim != self.dimension:
                raise ModelMismatchError(
                    f"this bank was made with the model {self.model_source} ({self.model_id}, {self.dimension}-dim), "
                    f"but {self._embedder.source} ({found}, {dim}-dim) was given. Open it with "
                    f"--model {self.model_source} (or unset VOICEBANK_MODEL), or create a new bank for the other model."
                )
            self._model_checked = True

    def _utterances_of(self, name: str) -> list[UtteranceRow]:
        with self._store.read() as session:
            row = session.execute(
                select(SpeakerRow).where(SpeakerRow.name == name).options(selectinload(SpeakerRow.utterances))
            ).scalar_one_or_none()
            if row is None:
                raise SpeakerNotFoundError(_unknown(name))
            return list(row.utterances)

    def _rows_by_id(self, ids: np.ndarray) -> dict[int, tuple[str, np.ndarray]]:
        wanted = [int(i) for i in ids if i >= 0]
        with self._store.read() as session:
            rows = session.execute(
                select(SpeakerRow.id, SpeakerRow.name, SpeakerRow.voiceprint).where(SpeakerRow.id.in_(wanted))
            ).all()
        return {r[0]: (r[1], np.frombuffer(r[2], dtype=np.float32)) for r in rows}

    def _is_empty(self) -> bool:
        with self._store.read() as session:  # not COUNT(*): enrollment must not cost O(bank size)
            return session.execute(select(SpeakerRow.id).limit(1)).first() is None

    def _owners(self, sha256s: Sequence[str], other_than: int | None) -> dict[str, str]:
        """{sha256: speaker name} for those recordings already enrolled for another speaker."""
        with self._store.read() as session:
            rows = session.execute(
                select(UtteranceRow.sha256, SpeakerRow.name).join(SpeakerRow)
                .where(UtteranceRow.sha256.in_(list(sha256s)), SpeakerRow.id != (other_than or -1))
            ).all()
        return {sha: name for sha, name in rows}

    def _find(self, name: str) -> int | None:
        with self._store.read() as session:
            return session.execute(select(SpeakerRow.id).where(SpeakerRow.name == name)).scalar_one_or_none()

    def _audit(self, operation: str, claimed: str | None, returned: str | None, score: float | None,
               threshold: float, settings: BankRow, accepted: bool, sha256: str, client: str | None) -> None:
        audit_mod.record(self._store, operation=operation, claimed=claimed, returned=returned, score=score,
                         threshold=threshold, score_kind=settings.score, accepted=accepted,
                         model_id=self.model_id, recording_sha256=sha256, client=client)


_COLUMN = {calibration.VERIFY: "threshold", calibration.IDENTIFY: "identify_threshold"}
_POINTS: dict[str, dict[str, calibration.OperatingPoint]] = {}  # parsed operating JSON, by its text


def _identify_point(settings: BankRow) -> calibration.OperatingPoint:
    return _operating_points(settings)[calibration.IDENTIFY]


def _operating_points(settings: BankRow) -> dict[str, calibration.OperatingPoint]:
    """The stored operating points; a threshold with no stored meaning (a new bank's default, or
    one carried over by the migration) is described as ``default``."""
    import json

    key = json.dumps([settings.threshold, settings.identify_threshold, settings.identify_rule, settings.score,
                      settings.operating], sort_keys=True)
    if key not in _POINTS:
        stored = settings.operating or {}
        points = {}
        for which in (calibration.VERIFY, calibration.IDENTIFY):
            value = getattr(settings, _COLUMN[which])
            point = calibration.OperatingPoint.from_dict(stored[which]) if which in stored else None
            rule = settings.identify_rule if which == calibration.IDENTIFY else None
            if point is None or point.threshold != value or point.kind != settings.score or point.rule != rule:
                point = calibration.OperatingPoint(which, value, settings.score, "default", None, None, rule=rule)
            points[which] = point
        if len(_POINTS) > 64:
            _POINTS.clear()
        _POINTS[key] = points
    return _POINTS[key]


def _unusable_url(url: str, exc: Exception) -> DatabaseError:
    try:
        shown = opening.public(url)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot even parse
        shown = url.split("://", 1)[0] + "://..."
    return DatabaseError(f"cannot use the database {shown}: {exc}. Check --db (a file path, sqlite:///PATH or "
                         "postgresql://user@host/dbname).")


def _speaker(row: SpeakerRow) -> Speaker:
    recordings = tuple(RecordingInfo(u.label, u.sha256, u.duration_s, u.speech_s, as_utc(u.created_at))
                       for u in row.utterances)
    return Speaker(row.id, row.name, dict(row.meta or {}), recordings, as_utc(row.created_at), as_utc(row.updated_at))


def _voiceprint_bytes(utterances: Sequence[UtteranceRow]) -> bytes:
    return voiceprint(np.stack([np.frombuffer(u.embedding, dtype=np.float32) for u in utterances])).tobytes()


def _taken(name: str) -> str:
    return f"a speaker named {name!r} is already enrolled: choose another name, or add recordings to it (`voicebank add`)."


def _unknown(name: str) -> str:
    return f"no speaker named {name!r} is enrolled (`voicebank list` shows who is)."
