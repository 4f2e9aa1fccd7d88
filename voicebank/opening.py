"""Opening a bank: its database, its settings row (found or created), its model and its index
file, with every failure turned into an error that says what to do (used by ``VoiceBank.open``)."""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.exc import ArgumentError, IntegrityError

from . import validate
from .store import replica, schema
from .embedding import DEFAULT_MODEL, Embedder, load_embedder
from .errors import BankNotFoundError, DatabaseError, VoiceBankError
from .index import IndexInfo, factory
from .index.switch import BankSearch
from .policy import default_threshold, enrollment_checks, identify_start
from .store import BankRow, Store, database_error, resolve_url, sqlite_path
from .store.replica import public
from .store.repository import Repository

log = logging.getLogger(__name__)


def open_parts(db: str | os.PathLike | None, model: str | Embedder | None, device: str | None, create: bool,
               exist_ok: bool, threshold: float | None, identify_rule: str, index: str,
               given_index_path: str | os.PathLike | None,
               primary: str | os.PathLike | None = None,
               max_lag: float | None = None) -> tuple[Store, BankRow, Embedder, BankSearch]:
    """The store, the settings row, the embedder and the candidate search of the bank in ``db``
    (see :meth:`voicebank.VoiceBank.open`). With ``create`` a missing bank is created; with
    ``exist_ok`` False as well, an existing one is refused. A bank that could not be created
    leaves no file behind. With ``primary`` (another PostgreSQL database), ``db`` is its read
    replica: the store reads ``db``, writes audit rows to ``primary``, refuses changes, and waits
    up to ``max_lag`` seconds before a decision for ``db`` to replay what ``primary`` acknowledged."""
    url = resolve_url(db)
    primary_url = replica.primary_url(url, resolve_url(primary) if primary else None)
    db_file = sqlite_path(url)
    exists = db_file is not None and _exists_on_disk(db_file)
    if not create and db_file is not None and not exists:
        raise BankNotFoundError(f"no voicebank at {db_file}: create one with `voicebank init`.")
    if exists and not db_file.is_file():
        raise BankNotFoundError(f"{db_file} is {'a folder' if db_file.is_dir() else 'not a regular file'}: "
                                "give the path of a voicebank database file.")
    new_file = db_file is not None and not exists
    try:
        store = Store(url, primary_url, max_lag)
    except (ValueError, ImportError, ArgumentError) as exc:  # a URL its driver cannot parse, or no such driver
        raise unusable_url(url, exc) from exc
    try:
        if create and not exist_ok:
            store.refuse_changes("create a bank")
            if _exists(store, url):
                raise VoiceBankError("a voicebank already exists there; nothing was changed.")
        if create:  # before anything is created: say now what the index kind needs
            factory.refuse_unless_usable(store, index, public(url))
        if create:
            bank = read_or_create_bank(store, url, model, device, threshold, index, identify_rule)
        else:
            bank = read_bank(store, url)
        embedder = embedder_for(model or os.environ.get("VOICEBANK_MODEL") or bank.model_source, device)
        path = index_path(given_index_path, url, bank.uid, replica=primary_url is not None)
        return store, bank, embedder, search_for(store, bank, path)
    except BaseException as exc:
        store.dispose()
        if new_file:  # a bank that could not be created leaves no file behind
            for leftover in (db_file, *(db_file.with_name(db_file.name + s) for s in ("-wal", "-shm", "-journal"))):
                leftover.unlink(missing_ok=True)
        translated = database_error(exc, url) if isinstance(exc, Exception) else exc
        if translated is exc and isinstance(exc, (ValueError, ImportError, ArgumentError)) \
                and not isinstance(exc, VoiceBankError):  # the driver parses its URL on connecting
            translated = unusable_url(url, exc)
        if translated is not exc:
            raise translated from exc
        raise


def _exists_on_disk(path: Path) -> bool:
    """Is there a file (or anything) at ``path``? An error for a path the system cannot look up
    (a name over 255 bytes, a folder on the way that cannot be entered): ``Path.exists`` raises it."""
    try:
        return path.exists()
    except OSError as exc:
        raise DatabaseError(f"cannot use the database file {path}: {exc.strerror or exc}. Check --db.") from exc


def search_for(store: Store, bank: BankRow, path: Path | None) -> BankSearch:
    """The bank's candidate search (:func:`voicebank.index.factory.bank_search`): its FAISS index
    files at ``path`` and beside it, or PostgreSQL itself (pgvector)."""
    info = IndexInfo(bank.uid, bank.model_id, bank.dimension, bank.index_kind)
    return factory.bank_search(store, info, path, public(store.url))


