"""bench/quality.py's protocol: two folds of a corpus, calibration exactly as `voicebank calibrate`
does it, and what the calibrated thresholds give on people the calibration never saw.

Speakers with at least ``MIN_RECORDINGS`` recordings are split alternately (manifest order) into
halves A and B. In a fold the bank is A, each speaker enrolled from its first ``N_ENROLL``
recordings; the genuine probes are A's other recordings; the unknown persons are every recording
of B. Speakers with fewer recordings are split alternately too: one half is the bank's cohort
(people never enrolled, as `voicebank cohort add` adds them to calibration), the other half joins
the unknown persons. The second fold swaps all halves. Counts are summed over the folds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from voicebank.calibration import RateModel, ThinDataError, identification_point, verification_point
from voicebank.evaluation import trials_from_embeddings
from voicebank.norm import Normalizer
from voicebank.scoring import eer
from voicebank.vectors import voiceprint

MIN_RECORDINGS = 6
N_ENROLL = 5
VERIFY_FAR = 0.01  # what `voicebank calibrate` asks by default
IDENTIFY_RATES = (0.01, 0.05)


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

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """Cosine scores of the genuine (g, k) and unknown (u, k) probes against the voiceprints."""
        return self.genuine.astype(np.float64) @ self.prints.T, self.unknown.astype(np.float64) @ self.prints.T


def halves(by_speaker: dict[str, list[int]]) -> tuple[tuple[list[str], list[str]], tuple[list[str], list[str]]]:
    """((A, B), (cohort half 0, cohort half 1)): speakers split alternately in manifest order."""
    multi = [s for s, idx in by_speaker.items() if len(idx) >= MIN_RECORDINGS]
    rest = [s for s, idx in by_speaker.items() if len(idx) < MIN_RECORDINGS]
    return (multi[0::2], multi[1::2]), (rest[0::2], rest[1::2])


def folds(by_speaker: dict[str, list[int]], wide: np.ndarray, probe: np.ndarray) -> list[Fold]:
    """The two folds; ``wide`` embeds enrollment and cohort recordings, ``probe`` the probes."""
    (a, b), (c0, c1) = halves(by_speaker)
    rows = lambda speakers: [i for s in speakers for i in by_speaker[s]]  # noqa: E731
    out = []
    for f, (bank, away, cohort, strangers) in enumerate(((a, b, c0, c1), (b, a, c1, c0))):
        enroll = [wide[by_speaker[s][:N_ENROLL]] for s in bank]
        held = [(i, k) for k, s in enumerate(bank) for i in by_speaker[s][N_ENROLL:]]
        genuine, unknown = [i for i, _ in held], rows(away) + rows(strangers)
        out.append(Fold(
            f, genuine, unknown, bank, enroll, np.stack([voiceprint(e) for e in enroll]).astype(np.float64),
            probe[genuine], np.array([k for _, k in held]), probe[unknown], wide[rows(cohort)] if cohort else None))
    return out


# ----------------------------------------------------------------------------- calibration


def calibrate(fold: Fold) -> dict:
    """The thresholds `voicebank calibrate` would choose for this bank (cosine score): the
    verification point for false accepts ``VERIFY_FAR`` per claim, and the identification point
    for each of ``IDENTIFY_RATES``. A target the trials cannot support is refused with the
    product's message (ThinDataError), the others are still chosen."""
    trials = trials_from_embeddings([(k + 1, e) for k, e in enumerate(fold.enroll)], fold.cohort,
                                     Normalizer("cosine", 0))
    model = RateModel.fit(trials)
    return {
        "trials": {"genuine": int(trials.target.size), "impostor_pairs": int(trials.nontarget.size),
                   "unknown_probes": len(trials.unknown), "gallery": trials.gallery,
                   "cohort": 0 if fold.cohort is None else len(fold.cohort)},
        "verify": _point(lambda: verification_point(trials, VERIFY_FAR, model)),
        "identify": {str(r): _point(lambda r=r: identification_point(trials, r, len(fold.bank), model))
                     for r in IDENTIFY_RATES},
    }


def _point(choose: Callable) -> dict:
    try:
        p = choose()
    except ThinDataError as exc:
        return {"refused": str(exc)}
    return {"threshold": p.threshold, "target": p.target, "expected": p.rate, "counted": p.counted,
            "calibration_trials": p.trials}


# ----------------------------------------------------------------------------- held-out measurement


