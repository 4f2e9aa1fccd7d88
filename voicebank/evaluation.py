"""Measuring a bank on data: error rates of scored trials, calibration, DET plots.

Trial lists are read and scored in ``trials.py`` (its names are importable from here too).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from . import scoring
from .calibration import (BEST, IDENTIFY, VERIFY, OpenSetTrials, OperatingPoint, RateModel, ThinDataError,
                          identification_point, measure, verification_point)
from .errors import InvalidInputError, NotEnoughDataError
from .norm import Normalizer
from .trials import (ENROLLED, LABELS, PAIRS, Progress, Scores, Trial, TrialFileError,  # noqa: F401 (re-exported)
                     read_trials, score_trial_file, score_trials)
from .trials import Bank as TrialBank
from .vectors import voiceprint


class Bank(TrialBank, Protocol):
    """What measuring uses: part of the public surface of :class:`voicebank.VoiceBank` (this module
    works over the facade, as a client would, so that a measurement is what a client gets)."""

    identify_rule: str

    def utterance_embeddings(self) -> list[tuple[int, str, np.ndarray]]: ...
    def cohort_embeddings(self) -> np.ndarray: ...
    def operating_points(self) -> dict[str, OperatingPoint]: ...


@dataclass
class Report:
    """Error rates of a set of scores; thresholds are on the bank's score."""

    kind: str
    n_target: int
    n_nontarget: int
    eer: float
    eer_threshold: float
    min_dcf: dict[str, dict[str, float]]
    far_target: float
    at_far: scoring.ErrorRates
    current: scoring.ErrorRates | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        rates = lambda r: None if r is None else {"threshold": r.threshold, "far": r.far, "frr": r.frr}  # noqa: E731
        return {
            "score": self.kind, "n_target": self.n_target, "n_nontarget": self.n_nontarget,
            "eer": self.eer, "eer_threshold": self.eer_threshold, "min_dcf": self.min_dcf,
            "far_target": self.far_target, "at_far": rates(self.at_far), "current_threshold": rates(self.current),
            **self.extra,
        }



def open_set_trials(bank: Bank, max_probes: int = 5000, seed: int = 0, rule: str | None = None) -> OpenSetTrials:
    """Calibration trials made from the bank itself, no audio needed: see :func:`trials_from_embeddings`.
    The cohort (people never enrolled) adds unknown-person trials. ``rule``: the identification
    decision to calibrate (default: the bank's)."""
    speakers = bank.utterance_embeddings()
    scorer = bank.scorer()
    cohort = scorer.cohort if scorer.cohort is not None else bank.cohort_embeddings()
    return trials_from_embeddings([(sid, e) for sid, _, e in speakers], cohort, scorer, max_probes, seed,
                                  rule or bank.identify_rule)


def trials_from_embeddings(speakers: list[tuple[int, np.ndarray]], cohort: np.ndarray | None, scorer: Normalizer,
                           max_probes: int = 5000, seed: int = 0, rule: str = BEST) -> OpenSetTrials:
    """Open-set calibration trials from enrolled speakers' utterance embeddings ((id, (n, d)) each).

    Genuine: each recording of a speaker with two or more, against that speaker's voiceprint made
    WITHOUT it (verification), and against the whole gallery with that voiceprint in place of the
    speaker's (identification: is its best score its own speaker?). Unknown persons: each recording
    with its speaker taken out of the gallery, scored against everyone else, and each ``cohort``
    recording (people never enrolled) against everyone. Above ``max_probes`` recordings a fixed
    random sample of them is used, so calibration time stays bounded on big banks.
    """
    if len(speakers) < 3:
        raise NotEnoughDataError(
            f"calibrating from the bank needs at least 3 enrolled speakers (it has {len(speakers)}): each one's "
            "recordings are scored against the others as if they were strangers. Enroll more, or give a trial "
            "list with --trials (verification only)."
        )
    ids = np.array([sid for sid, _ in speakers])
    prints = np.stack([voiceprint(e) for _, e in speakers]).astype(np.float64)
    owner = np.concatenate([[k] * len(e) for k, (_, e) in enumerate(speakers)])
    utterances = np.concatenate([e for _, e in speakers]).astype(np.float64)
    chosen = np.arange(len(utterances))
    if len(chosen) > max_probes:
        chosen = np.sort(np.random.default_rng(seed).choice(len(chosen), max_probes, replace=False))
    target, known_best, known_second, known_correct, unknown = [], [], [], [], []
    everyone = np.arange(len(speakers))
    members = [np.flatnonzero(owner == k) for k in everyone]  # each speaker's rows of ``utterances``
    for u in chosen:
        k, probe = owner[u], utterances[u]
        others = everyone[everyone != k]
        excl = [(int(ids[k]), int(ids[j])) for j in others]
        row = scorer.score(np.repeat(probe[None, :], len(others), 0), prints[others], excl, excl)
        unknown.append(row)
        if len(members[k]) >= 2:
            held_out = voiceprint(utterances[members[k][members[k] != u]])
            score = float(scorer.score(probe, held_out, [(int(ids[k]),)], [(int(ids[k]),)])[0])
            target.append(score)
            top = np.sort(np.append(row, score))[::-1]
            known_best.append(float(top[0]))
            known_second.append(float(top[1]))
            known_correct.append(score >= float(row.max()))
    for probe in cohort if cohort is not None else ():
        every = [(int(i),) for i in ids]
        unknown.append(scorer.score(np.repeat(probe[None, :], len(prints), 0), prints, every, every))
    if not target:
        raise NotEnoughDataError(
            "calibrating from the bank needs genuine trials: at least one speaker with two or more recordings. "
            "Add recordings (`voicebank add NAME FILE...`), or give a trial list with --trials."
        )
    return OpenSetTrials(np.array(target), np.array(known_best), np.array(known_correct, dtype=bool), unknown,
                         len(speakers), scorer.kind, np.array(known_second), rule)


