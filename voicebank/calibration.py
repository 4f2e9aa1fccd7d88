"""The two operating points and what they promise. numpy only (the models are in ``impostors``).

- **Verification** (1:1, "is this Alice?"): the rate that matters is the false-accept rate of one
  claim by someone else.
- **Identification** (1:N open set, "is this anyone we know?"): the rate that matters is how often
  a person who is *not enrolled* is matched to *anyone*. It grows with the number of enrolled
  speakers N, since an unknown voice gets N chances to clear the threshold.

Each rate is read from the calibration's own trials, smoothed (:class:`Smoothed`: every score
spread by a Gaussian kernel), so a threshold lands between scores by a margin the data supports
rather than on the extreme trial: verification from the impostor pair scores, identification from
each unknown probe's decision statistic against the gallery (:func:`decide`). A target with fewer
trials than ``MIN_EXPECTED / target`` is replaced by the lowest rate the trials support
(:func:`supported`). How the identification rate moves with N comes from a model of impostor
scores (:class:`ImpostorModel`): each unknown probe i has its own level ``mu_i``, all share a
spread, and the pooled standardized scores give the tail's shape (empirical, with a generalized
Pareto tail past the 99th percentile: peaks over threshold, as extreme-value statistics does it).
With ``p_i(t)`` the chance that one score of probe i clears t,

    FA_N(t) = mean_i [1 - (1 - p_i(t)) ** N]

and the counted rate at the calibration's size N0 is carried to N by the ratio FA_N / FA_N0. (The
model alone, checked on held-out speakers, overstated the rate about twofold: real scores have a
lighter tail than a pooled one; the ratio keeps its shape and drops its level.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .channel import WIDEBAND
from .errors import NotEnoughDataError
from .impostors import BEST, MARGIN, ImpostorModel, RateModel, Smoothed, solve
from .openset import genuine_rates

__all__ = ["BEST", "MARGIN", "VERIFY", "IDENTIFY", "SCAN", "ImpostorModel", "RateModel", "Smoothed", "OpenSetTrials",
           "OperatingPoint", "ThinDataError", "decide", "needed", "supported", "upper_bound", "verification_point",
           "identification_point", "measure"]

VERIFY, IDENTIFY = "verify", "identify"
# identification of `scan`'s short windows: an operating point of its own, measured on strangers'
# windows (a 3 s window scores differently from a whole recording); absent, scan uses IDENTIFY's
SCAN = "scan"
# Identification decides on the best score over the gallery, or on the margin rule (see decide):
# the margin rule identified more people at the same unknown-person false-alarm rate on every
# corpus measured with enough trials (bench/quality.py; docs/benchmarks.md, Recognition quality).
RULES = (BEST, MARGIN)
# A target rate needs at least this many errors expected among the trials (2 / 1% = 200 trials):
# a threshold placed where fewer are expected sits at the extreme of the data, and nothing there
# says what the rate is.
MIN_EXPECTED = 2


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
    channel: str = WIDEBAND  # the channel the trials' embeddings are in (voicebank.channel)
    # where the unknown-person trials came from: {"own", "cohort", "reference": counts, "shift": the
    # reference scores' level shift, "spread": its uncertainty}; and the pairs of speaker ids taken for
    # one voice enrolled twice
    sources: dict | None = None
    twins: tuple[tuple[int, int], ...] = ()

    @property
    def nontarget(self) -> np.ndarray:
        return np.concatenate(self.unknown) if self.unknown else np.zeros(0)

    @property
    def unknown_best(self) -> np.ndarray:
        """Each unknown probe's decision statistic (``rule``) against the gallery."""
        return np.array([decide(*top2(r), self.rule) for r in self.unknown if len(r)])

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