def _exists(store: Store, url: str) -> bool:
    try:
        read_bank(store, url)
    except BankNotFoundError:
        return False
    return True


def unusable_url(url: str, exc: Exception) -> DatabaseError:
    try:
        shown = public(url)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot even parse
        shown = url.split("://", 1)[0] + "://..."
    return DatabaseError(f"cannot use the database {shown}: {exc}. Check --db (a file path, sqlite:///PATH or "
                         "postgresql://user@host/dbname).")


def embedder_for(model: str | os.PathLike | Embedder, device: str | None) -> Embedder:
    return model if not isinstance(model, (str, os.PathLike)) else load_embedder(str(model), device)


def read_bank(store: Store, url: str) -> BankRow:
    schema.check(store.engine, public(url))
    bank = Repository(store).settings()
    if bank is None:
        raise BankNotFoundError(f"no voicebank in {public(url)}: create one with `voicebank init`.")
    return bank


def read_or_create_bank(store: Store, url: str, model: Any, device: str | None, threshold: float | None,
                        index_kind: str = "flat", identify_rule: str = "margin") -> BankRow:
    try:
        return read_bank(store, url)
    except BankNotFoundError:
        pass
    # the model first: a model that cannot be loaded leaves no half-made bank behind
    embedder = embedder_for(model or os.environ.get("VOICEBANK_MODEL") or DEFAULT_MODEL, device)
    model_id, dimension = embedder.model_id, embedder.dimension
    start = validate.threshold(default_threshold(embedder) if threshold is None else threshold)
    identify_rule = validate.identify_rule(identify_rule)
    consistency, duplicate = enrollment_checks(start)
    store.refuse_changes("create a bank")  # before the schema: a replica's process migrates nothing
    schema.upgrade(store.engine)
    bank = BankRow(
        id=1,
        uid=str(uuid.uuid4()),
        model_source=embedder.source,
        model_id=model_id,
        dimension=dimension,
        threshold=start,
        identify_threshold=validate.threshold(identify_start(start, identify_rule), "cosine", identify_rule),
        identify_rule=identify_rule,
        consistency_threshold=consistency,
        duplicate_threshold=duplicate,
        score="cosine",
        cohort_top_n=100,
        index_kind=validate.index_kind(index_kind),
        change_seq=0,
    )
    if threshold is None:
        _measured_defaults(bank)
    try:
        Repository(store).create_settings(bank)
    except IntegrityError:  # another process created it first
        return read_bank(store, url)
    log.info("created a voicebank in %s with %s", public(url), embedder.source)
    return bank


def _measured_defaults(bank: BankRow) -> None:
    """A new bank's thresholds, measured on the model's reference set of strangers where one is
    shipped (:mod:`voicebank.reference`), in every channel, instead of the model's constant; they
    are measured again on the bank's own recordings as it fills (``evaluation.auto_calibration``)."""
    from . import evaluation, reference, settings

    found = reference.for_model(bank.model_id)
    if found is None:
        return
    points = evaluation.reference_points(found, bank.identify_rule)
    for point in points:
        if (point.purpose, point.channel) in settings.COLUMN:  # scan's lives in its stored point alone
            setattr(bank, settings.COLUMN[point.purpose, point.channel], point.threshold)
    bank.operating = {settings.stored_key(p.purpose, p.channel): p.to_dict() for p in points}


def index_path(given: str | os.PathLike | None, url: str, bank_uid: str, replica: bool = False) -> Path | None:
    """Beside a SQLite file; else under VOICEBANK_CACHE (default ~/.cache/voicebank); None in memory.

    A process that reads a read ``replica`` keeps a file of its own per replica URL: the primary's
    processes (or another replica's) on the same host save files at changes this replica may not
    have replayed yet, which it would take for an index ahead of SQL and rebuild."""
    if given is not None:
        return Path(given)
    db_file = sqlite_path(url)
    if db_file is not None:
        return db_file.with_name(db_file.name + ".faiss")
    if url.startswith("sqlite"):
        return None
    cache = os.environ.get("VOICEBANK_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "voicebank"
    if replica:
        return Path(cache) / f"{bank_uid}-replica-{hashlib.sha256(public(url).encode()).hexdigest()[:12]}.faiss"
    return Path(cache) / f"{bank_uid}.faiss"