def trial_list_trials(scores: Scores) -> OpenSetTrials:
    """Verification trials from a scored trial list, as :class:`OpenSetTrials` (no identification
    view: a trial list says nothing about a gallery). The non-target scores form one row."""
    return OpenSetTrials(scores.target, np.zeros(0), np.zeros(0, dtype=bool), [scores.nontarget], 1, scores.kind)


@dataclass
class Calibration:
    """What ``calibrate`` measured: the chosen operating points, what the stored thresholds give
    on the same trials, and how the identification promise moves as the bank grows."""

    chosen: dict[str, OperatingPoint]
    stored: dict[str, OperatingPoint]
    trials: OpenSetTrials
    source: str  # "bank" or the trial list's path
    growth: list[tuple[int, float]] = field(default_factory=list)  # (speakers, false alarms at the chosen threshold)
    scored: Scores | None = None  # the trial list's scores, when calibrated on one

    def to_dict(self) -> dict[str, Any]:
        t = self.trials
        return {
            "source": self.source, "score": t.kind, "gallery": t.gallery,
            "trials": {"genuine": int(t.target.size), "impostor": int(t.nontarget.size), "unknown": len(t.unknown)},
            "chosen": {k: p.to_dict(with_model=False) for k, p in self.chosen.items()},
            "stored": {k: p.to_dict(with_model=False) for k, p in self.stored.items()},
            "growth": [{"speakers": n, "false_alarm": round(r, 6)} for n, r in self.growth],
        }


def calibrate_bank(bank: Bank, trials: str | os.PathLike | None = None, *, root: str | os.PathLike | None = None,
                   far: float | None = 0.01, unknown_rate: float = 0.01,
                   purposes: tuple[str, ...] = (VERIFY, IDENTIFY), rule: str | None = None,
                   progress: Progress | None = None) -> Calibration:
    """``voicebank calibrate``: :func:`calibrate` on the bank's own recordings, or with the trial
    list ``trials`` (relative paths from ``root``), which calibrates verification only: asked for
    both purposes, it chooses the verification threshold alone."""
    scores = None
    if trials is not None:
        purposes = (VERIFY,) if set(purposes) == {VERIFY, IDENTIFY} else purposes
        scores = score_trial_file(bank, trials, root, progress)
    result = calibrate(bank, far=far, unknown_rate=unknown_rate, purposes=purposes, trials=scores,
                       source=str(trials) if trials is not None else "bank", rule=rule)
    result.scored = scores
    return result


def calibrate(bank: Bank, *, far: float | None = 0.01, unknown_rate: float = 0.01,
              purposes: tuple[str, ...] = (VERIFY, IDENTIFY), trials: Scores | None = None,
              source: str = "bank", rule: str | None = None) -> Calibration:
    """Choose the thresholds for ``purposes`` (verification: false accepts ``far`` per claim, or
    the EER with ``far`` None; identification: unknown-person false alarms ``unknown_rate`` at the
    bank's size) from the bank's own recordings, or for verification from scored ``trials``.
    ``rule``: the identification decision (``best`` or ``margin``; default the bank's). Nothing is
    stored: :meth:`VoiceBank.set_operating_point` stores a chosen point (and its rule). Raises
    :class:`~voicebank.errors.NotEnoughDataError` (nothing chosen) when the data cannot support a
    target."""
    if trials is not None and IDENTIFY in purposes:
        raise InvalidInputError("a trial list calibrates verification only: identification is calibrated from the "
                                "bank itself (run calibrate without --trials, or with --for verify).")
    data = trial_list_trials(trials) if trials is not None else open_set_trials(bank, rule=rule)
    model = RateModel.fit(data)
    current = bank.operating_points()
    chosen, thin = {}, []
    choose = {VERIFY: lambda: verification_point(data, far, model),
              IDENTIFY: lambda: identification_point(data, unknown_rate, data.gallery, model)}
    for which in (VERIFY, IDENTIFY):
        if which in purposes:
            try:
                chosen[which] = choose[which]()
            except ThinDataError as exc:  # say everything that is missing at once
                thin.append(str(exc))
    if thin:
        raise ThinDataError(" Also: ".join(thin))
    stored = {which: measure(data, which, point.threshold, model, point.method, point.target)
              for which, point in current.items()
              if which in purposes and (which == VERIFY or (point.rule or BEST) == data.rule)}
    growth = []
    if IDENTIFY in chosen:
        t = chosen[IDENTIFY].threshold
        growth = [(n, model.false_alarm(t, n)) for n in sorted({data.gallery * m for m in (1, 2, 5, 10)})]
    return Calibration(chosen, stored, data, source, growth)


