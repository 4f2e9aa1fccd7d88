"""The two operating points and what they promise. numpy (and scipy's normal CDF) only.

- **Verification** (1:1, "is this Alice?"): the rate that matters is the false-accept rate of one
  claim by someone else.
- **Identification** (1:N open set, "is this anyone we know?"): the rate that matters is how often
  a person who is *not enrolled* is matched to *anyone*. It grows with the number of enrolled
  speakers N, since an unknown voice gets N chances to clear the threshold.

Each rate is read from the calibration's own trials, smoothed (:class:`Smoothed`: every score
spread by a Gaussian kernel), so a threshold lands between scores by a margin the data supports
rather than on the extreme trial: verification from the impostor pair scores, identification from
each unknown probe's best score against the gallery. Targets with fewer trials than
``MIN_EXPECTED / target`` are refused. How the identification rate moves with N comes from a model
of impostor scores (:class:`ImpostorModel`): each unknown probe i has its own level ``mu_i``, all
share a spread, and the pooled standardized scores give the tail's shape (empirical, with a
generalized Pareto tail past the 99th percentile: peaks over threshold, as extreme-value statistics
does it). With ``p_i(t)`` the chance that one score of probe i clears t,

    FA_N(t) = mean_i [1 - (1 - p_i(t)) ** N]

and the counted rate at the calibration's size N0 is carried to N by the ratio FA_N / FA_N0. (The
model alone, checked on held-out speakers, overstated the rate about twofold: real scores have a
lighter tail than a pooled one; the ratio keeps its shape and drops its level.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .errors import NotEnoughDataError

VERIFY, IDENTIFY = "verify", "identify"
# Identification decides on the best score over the gallery, or on the margin rule (see decide):
# the margin rule identified more people at the same unknown-person false-alarm rate on every
# corpus measured with enough trials (bench/quality.py; README, Recognition quality).
BEST, MARGIN = "best", "margin"
RULES = (BEST, MARGIN)
# A target rate needs at least this many errors expected among the trials (2 / 1% = 200 trials):
# a threshold placed where fewer are expected sits at the extreme of the data, and nothing there
# says what the rate is.
MIN_EXPECTED = 2
# At most this many unknown probes, and best scores, are kept in a stored model (chosen evenly).
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
            raise ValueError("need at least one unknown probe scored against two or more voiceprints")
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
        return _solve(f, rate, float(np.min(self.mu + self.sd * self.z[0])) - 1.0, self.reach())

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
        from scipy.special import ndtr

        near = self.scores[np.searchsorted(self.scores, t - 9 * self.width):]  # the rest add nothing
        return float(ndtr((near - t) / self.width).sum() / self.scores.size)

    def threshold(self, rate: float) -> float:
        return _solve(self, rate, float(self.scores[0]) - 1.0, float(self.scores[-1]) + 20 * self.width)

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
    def fit(cls, trials: "OpenSetTrials") -> "RateModel":
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
        return _solve(lambda t: self.false_alarm(t, gallery), rate, float(self.best.scores[0]) - 1.0,
                      max(top, self.shape.reach()))

    def to_dict(self) -> dict[str, Any]:
        return {"best": self.best.to_dict(), "gallery": self.gallery, "shape": self.shape.to_dict(), "rule": self.rule}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RateModel":
        return cls(Smoothed.from_dict(data["best"]), float(data["gallery"]), ImpostorModel.from_dict(data["shape"]),
                   rule=data.get("rule", BEST))


@dataclass(frozen=True)
class OpenSetTrials:
    """Scores of a calibration: verification pairs and open-set identification trials.

    ``target``: genuine verification scores (a held-out recording against its own speaker's
    voiceprint made without it). ``known_best``/``known_correct``: for each such probe, its best
    score over the whole gallery and whether that best was its own speaker. ``unknown``: per
    unknown probe (an enrolled speaker's recording with that speaker taken out, or a cohort
    recording of someone never enrolled), its scores against every voiceprint of the gallery.
    ``gallery``: how many speakers the bank held.
    """

    target: np.ndarray
    known_best: np.ndarray
    known_correct: np.ndarray
    unknown: list[np.ndarray]
    gallery: int
    kind: str  # the score definition: cosine or asnorm
    known_second: np.ndarray | None = None  # each genuine probe's second-best score over the gallery
    rule: str = BEST  # the identification decision (see decide)

    @property
    def nontarget(self) -> np.ndarray:
        return np.concatenate(self.unknown) if self.unknown else np.zeros(0)

    @property
    def unknown_best(self) -> np.ndarray:
        """Each unknown probe's decision statistic (``rule``) against the gallery."""
        return np.array([decide(*_top2(r), self.rule) for r in self.unknown if len(r)])

    @property
    def known_decision(self) -> np.ndarray:
        """Each genuine probe's decision statistic (``rule``)."""
        if self.rule == BEST or self.known_second is None:
            return np.asarray(self.known_best)
        return np.array([decide(b, s, self.rule) for b, s in zip(self.known_best, self.known_second)])


