"""Open-set identification rates: how often a known voice is named correctly, and how often an
unknown voice is wrongly named as someone. Pure numpy: importable without torch, SQLAlchemy or FAISS.

Each probe is searched against the whole gallery and keeps its best score. A probe is "named" when
that best score is ``>= threshold`` (the same rule as :func:`voicebank.scoring.accept`). At a
threshold t:

- false alarm rate = #(unknown probes with best >= t) / #unknown probes: someone who never enrolled
  is named as an enrolled speaker;
- correct identification rate = #(known probes whose best match is their own speaker and best >= t)
  / #known probes. Its ceiling, as t falls, is the closed-set rank-1 accuracy.
"""

from __future__ import annotations

import numpy as np


def _inputs(known_best, known_correct, unknown_best) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    known_best = np.asarray(known_best, dtype=np.float64).ravel()
    known_correct = np.asarray(known_correct, dtype=bool).ravel()
    unknown_best = np.asarray(unknown_best, dtype=np.float64).ravel()
    if known_best.size == 0 or unknown_best.size == 0:
        raise ValueError("need at least one known probe and one unknown probe")
    if known_correct.shape != known_best.shape:
        raise ValueError(
            f"known_correct has {known_correct.size} entries for {known_best.size} known probes; "
            "give one bool per known probe"
        )
    return known_best, known_correct, unknown_best


def open_set_curve(
    known_best: np.ndarray, known_correct: np.ndarray, unknown_best: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, false_alarm, correct) at every threshold where one of the two rates changes.

    ``known_best``: (n_known,) best gallery score of each probe from an enrolled speaker;
    ``known_correct``: (n_known,) bool, whether that best match was the probe's own speaker;
    ``unknown_best``: (n_unknown,) best gallery score of each probe from someone not enrolled.
    Scores are cosines (or whatever the bank scores with); rates are fractions in [0, 1].

    The thresholds ascend over the distinct scores of the unknown probes and of the correctly
    matched known probes (other scores change neither rate); one more just above the top score
    (nobody named: both rates 0) is appended. Both rates fall as the threshold rises.
    """
    known_best, known_correct, unknown_best = _inputs(known_best, known_correct, unknown_best)
    hits = np.sort(known_best[known_correct])
    unknown = np.sort(unknown_best)
    thresholds = np.unique(np.concatenate([hits, unknown]))
    thresholds = np.append(thresholds, np.nextafter(thresholds[-1], np.inf))
    # counted, then divided once, so that e.g. 1 in 100 compares equal to 0.01
    false_alarm = (unknown.size - np.searchsorted(unknown, thresholds, side="left")) / unknown.size
    correct = (hits.size - np.searchsorted(hits, thresholds, side="left")) / known_best.size
    return thresholds, false_alarm, correct


def open_set_rates(
    known_best: np.ndarray, known_correct: np.ndarray, unknown_best: np.ndarray, threshold: float
) -> tuple[float, float]:
    """(false_alarm, correct) at one ``threshold``, as in :func:`open_set_curve`: an operating
    point to mark on :func:`voicebank.plots.identification_plot`."""
    known_best, known_correct, unknown_best = _inputs(known_best, known_correct, unknown_best)
    false_alarm = np.count_nonzero(unknown_best >= threshold) / unknown_best.size
    return float(false_alarm), genuine_rates(known_best, known_correct, threshold)[0]


def genuine_rates(known_best: np.ndarray, known_correct: np.ndarray, t: float) -> tuple[float | None, ...]:
    """(correctly identified, matched to the wrong speaker, not identified) among genuine probes at
    ``t``: each probe's decision statistic (``known_best``) and whether its top candidate is its own
    speaker (``known_correct``); Nones when there are no genuine probes."""
    if len(known_best) == 0:
        return None, None, None
    above = np.asarray(known_best) >= t
    correct = np.asarray(known_correct, dtype=bool)
    return float(np.mean(above & correct)), float(np.mean(above & ~correct)), float(np.mean(~above))
