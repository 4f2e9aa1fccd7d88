"""bench/quality.py's protocol: two folds of a corpus, calibration exactly as `voicebank calibrate`
does it, and what the calibrated thresholds give on people the calibration never saw.

Speakers with at least ``MIN_RECORDINGS`` recordings are split alternately (manifest order) into
halves A and B. In a fold the bank is A, each speaker enrolled from its first ``N_ENROLL``
recordings; the genuine probes are A's other recordings; the unknown persons are every recording
of B. Speakers with fewer recordings are split alternately too: one half is the bank's cohort
(people never enrolled, as `voicebank cohort add` adds them to calibration), the other half joins
the unknown persons. The second fold swaps all halves. Counts are summed over the folds.

Identification is calibrated and measured under each decision rule of ``RULES`` (see
``voicebank.calibration.decide``): ``margin`` (2 x best - second best cosine over the gallery; what
new banks decide by) and ``best`` (the best cosine; banks migrated from before the margin rule).
The held-out statistic is computed with ``decide`` and the same rule the threshold was calibrated
for; the candidate is always the cosine top-1. Verification (1:1 cosine) does not depend on it.

Each threshold is measured by probe length as the product measures it (``lengths.with_lengths``,
from the enrollment recordings' seconds of speech), and each held-out probe is decided at the
threshold read at its own speech (``OperatingPoint.at``), as the product decides it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from voicebank.calibration import (BEST, IDENTIFY, MARGIN, VERIFY, OperatingPoint, RateModel, ThinDataError, decide,
                                   identification_point, verification_point)
from voicebank.channel import WIDEBAND
from voicebank.evaluation import bank_trials, by_length, trials_per_purpose
from voicebank.lengths import with_lengths
from voicebank.norm import Normalizer
from voicebank.scoring import eer
from voicebank.vectors import voiceprint

MIN_RECORDINGS = 6
N_ENROLL = 5
VERIFY_FAR = 0.01  # what `voicebank calibrate` asks by default
IDENTIFY_RATES = (0.01, 0.05)
RULES = (MARGIN, BEST)  # the product's default for new banks first


@dataclass
class Fold:
    """One fold of one corpus on one probe channel. Enrollment and cohort are always wideband."""

    index: int
    genuine_rows: list[int]  # corpus rows of the genuine probes
    unknown_rows: list[int]  # corpus rows of the unknown-person probes
    bank: list[str]  # enrolled speakers
    enroll: list[np.ndarray]  # per bank speaker, (N_ENROLL, d) enrollment embeddings
    prints: np.ndarray  # (k, d) voiceprints, float64
    genuine: np.ndarray  # (g, d) held-out recordings of bank speakers
    owner: np.ndarray  # (g,) index into bank of each genuine probe
    unknown: np.ndarray  # (u, d) recordings of people not enrolled
    cohort: np.ndarray | None  # (c, d) never-enrolled people given to calibration, or None
    # seconds of speech: per bank speaker of each enrollment recording, of each genuine and unknown probe
    enroll_seconds: list[np.ndarray]
    genuine_seconds: np.ndarray
    unknown_seconds: np.ndarray

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """Cosine scores of the genuine (g, k) and unknown (u, k) probes against the voiceprints."""
        return self.genuine.astype(np.float64) @ self.prints.T, self.unknown.astype(np.float64) @ self.prints.T


def halves(by_speaker: dict[str, list[int]]) -> tuple[tuple[list[str], list[str]], tuple[list[str], list[str]]]:
    """((A, B), (cohort half 0, cohort half 1)): speakers split alternately in manifest order."""
    multi = [s for s, idx in by_speaker.items() if len(idx) >= MIN_RECORDINGS]
    rest = [s for s, idx in by_speaker.items() if len(idx) < MIN_RECORDINGS]
    return (multi[0::2], multi[1::2]), (rest[0::2], rest[1::2])


def folds(by_speaker: dict[str, list[int]], wide: np.ndarray, probe: np.ndarray,
          seconds: np.ndarray | None = None) -> list[Fold]:
    """The two folds; ``wide`` embeds enrollment and cohort recordings, ``probe`` the probes;
    ``seconds``: each recording's seconds of speech (None: unknown, one threshold for every length)."""
    seconds = np.full(len(wide), np.nan) if seconds is None else seconds
    (a, b), (c0, c1) = halves(by_speaker)
    rows = lambda speakers: [i for s in speakers for i in by_speaker[s]]  # noqa: E731
    out = []
    for f, (bank, away, cohort, strangers) in enumerate(((a, b, c0, c1), (b, a, c1, c0))):
        enroll = [wide[by_speaker[s][:N_ENROLL]] for s in bank]
        held = [(i, k) for k, s in enumerate(bank) for i in by_speaker[s][N_ENROLL:]]
        genuine, unknown = [i for i, _ in held], rows(away) + rows(strangers)
        out.append(Fold(
            f, genuine, unknown, bank, enroll, np.stack([voiceprint(e) for e in enroll]).astype(np.float64),
            probe[genuine], np.array([k for _, k in held]), probe[unknown], wide[rows(cohort)] if cohort else None,
            [seconds[by_speaker[s][:N_ENROLL]] for s in bank], seconds[genuine], seconds[unknown]))
    return out


