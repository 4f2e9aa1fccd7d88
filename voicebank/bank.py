"""The VoiceBank facade: the one object a backend embeds, and the one module that knows every layer.

Data flows one way: recording -> audio -> embedding -> SQL (source of truth) -> FAISS -> decision.
Writes go to SQL only; the index follows SQL through the change sequence (see ``cache.py``).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from . import audio as audio_mod
from . import schema, scoring, validate
from .audio import Audio, AudioLimits, Recording
from .cache import IndexCache
from .embedding import Embedder, default_threshold, embed_recordings, load_embedder
from .embedding.base import DEFAULT_WINDOW_SECONDS
from .errors import (
    BankNotFoundError,
    DuplicateRecordingError,
    DuplicateSpeakerError,
    EmptyBankError,
    InvalidInputError,
    ModelMismatchError,
    SpeakerNotFoundError,
)
from .index import IndexInfo
from .results import CheckReport, Candidate, Identification, RecordingInfo, Speaker, Verification
from .store import AuditRow, BankRow, SpeakerRow, Store, UtteranceRow, record, resolve_url, sqlite_path, utcnow
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
        self._bank_uid = bank.uid
        self.model_id = bank.model_id
        self.model_source = bank.model_source
        self.dimension = bank.dimension
        self._embedder = embedder
        self._model_checked = False
        self._model_lock = threading.Lock()
        self.limits = limits
        self.window_seconds = window_seconds
        self._cache = IndexCache(store, IndexInfo(bank.uid, bank.model_id, bank.dimension), index_path)

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        db: str | os.PathLike | None = None,
        model: str | Embedder | None = None,
        *,
        create: bool = False,
        threshold: float | None = None,
        device: str | None = None,
        index_path: str | os.PathLike | None = None,
        limits: AudioLimits = AudioLimits(),
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
    ) -> "VoiceBank":
        """Open the bank in ``db`` (a SQLAlchemy URL or a SQLite file path; default ``VOICEBANK_DB``
        or ./voicebank.db).

        ``model``: a hub id, a local model directory or an :class:`Embedder`; default ``VOICEBANK_MODEL``,
        else the model the bank was created with. With ``create=True`` a missing bank is created
        (schema migrated to the newest revision, ``threshold`` or the model's default stored).
        The model is loaded only when something must be embedded.
        """
        url = resolve_url(db)
        db_file = sqlite_path(url)
        if not create and db_file is not None and not db_file.exists():
            raise BankNotFoundError(f"no voicebank at {db_file}: create one with `voicebank init`.")
        store = Store(url)
        try:
            bank = _read_bank(store, url) if not create else _read_or_create_bank(store, url, model, device, threshold)
            embedder = _embedder_for(model or os.environ.get("VOICEBANK_MODEL") or bank.model_source, device)
            return cls(store, bank, embedder, _index_path(index_path, url, bank.uid), limits, window_seconds)
        except BaseException:
            store.dispose()
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
        """The decision threshold on the cosine score, as stored in the database."""
        with self._store.read() as session:
            return session.execute(select(BankRow.threshold)).scalar_one()

    def set_threshold(self, value: float) -> None:
        value = validate.threshold(value)
        with self._store.write() as session:
            session.get(BankRow, 1).threshold = value
        log.info("threshold set to %.4f", value)

    # -- enrollment ----------------------------------------------------------------------------
    def enroll(
        self,
        name: str,
        recordings: Sequence[Recording],
        metadata: dict[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> Speaker:
        """Enroll a new speaker from one or more recordings.

        Every recording is checked and embedded before anything is written; on any error nothing is
        stored. Raises :class:`DuplicateSpeakerError` if ``name`` is taken.
        """
        name, metadata = validate.name(name), validate.metadata(metadata)
        if self._find(name) is not None:
            raise DuplicateSpeakerError(_taken(name))
        utterances = self._embed_for_enrollment(recordings, progress)
        try:
            with self._store.change() as (session, seq):
                if session.execute(select(SpeakerRow.id).where(SpeakerRow.name == name)).first():
                    raise DuplicateSpeakerError(_taken(name))
                row = SpeakerRow(name=name, meta=metadata, utterances=utterances, voiceprint=_voiceprint_bytes(utterances))
                session.add(row)
                session.flush()
                record(session, seq, row.id, "upsert")
        except IntegrityError as exc:  # another process won a race for the name
            raise DuplicateSpeakerError(_taken(name)) from exc
        log.info("enrolled %s from %d recordings", name, len(utterances))
        return self.speaker(name)

    def add_recordings(self, name: str, recordings: Sequence[Recording], progress: Progress | None = None) -> Speaker:
        """Add recordings to an enrolled speaker and recompute the voiceprint from all of them."""
        name = validate.name(name)
        if self._find(name) is None:
            raise SpeakerNotFoundError(_unknown(name))
        utterances = self._embed_for_enrollment(recordings, progress)
        with self._store.change() as (session, seq):
            row = session.execute(
                select(SpeakerRow).where(SpeakerRow.name == name).options(selectinload(SpeakerRow.utterances))
            ).scalar_one_or_none()
            if row is None:
                raise SpeakerNotFoundError(_unknown(name))
            known = {u.sha256: u.label for u in row.utterances}
            for utterance in utterances:
                if utterance.sha256 in known:
                    raise DuplicateRecordingError(
                        f"{utterance.label} is already enrolled for {name} (as {known[utterance.sha256]}); nothing was added."
                    )
            row.utterances.extend(utterances)
            row.voiceprint = _voiceprint_bytes(row.utterances)
            row.updated_at = utcnow()
            record(session, seq, row.id, "upsert")
        return self.speaker(name)

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

    # -- decisions -----------------------------------------------------------------------------
    def identify(self, recording: Recording, top_k: int = 5, client: str | None = None) -> Identification:
        """Who is speaking? The ``top_k`` closest voiceprints, and a match only if the best score
        clears the threshold (open set: an unknown voice gets ``match=None``)."""
        top_k = validate.top_k(top_k)
        audio = self._load(recording)
        embedding = self._embed([audio])[0]
        with self._cache.lock:
            index = self._cache.current()
            if len(index) == 0:
                raise EmptyBankError("the bank has no speakers yet: enroll some first (`voicebank enroll NAME FILE...`).")
            scores, ids = index.search(embedding, top_k)
        names = self._names(ids[0])
        candidates = [Candidate(names[i], float(s)) for s, i in zip(scores[0], ids[0]) if i in names]
        threshold = self.threshold
        match = candidates[0] if candidates and scoring.accept(candidates[0].score, threshold) else None
        self._audit("identify", None, match.name if match else None, candidates[0].score if candidates else None,
                    threshold, match is not None, audio.sha256, client)
        return Identification(match, candidates, threshold)

    def verify(self, name: str, recording: Recording, client: str | None = None) -> Verification:
        """Is this ``name``? Cosine score of the recording against that speaker's voiceprint."""
        name = validate.name(name)
        with self._store.read() as session:
            stored = session.execute(select(SpeakerRow.voiceprint).where(SpeakerRow.name == name)).scalar_one_or_none()
        if stored is None:
            raise SpeakerNotFoundError(_unknown(name))
        audio = self._load(recording)
        embedding = self._embed([audio])[0]
        score = float(scoring.cosine(embedding, np.frombuffer(stored, dtype=np.float32)))
        threshold = self.threshold
        accepted = scoring.accept(score, threshold)
        self._audit("verify", name, name if accepted else None, score, threshold, accepted, audio.sha256, client)
        return Verification(name, score, threshold, accepted)

    def embed(self, recording: Recording) -> np.ndarray:
        """The (dimension,) float32 L2-normalized embedding of one recording, with this bank's model."""
        return self._embed([self._load(recording)])[0]

    # -- the index -----------------------------------------------------------------------------
    def check(self) -> CheckReport:
        """Compare the FAISS index (as found on disk, then caught up) with SQL, voiceprint by voiceprint."""
        with self._cache.lock:
            self._cache._index = None  # re-read the file, so the report says what was on disk
            index = self._cache.current()
            ids, vectors = index.items()
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
        return CheckReport(len(rows), len(held), status, missing, extra, wrong)

    def reindex(self) -> int:
        """Rebuild the index from SQL and save it; returns the number of voiceprints indexed."""
        return len(self._cache.rebuild())

    def save_index(self) -> None:
        """Write the index cache file now (it is also written on :meth:`close`)."""
        self._cache.save()

    # -- internals -----------------------------------------------------------------------------
    def _load(self, recording: Recording) -> Audio:
        return audio_mod.load(recording, self._embedder.sample_rate, self.limits)

    def _embed(self, audios: Sequence[Audio]) -> np.ndarray:
        self._check_model()
        return embed_recordings(self._embedder, [a.samples for a in audios], self.window_seconds)

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

    def _embed_for_enrollment(self, recordings: Sequence[Recording], progress: Progress | None) -> list[UtteranceRow]:
        if isinstance(recordings, (str, bytes, os.PathLike, tuple)) or not isinstance(recordings, Iterable):
            raise InvalidInputError("recordings must be a list of recordings (paths, bytes, file objects or arrays).")
        recordings = list(recordings)
        if not recordings:
            raise InvalidInputError("give at least one recording to enroll.")
        rows: list[UtteranceRow] = []
        seen: dict[str, str] = {}
        for done, recording in enumerate(recordings, start=1):
            audio = self._load(recording)
            if audio.sha256 in seen:
                raise DuplicateRecordingError(f"{audio.label} is the same recording as {seen[audio.sha256]}; give each once.")
            seen[audio.sha256] = audio.label
            embedding = self._embed([audio])[0]
            rows.append(UtteranceRow(embedding=embedding.tobytes(), sha256=audio.sha256, label=audio.label[-1024:],
                                     duration_s=audio.duration, speech_s=audio.speech_seconds))
            if progress:
                progress(done, len(recordings), audio.label)
        return rows

    def _names(self, ids: np.ndarray) -> dict[int, str]:
        wanted = [int(i) for i in ids if i >= 0]
        with self._store.read() as session:
            rows = session.execute(select(SpeakerRow.id, SpeakerRow.name).where(SpeakerRow.id.in_(wanted))).all()
        return {r[0]: r[1] for r in rows}

    def _find(self, name: str) -> int | None:
        with self._store.read() as session:
            return session.execute(select(SpeakerRow.id).where(SpeakerRow.name == name)).scalar_one_or_none()

    def _audit(self, operation: str, claimed: str | None, returned: str | None, score: float | None,
               threshold: float, accepted: bool, sha256: str, client: str | None) -> None:
        with self._store.write() as session:
            session.add(AuditRow(operation=operation, claimed=claimed, returned=returned, score=score,
                                 threshold=threshold, accepted=accepted, model_id=self.model_id,
                                 recording_sha256=sha256, client=client))


def _speaker(row: SpeakerRow) -> Speaker:
    recordings = tuple(RecordingInfo(u.label, u.sha256, u.duration_s, u.speech_s, u.created_at) for u in row.utterances)
    return Speaker(row.id, row.name, dict(row.meta or {}), recordings, row.created_at, row.updated_at)


def _voiceprint_bytes(utterances: Sequence[UtteranceRow]) -> bytes:
    return voiceprint(np.stack([np.frombuffer(u.embedding, dtype=np.float32) for u in utterances])).tobytes()


def _taken(name: str) -> str:
    return f"a speaker named {name!r} is already enrolled: choose another name, or add recordings to it (`voicebank add`)."


def _unknown(name: str) -> str:
    return f"no speaker named {name!r} is enrolled (`voicebank list` shows who is)."


def _embedder_for(model: str | Embedder, device: str | None) -> Embedder:
    return model if not isinstance(model, (str, os.PathLike)) else load_embedder(str(model), device)


def _read_bank(store: Store, url: str) -> BankRow:
    schema.check(store.engine, _public(url))
    with store.read() as session:
        bank = session.get(BankRow, 1)
    if bank is None:
        raise BankNotFoundError(f"no voicebank in {_public(url)}: create one with `voicebank init`.")
    return bank


def _read_or_create_bank(store: Store, url: str, model: Any, device: str | None, threshold: float | None) -> BankRow:
    try:
        return _read_bank(store, url)
    except BankNotFoundError:
        pass
    schema.upgrade(store.engine)
    embedder = _embedder_for(model or os.environ.get("VOICEBANK_MODEL") or load_embedder().source, device)
    bank = BankRow(
        id=1,
        uid=str(uuid.uuid4()),
        model_source=embedder.source,
        model_id=embedder.model_id,
        dimension=embedder.dimension,
        threshold=validate.threshold(default_threshold(embedder) if threshold is None else threshold),
        score="cosine",
        change_seq=0,
    )
    try:
        with store.write() as session:
            session.add(bank)
    except IntegrityError:  # another process created it first
        return _read_bank(store, url)
    log.info("created a voicebank in %s with %s", _public(url), embedder.source)
    return bank


def _public(url: str) -> str:
    """The URL with any password hidden, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _index_path(given: str | os.PathLike | None, url: str, bank_uid: str) -> Path | None:
    if given is not None:
        return Path(given)
    db_file = sqlite_path(url)
    if db_file is not None:
        return db_file.with_name(db_file.name + ".faiss")
    if url.startswith("sqlite"):
        return None  # in-memory database: in-memory index
    cache = Path(os.environ.get("VOICEBANK_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "voicebank")
    return cache / f"{bank_uid}.faiss"
