"""The bank's thresholds and their calibration, handed out as ``bank.thresholds``.

Each threshold is stored with what it means (an :class:`~voicebank.calibration.OperatingPoint`:
purpose, channel, target rate, score kind, gallery size when set); :mod:`voicebank.settings` reads
and edits that row, :mod:`voicebank.evaluation` measures new points on the bank's own recordings.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from . import calibration, evaluation, settings
from .channel import WIDEBAND
from .encoding import Progress
from .errors import VoiceBankError
from .policy import default_threshold
from .services import Services

log = logging.getLogger(__name__)


class Thresholds:
    """Read, set and measure the thresholds of one bank (``bank.thresholds``)."""

    def __init__(self, services: Services):
        self._services = services
        self._repository = services.repository

    @property
    def verify(self) -> float:
        """The verification (1:1) threshold on the bank's score, as stored."""
        return self._repository.settings().threshold

    @property
    def identify(self) -> float:
        """The identification (1:N open set) threshold, as stored."""
        return self._repository.settings().identify_threshold

    @property
    def identify_rule(self) -> str:
        """What that threshold applies to: ``best`` score, or ``margin`` (:func:`calibration.decide`)."""
        return self._repository.settings().identify_rule

    @property
    def score_kind(self) -> str:
        """``cosine`` or ``asnorm``: what scores and the thresholds mean in this bank."""
        return self._repository.settings().score

    def operating_points(self, channel: str = WIDEBAND) -> dict[str, calibration.OperatingPoint]:
        """The two thresholds of ``channel`` and what each means: ``{"verify": ..., "identify": ...}``."""
        return settings.operating_points(self._repository.settings(), channel)

    def set(self, value: float, purpose: str | None = None, channel: str | None = WIDEBAND) -> None:
        """Set a threshold by hand: ``purpose`` ``"verify"``, ``"identify"``, or None for both; in
        ``channel`` (``wideband`` or ``telephone``; None: both)."""
        settings.set_threshold(self._repository, value, purpose, channel)

    def set_operating_point(self, point: calibration.OperatingPoint) -> None:
        """Store a calibrated threshold with what it means (see :mod:`voicebank.calibration`)."""
        settings.set_operating_point(self._repository, point)

    @property
    def enrollment_checks(self) -> tuple[float, float]:
        """The (consistency, duplicate voice) cosine thresholds of the enrollment checks, set when
        the bank was made (fixed offsets from its starting threshold; ``policy.CHECK_OFFSETS``)."""
        return self._services.checks()

    def set_enrollment_checks(self, consistency: float | None = None, duplicate: float | None = None,
                              *, reset: bool = False) -> tuple[float, float]:
        """Set the enrollment checks' cosine thresholds (None keeps one as it is; ``reset`` goes
        back to the model's defaults). Returns them as :attr:`enrollment_checks` does."""
        settings.set_checks(self._repository, consistency, duplicate, reset)
        return self.enrollment_checks

    def set_score_normalization(self, kind: str, top_n: int = 100, threshold: float | None = None) -> float:
        """Switch the score to ``cosine`` or ``asnorm`` (top-``top_n`` cohort). The old threshold
        means nothing on the new score, so it is replaced by ``threshold`` or that score's
        starting default; calibrate afterwards. Returns the new threshold."""
        cosine_default = default_threshold(self._services.encoder.embedder)
        return settings.set_score(self._repository, kind, top_n, threshold, cosine_default)

    def calibrate(self, trials: str | os.PathLike | None = None, *, root: str | os.PathLike | None = None,
                  far: float | None = 0.01, unknown_rate: float = 0.01,
                  purposes: tuple[str, ...] = (calibration.VERIFY, calibration.IDENTIFY), rule: str | None = None,
                  progress: Progress | None = None) -> evaluation.Calibration:
        """Measure the thresholds for ``purposes`` on the bank's own recordings, or on the trial
        list ``trials`` (verification only); nothing is stored (see :meth:`store_calibration`)."""
        return evaluation.calibrate_bank(self._services, trials, root=root, far=far, unknown_rate=unknown_rate,
                                         purposes=purposes, rule=rule, progress=progress)

    def store_calibration(self, result: evaluation.Calibration) -> None:
        """Store the thresholds :meth:`calibrate` chose, in every channel it measured."""
        for measured in result.every_channel():
            for point in measured.chosen.values():
                self.set_operating_point(point)

    def status(self, gallery: int | None = None, channel: str = WIDEBAND) -> dict[str, dict[str, Any]]:
        """Each threshold of ``channel`` with what it promises with ``gallery`` speakers (default:
        as many as are enrolled), and for identification whether the bank has outgrown its calibration."""
        gallery = self._repository.count() if gallery is None else gallery
        return {which: {"threshold": point.threshold, **point.status(gallery)}
                for which, point in self.operating_points(channel).items()}

    def reference_set(self):  # -> voicebank.reference.Reference | None
        """The reference set of strangers shipped for this bank's model, or None (:mod:`voicebank.reference`):
        what calibration measures unknown voices with where the bank's own trials are too few."""
        from . import reference

        return reference.for_model(self._services.encoder.model_id)


def recalibrate(services: Services) -> None:
    """Measure the automatic operating points again after a change (``evaluation.auto_calibration``).
    A point set meanwhile by hand or by ``calibrate`` (another process, another thread) is kept;
    a failure here never undoes the change that called it: it is logged."""
    if services.repository.count() > evaluation.AUTO_MAX_SPEAKERS:
        return
    try:
        for point in evaluation.auto_calibration(services):
            settings.set_automatic_point(services.repository, point)
    except VoiceBankError as exc:
        log.warning("automatic calibration skipped: %s", exc)