# ----------------------------------------------------------------------------- calibration


def calibrate(fold: Fold, reference=None, channel: str = WIDEBAND) -> dict:
    """The thresholds `voicebank calibrate` would choose for this bank (cosine score) in ``channel``:
    the verification point for false accepts ``VERIFY_FAR`` per claim, and for each rule of
    ``RULES`` the identification point for each of ``IDENTIFY_RATES``, calibrated on that rule's
    statistic, with the ``reference`` set of strangers where the bank's own trials are too few
    (as the product: ``bank_trials``). A rate the trials cannot support is calibrated at the
    lowest they support (``target``; ``asked`` keeps the one asked)."""
    speakers = [(k + 1, e) for k, e in enumerate(fold.enroll)]
    out: dict = {"identify": {}}
    for rule in RULES:
        make = lambda wanted, combine=1, rule=rule: bank_trials(  # noqa: E731
            speakers, fold.cohort, Normalizer("cosine", 0), rule, (), reference, channel, wanted, combine=combine)
        lengthen = lambda which, point, make=make: with_lengths(  # noqa: E731
            {which: point}, by_length(make), fold.enroll_seconds)[which]
        for rate in IDENTIFY_RATES:
            both = rule == MARGIN and rate == IDENTIFY_RATES[0]  # verification once: it reads impostor pairs only
            data = trials_per_purpose(make, VERIFY_FAR, rate, (VERIFY, IDENTIFY) if both else (IDENTIFY,))
            trials = data[IDENTIFY]
            model = RateModel.fit(trials)
            out["identify"].setdefault(rule, {})[str(rate)] = _point(
                lambda: lengthen(IDENTIFY, identification_point(trials, rate, len(fold.bank), model)), rule)
            if VERIFY in data:  # verification reads the impostor pairs only, the same under either rule
                v = data[VERIFY]
                out["trials"] = {"genuine": int(v.target.size), "impostor_pairs": int(v.nontarget.size),
                                 "unknown_probes": len(trials.unknown), "gallery": trials.gallery,
                                 "cohort": 0 if fold.cohort is None else len(fold.cohort)}
                out["verify"] = _point(lambda: lengthen(VERIFY, verification_point(v, VERIFY_FAR, RateModel.fit(v))))
    return out


def _point(choose: Callable, rule: str | None = None) -> dict:
    try:
        p = choose()
    except ThinDataError as exc:
        return {"refused": str(exc)}
    if rule is not None and p.rule != rule:
        raise AssertionError(f"calibrated for rule {p.rule!r}, asked for {rule!r}")
    out = {"threshold": p.threshold, "target": p.target, "asked": p.asked, "expected": p.rate, "counted": p.counted,
           "calibration_trials": p.trials, "sources": p.sources, "lengths": [[s, t] for s, t, *_ in p.lengths]}
    if rule is not None:
        out.update(rule=p.rule, calibration_hit=p.hit, calibration_wrong=p.wrong)
    return out


