"""bench/search.py's synthetic voiceprints: a cone fitted to real speaker embeddings.

Real voiceprints are not spread over the sphere: resemblyzer's sit in a narrow cone (their mean vector
has norm ~0.8, and two different people's voiceprints have a median cosine of ~0.6). An index tuned on
voiceprints spread evenly looks far better than it is on these, so the benchmark generates them like
this, in any dimension ``d``:

    centre    = normalize(a * m + normalize(z)),  z ~ N(0, diag(s^2)) orthogonal to m   (one per speaker)
    utterance = normalize(centre + w * e),        e ~ N(0, diag(s^2)), other axis order (one per recording)
    voiceprint = normalize(mean of 3 utterances);  a query is a 4th utterance

with ``m`` a unit mean direction, the spectrum ``s_i^2 ~ (1 + i)^-alpha`` (total variance 1: a few
strong directions, as in real embeddings, whose spread is far from isotropic; a speaker's offset from
the mean has a fixed length, its direction follows the spectrum), and one random rotation so that
no axis is special. ``a``, ``alpha`` and ``w`` are fitted (:func:`fit`) by simulation so that, in ``d``
dimensions, the median and p99 of the cosine between different speakers' voiceprints and the median
cosine of a query to its own voiceprint match those measured on real embeddings (:func:`real_statistics`,
from ``bench/quality_data.py``'s cached resemblyzer embeddings of ../shared/data). The fitted values are
kept in :data:`FITTED` so that the benchmark runs without the data; ``python bench/search.py --fit``
measures and fits them again and prints the fitted and real distributions side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, asdict
from pathlib import Path

import numpy as np

CHUNK = 65_536  # speakers generated at a time (bounded memory)
ENROLL = 3  # utterances averaged into a voiceprint
PER_SPEAKER = 6  # real recordings used per speaker (3 to enroll, up to 3 probes): embedding is slow on 2 cores

# Fitted with `python bench/search.py --fit` at 512 dimensions to resemblyzer voiceprints of the 114
# speakers of ../shared/data with 4+ recordings (speech/ and speechocean762-dev/). Refit if those change.
FITTED = {"a": 1.408, "alpha": 1.25, "w": 0.524}


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _spectrum(n: int, alpha: float) -> np.ndarray:
    s = (1 + np.arange(n)) ** (-alpha / 2)
    return (s / np.linalg.norm(s)).astype(np.float32)


@dataclass
class Cone:
    """The generative model; ``rotation`` (d, d) turns latent axes (axis 0 = the mean direction) into output ones."""

    d: int
    a: float
    alpha: float
    w: float
    seed: int
    rotation: np.ndarray | None = None

    def __post_init__(self):
        rng = np.random.default_rng([self.seed, 0])
        if self.rotation is None:
            self.rotation = np.linalg.qr(rng.standard_normal((self.d, self.d)))[0].astype(np.float32)
        self.between = np.concatenate([[0.0], _spectrum(self.d - 1, self.alpha)]).astype(np.float32)
        # within-speaker variation along other directions than between-speaker variation (own axis order)
        self.within = _spectrum(self.d, self.alpha)[rng.permutation(self.d)]

    @classmethod
    def fitted(cls, d: int, seed: int = 0) -> "Cone":
        return cls(d, FITTED["a"], FITTED["alpha"], FITTED["w"], seed)

    def params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k in ("d", "a", "alpha", "w")}

    def centres(self, rng: np.random.Generator, n: int) -> np.ndarray:
        z = unit(rng.standard_normal((n, self.d), dtype=np.float32) * self.between)
        z[:, 0] = self.a
        return unit(z)

    def utterances(self, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
        return unit(centres + self.w * rng.standard_normal(centres.shape, dtype=np.float32) * self.within)

    def voiceprints(self, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
        return unit(sum(self.utterances(rng, centres) for _ in range(ENROLL)))

    def rotate(self, x: np.ndarray) -> np.ndarray:
        return x @ self.rotation  # norms are kept

    def bank(self, n: int, n_queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return bank(self, self.seed, self.d, n, n_queries)

    def unknowns(self, n: int) -> np.ndarray:
        return unknowns(self, self.seed, n)

    def sample(self, n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """(voiceprints (n, d), one more utterance of each speaker (n, d)) for statistics."""
        rng = np.random.default_rng([self.seed, seed])
        centres = self.centres(rng, n)
        return self.voiceprints(rng, centres), self.utterances(rng, centres)

    def statistics(self, n: int = 2000) -> dict:
        return statistics(*self.sample(n))


def statistics(prints: np.ndarray, probes: np.ndarray, owner: np.ndarray | None = None) -> dict:
    """Cosine statistics of voiceprints (n, d) and probes (m, d); ``owner[j]`` is the voiceprint row of
    probe j (default: row j). Different-speaker figures are over every pair of distinct voiceprints."""
    owner = np.arange(len(probes)) if owner is None else owner
    gram = prints @ prints.T
    diff = gram[np.triu_indices(len(prints), 1)]
    probe_scores = probes @ prints.T
    own = probe_scores[np.arange(len(probes)), owner]
    other = np.ones_like(probe_scores, dtype=bool)
    other[np.arange(len(probes)), owner] = False
    mean = prints.mean(axis=0)
    centred = prints - mean
    # spread of voiceprints around the mean direction: share of variance in the top 10 principal axes
    eig = np.sort(np.linalg.eigvalsh(np.cov(centred.T)))[::-1]
    pct = lambda x: {"p1": float(np.percentile(x, 1)), "median": float(np.median(x)),  # noqa: E731
                     "p99": float(np.percentile(x, 99)), "max": float(np.max(x))}
    return {"speakers": len(prints), "probes": len(probes), "mean_norm": float(np.linalg.norm(mean)),
            "between_spread": float(np.sqrt(np.mean(np.sum(centred ** 2, axis=1)))),
            "within_spread": float(np.sqrt(np.mean(np.sum((probes - prints[owner]) ** 2, axis=1)))),
            "top10_variance_share": float(eig[:10].sum() / eig.sum()),
            "different_speakers": pct(diff), "probe_vs_own": pct(own), "probe_vs_others": pct(probe_scores[other])}


def real_statistics(data_root: Path, cache: Path) -> tuple[dict, dict]:
    """Statistics of real resemblyzer voiceprints: per corpus, and pooled (what is fitted).

    Speakers with at least ``ENROLL + 1`` recordings: the first ``ENROLL`` make the voiceprint (as
    enrollment does: the normalized mean), the others are probes. Embeddings are computed once and
    cached by ``bench/quality_data.py``."""
    import quality_data as data
    from voicebank.embedding import load_embedder

    embedder = load_embedder("resemblyzer")
    per_corpus, pooled_prints, pooled_probes, pooled_owner = {}, [], [], []
    for name in data.CORPORA:
        corpus = data.read_corpus(name, data_root)
        if corpus is None:
            continue
        keep = sorted(i for rows in corpus.by_speaker().values() if len(rows) > ENROLL for i in rows[:PER_SPEAKER])
        corpus = data.Corpus(corpus.name, corpus.root, [corpus.paths[i] for i in keep],
                             [corpus.speakers[i] for i in keep], [corpus.rows[i] for i in keep])
        emb, _ = data.embeddings(corpus, data.WIDEBAND, embedder, cache)
        prints, probes, owner = [], [], []
        for rows in corpus.by_speaker().values():
            if len(rows) > ENROLL:
                owner += [len(prints)] * (len(rows) - ENROLL)
                prints.append(unit(emb[rows[:ENROLL]].mean(axis=0)))
                probes.append(emb[rows[ENROLL:]])
        prints, probes, owner = np.stack(prints), np.concatenate(probes), np.array(owner)
        per_corpus[name] = statistics(prints, probes, owner)
        pooled_owner.append(owner + sum(len(p) for p in pooled_prints))
        pooled_prints.append(prints)
        pooled_probes.append(probes)
    if not per_corpus:
        raise SystemExit(f"no corpus under {data_root}: --fit needs ../shared/data (speech/, speechocean762-dev/)")
    pooled = statistics(np.concatenate(pooled_prints), np.concatenate(pooled_probes), np.concatenate(pooled_owner))
    return per_corpus, pooled


def fit(real: dict, d: int, n: int = 1000) -> tuple[Cone, dict]:
    """``a``, ``alpha``, ``w`` such that a :class:`Cone` in ``d`` dims matches ``real``'s different-speaker
    median and p99 and its probe-vs-own median; simulation with fixed random numbers, so it is
    deterministic. Returns the fitted cone and its statistics on ``n`` simulated speakers."""
    rotation = np.eye(d, dtype=np.float32)  # statistics do not depend on the rotation: skip it
    target_median, target_p99 = real["different_speakers"]["median"], real["different_speakers"]["p99"]
    target_own = real["probe_vs_own"]["median"]

    def stats(a, alpha, w):
        prints, probes = Cone(d, a, alpha, w, 0, rotation).sample(n)
        gram = prints[:600] @ prints[:600].T
        diff = gram[np.triu_indices(600, 1)]
        return float(np.median(diff)), float(np.percentile(diff, 99)), float(np.median(np.sum(prints * probes, 1)))

    def bisect(f, lo, hi, target, steps=16):  # f increasing
        for _ in range(steps):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) < target else (lo, mid)
        return (lo + hi) / 2

    w, best = 0.5, None
    for _ in range(2):  # a and alpha at this w; then w at those; once more
        candidates = []
        for alpha in (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0):
            a = bisect(lambda a: stats(a, alpha, w)[0], 0.0, 10.0, target_median)
            candidates.append((abs(stats(a, alpha, w)[1] - target_p99), a, alpha))
        _, a, alpha = min(candidates)
        w = 1 / bisect(lambda inv: stats(a, alpha, 1 / max(inv, 1e-6))[2], 0.05, 50.0, target_own)
        best = (a, alpha, w)
    cone = Cone(d, *best, seed=0)
    return cone, cone.statistics(n)


def side_by_side(real_pooled: dict, per_corpus: dict, fitted: dict) -> str:
    """A text table of the real and fitted distributions."""
    cols = [("real (pooled)", real_pooled), *((f"real {k}", v) for k, v in per_corpus.items()), ("fitted", fitted)]
    rows = [("speakers", lambda s: f"{s['speakers']}"), ("mean-vector norm", lambda s: f"{s['mean_norm']:.3f}"),
            ("between-speaker spread", lambda s: f"{s['between_spread']:.3f}"),
            ("within-speaker spread", lambda s: f"{s['within_spread']:.3f}"),
            ("top-10 axes variance share", lambda s: f"{s['top10_variance_share']:.3f}")]
    for key, label in (("different_speakers", "different speakers"), ("probe_vs_own", "probe vs own"),
                       ("probe_vs_others", "probe vs others")):
        for stat in ("p1", "median", "p99", "max"):
            rows.append((f"{label} {stat}", lambda s, key=key, stat=stat: f"{s[key][stat]:.3f}"))
    width = max(len(r[0]) for r in rows)
    out = [f"{'':<{width}} " + " ".join(f"{c[0]:>18}" for c in cols)]
    out += [f"{label:<{width}} " + " ".join(f"{fmt(c[1]):>18}" for c in cols) for label, fmt in rows]
    return "\n".join(out)


def bank(population, seed: int, d: int, n: int, n_queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(voiceprints (n, d), queries (n_queries, d), the speaker row each query belongs to), from any
    population with ``centres``, ``voiceprints``, ``utterances`` and ``rotate``, CHUNK speakers at a time."""
    qrows = np.sort(np.random.default_rng([seed, n, 1]).choice(n, min(n_queries, n), replace=False))
    prints = np.empty((n, d), dtype=np.float32)
    queries = []
    for start in range(0, n, CHUNK):
        rng = np.random.default_rng([seed, n, 2, start])
        centres = population.centres(rng, min(CHUNK, n - start))
        prints[start:start + len(centres)] = population.rotate(population.voiceprints(rng, centres))
        mine = qrows[(qrows >= start) & (qrows < start + len(centres))] - start
        queries.append(population.rotate(population.utterances(rng, centres[mine])))
    return prints, np.concatenate(queries), qrows


def unknowns(population, seed: int, n: int) -> np.ndarray:
    """``n`` utterances (n, d) of ``n`` speakers who are not enrolled in any bank: centres drawn from the same
    ``population`` with random numbers of their own (the same for every bank size), one utterance each,
    turned by the same rotation as the bank."""
    rng = np.random.default_rng([seed, 4])
    return population.rotate(population.utterances(rng, population.centres(rng, n)))
