"""bench/quality.py's bank-size and channel protocol: what a promise holds on strangers, for banks of
10, 30 and 100 people, through a wideband channel and through telephone codecs.

A bank is drawn at random from one corpus (``DRAWS`` times per size): each person enrolled from
``N_ENROLL`` recordings (wideband, as people enroll at a desk or in an app), their other recordings
the genuine probes. It is calibrated exactly as the product calibrates it
(``voicebank.evaluation.bank_trials``: its own recordings, and the reference set of strangers when
its own are too few, moved to the level of its own strangers), in the channel the probes are
decided in, then measured on strangers it never saw:

- strangers of the same corpus (its language, its microphones) where the bank leaves some; the
  reference set is then built from the *other* corpus (the shipped one holds both, so here it is
  rebuilt leaving the measured corpus out: ``reference_set.cached``);
- for a bank of every person of a corpus, strangers of the other corpus, and no reference set;
- for the smaller banks, strangers of the other corpus as well (``... , another corpus``): people
  of another language and other microphones. They are the reference set's people, each at their own
  level rather than moved to the bank's: what a promise made for the bank's own population gives
  against strangers unlike it.

Channels: ``wideband`` probes as recorded; ``telephone`` probes through 8 kHz mu-law (the issue's
telephone), ``gsm`` (GSM 06.10) and ``amr`` (AMR-NB 12.2 kbit/s), real codecs run by sox, none of
them the channel voicebank simulates (G.712 band, mu-law). A telephone probe is decided as the
product decides it: passed through the simulated channel and scored against telephone voiceprints
(the enrollment recordings through the simulated channel) with the telephone operating point.
``... before`` rows decide the same probes as voicebank did before channels: against the wideband
voiceprints with the wideband threshold.
"""

from __future__ import annotations

import math

import numpy as np

from voicebank.calibration import (IDENTIFY, MARGIN, VERIFY, RateModel, ThinDataError, identification_point,
                                   verification_point)
from voicebank.channel import TELEPHONE, WIDEBAND
from voicebank.evaluation import bank_trials, by_length, trials_per_purpose, twin_pairs
from voicebank.lengths import with_lengths
from voicebank.norm import Normalizer
from voicebank.vectors import voiceprint

from quality_protocol import identify_at, statistic, thresholds

SIZES = (10, 30, 100)
DRAWS = 10
N_ENROLL = 3
MIN_RECORDINGS = 6  # a person in a bank needs enrollment recordings and probes
FAR = 0.01
RATES = (0.01, 0.05)
# probe channel -> (the embeddings' cache channel, the channel it is decided in)
PROBES = {"wideband": ("wide", WIDEBAND), "telephone": ("tel+sim", TELEPHONE), "gsm": ("gsm+sim", TELEPHONE),
          "amr": ("amr+sim", TELEPHONE)}
BEFORE = {"telephone": "tel", "gsm": "gsm", "amr": "amr"}  # the same calls, as voicebank decided them before


def channels_needed() -> set[str]:
    """The cache channels this protocol reads."""
    return {"wide", "sim"} | {c for c, _ in PROBES.values()} | set(BEFORE.values())


