"""Enrolling many people at once from embeddings made elsewhere: ``bank.bulk``, ``voicebank import FILE.npz``.

The file (``embeddings_file``: its layout, and every check of it) is read and checked in full
against the bank's model before anything is stored; then it is read again, a block of rows at a
time, and stored in batches, each one transaction (``store.repository_bulk``). So memory holds one
block and one batch whatever the file's size, a process killed at any point leaves whole batches,
and the same import run again skips the names already enrolled and stores the rest: no one twice,
no one lost.

An imported person's embeddings are kept as utterances without a recording (no hash, duration,
speech or channel), L2-normalized; the voiceprint is their normalized mean, as enrollment makes
it. The checks that need audio (speech, consistency, a voice already enrolled) are not run: the
embeddings are taken as given. Nothing is embedded through the telephone channel either, so such
a person has no telephone voiceprint, as a bank enrolled before voicebank measured channels: a
telephone call is decided against the wideband voiceprints, saying so (``channel.NO_TELEPHONE``),
until recordings are added (``voicebank add``).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Iterator

from . import thresholds
from .embeddings_file import EmbeddingsFile
from .encoding import Progress
from .errors import InvalidInputError
from .services import Services
from .store.repository_bulk import NewSpeaker, add_speakers, refresh_statistics

log = logging.getLogger(__name__)

BATCH_SIZE = 1000  # speakers per transaction: a kill loses at most this many to store again


@dataclass(frozen=True)
class ImportReport:
    """What an import did: of the ``speakers`` the file names, how many were ``enrolled`` now,
    ``skipped`` (already enrolled) and ``failed`` ((name, why): a look-alike of an enrolled name),
    in how many ``batches`` (transactions that stored someone), in ``seconds``."""

    source: str
    model: str
    speakers: int
    embeddings: int
    enrolled: int
    skipped: int
    failed: tuple[tuple[str, str], ...]
    batches: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "model": self.model, "speakers": self.speakers, "embeddings": self.embeddings,
                "enrolled": self.enrolled, "skipped": self.skipped, "failed": len(self.failed),
                "failures": [{"name": name, "message": why} for name, why in self.failed],
                "batches": self.batches, "seconds": round(self.seconds, 3)}


class BulkImport:
    """Enroll many people from a file of embeddings (``bank.bulk``): :meth:`read` checks one,
    :meth:`import_embeddings` stores it."""

    def __init__(self, services: Services):
        self._services = services

    def read(self, path: str | os.PathLike, progress: Progress | None = None) -> EmbeddingsFile:
        """Open the ``.npz`` file at ``path`` (layout: :mod:`voicebank.embeddings_file`) and check all of it,
        storing nothing: made by this bank's model (:class:`~voicebank.errors.ModelMismatchError`
        if not), every name, metadata and embedding usable (:class:`~voicebank.errors.InvalidInputError`
        naming the first that is not). ``progress``: (speakers checked, speakers, file name)."""
        embeddings = EmbeddingsFile(path)
        embeddings.refuse_other_model(self._services.encoder.model_id, self._services.encoder.dimension)
        embeddings.check(progress)
        return embeddings

    def import_embeddings(self, source: str | os.PathLike | EmbeddingsFile, batch_size: int = BATCH_SIZE,
                          progress: Progress | None = None) -> ImportReport:
        """Enroll everyone in ``source`` (a path, checked first as :meth:`read` does, or what it
        returned), ``batch_size`` speakers per transaction; those already enrolled are skipped.
        ``progress``: (speakers done, speakers, file name) after each batch. The index takes the new
        voiceprints in at the end (and is saved); a process killed before then leaves it behind SQL,
        and the next one to open the bank catches it up."""
        store = self._services.repository.store
        store.refuse_changes("import speakers")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"the batch size is a whole number of speakers, at least 1, not {batch_size!r}.")
        started = time.monotonic()
        embeddings = source if isinstance(source, EmbeddingsFile) else self.read(source)
        embeddings.refuse_other_model(self._services.encoder.model_id, self._services.encoder.dimension)
        enrolled = skipped = batches = done = 0
        failed: list[tuple[str, str]] = []
        measured = present = self._services.repository.count()  # the table's size when last ANALYZEd
        for batch in _batches(embeddings, batch_size):
            stored = add_speakers(store, batch)
            if present + enrolled + len(stored.enrolled) >= 2 * max(measured, 1):  # the table doubled
                measured = present + enrolled + len(stored.enrolled)
                refresh_statistics(store)
            enrolled, skipped = enrolled + len(stored.enrolled), skipped + len(stored.skipped)
            failed += stored.failed
            batches, done = batches + bool(stored.enrolled), done + len(batch)
            log.debug("import of %s: %d of %d speakers done", embeddings.label, done, embeddings.count)
            if progress:
                progress(done, embeddings.count, embeddings.label)
        if enrolled:
            thresholds.recalibrate(self._services)  # logs, never raises: the import stands
            self._services.search.catch_up()
            self._services.search.save()
        report = ImportReport(str(embeddings.path), embeddings.model, embeddings.count, embeddings.rows, enrolled,
                              skipped, tuple(failed), batches, time.monotonic() - started)
        log.info("imported %s: %d enrolled, %d already enrolled, %d failed, in %.1f s", embeddings.label, enrolled,
                 skipped, len(failed), report.seconds)
        return report


def _batches(embeddings: EmbeddingsFile, size: int) -> Iterator[list[NewSpeaker]]:
    batch: list[NewSpeaker] = []
    for s in embeddings.speakers():
        labels = [f"{embeddings.label}[{s.first_row + j}]" for j in range(len(s.embeddings))]  # where each came from
        batch.append(NewSpeaker(s.name, s.skeleton, s.metadata, s.embeddings, labels))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