# ----------------------------------------------------------------------------- held-out measurement


def thresholds(point: dict, seconds: np.ndarray) -> np.ndarray:
    """The threshold each probe is decided at: ``point``'s (as ``_point`` keeps it) read at the
    probe's ``seconds`` of speech, as the product reads it (``OperatingPoint.at``)."""
    read = OperatingPoint(VERIFY, point["threshold"], "cosine", "far", None, None,
                          lengths=tuple((s, t, 0, 0) for s, t in point.get("lengths") or ()))
    return np.array([read.at(float(s)) for s in seconds])


def statistic(scores: np.ndarray, rule: str) -> np.ndarray:
    """Each probe's identification statistic under ``rule``, from its row of cosines against the
    gallery: ``decide(best, second best, rule)``, exactly as the product decides."""
    if scores.shape[1] < 2:
        return np.array([decide(float(r.max()), None, rule) for r in scores])
    top = -np.sort(-scores, axis=1)[:, :2]
    return np.array([decide(float(b), float(s), rule) for b, s in top])


def measure(fold: Fold, calib: dict) -> dict:
    """What the fold's calibrated thresholds give on its held-out people (counts, to be summed)."""
    sg, su = fold.scores()
    own = sg[np.arange(len(sg)), fold.owner]
    right = sg.argmax(1) == fold.owner
    out: dict = {"genuine": len(sg), "unknown": len(su), "pairs": int(su.size), "closed_top1": int(right.sum())}
    v = calib["verify"]
    if "threshold" in v:
        tu, tg = thresholds(v, fold.unknown_seconds), thresholds(v, fold.genuine_seconds)
        out["verify"] = {"threshold": v["threshold"], "false_accepts": int(np.sum(su >= tu[:, None])),
                         "pairs": int(su.size), "false_rejects": int(np.sum(own < tg)), "genuine": int(own.size),
                         "promised": v["target"] * su.size}
    out["identify"] = {}
    for rule, points in calib["identify"].items():
        gen, unk = statistic(sg, rule), statistic(su, rule)
        out["identify"][rule] = {rate: {**identify_at(gen, right, unk, thresholds(p, fold.genuine_seconds),
                                                      thresholds(p, fold.unknown_seconds)),
                                        "threshold": p["threshold"], "promised": p["target"] * len(unk)}
                                 for rate, p in points.items() if "threshold" in p}
    return out


def outcomes(fold: Fold, calib: dict) -> dict:
    """Per probe, what the calibrated thresholds decided, to break the errors down by group:
    {corpus row: {"rejected": verification false reject, (rule, rate): correctly identified}} for
    the genuine probes and {corpus row: {(rule, rate): false alarm, "false_accepts": voiceprints it
    is accepted as (verification), "pairs": voiceprints}} for the unknown persons."""
    sg, su = fold.scores()
    own = sg[np.arange(len(sg)), fold.owner]
    right = sg.argmax(1) == fold.owner
    genuine = {r: {} for r in fold.genuine_rows}
    unknown = {r: {} for r in fold.unknown_rows}
    if "threshold" in calib["verify"]:
        v = calib["verify"]
        for r, s, t in zip(fold.genuine_rows, own, thresholds(v, fold.genuine_seconds)):
            genuine[r]["rejected"] = bool(s < t)
        for r, row, t in zip(fold.unknown_rows, su, thresholds(v, fold.unknown_seconds)):
            unknown[r].update(false_accepts=int(np.sum(row >= t)), pairs=int(row.size))
    for rule, points in calib["identify"].items():
        gen, unk = statistic(sg, rule), statistic(su, rule)
        for rate, p in points.items():
            if "threshold" in p:
                for r, ok, g, t in zip(fold.genuine_rows, right, gen, thresholds(p, fold.genuine_seconds)):
                    genuine[r][rule, rate] = bool(ok and g >= t)
                for r, u, t in zip(fold.unknown_rows, unk, thresholds(p, fold.unknown_seconds)):
                    unknown[r][rule, rate] = bool(u >= t)
    return {"genuine": genuine, "unknown": unknown}


