"""Many new speakers in one transaction: what an import of embeddings stores, a batch at a time.

A batch is one change transaction (one sequence number, a change row per speaker stored), so a
process killed at any point leaves whole batches behind: each is stored entirely or not at all.
A name already enrolled is skipped, so the same import run again stores exactly what an earlier
run did not; a name that differs from an enrolled one only in look-alike characters is refused,
that speaker alone. Both are decided under the write lock, as ``Repository.add_speaker`` does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from sqlalchemy import insert, select, text
from sqlalchemy.exc import DBAPIError

from ..channel import speaker_prints
from .engine import Store
from .models import ChangeRow, SpeakerRow, UtteranceRow, utcnow
from .repository import looks_like

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewSpeaker:
    """A speaker to store from embeddings alone: (k, dimension) float32 L2-normalized ``embeddings``,
    a ``labels`` entry for each (where it came from), no recording behind any."""

    name: str
    skeleton: str  # confusable.skeleton(name), as the caller computed it checking the names
    metadata: dict[str, Any]
    embeddings: np.ndarray
    labels: Sequence[str]


@dataclass
class Stored:
    """What one batch did: names stored, names skipped (already enrolled), (name, why) refused."""

    enrolled: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def add_speakers(store: Store, speakers: Sequence[NewSpeaker]) -> Stored:
    """Store ``speakers`` (names valid and distinct, as the caller checked) in one change
    transaction, skipping those already enrolled. Their utterances keep each embedding with its
    label and nothing else (no hash, duration or channel); the voiceprints are made as enrollment
    makes them (``channel.speaker_prints``). Rows go in as bulk INSERTs, not ORM objects: a
    thousand speakers' objects cost several times the statements themselves."""
    done = Stored()
    names = [s.name for s in speakers]
    with store.read() as session:  # a batch stored before (a re-run) costs one query, no transaction
        present = set(session.execute(select(SpeakerRow.name).where(SpeakerRow.name.in_(names))).scalars())
    if present >= set(names):
        done.skipped = names
        return done
    with store.change("import speakers") as (session, seq):  # writers are serialized here
        present = set(session.execute(select(SpeakerRow.name).where(SpeakerRow.name.in_(names))).scalars())
        owners = dict(session.execute(select(SpeakerRow.skeleton, SpeakerRow.name)
                                      .where(SpeakerRow.skeleton.in_({s.skeleton for s in speakers}))).all())
        new = []
        for speaker in speakers:
            twin = owners.get(speaker.skeleton)
            if speaker.name in present:
                done.skipped.append(speaker.name)
            elif twin is not None and twin != speaker.name:
                done.failed.append((speaker.name, f"{looks_like(speaker.name, twin)} Nothing was stored for it."))
            else:
                owners[speaker.skeleton] = speaker.name
                new.append(speaker)
        if new:
            _insert(session, seq, new)
        done.enrolled = [s.name for s in new]
    return done


def _insert(session, seq: int, speakers: Sequence[NewSpeaker]) -> None:
    now = utcnow()
    rows = []
    for s in speakers:
        voiceprint, telephone, channels = speaker_prints(list(s.embeddings), [None] * len(s.embeddings),
                                                         [None] * len(s.embeddings))
        rows.append({"name": s.name, "skeleton": s.skeleton, "meta": s.metadata, "voiceprint": voiceprint,
                     "telephone": telephone, "channels": channels, "created_at": now, "updated_at": now})
    returning = insert(SpeakerRow).returning(SpeakerRow.id, sort_by_parameter_order=True)
    ids = session.execute(returning, rows).scalars().all()
    session.execute(insert(UtteranceRow), [
        {"speaker_id": speaker_id, "embedding": vector, "label": label[-1024:], "created_at": now}
        for speaker_id, s in zip(ids, speakers) for vector, label in zip(s.embeddings, s.labels)])
    session.execute(insert(ChangeRow), [{"seq": seq, "speaker_id": speaker_id, "op": "upsert", "at": now}
                                        for speaker_id in ids])


def refresh_statistics(store: Store) -> None:
    """Have PostgreSQL measure the speakers and utterances tables again (ANALYZE), as after any bulk
    load. Its plans are costed on the tables' last measured size: without it, the plan a statement
    was prepared with while the table was nearly empty is kept as it grows (a sequential scan
    comparing every name with all 1,000 of a batch: 2.5 s per batch at 85,000 people, against a
    few milliseconds through the index). Autovacuum does this in its own time, or not at all where
    it is off. A no-op on SQLite; a failure (no permission) is logged and the import goes on."""
    if store.engine.dialect.name != "postgresql":
        return
    try:
        with store.edit("import speakers") as session:
            session.execute(text("ANALYZE speakers, utterances"))
    except DBAPIError as exc:
        log.warning("could not ANALYZE the speakers table during the import (%s); it goes on, maybe slower",
                    str(exc.orig).strip().splitlines()[0])