def top2(row: np.ndarray) -> tuple[float, float | None]:
    """(best, second best) of one probe's scores against the gallery (second None when alone)."""
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

    purpose: str  # verify, identify, or scan (identification of scan's windows)
    threshold: float
    kind: str  # score kind
    method: str  # "far" (a target rate), "eer", "auto" (measured again after each change), "manual" or "default"
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
    channel: str = WIDEBAND  # the channel its trials came through (voicebank.channel)
    upper: float | None = None  # 95% upper confidence bound of the counted rate (upper_bound)
    asked: float | None = None  # the rate asked for, when the trials could support only ``target``
    sources: dict | None = None  # where its trials came from (OpenSetTrials.sources)
    # the threshold by the speech behind a probe (voicebank.lengths): (seconds, threshold, counted,
    # trials) for probes of 1, 2, ... of the bank's recordings, ``threshold`` first; () where unmeasured
    lengths: tuple[tuple[float, float, int, int], ...] = ()

    def to_dict(self, with_model: bool = True) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("purpose", "threshold", "kind", "method", "target", "rate", "counted",
                                             "trials", "miss", "hit", "wrong", "genuine", "gallery", "rule",
                                             "channel", "upper", "asked", "sources")}
        if self.lengths:
            out["lengths"] = [{"seconds": round(s, 3), "threshold": t, "counted": c, "trials": n}
                              for s, t, c, n in self.lengths]
        if with_model and self.model is not None:
            out["model"] = self.model.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OperatingPoint":
        # what a later voicebank stores and this one does not know is left out, not an error on every decision
        known = set(cls.__dataclass_fields__) - {"model", "lengths"}
        fields = {k: v for k, v in data.items() if k in known}
        model = RateModel.from_dict(data["model"]) if data.get("model") else None
        lengths = tuple((float(d["seconds"]), float(d["threshold"]), int(d["counted"]), int(d["trials"]))
                        for d in data.get("lengths") or ())
        return cls(**fields, model=model, lengths=lengths)

    def at(self, seconds: float | None) -> float:
        """The threshold for a probe with ``seconds`` of speech: ``threshold`` where no lengths were
        measured; else read between the measured lengths (linearly in log seconds), the shortest's
        below it, and above the longest carried one step further on the last segment's line (the
        gap between the last two lengths), then flat. A shorter probe's strangers score lower but
        spread wider, so its threshold is not lowered: held at the median single recording, where
        the single-recording threshold is placed. A probe of unknown length (None, NaN: an embedding
        given directly) gets the highest."""
        if not self.lengths:
            return self.threshold
        at, values = np.log([s for s, *_ in self.lengths]), np.array([t for _, t, *_ in self.lengths])
        high = 2 * at[-1] - at[-2]
        if seconds is None or math.isnan(seconds):
            x = high
        else:
            x = min(math.log(seconds), high) if seconds > 0 else at[0]
        if x > at[-1]:
            return float(values[-1] + (values[-1] - values[-2]) * (x - at[-1]) / (at[-1] - at[-2]))
        return float(np.interp(x, at, values))

    def rate_at(self, gallery: int) -> float | None:
        """The identification false-alarm rate this threshold gives with ``gallery`` speakers."""
        if self.model is None:
            return None
        if gallery < 1 and self.purpose != VERIFY:
            return 0.0  # an empty bank matches no one
        return self.model.false_alarm(self.threshold, gallery) if self.purpose != VERIFY else self.rate

    def status(self, gallery: int) -> dict[str, Any]:
        """What the threshold promises with ``gallery`` speakers enrolled now (for ``identify --json``,
        ``check`` and ``calibrate``)."""
        out: dict[str, Any] = {"method": self.method, "score": self.kind, "target": self.target, "channel": self.channel}
        if self.trials:
            out.update(trials=self.trials, counted=self.counted, upper=None if self.upper is None else round(self.upper, 6),
                       sources=self.sources)
        if self.lengths:  # not to_dict(): it would serialize the rate model on every decision
            out["lengths"] = self.to_dict(with_model=False)["lengths"]
        if self.purpose != VERIFY:
            out.update(rule=self.rule or BEST, gallery_at_calibration=self.gallery, gallery=gallery)
            rate = self.rate_at(gallery)
            out["expected_rate"] = None if rate is None else round(rate, 6)
            out["outgrown"] = self.outgrown(gallery)
        return out

    def outgrown(self, gallery: int, tolerance: float = 1.5) -> bool:
        """Has the bank grown so far that the promised false-alarm rate no longer holds
        (the expected rate now above ``tolerance`` times the target)?"""
        if self.purpose == VERIFY or self.model is None or not self.target:
            return False
        return self.model.false_alarm(self.threshold, gallery) > tolerance * self.target


class ThinDataError(NotEnoughDataError):
    """There are no trials to calibrate a purpose on at all; the message says what to add."""


def needed(target: float) -> int:
    """How many impostor (or unknown-person) trials a target rate needs."""
    return math.ceil(MIN_EXPECTED / target - 1e-9)


def supported(rate: float, trials: int) -> float:
    """The lowest rate ``trials`` impostor (or unknown-person) trials can support: ``rate`` itself
    when they are enough, else ``MIN_EXPECTED / trials`` (with fewer errors expected, a threshold
    sits on the most extreme trial and nothing says what it gives)."""
    return rate if trials >= needed(rate) else MIN_EXPECTED / trials