def decide(best: float, second: float | None, rule: str) -> float:
    """The identification statistic from the best and second-best scores over the gallery:
    ``best`` itself, or under the ``margin`` rule ``2 * best - second`` (the best score, plus how
    far it stands above the runner-up: a voice close to one enrolled speaker and far from the
    rest is more likely that speaker than one close to several). Alone in a gallery, ``best``."""
    if rule == BEST or second is None or not np.isfinite(second):
        return float(best)
    return float(2.0 * best - second)


def _top2(row: np.ndarray) -> tuple[float, float | None]:
    if len(row) < 2:
        return float(row.max()), None
    top = np.partition(np.asarray(row), len(row) - 2)[-2:]
    return float(top[1]), float(top[0])


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold and what it means, as stored with the bank and printed by ``calibrate``.

    ``rate``: for verification the false-accept rate per claim, for identification the
    unknown-person false-alarm rate, both as the model expects them; ``counted`` and ``trials``:
    the same rate counted on the calibration's own trials (``counted`` errors of ``trials``).
    ``miss``: verification false rejects; for identification the genuine probes not identified
    (``hit`` = correctly identified, ``wrong`` = matched to another enrolled speaker).
    """

    purpose: str  # verify or identify
    threshold: float
    kind: str  # score kind
    method: str  # "far" (a target rate), "eer", "manual" or "default"
    target: float | None  # the rate asked for
    rate: float | None  # the model's expected rate at the threshold
    counted: int | None = None
    trials: int | None = None
    miss: float | None = None
    hit: float | None = None
    wrong: float | None = None
    genuine: int | None = None  # genuine trials behind miss/hit/wrong
    gallery: int | None = None  # speakers enrolled when it was set (identification)
    rule: str | None = None  # identification: what the threshold applies to (best or margin; see decide)
    model: RateModel | None = None  # kept (identification) to say how the rate moves as the bank grows

    def to_dict(self, with_model: bool = True) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("purpose", "threshold", "kind", "method", "target", "rate", "counted",
                                             "trials", "miss", "hit", "wrong", "genuine", "gallery", "rule")}
        if with_model and self.model is not None:
            out["model"] = self.model.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OperatingPoint":
        fields = {k: v for k, v in data.items() if k != "model"}
        model = RateModel.from_dict(data["model"]) if data.get("model") else None
        return cls(**fields, model=model)

    def rate_at(self, gallery: int) -> float | None:
        """The identification false-alarm rate this threshold gives with ``gallery`` speakers."""
        if self.model is None:
            return None
        return self.model.false_alarm(self.threshold, gallery) if self.purpose == IDENTIFY else self.rate

    def status(self, gallery: int) -> dict[str, Any]:
        """What the threshold promises with ``gallery`` speakers enrolled now (for ``identify --json``,
        ``check`` and ``calibrate``)."""
        out: dict[str, Any] = {"method": self.method, "score": self.kind, "target": self.target}
        if self.purpose == IDENTIFY:
            out.update(rule=self.rule or BEST, gallery_at_calibration=self.gallery, gallery=gallery)
            rate = self.rate_at(gallery)
            out["expected_rate"] = None if rate is None else round(rate, 6)
            out["outgrown"] = self.outgrown(gallery)
        return out

    def outgrown(self, gallery: int, tolerance: float = 1.5) -> bool:
        """Has the bank grown so far that the promised false-alarm rate no longer holds
        (the expected rate now above ``tolerance`` times the target)?"""
        if self.purpose != IDENTIFY or self.model is None or not self.target:
            return False
        return self.model.false_alarm(self.threshold, gallery) > tolerance * self.target


class ThinDataError(NotEnoughDataError):
    """The trials cannot support the asked rate; the message says how many more are needed."""


def needed(target: float) -> int:
    """How many impostor (or unknown-person) trials a target rate needs."""
    return math.ceil(MIN_EXPECTED / target - 1e-9)


def verification_point(trials: OpenSetTrials, far: float | None, model: RateModel | None = None) -> OperatingPoint:
    """The verification threshold for a false-accept rate ``far`` per claim, or (``far`` None)
    the equal-error-rate threshold, placed by the model rather than on one trial's score."""
    if far is not None and trials.nontarget.size < needed(far):
        raise ThinDataError(
            f"a false-accept rate of {far:g} needs at least {needed(far)} impostor trials; there are "
            f"{trials.nontarget.size}. Enroll more speakers or recordings (or calibrate on a trial list with --trials)."
        )
    model = model or RateModel.fit(trials)
    if far is None:
        return measure(trials, VERIFY, _eer_threshold(model, np.sort(trials.target)), model, "eer", None)
    return measure(trials, VERIFY, model.threshold(far), model, "far", far)


