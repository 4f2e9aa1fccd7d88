"""Measuring a bank on data: trial lists, error rates, calibration, DET plots.

Two trial-list styles, one trial a line, ``#`` comments allowed:

- pairs (VoxCeleb style): ``LABEL path_a path_b``
- enrolled: ``LABEL speaker_name path``, scored against the enrolled speaker's voiceprint

LABEL is ``1``/``target`` (same speaker) or ``0``/``nontarget``. Relative paths are taken from
``root`` (default: the trial file's folder). Each file is embedded once.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from . import scoring
from .calibration import (BEST, IDENTIFY, VERIFY, OpenSetTrials, OperatingPoint, RateModel, ThinDataError,
                          identification_point, measure, verification_point)
from .errors import InvalidInputError, NotEnoughDataError
from .norm import Normalizer
from .vectors import voiceprint

if TYPE_CHECKING:
    from .bank import VoiceBank

LABELS = {"1": True, "target": True, "0": False, "nontarget": False}
PAIRS, ENROLLED = "pairs", "enrolled"


class TrialFileError(InvalidInputError):
    """A trial list that cannot be used (bad line, bad label, missing file, unknown speaker)."""


@dataclass(frozen=True)
class Trial:
    target: bool
    left: str  # a path (pairs) or an enrolled speaker's name (enrolled)
    right: Path
    line: int


@dataclass(frozen=True)
class Scores:
    target: np.ndarray
    nontarget: np.ndarray
    kind: str  # the score definition: cosine or asnorm
    left_out: dict[str, str] = field(default_factory=dict)  # unusable file -> why
    dropped: int = 0  # trials left out because one of their files was unusable


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


def read_trials(path: str | Path, speakers: set[str], root: str | Path | None = None) -> tuple[str, list[Trial]]:
    """Parse a trial list; (style, trials). Every problem is reported with its line number."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TrialFileError(f"cannot read the trial list {path}: {exc}") from exc
    base = Path(root) if root is not None else path.parent
    trials, styles, problems = [], set(), []
    for number, text in enumerate(lines, start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        try:
            fields = shlex.split(text)
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
            continue
        if len(fields) != 3:
            problems.append(f"line {number}: expected 'LABEL a b' (3 fields), found {len(fields)}")
            continue
        label, left, right = fields
        if label.lower() not in LABELS:
            problems.append(f"line {number}: label {label!r} is not 1/0/target/nontarget")
            continue
        right_path = _resolve(base, right)
        left_path = _resolve(base, left)
        style = PAIRS if left_path.is_file() or left not in speakers else ENROLLED
        styles.add(style)
        if style == PAIRS and not left_path.is_file():
            problems.append(f"line {number}: {left} is neither a file nor an enrolled speaker")
        if not right_path.is_file():
            problems.append(f"line {number}: no such file {right}")
        trials.append(Trial(LABELS[label.lower()], left if style == ENROLLED else str(left_path), right_path, number))
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise TrialFileError(f"{path}: {shown}. Fix the trial list (paths are relative to {base}).")
    if len(styles) > 1:
        raise TrialFileError(f"{path}: mixes 'LABEL speaker path' and 'LABEL path path' lines; use one style.")
    if not any(t.target for t in trials) or all(t.target for t in trials):
        raise TrialFileError(f"{path}: needs at least one target (1) and one non-target (0) trial.")
    return styles.pop(), trials


def score_trials(bank: "VoiceBank", style: str, trials: list[Trial],
                 progress: Callable[[int, int, str], None] | None = None) -> Scores:
    """Score every trial with the bank's model and score definition, embedding each file once."""
    files = sorted({str(t.right) for t in trials} | ({t.left for t in trials} if style == PAIRS else set()))
    left_out: dict[str, str] = {}
    vectors = bank.embed_many(files, progress, on_error=lambda i, exc: left_out.__setitem__(files[i], str(exc)))
    embedded = dict(zip(files, vectors))
    usable = [t for t in trials if str(t.right) not in left_out and (style != PAIRS or t.left not in left_out)]
    dropped, trials = len(trials) - len(usable), usable
    if not any(t.target for t in trials) or all(t.target for t in trials):
        raise TrialFileError(
            f"{len(left_out)} of {len(files)} recordings could not be used, which leaves "
            f"{'no trials' if not trials else 'no ' + ('non-target' if trials[0].target else 'target') + ' trials'}"
            f" to score. First: {next(iter(left_out.items()), ('', ''))[1]}")
    scorer = bank.scorer()
    right = np.stack([embedded[str(t.right)] for t in trials])
    if style == PAIRS:
        left, exclude = np.stack([embedded[t.left] for t in trials]), [()] * len(trials)
    else:
        prints = {name: bank.voiceprint(name) for name in {t.left for t in trials}}
        left = np.stack([prints[t.left][1] for t in trials])
        exclude = [(prints[t.left][0],) for t in trials]
    scores = scorer.score(right, left, exclude, exclude)
    labels = np.array([t.target for t in trials])
    return Scores(scores[labels], scores[~labels], scorer.kind, left_out, dropped)


def open_set_trials(bank: "VoiceBank", max_probes: int = 5000, seed: int = 0, rule: str | None = None) -> OpenSetTrials:
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

    def to_dict(self) -> dict[str, Any]:
        t = self.trials
        return {
            "source": self.source, "score": t.kind, "gallery": t.gallery,
            "trials": {"genuine": int(t.target.size), "impostor": int(t.nontarget.size), "unknown": len(t.unknown)},
            "chosen": {k: p.to_dict(with_model=False) for k, p in self.chosen.items()},
            "stored": {k: p.to_dict(with_model=False) for k, p in self.stored.items()},
            "growth": [{"speakers": n, "false_alarm": round(r, 6)} for n, r in self.growth],
        }


def calibrate(bank: "VoiceBank", *, far: float | None = 0.01, unknown_rate: float = 0.01,
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


def _resolve(base: Path, name: str) -> Path:
    candidate = Path(name).expanduser()
    return candidate if candidate.is_absolute() else base / candidate