def run(corpora: dict, embeddings, references: dict, duplicate: float, sizes=SIZES, draws: int = DRAWS,
        seconds=None) -> dict:
    """{corpus: {size: {channel: figures}}}; ``embeddings(corpus, channel)`` the cached (n, d)
    embeddings, ``references[name]`` the reference set built from the other corpus, ``seconds(corpus)``
    each recording's seconds of speech (a call's taken as its wideband recording's; None: unknown,
    one threshold for every length)."""
    seconds = seconds or (lambda corpus: np.full(len(corpus.paths), np.nan))
    out: dict = {}
    rng = np.random.default_rng(0)
    for name, corpus in corpora.items():
        others = [c for n, c in corpora.items() if n != name]
        by_speaker = corpus.by_speaker()
        eligible = [s for s, rows in by_speaker.items() if len(rows) >= MIN_RECORDINGS]
        for size in sizes:
            if size > len(eligible):
                continue
            whole = size == len(eligible)
            if whole and not others:
                continue
            figures: dict = {}
            for _ in range(1 if whole else draws):
                bank = list(rng.choice(eligible, size, replace=False)) if not whole else eligible
                strangers = _strangers(corpus, by_speaker, bank, embeddings, seconds(corpus)) if not whole else \
                    {ch: np.concatenate([embeddings(o, ch) for o in others]) for ch in channels_needed()}
                if whole:
                    strangers["seconds"] = np.concatenate([seconds(o) for o in others])
                reference = None if whole else references.get(name)
                foreign = {} if whole else {ch: np.concatenate([embeddings(o, ch) for o in others])
                                            for ch in ("wide", "tel+sim")}
                if foreign:
                    foreign["seconds"] = np.concatenate([seconds(o) for o in others])
                _one_bank(corpus, by_speaker, bank, strangers, embeddings, reference, duplicate, figures, foreign,
                          seconds(corpus))
            out.setdefault(name, {})[str(size)] = {
                "draws": 1 if whole else draws, "strangers": "other corpus" if whole else "same corpus",
                "reference": None if whole or references.get(name) is None else
                f"{references[name].people()} people of {', '.join(sorted(set(references[name].corpora)))}",
                "channels": figures}
    return out


def _strangers(corpus, by_speaker: dict, bank: list[str], embeddings, seconds: np.ndarray) -> dict[str, np.ndarray]:
    rows = [i for s, idx in by_speaker.items() if s not in bank for i in idx]
    return {**{ch: embeddings(corpus, ch)[rows] for ch in channels_needed()}, "seconds": seconds[rows]}


def _one_bank(corpus, by_speaker: dict, bank: list[str], strangers: dict, embeddings, reference, duplicate: float,
              figures: dict, foreign: dict, seconds: np.ndarray) -> None:
    enroll_rows = [by_speaker[s][:N_ENROLL] for s in bank]
    probe_rows = [(i, k) for k, s in enumerate(bank) for i in by_speaker[s][N_ENROLL:]]
    genuine_rows, owner = [i for i, _ in probe_rows], np.array([k for _, k in probe_rows])
    genuine = (owner, seconds[genuine_rows])
    points = {}
    twins = twin_pairs([(k + 1, embeddings(corpus, "wide")[rows]) for k, rows in enumerate(enroll_rows)], duplicate)
    for decided, enrolled in ((WIDEBAND, "wide"), (TELEPHONE, "sim")):
        found = [(k + 1, embeddings(corpus, enrolled)[rows]) for k, rows in enumerate(enroll_rows)]
        points[decided] = _calibrate(found, reference, decided, twins, [seconds[rows] for rows in enroll_rows])
    for probe, (cache_channel, decided) in PROBES.items():
        _measure(figures.setdefault(probe, {}), embeddings(corpus, cache_channel)[genuine_rows], genuine,
                 (strangers[cache_channel], strangers["seconds"]),
                 _prints(corpus, enroll_rows, "sim" if decided == TELEPHONE else "wide", embeddings), points[decided])
        if cache_channel in foreign:
            _measure(figures.setdefault(f"{probe}, another corpus", {}), embeddings(corpus, cache_channel)[genuine_rows],
                     genuine, (foreign[cache_channel], foreign["seconds"]),
                     _prints(corpus, enroll_rows, "sim" if decided == TELEPHONE else "wide", embeddings), points[decided])
        if probe in BEFORE:
            _measure(figures.setdefault(f"{probe} before", {}), embeddings(corpus, BEFORE[probe])[genuine_rows],
                     genuine, (strangers[BEFORE[probe]], strangers["seconds"]),
                     _prints(corpus, enroll_rows, "wide", embeddings), points[WIDEBAND])


def _prints(corpus, enroll_rows, channel: str, embeddings) -> np.ndarray:
    return np.stack([voiceprint(embeddings(corpus, channel)[rows]) for rows in enroll_rows]).astype(np.float64)