def upper_bound(errors: int, trials: int, confidence: float = 0.95) -> float | None:
    """The one-sided upper confidence bound of a rate counted as ``errors`` of ``trials``
    (Clopper-Pearson: exact for a binomial count): with 0 of 300 counted, 1.0% at 95%."""
    if not trials:
        return None
    if errors >= trials:
        return 1.0
    from scipy.special import betaincinv

    return float(betaincinv(errors + 1, trials - errors, confidence))


def verification_point(trials: OpenSetTrials, far: float | None, model: RateModel | None = None) -> OperatingPoint:
    """The verification threshold for a false-accept rate ``far`` per claim, or (``far`` None)
    the equal-error-rate threshold, placed by the model rather than on one trial's score. Trials
    too few for ``far`` give the threshold of the lowest rate they support (``asked`` keeps ``far``)."""
    n = trials.nontarget.size
    if far is not None and n == 0:
        raise ThinDataError("verification needs impostor trials: enroll at least two speakers (or calibrate on a "
                            "trial list with --trials).")
    model = model or RateModel.fit(trials)
    if far is None:
        return measure(trials, VERIFY, _eer_threshold(model, np.sort(trials.target)), model, "eer", None)
    rate = supported(far, n)
    point = measure(trials, VERIFY, model.threshold(rate), model, "far", rate)
    return replace(point, asked=far) if rate != far else point


def identification_point(trials: OpenSetTrials, rate: float, gallery: int | None = None,
                         model: RateModel | None = None) -> OperatingPoint:
    """The identification threshold for an unknown-person false-alarm ``rate`` with ``gallery``
    speakers enrolled (default: as many as the calibration's). Trials too few for ``rate`` give
    the threshold of the lowest rate they support (``asked`` keeps ``rate``)."""
    n = len(trials.unknown)
    if n == 0:
        raise ThinDataError("identification needs unknown-person trials: enroll at least two speakers, or add "
                            "recordings of people who are not enrolled (`voicebank cohort add FILE...`).")
    model = model or RateModel.fit(trials)
    target = supported(rate, n)
    point = measure(trials, IDENTIFY, model.threshold(target, gallery or trials.gallery), model, "far", target,
                    gallery)
    return replace(point, asked=rate) if target != rate else point


def measure(trials: OpenSetTrials, purpose: str, t: float, model: RateModel, method: str,
            target: float | None, gallery: int | None = None) -> OperatingPoint:
    """What threshold ``t`` gives on these trials, expected (the model) and counted. A threshold
    the model places past the top of the score's range (voices too alike for the rate asked) is
    the top: it then accepts nothing but identical recordings."""
    top = (1.0 if trials.kind == "cosine" else 100.0) * (3 if purpose != VERIFY and trials.rule == MARGIN else 1)
    t = float(min(max(t, -top), top))
    if purpose == VERIFY:
        nontarget, genuine = trials.nontarget, trials.target
        miss = float(np.mean(genuine < t)) if genuine.size else None
        counted = int(np.count_nonzero(nontarget >= t))
        return OperatingPoint(VERIFY, t, trials.kind, method, target, model.false_accept(t), counted,
                              int(nontarget.size), miss=miss, genuine=int(genuine.size), channel=trials.channel,
                              upper=upper_bound(counted, int(nontarget.size)), sources=trials.sources)
    gallery = gallery or trials.gallery
    best = trials.unknown_best
    hit, wrong, miss = genuine_rates(trials.known_decision, trials.known_correct, t)
    counted = int(np.count_nonzero(best >= t))
    return OperatingPoint(IDENTIFY, t, trials.kind, method, target, model.false_alarm(t, gallery), counted,
                          int(best.size), miss=miss, hit=hit, wrong=wrong, genuine=int(trials.known_best.size),
                          gallery=gallery, rule=trials.rule, model=model, channel=trials.channel,
                          upper=upper_bound(counted, int(best.size)), sources=trials.sources)


def _eer_threshold(model: RateModel, target: np.ndarray) -> float:
    """Where the smoothed false-accept rate meets the smoothed false-reject rate: with few trials
    the threshold lands between the two sides by a margin their spread supports, never exactly on
    the lowest genuine score."""
    if target.size == 0:
        raise ThinDataError("the equal-error-rate threshold needs genuine trials: a speaker with two or more recordings.")
    genuine = Smoothed.of(target)
    return solve(lambda t: model.false_accept(t) - (1.0 - genuine(t)), 0.0, float(target[0]) - 1.0,
                  float(target[-1]) + 1.0)
