"""Models of impostor scores and of the rates a threshold gives (used by ``calibration``).

numpy only (scipy stays out of ``identify``'s imports). See :mod:`voicebank.calibration` for what they are used for:
:class:`Smoothed` reads a rate from counted trials, smoothed; :class:`ImpostorModel` says how an
unknown voice's decision statistic moves with the number of enrolled speakers; :class:`RateModel`
puts the two together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .errors import NotEnoughDataError

# What identification decides on (calibration.decide): the best score, or the margin rule.
BEST, MARGIN = "best", "margin"
# At most this many unknown probes, and decision statistics, are kept in a stored model (evenly).
STORED_PROBES = 1000
STORED_SCORES = 2000
_TAIL_QUANTILE = 0.99
_GRID = 257  # points of the stored body of the z distribution


@dataclass(frozen=True)
class ImpostorModel:
    """Impostor scores of unknown probes: per-probe level, a common spread, and the pooled tail shape."""

    mu: np.ndarray  # (n,) each unknown probe's mean impostor score
    sd: np.ndarray  # (n,) the spread of scores around it (one value, pooled over the probes)
    z: np.ndarray  # (_GRID,) ascending standardized scores of the pooled body
    survival: np.ndarray  # (_GRID,) P(Z >= z) at those points
    z0: float  # where the tail model starts (the pooled 99th percentile)
    p0: float  # P(Z >= z0)
    beta: float  # generalized Pareto scale and shape of the excess over z0:
    xi: float = 0.0  # P(Z >= z) = p0 * (1 + xi (z - z0) / beta) ** (-1 / xi) past z0 (xi 0: exponential)
    _decisions: dict = field(default_factory=dict, compare=False, repr=False)  # simulated, by gallery size

    @classmethod
    def fit(cls, rows: Sequence[np.ndarray]) -> "ImpostorModel":
        """Fit from each unknown probe's scores against the gallery (a row per probe, >= 2 each)."""
        rows = [np.asarray(r, dtype=np.float64) for r in rows if len(r) >= 2]
        if not rows:
            raise NotEnoughDataError("measuring unknown-person false alarms needs at least one stranger scored against "
                                     "two or more voiceprints: enroll at least three speakers.")
        mu = np.array([r.mean() for r in rows])
        # One spread for all probes: a probe's own deviation, estimated from a few dozen scores, is
        # off by ~10%, and 10% on the scale of a 4-sigma tail is a factor of 3 on its probability.
        # Probes really differ in level (some voices sit close to many others); differences in
        # spread go into the pooled shape instead.
        spread = max(float(np.sqrt(np.mean([r.var() for r in rows]))), 1e-6)
        sd = np.full(len(rows), spread)
        pooled = np.sort(np.concatenate([_left_out_z(r, spread) for r in rows]))
        n = pooled.size
        z0 = float(np.quantile(pooled, _TAIL_QUANTILE))
        p0 = float(np.count_nonzero(pooled >= z0) / n)
        beta, xi = _gpd(pooled[pooled > z0] - z0)
        z = np.quantile(pooled, np.linspace(0.0, _TAIL_QUANTILE, _GRID))
        survival = 1.0 - np.searchsorted(pooled, z, side="left") / n
        return cls(mu, sd, z, survival, z0, p0, beta, xi)

    def pair_survival(self, t: float) -> np.ndarray:
        """(n,) probability that one impostor score of each probe is >= t."""
        zs = (t - self.mu) / self.sd
        body = np.interp(zs, self.z, self.survival, left=1.0, right=self.p0)
        tail = self.p0 * _gpd_survival(np.maximum(zs - self.z0, 0.0), self.beta, self.xi)
        return np.where(zs > self.z0, tail, body)

    def false_accept(self, t: float) -> float:
        """Verification: the expected rate at which one claim by someone else is accepted."""
        return float(self.pair_survival(t).mean())

    def false_alarm(self, t: float, gallery: int) -> float:
        """Identification: the expected rate at which a person who is not enrolled is matched to
        anyone in a bank of ``gallery`` speakers."""
        p = np.clip(self.pair_survival(t), 0.0, 1.0 - 1e-15)
        return float(np.mean(-np.expm1(max(int(gallery), 1) * np.log1p(-p))))

    def threshold(self, rate: float, gallery: int | None = None) -> float:
        """The lowest threshold at which the model's false-accept rate (``gallery`` None) or
        identification false-alarm rate for ``gallery`` speakers is at most ``rate``."""
        f = self.false_accept if gallery is None else (lambda t: self.false_alarm(t, gallery))
        return solve(f, rate, float(np.min(self.mu + self.sd * self.z[0])) - 1.0, self.reach())

    def reach(self) -> float:
        """A score above which the model puts (almost) nothing."""
        far = -self.beta / self.xi if self.xi < 0 else 1e4 * self.beta
        return float(np.max(self.mu + self.sd * (self.z0 + far))) + 1.0

    def growth(self, t: float, gallery: float, grown: float, rule: str = BEST) -> float:
        """How many times more unknown persons clear ``t`` with ``grown`` speakers than with
        ``gallery``, deciding by ``rule``."""
        if grown == gallery:
            return 1.0
        if rule == MARGIN:
            before, after = self.decisions(gallery, rule)(t), self.decisions(grown, rule)(t)
            return after / before if before > 1e-300 else grown / gallery
        p = np.clip(self.pair_survival(t), 0.0, 1.0 - 1e-15)
        before = float(np.mean(-np.expm1(gallery * np.log1p(-p))))
        after = float(np.mean(-np.expm1(max(grown, 1) * np.log1p(-p))))
        return after / before if before > 1e-300 else grown / gallery  # far out: N chances, each tiny

    def decisions(self, gallery: float, rule: str, draws: int = 64) -> "Smoothed":
        """The model's distribution of an unknown probe's decision statistic against ``gallery``
        voiceprints, by simulation: for each probe, ``draws`` samples of the best two of
        ``gallery`` scores (order statistics of uniforms, through the probe's score quantiles;
        fixed seed, so every gallery size sees the same draws)."""
        key = (round(float(gallery), 3), rule, draws)
        if key not in self._decisions:
            rng = np.random.default_rng(1)
            n = max(float(gallery), 1.0)
            log1, log2 = np.log(rng.random((2, self.mu.size, draws)))
            above1 = -np.expm1(log1 / n)  # P(Z >= best of n): the survival of the maximum's draw
            above2 = -np.expm1(log1 / n + log2 / max(n - 1, 1.0))  # and of the runner-up's
            best = self.mu[:, None] + self.sd[:, None] * self._quantile(above1)
            second = self.mu[:, None] + self.sd[:, None] * self._quantile(above2)
            stat = best if rule == BEST or n < 2 else 2 * best - second
            self._decisions[key] = Smoothed(np.sort(stat.ravel()), float(0.05 * np.mean(self.sd)))
        return self._decisions[key]

    def _quantile(self, above: np.ndarray) -> np.ndarray:
        """The standardized score z with P(Z >= z) = ``above`` (the inverse of the survival)."""
        body = np.interp(above, self.survival[::-1], self.z[::-1])
        ratio = np.clip(above / self.p0, 1e-300, 1.0)
        excess = (-self.beta * np.log(ratio) if abs(self.xi) < 1e-6
                  else self.beta / self.xi * (ratio ** -self.xi - 1.0))
        return np.where(above < self.p0, self.z0 + excess, body)

    def to_dict(self) -> dict[str, Any]:
        keep = _evenly(np.argsort(self.mu), STORED_PROBES)
        return {"mu": _r(self.mu[keep]), "sd": _r(self.sd[keep]), "z": _r(self.z), "survival": _r(self.survival),
                "z0": self.z0, "p0": self.p0, "beta": self.beta, "xi": self.xi}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ImpostorModel":
        arr = lambda key: np.asarray(data[key], dtype=np.float64)  # noqa: E731
        return cls(arr("mu"), arr("sd"), arr("z"), arr("survival"), float(data["z0"]), float(data["p0"]),
                   float(data["beta"]), float(data.get("xi", 0.0)))


