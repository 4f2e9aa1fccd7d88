"""bench/quality.py's comparison of open-set identification scores (issue 10, item 6).

Each score is judged at the single best threshold on the held-out scores (an oracle), so the
comparison is about how well the score separates enrolled from unknown people, not about
calibration. A probe is correctly identified when its top candidate is its own speaker and the
decision statistic reaches the threshold; an unknown person is a false alarm when its statistic
reaches it.

- ``cosine``: the best cosine over the voiceprints (the product's ``best`` rule: banks migrated
  from before the margin rule).
- ``asnorm enrolled top N``: the product's ``Normalizer("asnorm", N, search=...)`` with no cohort,
  the way a bank without ``cohort add`` scores: each side's cohort is the other enrolled
  voiceprints, leaving out the speaker being scored. (The product re-ranks only the cosine top-k
  candidates, 5 by default; here every voiceprint is scored.)
- ``asnorm cohort top N``: ``Normalizer("asnorm", N, cohort=...)`` with the bank's cohort of
  never-enrolled people (only where the corpus has them; never a measured person).
- ``z-norm per voiceprint``: each voiceprint's own impostor statistics, mean and standard
  deviation of its cosines with the other bank speakers' enrollment recordings: (s - mu_e) / sd_e.
- ``margin s1-s2`` and ``margin rule 2 s1 - s2``: from the cosines, the best s1 and the second
  best s2; the candidate is the cosine top-1. The second is the product's ``margin`` rule (what new
  banks decide by), computed with ``voicebank.calibration.decide`` as the product computes it.
"""

from __future__ import annotations

import math

import numpy as np

from voicebank.calibration import MARGIN, needed
from voicebank.norm import Normalizer
from voicebank.scoring import eer

from quality_protocol import Fold, oracle_threshold, statistic

TARGETS = (0.01, 0.001)
MARGIN_NAME = "margin rule 2 s1 - s2"
TOP_N = (10, 25, 50)


def asnorm_enrolled(fold: Fold, top_n: int) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, unknown) score matrices with the product's AS-norm over the enrolled voiceprints."""
    k = len(fold.prints)
    ids = np.arange(1, k + 1)

    def search(queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:  # the index's top-n search
        s = queries.astype(np.float64) @ fold.prints.T
        order = np.argsort(-s, axis=1)[:, :n]
        scores, found = np.take_along_axis(s, order, 1), ids[order]
        if n > k:
            pad = n - k
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            found = np.pad(found, ((0, 0), (0, pad)), constant_values=-1)
        return scores, found

    return _matrices(fold, Normalizer("asnorm", top_n, search=search), ids)


def asnorm_cohort(fold: Fold, top_n: int) -> tuple[np.ndarray, np.ndarray]:
    return _matrices(fold, Normalizer("asnorm", top_n, cohort=fold.cohort.astype(np.float64)),
                     np.arange(1, len(fold.prints) + 1))


def _matrices(fold: Fold, scorer: Normalizer, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = len(fold.prints)

    def matrix(probes: np.ndarray) -> np.ndarray:
        m = len(probes)
        exclude = [(int(i),) for i in np.tile(ids, m)]  # the candidate, on both sides (as bank._identify)
        return scorer.score(np.repeat(probes.astype(np.float64), k, 0), np.tile(fold.prints, (m, 1)),
                            exclude, exclude).reshape(m, k)

    return matrix(fold.genuine), matrix(fold.unknown)


def znorm(fold: Fold) -> tuple[np.ndarray, np.ndarray]:
    mu, sd = np.empty(len(fold.prints)), np.empty(len(fold.prints))
    for j in range(len(fold.prints)):
        others = np.concatenate([e for i, e in enumerate(fold.enroll) if i != j]).astype(np.float64)
        s = others @ fold.prints[j]
        mu[j], sd[j] = s.mean(), max(s.std(), 1e-6)
    sg, su = fold.scores()
    return (sg - mu) / sd, (su - mu) / sd


def methods(fold: Fold) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Score matrices of every method that scores each voiceprint, for one fold."""
    k = len(fold.prints)
    out = {"cosine": fold.scores()}
    for n in [n for n in TOP_N if n < k - 1]:
        out[f"asnorm enrolled top {n}"] = asnorm_enrolled(fold, n)
    out["asnorm enrolled all"] = asnorm_enrolled(fold, k - 1)  # every other voiceprint
    if fold.cohort is not None:
        for n in [n for n in TOP_N if n < len(fold.cohort)]:
            out[f"asnorm cohort top {n}"] = asnorm_cohort(fold, n)
        out["asnorm cohort all"] = asnorm_cohort(fold, len(fold.cohort))
    out["z-norm per voiceprint"] = znorm(fold)
    return out


def statistics(fold: Fold) -> dict[str, dict[str, np.ndarray]]:
    """Per method: the decision statistic and whether the candidate is right, per genuine probe;
    the statistic per unknown probe; and (score matrices only) the verification trials."""
    out = {}
    for name, (sg, su) in methods(fold).items():
        out[name] = {"gen_stat": sg.max(1), "gen_right": sg.argmax(1) == fold.owner, "unk_stat": su.max(1),
                     "target": sg[np.arange(len(sg)), fold.owner], "nontarget": su.ravel()}
    sg, su = fold.scores()
    top_g, top_u = -np.sort(-sg, 1)[:, :2], -np.sort(-su, 1)[:, :2]
    right = sg.argmax(1) == fold.owner
    out["margin s1-s2"] = {"gen_stat": top_g[:, 0] - top_g[:, 1], "gen_right": right,
                           "unk_stat": top_u[:, 0] - top_u[:, 1]}
    out[MARGIN_NAME] = {"gen_stat": statistic(sg, MARGIN), "gen_right": right, "unk_stat": statistic(su, MARGIN)}
    return out


def compare(folds_: list[Fold]) -> dict[str, dict]:
    """Per method, both folds pooled (one threshold): correct identifications at each target
    unknown false-alarm rate, closed-set top-1, and the verification EER where it applies."""
    per_fold = [statistics(f) for f in folds_]
    out, hits = {}, {}
    for name in per_fold[0]:
        pool = {key: np.concatenate([p[name][key] for p in per_fold]) for key in per_fold[0][name]}
        g, u = pool["gen_stat"].size, pool["unk_stat"].size
        res: dict = {"genuine": int(g), "unknown": int(u), "closed_top1": int(pool["gen_right"].sum())}
        for target in TARGETS:
            if u < needed(target):
                res[str(target)] = {"n/a": True, "needs": needed(target)}
                continue
            allowed = math.floor(target * u + 1e-9)
            t = oracle_threshold(pool["unk_stat"], allowed)
            hits[name, target] = pool["gen_right"] & (pool["gen_stat"] >= t)
            res[str(target)] = {"threshold": t, "allowed": allowed,
                                "false_alarms": int(np.sum(pool["unk_stat"] >= t)),
                                "correct": int(hits[name, target].sum())}
        if "target" in pool:
            res["eer"] = eer(pool["target"], pool["nontarget"])[0]
        out[name] = res
    for (name, target), hit in hits.items():  # the same genuine probes, so the methods pair up
        base = hits["cosine", target]
        out[name][str(target)].update(gained_vs_cosine=int(np.sum(hit & ~base)),
                                      lost_vs_cosine=int(np.sum(~hit & base)))
    return out