def identification_point(trials: OpenSetTrials, rate: float, gallery: int | None = None,
                         model: RateModel | None = None) -> OperatingPoint:
    """The identification threshold for an unknown-person false-alarm ``rate`` with ``gallery``
    speakers enrolled (default: as many as the calibration's)."""
    n = len(trials.unknown)
    if n < needed(rate):
        raise ThinDataError(
            f"an unknown-person false-alarm rate of {rate:g} needs at least {needed(rate)} unknown-person trials; "
            f"there are {n} (one per enrolled recording, with its speaker left out, plus the cohort). "
            f"Add {needed(rate) - n} more: more recordings of enrolled people (`voicebank add`), or recordings of "
            "people who are not enrolled (`voicebank cohort add FILE...`)."
        )
    model = model or RateModel.fit(trials)
    return measure(trials, IDENTIFY, model.threshold(rate, gallery or trials.gallery), model, "far", rate, gallery)


def measure(trials: OpenSetTrials, purpose: str, t: float, model: RateModel, method: str,
            target: float | None, gallery: int | None = None) -> OperatingPoint:
    """What threshold ``t`` gives on these trials, expected (the model) and counted."""
    if purpose == VERIFY:
        nontarget, genuine = trials.nontarget, trials.target
        miss = float(np.mean(genuine < t)) if genuine.size else None
        return OperatingPoint(VERIFY, t, trials.kind, method, target, model.false_accept(t),
                              int(np.count_nonzero(nontarget >= t)), int(nontarget.size), miss=miss,
                              genuine=int(genuine.size))
    gallery = gallery or trials.gallery
    best = trials.unknown_best
    hit, wrong, miss = open_set_rates(trials.known_decision, trials.known_correct, t)
    return OperatingPoint(IDENTIFY, t, trials.kind, method, target, model.false_alarm(t, gallery),
                          int(np.count_nonzero(best >= t)), int(best.size), miss=miss, hit=hit, wrong=wrong,
                          genuine=int(trials.known_best.size), gallery=gallery, rule=trials.rule, model=model)


def open_set_rates(known_best: np.ndarray, known_correct: np.ndarray, t: float) -> tuple[float | None, ...]:
    """(correctly identified, matched to the wrong speaker, not identified) among genuine probes at ``t``."""
    if len(known_best) == 0:
        return None, None, None
    above = np.asarray(known_best) >= t
    correct = np.asarray(known_correct, dtype=bool)
    return float(np.mean(above & correct)), float(np.mean(above & ~correct)), float(np.mean(~above))


def _eer_threshold(model: RateModel, target: np.ndarray) -> float:
    """Where the smoothed false-accept rate meets the smoothed false-reject rate: with few trials
    the threshold lands between the two sides by a margin their spread supports, never exactly on
    the lowest genuine score."""
    if target.size == 0:
        raise ThinDataError("the equal-error-rate threshold needs genuine trials: a speaker with two or more recordings.")
    genuine = Smoothed.of(target)
    return _solve(lambda t: model.false_accept(t) - (1.0 - genuine(t)), 0.0, float(target[0]) - 1.0,
                  float(target[-1]) + 1.0)


def _left_out_z(row: np.ndarray, spread: float) -> np.ndarray:
    """Each score less the mean of the row's OTHER scores, in units of ``spread``: a new
    voiceprint's score is not part of the level it is compared with."""
    n = row.size
    mean = (row.sum() - row) / (n - 1) if n > 1 else row
    return (row - mean) / spread


def _solve(rate_at: Any, rate: float, lo: float, hi: float) -> float:
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