@dataclass(frozen=True)
class Smoothed:
    """The survival function P(S >= t) of a set of scores, each spread by a Gaussian kernel of
    Silverman's width: smooth between the scores, and a little beyond the highest one."""

    scores: np.ndarray  # ascending (at most STORED_SCORES of them, evenly chosen, when stored)
    width: float

    @classmethod
    def of(cls, scores: np.ndarray) -> "Smoothed":
        scores = np.sort(np.asarray(scores, dtype=np.float64))
        if scores.size == 0:
            raise ValueError("need at least one score")
        spread = float(np.std(scores)) or 1e-3
        return cls(scores, max(1.06 * spread * scores.size ** -0.2, 1e-4))

    def __call__(self, t: float) -> float:
        near = self.scores[np.searchsorted(self.scores, t - 9 * self.width):]  # the rest add nothing
        return float(ndtr((near - t) / self.width).sum() / self.scores.size)

    def threshold(self, rate: float) -> float:
        return solve(self, rate, float(self.scores[0]) - 1.0, float(self.scores[-1]) + 20 * self.width)

    def to_dict(self) -> dict[str, Any]:
        return {"scores": _r(self.scores[_evenly(np.arange(self.scores.size), STORED_SCORES)]), "width": self.width}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Smoothed":
        return cls(np.asarray(data["scores"], dtype=np.float64), float(data["width"]))