def _calibrate(found, reference, channel: str, twins: list[tuple[int, int]], speech: list[np.ndarray]) -> dict:
    """The thresholds `voicebank calibrate` chooses for this bank in ``channel`` (what a bank on
    automatic calibration stores after its last enrollment), by probe length (``speech``: each
    speaker's enrollment recordings' seconds of speech)."""
    out = {}
    make = lambda wanted, combine=1: bank_trials(found, None, Normalizer("cosine", 0), MARGIN, twins,  # noqa: E731
                                                 reference, channel, wanted, combine=combine)
    lengths = lambda p: [[s, t] for s, t, *_ in with_lengths({p.purpose: p}, by_length(make), speech)[p.purpose].lengths]  # noqa: E731
    for rate in RATES:
        data = trials_per_purpose(make, FAR, rate, (VERIFY, IDENTIFY) if rate == RATES[0] else (IDENTIFY,))
        trials = data[IDENTIFY]
        try:
            p = identification_point(trials, rate, len(found), RateModel.fit(trials))
        except ThinDataError as exc:
            out[rate] = {"refused": str(exc)}
            continue
        out[rate] = {"threshold": p.threshold, "target": p.target, "asked": p.asked, "upper": p.upper,
                     "sources": p.sources, "lengths": lengths(p)}
        if VERIFY in data:
            v = verification_point(data[VERIFY], FAR, RateModel.fit(data[VERIFY]))
            out["verify"] = {"threshold": v.threshold, "target": v.target, "lengths": lengths(v)}
    return out


def _measure(acc: dict, genuine: np.ndarray, whose: tuple[np.ndarray, np.ndarray], unknown: tuple[np.ndarray, np.ndarray],
             prints: np.ndarray, points: dict) -> None:
    """What ``points`` give on the ``genuine`` probes ((owner, seconds of speech) each: ``whose``)
    and the ``unknown`` ones ((embeddings, seconds)), each decided at its own length's threshold."""
    (owner, g_seconds), (unknown, u_seconds) = whose, unknown
    sg, su = genuine.astype(np.float64) @ prints.T, unknown.astype(np.float64) @ prints.T
    right = sg.argmax(1) == owner
    gen, unk = statistic(sg, MARGIN), statistic(su, MARGIN)
    for rate in RATES:
        p = points[rate]
        if "threshold" not in p:
            acc.setdefault(str(rate), {}).setdefault("refused", 0)
            acc[str(rate)]["refused"] += 1
            continue
        got = identify_at(gen, right, unk, thresholds(p, g_seconds), thresholds(p, u_seconds))
        a = acc.setdefault(str(rate), {})
        for key in ("false_alarms", "unknown", "correct", "genuine", "oracle_correct"):
            a[key] = a.get(key, 0) + got[key]
        a["promised"] = a.get("promised", 0.0) + p["target"] * got["unknown"]
        a.setdefault("per_bank", []).append([got["false_alarms"], p["target"] * got["unknown"]])
        a["reference_used"] = a.get("reference_used", 0) + bool(p["sources"] and p["sources"].get("reference"))
        a["banks"] = a.get("banks", 0) + 1
    if "verify" in points:
        own = sg[np.arange(len(sg)), owner]
        tu, tg = thresholds(points["verify"], u_seconds), thresholds(points["verify"], g_seconds)
        v = acc.setdefault("verify", {"false_accepts": 0, "pairs": 0, "false_rejects": 0, "genuine": 0,
                                      "promised": 0.0})
        v["false_accepts"] += int(np.sum(su >= tu[:, None]))
        v["pairs"] += int(su.size)
        v["false_rejects"] += int(np.sum(own < tg))
        v["genuine"] += int(own.size)
        v["promised"] += points["verify"]["target"] * su.size


def ratio(measured: int, promised: float) -> float:
    return measured / promised if promised else math.nan


def ratio_interval(per_bank: list, level: float = 0.9, draws: int = 2000) -> tuple[float, float] | None:
    """A ``level`` bootstrap interval of measured / promised over the banks drawn ([false alarms,
    promised count] each): how much of a cell's ratio is the luck of which people were drawn."""
    if len(per_bank) < 2:
        return None
    counts = np.asarray(per_bank, dtype=np.float64)
    pick = np.random.default_rng(0).integers(len(counts), size=(draws, len(counts)))
    sums = counts[pick].sum(axis=1)
    ratios = sums[:, 0] / np.maximum(sums[:, 1], 1e-12)
    return float(np.quantile(ratios, (1 - level) / 2)), float(np.quantile(ratios, (1 + level) / 2))
