"""The bank's score: plain cosine, or cosine normalized with AS-norm against a cohort.

The cohort is either embeddings of people who are not enrolled (``voicebank cohort add``), or,
when there are none, the other enrolled speakers' voiceprints reached through the FAISS index.
"""

from __future__ import annotations

from typing import Callable, Collection, Sequence, Union

import numpy as np

from . import scoring
from .errors import NotEnoughDataError

COSINE, ASNORM = "cosine", "asnorm"
KINDS = (COSINE, ASNORM)
# AS-norm divides by the standard deviation of each side's cohort scores: one score has none (the
# normalized score would be the raw one divided by ~0), so each side needs at least two.
MIN_COHORT = 2

Exclude = Union[int, Collection[int]]
Search = Callable[[np.ndarray, int], "tuple[np.ndarray, np.ndarray]"]


class Normalizer:
    """Scores pairs of embeddings the way the bank's stored score definition says.

    ``cohort``: (m, d) explicit cohort, or None to use the enrolled voiceprints through ``search``
    (the index's top-k search), leaving out the speaker being scored.
    """

    def __init__(self, kind: str, top_n: int, cohort: np.ndarray | None = None, search: Search | None = None):
        if kind not in KINDS:
            raise ValueError(f"unknown score kind {kind!r}")
        self.kind, self.top_n, self.cohort, self.search = kind, top_n, cohort, search

    def score(self, a: np.ndarray, b: np.ndarray, exclude_a: Sequence[Exclude] = (),
              exclude_b: Sequence[Exclude] = ()) -> np.ndarray:
        """Scores of row i of ``a`` against row i of ``b`` ((n, d) each), as (n,).

        ``exclude_a``/``exclude_b``: per row, the speaker id (or ids) to leave out of that side's
        enrolled cohort: the speakers the trial is about.
        """
        a, b = np.atleast_2d(a), np.atleast_2d(b)
        raw = np.sum(a.astype(np.float64) * b, axis=1)
        if self.kind == COSINE:
            return raw
        mu_a, sd_a = self._stats(a, exclude_a)
        mu_b, sd_b = self._stats(b, exclude_b)
        return 0.5 * ((raw - mu_a) / sd_a + (raw - mu_b) / sd_b)

    def _stats(self, vectors: np.ndarray, exclude: Sequence[Exclude]) -> tuple[np.ndarray, np.ndarray]:
        if self.cohort is not None and len(self.cohort):
            if len(self.cohort) < MIN_COHORT:
                raise NotEnoughDataError(f"AS-norm needs a cohort of at least {MIN_COHORT} recordings; it holds "
                                     f"{len(self.cohort)}. Add more with `voicebank cohort add FILE...`.")
            return scoring.top_stats(vectors @ self.cohort.T, self.top_n)
        if self.search is None:
            raise NotEnoughDataError("AS-norm needs a cohort: add one with `voicebank cohort add FILE...`.")
        skips = [{e} if isinstance(e, (int, np.integer)) else set(e) for e in exclude] or [set()] * len(vectors)
        scores, ids = self.search(vectors, self.top_n + max(len(s) for s in skips))
        rows = [s[(i >= 0) & ~np.isin(i, list(skip))][: self.top_n] for s, i, skip in zip(scores, ids, skips)]
        if min(len(r) for r in rows) < MIN_COHORT:
            raise NotEnoughDataError(
                f"AS-norm needs a cohort of at least {MIN_COHORT}: enroll at least {MIN_COHORT + 1} speakers, or add "
                "a cohort of people who are not enrolled with `voicebank cohort add FILE...`."
            )
        return np.array([r.mean() for r in rows]), np.array([max(r.std(), 1e-6) for r in rows])
