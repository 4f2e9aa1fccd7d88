"""Decisions and their measurement. Pure numpy: importable without torch, SQLAlchemy or FAISS.

The score everywhere is the cosine similarity of L2-normalized embeddings, in [-1, 1]; a decision
accepts when ``score >= threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of the rows of ``a`` and ``b`` (broadcast), in [-1, 1]."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = np.sum(a * b, axis=-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.clip(num / np.maximum(den, 1e-12), -1.0, 1.0)


def accept(score: float, threshold: float) -> bool:
    return bool(score >= threshold)


@dataclass(frozen=True)
class ErrorRates:
    """Error rates at one threshold: FAR = impostor trials accepted, FRR = target trials rejected."""

    threshold: float
    far: float
    frr: float


def error_rates(target: np.ndarray, nontarget: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, FAR, FRR) at every distinct score, accepting ``score >= threshold``.

    The thresholds ascend; one more above the top score (FAR = 0, FRR = 1) is appended.
    """
    target = np.asarray(target, dtype=np.float64)
    nontarget = np.asarray(nontarget, dtype=np.float64)
    if target.size == 0 or nontarget.size == 0:
        raise ValueError("need at least one target and one non-target score")
    thresholds = np.unique(np.concatenate([target, nontarget]))
    thresholds = np.append(thresholds, np.nextafter(thresholds[-1], np.inf))
    t_sorted, n_sorted = np.sort(target), np.sort(nontarget)
    frr = np.searchsorted(t_sorted, thresholds, side="left") / target.size
    # counted, then divided once: 1 - k/n is not exactly (n - k)/n, and FAR = 1% must compare equal to 0.01
    far = (nontarget.size - np.searchsorted(n_sorted, thresholds, side="left")) / nontarget.size
    return thresholds, far, frr


def eer(target: np.ndarray, nontarget: np.ndarray) -> tuple[float, float]:
    """(equal error rate, its threshold): the point where FAR and FRR cross, interpolated linearly
    between the two neighbouring thresholds."""
    thresholds, far, frr = error_rates(target, nontarget)
    i = int(np.argmax(frr >= far))  # first threshold where FRR has caught up with FAR
    if i == 0:
        return float((far[0] + frr[0]) / 2), float(thresholds[0])
    d0, d1 = far[i - 1] - frr[i - 1], far[i] - frr[i]  # d0 > 0 >= d1
    w = d0 / (d0 - d1) if d0 != d1 else 0.5
    rate = far[i - 1] + w * (far[i] - far[i - 1])
    return float(rate), float(thresholds[i - 1] + w * (thresholds[i] - thresholds[i - 1]))


def min_dcf(
    target: np.ndarray, nontarget: np.ndarray, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0
) -> tuple[float, float]:
    """(normalized minimum detection cost, its threshold), as in the NIST SRE and VoxSRC evaluations:
    min over thresholds of (c_miss * p_target * FRR + c_fa * (1 - p_target) * FAR), divided by
    min(c_miss * p_target, c_fa * (1 - p_target))."""
    thresholds, far, frr = error_rates(target, nontarget)
    cost = c_miss * p_target * frr + c_fa * (1 - p_target) * far
    i = int(np.argmin(cost))
    return float(cost[i] / min(c_miss * p_target, c_fa * (1 - p_target))), float(thresholds[i])


def threshold_at_far(target: np.ndarray, nontarget: np.ndarray, far: float) -> ErrorRates:
    """The lowest threshold whose false-accept rate is at most ``far``, with the rates there."""
    thresholds, fars, frrs = error_rates(target, nontarget)
    i = int(np.argmax(fars <= far))
    return ErrorRates(float(thresholds[i]), float(fars[i]), float(frrs[i]))


def asnorm(
    raw: np.ndarray, probe_cohort: np.ndarray, enroll_cohort: np.ndarray, top_n: int = 100
) -> np.ndarray:
    """Adaptive symmetric score normalization (AS-norm1, Matejka et al. 2017).

    ``raw``: (n_probes, n_enrolled) cosine scores. ``probe_cohort``: (n_probes, n_cohort) scores of
    each probe against the cohort; ``enroll_cohort``: (n_enrolled, n_cohort) the same for each
    enrolled voiceprint. Each side is normalized by the mean and standard deviation of its
    ``top_n`` highest cohort scores (:func:`top_stats`), and the two z-scores are averaged:
    ``0.5 * ((s - mu_p) / sd_p + (s - mu_e) / sd_e)``. The result is no longer a cosine: it is in
    standard deviations, and thresholds for it are calibrated separately.
    """
    mu_p, sd_p = top_stats(np.atleast_2d(probe_cohort), top_n)
    mu_e, sd_e = top_stats(np.atleast_2d(enroll_cohort), top_n)
    raw = np.atleast_2d(raw)
    return 0.5 * ((raw - mu_p[:, None]) / sd_p[:, None] + (raw - mu_e[None, :]) / sd_e[None, :])


def top_stats(scores: np.ndarray, top_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``scores`` ((n, m) cohort scores): mean and standard deviation of the ``top_n``
    highest (all of them when the row is shorter). The deviation is floored at 1e-6."""
    if scores.shape[1] == 0:
        raise ValueError("AS-norm needs a cohort of at least one embedding")
    n = min(top_n, scores.shape[1])
    top = -np.partition(-scores, n - 1, axis=1)[:, :n] if n < scores.shape[1] else scores
    return top.mean(axis=1), np.maximum(top.std(axis=1), 1e-6)


def leave_one_out(embeddings: np.ndarray) -> np.ndarray:
    """Cosine of each utterance embedding with the voiceprint of the *other* utterances of the
    same speaker. ``embeddings``: (n, d) L2-normalized, n >= 2; returns (n,)."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    others = embeddings.sum(axis=0)[None, :] - embeddings
    others /= np.maximum(np.linalg.norm(others, axis=1, keepdims=True), 1e-12)
    return np.sum(embeddings * others, axis=1)