def identify_at(gen_stat: np.ndarray, right: np.ndarray, unknown_stat: np.ndarray, t,
                t_unknown=None) -> dict:
    """Open-set identification at ``t`` (a probe is identified when its statistic reaches ``t``,
    as its cosine top-1 candidate; ``t`` one threshold, or one per genuine probe and ``t_unknown``
    one per unknown probe), and the oracle: the most correct identifications any single
    threshold on the same statistic gives without more unknown-person false alarms than ``t``."""
    false_alarms = int(np.sum(unknown_stat >= (t if t_unknown is None else t_unknown)))
    t_oracle = oracle_threshold(unknown_stat, false_alarms)
    return {"threshold": float(t) if np.ndim(t) == 0 else None, "false_alarms": false_alarms,
            "unknown": int(unknown_stat.size),
            "correct": int(np.sum(right & (gen_stat >= t))), "misidentified": int(np.sum(~right & (gen_stat >= t))),
            "genuine": int(gen_stat.size), "oracle_threshold": t_oracle,
            "oracle_correct": int(np.sum(right & (gen_stat >= t_oracle))),
            "oracle_false_alarms": int(np.sum(unknown_stat >= t_oracle))}


def oracle_threshold(unknown_stat: np.ndarray, allowed: int) -> float:
    """The lowest threshold at which at most ``allowed`` unknown probes reach it."""
    s = np.sort(unknown_stat)[::-1]
    return -math.inf if allowed >= s.size else float(np.nextafter(s[allowed], np.inf))


def summed(measured: list[dict], calibs: list[dict]) -> dict:
    """Held-out figures of all folds: counts summed, rates from the sums."""
    out: dict = {"genuine": sum(m["genuine"] for m in measured), "unknown": sum(m["unknown"] for m in measured),
                 "closed_top1": sum(m["closed_top1"] for m in measured)}
    ver = [m["verify"] for m in measured if "verify" in m]
    out["verify"] = {"folds": len(ver), **_sum(ver, ("false_accepts", "pairs", "false_rejects", "genuine", "promised")),
                     "refused": [c["verify"]["refused"] for c in calibs if "refused" in c["verify"]],
                     "expected": [c["verify"]["expected"] for c in calibs if "expected" in c["verify"]]}
    out["identify"] = {}
    for rule in RULES:
        out["identify"][rule] = {}
        for rate in map(str, IDENTIFY_RATES):
            got = [m["identify"][rule][rate] for m in measured if rate in m["identify"][rule]]
            keys = ("false_alarms", "unknown", "correct", "misidentified", "genuine", "oracle_correct", "promised")
            points = [c["identify"][rule][rate] for c in calibs]
            out["identify"][rule][rate] = {
                "folds": len(got), **_sum(got, keys),
                "refused": [p["refused"] for p in points if "refused" in p],
                "expected": [p["expected"] for p in points if "expected" in p]}
    return out


def _sum(items: list[dict], keys: tuple[str, ...]) -> dict:
    return {k: sum(i[k] for i in items) for k in keys}


def pooled_eer(folds_: list[Fold]) -> dict:
    """EER of the held-out verification trials of all folds: genuine probes against their own
    voiceprint, unknown persons against every voiceprint (cosine, so the folds pool)."""
    target, nontarget = [], []
    for f in folds_:
        sg, su = f.scores()
        target.append(sg[np.arange(len(sg)), f.owner])
        nontarget.append(su.ravel())
    t, n = np.concatenate(target), np.concatenate(nontarget)
    rate, threshold = eer(t, n)
    return {"eer": rate, "threshold": threshold, "target": int(t.size), "nontarget": int(n.size)}