def measure(fold: Fold, calib: dict) -> dict:
    """What the fold's calibrated thresholds give on its held-out people (counts, to be summed)."""
    sg, su = fold.scores()
    own = sg[np.arange(len(sg)), fold.owner]
    out: dict = {"genuine": len(sg), "unknown": len(su), "pairs": int(su.size),
                 "closed_top1": int(np.sum(sg.argmax(1) == fold.owner))}
    v = calib["verify"]
    if "threshold" in v:
        t = v["threshold"]
        out["verify"] = {"threshold": t, "false_accepts": int(np.sum(su >= t)), "pairs": int(su.size),
                         "false_rejects": int(np.sum(own < t)), "genuine": int(own.size)}
    out["identify"] = {}
    for rate, p in calib["identify"].items():
        if "threshold" in p:
            out["identify"][rate] = identify_at(sg, fold.owner, su.max(1), p["threshold"])
    return out


def outcomes(fold: Fold, calib: dict) -> dict:
    """Per probe, what the calibrated thresholds decided, to break the errors down by group:
    {corpus row: {"rejected": verification false reject, "<rate>": correctly identified}} for the
    genuine probes and {corpus row: {"<rate>": false alarm, "false_accepts": voiceprints it is
    accepted as (verification), "pairs": voiceprints}} for the unknown persons."""
    sg, su = fold.scores()
    own = sg[np.arange(len(sg)), fold.owner]
    right = sg.argmax(1) == fold.owner
    genuine = {r: {} for r in fold.genuine_rows}
    unknown = {r: {} for r in fold.unknown_rows}
    if "threshold" in calib["verify"]:
        t = calib["verify"]["threshold"]
        for r, s in zip(fold.genuine_rows, own):
            genuine[r]["rejected"] = bool(s < t)
        for r, row in zip(fold.unknown_rows, su):
            unknown[r].update(false_accepts=int(np.sum(row >= t)), pairs=int(row.size))
    for rate, p in calib["identify"].items():
        if "threshold" in p:
            for r, ok, best in zip(fold.genuine_rows, right, sg.max(1)):
                genuine[r][rate] = bool(ok and best >= p["threshold"])
            for r, best in zip(fold.unknown_rows, su.max(1)):
                unknown[r][rate] = bool(best >= p["threshold"])
    return {"genuine": genuine, "unknown": unknown}


def identify_at(sg: np.ndarray, owner: np.ndarray, unknown_best: np.ndarray, t: float) -> dict:
    """Open-set identification at ``t``, and the oracle: the most correct identifications any
    threshold gives without more unknown-person false alarms than ``t`` gave."""
    best, right = sg.max(1), sg.argmax(1) == owner
    false_alarms = int(np.sum(unknown_best >= t))
    t_oracle = oracle_threshold(unknown_best, false_alarms)
    return {"threshold": t, "false_alarms": false_alarms, "unknown": int(unknown_best.size),
            "correct": int(np.sum(right & (best >= t))), "misidentified": int(np.sum(~right & (best >= t))),
            "genuine": int(best.size), "oracle_threshold": t_oracle,
            "oracle_correct": int(np.sum(right & (best >= t_oracle))),
            "oracle_false_alarms": int(np.sum(unknown_best >= t_oracle))}


def oracle_threshold(unknown_stat: np.ndarray, allowed: int) -> float:
    """The lowest threshold at which at most ``allowed`` unknown probes reach it."""
    s = np.sort(unknown_stat)[::-1]
    return -math.inf if allowed >= s.size else float(np.nextafter(s[allowed], np.inf))


def summed(measured: list[dict], calibs: list[dict]) -> dict:
    """Held-out figures of all folds: counts summed, rates from the sums."""
    out: dict = {"genuine": sum(m["genuine"] for m in measured), "unknown": sum(m["unknown"] for m in measured),
                 "closed_top1": sum(m["closed_top1"] for m in measured)}
    ver = [m["verify"] for m in measured if "verify" in m]
    out["verify"] = {"folds": len(ver), **_sum(ver, ("false_accepts", "pairs", "false_rejects", "genuine")),
                     "refused": [c["verify"]["refused"] for c in calibs if "refused" in c["verify"]],
                     "expected": [c["verify"]["expected"] for c in calibs if "expected" in c["verify"]]}
    out["identify"] = {}
    for rate in map(str, IDENTIFY_RATES):
        got = [m["identify"][rate] for m in measured if rate in m["identify"]]
        keys = ("false_alarms", "unknown", "correct", "misidentified", "genuine", "oracle_correct")
        out["identify"][rate] = {
            "folds": len(got), **_sum(got, keys),
            "refused": [c["identify"][rate]["refused"] for c in calibs if "refused" in c["identify"][rate]],
            "expected": [c["identify"][rate]["expected"] for c in calibs if "expected" in c["identify"][rate]]}
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

