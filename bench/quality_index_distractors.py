"""bench/quality_index.py's distractors: synthetic voiceprints from bench/search_population.py's cone, fitted
to a corpus's real voiceprints and turned to lie along its speakers' strongest axes, that pad each fold's
bank so that the approximate index kinds search a gallery where their structure matters.
"""

from __future__ import annotations

import numpy as np
import quality_protocol as protocol
import search_decisions
import search_population


def fitted_cone(folds: list[protocol.Fold]) -> tuple[search_population.Cone, dict]:
    """The cone fitted at the embeddings' dimension to the corpus's voiceprints and genuine probes."""
    prints = np.concatenate([f.prints for f in folds]).astype(np.float32)
    probes = np.concatenate([f.genuine for f in folds])
    owner = np.concatenate([f.owner + sum(len(g.prints) for g in folds[:i]) for i, f in enumerate(folds)])
    real = search_population.statistics(prints, probes, owner)
    cone, _ = search_population.fit(real, prints.shape[1])
    return cone, real


def distractors(cone: search_population.Cone, fold: protocol.Fold, speakers: np.ndarray, n: int) -> np.ndarray:
    """``n`` voiceprints of the cone, turned so that its mean direction is the fold bank's and its
    strongest between-speaker axes are those of the corpus's speakers (``speakers``: one mean embedding
    each; principal directions orthogonal to the mean, by decreasing variance; then random ones).
    Turned on the mean alone, the real voiceprints lay off the distractors' strong axes: the structures,
    shaped by the distractors, treated them as outliers (IVF's same top-2 fell to 0.57-0.77), and the
    distractors hardly competed (on speechocean762, exact search's best two held one for 7% of the
    probes; turned this way, 95%)."""
    rng = np.random.default_rng([fold.index, 5])
    mean = fold.prints.mean(axis=0)
    mean = mean / np.linalg.norm(mean)
    spread = speakers - speakers.mean(axis=0)
    spread -= np.outer(spread @ mean, mean)
    _, strength, directions = np.linalg.svd(spread, full_matrices=False)
    axes = directions[strength > strength[0] * 1e-6][:cone.d - 1]
    rows = np.vstack([mean, axes, rng.standard_normal((cone.d - 1 - len(axes), cone.d))])
    rotation = np.linalg.qr(rows.T)[0].T  # Gram-Schmidt in that order
    rotation *= np.sign(np.sum(rotation * rows, axis=1, keepdims=True))
    turned = search_population.Cone(cone.d, cone.a, cone.alpha, cone.w, fold.index, rotation.astype(np.float32))
    return turned.bank(n, 0)[0]


def closeness(fold: protocol.Fold, extra: np.ndarray, decide: search_decisions.Comparison) -> dict:
    """How the probes stand to the distractors and to the real voiceprints (cosines), and how often
    exact search's best two hold a distractor."""
    probes = decide.probes
    real = probes @ fold.prints.T.astype(np.float32)
    real[np.arange(len(fold.genuine)), fold.owner] = np.nan  # not one's own voiceprint
    fake = probes @ extra.T
    pct = lambda x: {"median": float(np.nanmedian(x)), "p99": float(np.nanpercentile(x, 99))}  # noqa: E731
    top2 = decide.reference.top2
    return {"probe_vs_other_real": pct(real), "probe_vs_distractor": pct(fake),
            "best_real_other": float(np.nanmedian(np.nanmax(real, axis=1))),
            "best_distractor": float(np.median(fake.max(axis=1))),
            "exact_top2_holds_distractor": float(np.mean(np.any(top2 > len(fold.prints), axis=1)))}