@dataclass(frozen=True)
class RateModel:
    """What a threshold gives: false accepts per claim (verification) and unknown-person false
    alarms for any number of enrolled speakers (identification)."""

    best: Smoothed  # each unknown probe's decision statistic against the calibration's gallery
    gallery: float  # how many voiceprints those probes were scored against (on average)
    shape: ImpostorModel  # how that statistic moves with the number of voiceprints
    nontarget: Smoothed | None = None  # impostor pair scores (not stored: verification needs them only once)
    rule: str = BEST  # the identification decision the statistic is for

    @classmethod
    def fit(cls, trials: Any) -> "RateModel":
        """From :class:`~voicebank.calibration.OpenSetTrials` (its unknown rows and their statistic)."""
        rows = [r for r in trials.unknown if len(r)]
        return cls(Smoothed.of(trials.unknown_best), float(np.mean([len(r) for r in rows])),
                   ImpostorModel.fit(rows), Smoothed.of(np.concatenate(rows)), trials.rule)

    def false_accept(self, t: float) -> float:
        if self.nontarget is None:
            raise ValueError("this model was stored without its impostor scores")
        return self.nontarget(t)

    def false_alarm(self, t: float, gallery: int) -> float:
        return min(1.0, self.best(t) * self.shape.growth(t, self.gallery, gallery, self.rule))

    def threshold(self, rate: float, gallery: int | None = None) -> float:
        if gallery is None:
            return self.nontarget.threshold(rate) if self.nontarget is not None else math.nan
        top = float(self.best.scores[-1]) + 20 * self.best.width
        return solve(lambda t: self.false_alarm(t, gallery), rate, float(self.best.scores[0]) - 1.0,
                      max(top, self.shape.reach()))

    def to_dict(self) -> dict[str, Any]:
        return {"best": self.best.to_dict(), "gallery": self.gallery, "shape": self.shape.to_dict(), "rule": self.rule}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RateModel":
        return cls(Smoothed.from_dict(data["best"]), float(data["gallery"]), ImpostorModel.from_dict(data["shape"]),
                   rule=data.get("rule", BEST))


def ndtr(x: np.ndarray) -> np.ndarray:
    """The standard normal CDF, from the complementary error function of Numerical Recipes'
    ``erfcc`` (Chebyshev fit; fractional error below 1.2e-7 everywhere): numpy only."""
    z = np.abs(np.asarray(x, dtype=np.float64)) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (
        0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))
    upper = 0.5 * t * np.exp(poly)  # P(Z >= |x|)
    return np.where(np.asarray(x) >= 0, 1.0 - upper, upper)


def _left_out_z(row: np.ndarray, spread: float) -> np.ndarray:
    """Each score less the mean of the row's OTHER scores, in units of ``spread``: a new
    voiceprint's score is not part of the level it is compared with."""
    n = row.size
    mean = (row.sum() - row) / (n - 1) if n > 1 else row
    return (row - mean) / spread


def solve(rate_at: Any, rate: float, lo: float, hi: float) -> float:
    """The lowest t in [lo, hi] with ``rate_at(t) <= rate``, for a rate falling with t (bisection)."""
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if rate_at(mid) > rate else (lo, mid)
    return hi


def _gpd(excess: np.ndarray) -> tuple[float, float]:
    """(scale, shape) of a generalized Pareto distribution fitted to ``excess`` (>= 0) by
    probability-weighted moments (Hosking & Wallis 1987), robust with few points. The shape is
    kept in [-0.5, 0.5]: scores are bounded above (shape < 0), and a heavier tail than shape 0.5
    is not a thing 100-odd points can show."""
    y = np.sort(excess)
    n = y.size
    if n < 5 or float(y.mean()) <= 0:
        return max(float(y.mean()) if n else 0.1, 1e-3), 0.0
    b0 = float(y.mean())
    b1 = float(np.sum(y * (n - 1 - np.arange(n)) / (n - 1)) / n)
    k = b0 / (b0 - 2 * b1) - 2
    scale = 2 * b0 * b1 / (b0 - 2 * b1)
    xi = float(np.clip(-k, -0.5, 0.5))
    scale = b0 * (1 - xi) if xi != -k else scale  # the scale that keeps the mean excess when xi was clipped
    return max(float(scale), 1e-3), xi


def _gpd_survival(y: np.ndarray, scale: float, xi: float) -> np.ndarray:
    if abs(xi) < 1e-6:
        return np.exp(-y / scale)
    base = np.maximum(1 + xi * y / scale, 0.0)
    with np.errstate(divide="ignore"):
        return np.where(base > 0, base ** (-1 / xi), 0.0)


def _evenly(order: np.ndarray, count: int) -> np.ndarray:
    if order.size <= count:
        return order
    return order[np.linspace(0, order.size - 1, count).round().astype(int)]


def _r(values: np.ndarray) -> list[float]:
    return [round(float(v), 6) for v in values]
