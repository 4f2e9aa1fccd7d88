"""The AS-norm cohort, handed out as ``bank.cohort``: recordings of people who are NOT enrolled,
against whom scores are normalized (``set_score_normalization("asnorm")``), and strangers the
automatic calibration measures unknown voices with."""

from __future__ import annotations

from typing import Sequence

from . import enrollment, thresholds
from .audio import Recording
from .encoding import OnError, Progress
from .services import Services


class Cohort:
    """Add to, count and clear one bank's cohort (``bank.cohort``)."""

    def __init__(self, services: Services):
        self._services = services

    def add(self, recordings: Sequence[Recording], progress: Progress | None = None,
            on_error: OnError | None = None) -> int:
        """Add recordings of people who are NOT enrolled to the AS-norm cohort (those already in it
        are skipped); returns its size. An unusable one raises, or is reported to ``on_error``."""
        self._services.repository.store.refuse_changes("change the cohort")  # before embedding anything
        size = enrollment.add_cohort(self._services, recordings, progress, on_error)
        thresholds.recalibrate(self._services)
        return size

    def size(self) -> int:
        """How many recordings the cohort holds."""
        return self._services.repository.cohort_size()

    def clear(self) -> None:
        """Remove every recording from the cohort."""
        self._services.repository.clear_cohort()
        thresholds.recalibrate(self._services)
