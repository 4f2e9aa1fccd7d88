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
from .errors import InvalidInputError, VoiceBankError
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
    embedded = dict(zip(files, bank.embed_many(files, progress)))
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
    return Scores(scores[labels], scores[~labels], scorer.kind)


def bank_scores(bank: "VoiceBank") -> Scores:
    """Trials made from the bank itself, no audio needed: each utterance against its own speaker's
    voiceprint computed WITHOUT it (target), and against every other speaker's voiceprint."""
    speakers = bank.utterance_embeddings()
    if len(speakers) < 2 or not any(len(e) >= 2 for _, _, e in speakers):
        raise VoiceBankError(
            "calibrating from the bank needs at least two speakers, one of them with two or more recordings; "
            "enroll more, or give a trial list with --trials."
        )
    ids = [sid for sid, _, _ in speakers]
    prints = np.stack([voiceprint(e) for _, _, e in speakers])
    scorer = bank.scorer()
    target, nontarget = [], []
    for k, (sid, _, embeddings) in enumerate(speakers):
        others = [j for j in range(len(speakers)) if j != k]
        for i, utterance in enumerate(embeddings):
            if len(embeddings) >= 2:
                held_out = voiceprint(np.delete(embeddings, i, axis=0))
                target.append(scorer.score(utterance, held_out, [(sid,)], [(sid,)])[0])
            probe = np.repeat(utterance[None, :], len(others), 0)
            exclude = [(sid, ids[j]) for j in others]
            nontarget.extend(scorer.score(probe, prints[others], exclude, exclude))
    return Scores(np.array(target), np.array(nontarget), scorer.kind)


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
    return Report(scores.kind, len(scores.target), len(scores.nontarget), eer, eer_threshold, dcf, far,
                  scoring.threshold_at_far(scores.target, scores.nontarget, far), current)


def plot_det(scores: Scores, result: Report, path: str | Path) -> None:
    """Draw the DET curve (FRR against FAR on normal-deviate axes) with the operating points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm as gaussian

    thresholds, far, frr = scoring.error_rates(scores.target, scores.nontarget)
    clip = lambda p: np.clip(p, 1e-4, 1 - 1e-4)  # noqa: E731
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.plot(gaussian.ppf(clip(far)), gaussian.ppf(clip(frr)), label=f"{scores.kind} (EER {result.eer:.2%})")
    points = [("EER", result.eer, result.eer, "o"), (f"FAR {result.far_target:g}", result.at_far.far, result.at_far.frr, "s")]
    if result.current is not None:
        points.append((f"stored threshold {result.current.threshold:.3f}", result.current.far, result.current.frr, "^"))
    for label, x, y, marker in points:
        ax.plot(gaussian.ppf(clip(x)), gaussian.ppf(clip(y)), marker, label=label)
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5])
    ax.set_xticks(gaussian.ppf(ticks), [f"{t:.1%}" for t in ticks])
    ax.set_yticks(gaussian.ppf(ticks), [f"{t:.1%}" for t in ticks])
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("false reject rate")
    ax.set_title(f"DET: {result.n_target} target, {result.n_nontarget} non-target trials")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _resolve(base: Path, name: str) -> Path:
    candidate = Path(name).expanduser()
    return candidate if candidate.is_absolute() else base / candidate
