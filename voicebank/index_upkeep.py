"""The candidate index's upkeep, handed out as ``bank.index``: compare it with SQL, rebuild it (as
another kind too), write its cache file, and count the speakers a channel's index lacks.

SQL is the truth and the index a rebuildable cache (``voicebank check``, ``voicebank reindex``).
"""

from __future__ import annotations

from . import settings
from .channel import TELEPHONE, WIDEBAND
from .index.search import compare
from .results import CheckReport
from .services import Services
from .store.replica import public
from .thresholds import Thresholds


class IndexUpkeep:
    """Check, rebuild and save one bank's candidate index (``bank.index``)."""

    def __init__(self, services: Services):
        self._services = services

    @property
    def kind(self) -> str:
        """The index kind every process of this bank uses: flat, hnsw, ivf or pgvector."""
        return self._services.repository.settings().index_kind

    def check(self) -> CheckReport:
        """Compare the index (as found on disk, then caught up) with SQL, voiceprint by voiceprint;
        with the thresholds' warnings, the speakers each channel lacks and recordings enrolled twice."""
        search, repository = self._services.search, self._services.repository
        found = compare(search.contents, repository.all_voiceprints)
        telephone = compare(lambda: search.contents(TELEPHONE), lambda: repository.all_voiceprints(TELEPHONE))
        lacking = {channel: self.lacking(channel) for channel in (TELEPHONE, WIDEBAND)}
        thresholds = Thresholds(self._services)
        return CheckReport(found.in_sql, found.held, found.status, found.missing, found.extra, found.wrong,
                           thresholds.status(found.in_sql), lacking, thresholds.status(found.in_sql, TELEPHONE),
                           telephone.to_dict(), repository.shared_recordings())

    def lacking(self, channel: str) -> int:
        """How many speakers have no voiceprint in ``channel`` (``telephone``: imported from embeddings,
        or enrolled before voicebank measured channels; ``wideband``: enrolled over the telephone
        only), counted up to 1,000."""
        return self._services.repository.lacking(channel)

    def rebuild(self, kind: str | None = None) -> int:
        """Rebuild the index from SQL and save it (``voicebank reindex``), as ``kind`` (flat, hnsw, ivf,
        or pgvector on PostgreSQL) if given, which every process then uses; returns the number of
        voiceprints indexed. Refused when this bank reads a replica (its index follows what the
        replica replays)."""
        repository = self._services.repository
        repository.store.refuse_changes("reindex")
        if kind is not None:
            settings.set_index_kind(repository, kind, self._services.encoder.dimension, public(repository.store.url))
        return self._services.search.reindex(repository.settings().index_kind)

    def save(self) -> None:
        """Write the index cache file now (it is also written when the bank is closed)."""
        self._services.search.save()
