"""Finding or creating a bank's settings row, its model, and its index file (used by ``VoiceBank.open``)."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from . import validate
from .store import schema
from .embedding import DEFAULT_MODEL, MARGIN_OFFSET, Embedder, default_threshold, enrollment_checks, load_embedder
from .errors import BankNotFoundError
from .store import BankRow, Store, sqlite_path

log = logging.getLogger(__name__)


def public(url: str) -> str:
    """The URL with any password hidden, for messages (the query too: it may hold ?password=)."""
    return make_url(url).set(query={}).render_as_string(hide_password=True)


def embedder_for(model: str | os.PathLike | Embedder, device: str | None) -> Embedder:
    return model if not isinstance(model, (str, os.PathLike)) else load_embedder(str(model), device)


def read_bank(store: Store, url: str) -> BankRow:
    schema.check(store.engine, public(url))
    with store.read() as session:
        bank = session.get(BankRow, 1)
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
    schema.upgrade(store.engine)
    bank = BankRow(
        id=1,
        uid=str(uuid.uuid4()),
        model_source=embedder.source,
        model_id=model_id,
        dimension=dimension,
        threshold=start,
        identify_threshold=validate.threshold(start + (MARGIN_OFFSET if identify_rule == "margin" else 0.0), "cosine",
                                              identify_rule),
        identify_rule=identify_rule,
        consistency_threshold=consistency,
        duplicate_threshold=duplicate,
        score="cosine",
        cohort_top_n=100,
        index_kind=validate.index_kind(index_kind),
        change_seq=0,
    )
    try:
        with store.write() as session:
            session.add(bank)
    except IntegrityError:  # another process created it first
        return read_bank(store, url)
    log.info("created a voicebank in %s with %s", public(url), embedder.source)
    return bank


def index_path(given: str | os.PathLike | None, url: str, bank_uid: str) -> Path | None:
    """Beside a SQLite file; else under VOICEBANK_CACHE (default ~/.cache/voicebank); None in memory."""
    if given is not None:
        return Path(given)
    db_file = sqlite_path(url)
    if db_file is not None:
        return db_file.with_name(db_file.name + ".faiss")
    if url.startswith("sqlite"):
        return None
    cache = os.environ.get("VOICEBANK_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "voicebank"
    return Path(cache) / f"{bank_uid}.faiss"
