"""Operating points that know how much speech stands behind a score.

A longer probe is a cleaner picture of its speaker, and so of a stranger too: strangers' scores
against the voiceprints rise with the speech behind them, and a threshold measured on single
recordings lets in more strangers than it promised once the probe is longer (a verification
promise of 1% set on single `speechocean` recordings counted 2.7x of it on probes of two,
4.0x on probes of three: ``python bench/probe_length.py``). So calibration measures each
threshold again on probes of 2 and 3 of the bank's recordings at once (the normalized mean of
their embeddings: how resemblyzer embeds one long recording), by the same method and at the same
rate, and a decision reads its threshold at the speech its probe holds
(:meth:`~voicebank.calibration.OperatingPoint.at`). numpy only; the trials come from ``evaluation``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable

import numpy as np

from .calibration import IDENTIFY, VERIFY, OpenSetTrials, OperatingPoint, RateModel, identification_point, \
    verification_point
from .errors import NotEnoughDataError

log = logging.getLogger(__name__)

# Probes of this many of the bank's recordings, after single ones. Enrollment takes three
# recordings, so three is the longest probe every enrolled person can stand in for.
COMBINED = (2, 3)

Make = Callable[[int, tuple[float | None, float | None]], dict[str, OpenSetTrials]]


def groups(n: int, combine: int) -> list[np.ndarray]:
    """The row numbers of one person's ``n`` recordings, in disjoint runs of ``combine`` (in
    order; a remainder shorter than ``combine`` is left out): one probe each."""
    return [np.arange(i, i + combine) for i in range(0, n - combine + 1, combine)]


def tier_seconds(speech: list[np.ndarray], combine: int) -> float | None:
    """The median speech behind a probe of ``combine`` of a speaker's recordings (each array: one
    speaker's recordings' seconds of speech, in order, taken in :func:`groups`), or None where no
    such probe has a known length."""
    sums = [float(np.sum(s[span])) for s in speech for span in groups(len(s), combine)]
    sums = [v for v in sums if np.isfinite(v)]
    return float(np.median(sums)) if sums else None


def with_lengths(chosen: dict[str, OperatingPoint], make: Make, speech: list[np.ndarray]) -> dict[str, OperatingPoint]:
    """``chosen`` (calibrated on single recordings) with the thresholds of longer probes measured:
    ``make(combine, wanted)`` gives the trials of each purpose with probes of ``combine`` recordings
    (``wanted``: the rates, as ``evaluation.trials_per_purpose`` takes them). A purpose stops at the
    first length whose trials cannot support its rate, or that cannot be made; a longer probe never
    gets a lower threshold than a shorter one (what its strangers' scores do, measured or not).
    Points set for a rate only (not the equal-error rate) get lengths."""
    first = tier_seconds(speech, 1)
    open_ = {w: p for w, p in chosen.items() if w in (VERIFY, IDENTIFY) and p.target is not None}
    if first is None or not open_:
        return chosen
    lengths = {w: [(first, p.threshold, p.counted or 0, p.trials or 0)] for w, p in open_.items()}
    last = first
    for combine in COMBINED:
        seconds = tier_seconds(speech, combine)
        if not open_ or seconds is None or seconds <= last:
            break
        last = seconds
        try:
            data = make(combine, (open_[VERIFY].target if VERIFY in open_ else None,
                                  open_[IDENTIFY].target if IDENTIFY in open_ else None))
        except NotEnoughDataError as exc:
            log.info("no thresholds for probes of %d recordings: %s", combine, exc)
            break
        for which in list(open_):
            point = _point(which, data[which], open_[which])
            if point.asked is not None:  # too few trials for the rate: longer probes keep the last length
                del open_[which]
                continue
            if point.threshold < lengths[which][-1][1]:  # held at the shorter length's: counted there
                point = _counted_at(point, data[which], lengths[which][-1][1])
            lengths[which].append((seconds, point.threshold, point.counted or 0, point.trials or 0))
    return {w: replace(p, lengths=tuple(lengths[w])) if len(lengths.get(w, ())) > 1 else p for w, p in chosen.items()}


def _counted_at(point: OperatingPoint, trials: OpenSetTrials, threshold: float) -> OperatingPoint:
    """``point`` moved to ``threshold``, its errors counted there on its own ``trials``."""
    found = trials.nontarget if point.purpose == VERIFY else trials.unknown_best
    return replace(point, threshold=threshold, counted=int(np.count_nonzero(found >= threshold)))


def _point(which: str, trials: OpenSetTrials, single: OperatingPoint) -> OperatingPoint:
    model = RateModel.fit(trials)
    if which == VERIFY:
        return verification_point(trials, single.target, model)
    return identification_point(trials, single.target, trials.gallery, model)