def report(scores: Scores, far: float = 0.01, current_threshold: float | None = None) -> Report:
    eer, eer_threshold = scoring.eer(scores.target, scores.nontarget)
    dcf = {}
    for p in (0.01, 0.05):
        value, threshold = scoring.min_dcf(scores.target, scores.nontarget, p_target=p)
        dcf[f"p_target={p:g}"] = {"value": value, "threshold": threshold}
    current = None
    if current_threshold is not None:
        current = scoring.ErrorRates(
            current_threshold,
            float(np.mean(scores.nontarget >= current_threshold)),
            float(np.mean(scores.target < current_threshold)),
        )
    extra = {"left_out": scores.left_out, "dropped_trials": scores.dropped} if scores.left_out else {}
    return Report(scores.kind, len(scores.target), len(scores.nontarget), eer, eer_threshold, dcf, far,
                  scoring.threshold_at_far(scores.target, scores.nontarget, far), current, extra)


def plot_report(scores: Scores, result: Report, path: str | Path, identify_threshold: float | None = None) -> None:
    """``eval --plot``: the DET curve of a trial list, with the EER, the --far point, and the
    bank's verification (and identification) thresholds marked at their rates on these trials."""
    from .plots import det_plot

    points = [("EER", result.eer, result.eer),
              (f"FAR {result.far_target:g} (threshold {result.at_far.threshold:.3f})", result.at_far.far, result.at_far.frr)]
    for label, t in (("verify threshold", result.current.threshold if result.current else None),
                     ("identify threshold", identify_threshold)):
        if t is not None:
            points.append((f"{label} {t:.3f}", float(np.mean(scores.nontarget >= t)), float(np.mean(scores.target < t))))
    det_plot(scores.target, scores.nontarget, writable(path), points=points,
             title=f"Verification on {result.n_target:,} target and {result.n_nontarget:,} non-target trials")


def plot_calibration(cal: Calibration, path: str | Path) -> list[Path]:
    """``calibrate --plot``: the DET curve of the verification trials (to ``path``) and the
    open-set identification view (to ``<path stem>-identify<suffix>``), chosen and stored
    thresholds marked. Returns the files written."""
    from .plots import det_plot, identification_plot

    path, t = writable(path), cal.trials
    det_points = [(f"{name} verify {p.threshold:.3f}", p.counted / max(p.trials, 1), p.miss)
                  for name, p in (("chosen", cal.chosen.get(VERIFY)), ("stored", cal.stored.get(VERIFY))) if p]
    det_plot(t.target, t.nontarget, path, points=det_points, title="Verification trials from the bank")
    written = [path]
    if t.known_best.size and IDENTIFY in cal.chosen:
        id_points = [(f"{name} identify {p.threshold:.3f}", p.counted / max(p.trials, 1), p.hit)
                     for name, p in (("chosen", cal.chosen.get(IDENTIFY)), ("stored", cal.stored.get(IDENTIFY))) if p]
        second = path.with_name(f"{path.stem}-identify{path.suffix}")
        identification_plot(t.known_decision, t.known_correct, t.unknown_best, second, points=id_points,
                            title=f"Open-set identification, {t.gallery} enrolled")
        written.append(second)
    return written


def writable(path: str | Path) -> Path:
    """``path`` if a plot can be written there, else an :class:`InvalidInputError` saying why
    (checked before the work, so a typo does not cost a long evaluation)."""
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise InvalidInputError(f"--plot {path}: give a .png, .svg or .pdf file name.")
    if not path.parent.is_dir():
        raise InvalidInputError(f"--plot {path}: the folder {path.parent} does not exist; create it or choose another.")
    if path.is_dir():
        raise InvalidInputError(f"--plot {path}: is a folder; give a file name.")
    return path
