"""Trial lists: reading them, and scoring them with a bank's model and score definition.

Two trial-list styles, one trial a line, ``#`` comments allowed:

- pairs (VoxCeleb style): ``LABEL path_a path_b``
- enrolled: ``LABEL speaker_name path``, scored against the enrolled speaker's voiceprint

LABEL is ``1``/``target`` (same speaker) or ``0``/``nontarget``. Relative paths are taken from
``root`` (default: the trial file's folder). Each file is embedded once.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import identification, textfile, validate
from .channel import WIDEBAND
from .encoding import Progress
from .errors import InvalidInputError
from .services import Services

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
    files: int = 0  # recordings the trials name, each embedded once



def read_trials(path: str | Path, speakers: set[str], root: str | Path | None = None) -> tuple[str, list[Trial]]:
    """Parse a trial list; (style, trials). Every problem is reported with its line number."""
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    trials, styles, problems, number = [], set(), [], 0
    try:
        for number, text in enumerate(textfile.lines(path, "the trial list"), start=1):
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
            style = PAIRS if _is_file(left_path) or left not in speakers else ENROLLED
            styles.add(style)
            if style == PAIRS and not _is_file(left_path):
                problems.append(f"line {number}: {left} is neither a file nor an enrolled speaker")
            if not _is_file(right_path):
                problems.append(f"line {number}: no such file {right}")
            trials.append(Trial(LABELS[label.lower()], left if style == ENROLLED else str(left_path), right_path, number))
    except InvalidInputError as exc:
        raise TrialFileError(str(exc)) from exc
    except UnicodeDecodeError as exc:  # raised reading the line after the last one numbered
        raise TrialFileError(f"cannot read the trial list {path}: line {number + 1} is not UTF-8 text ({exc.reason}). "
                             "Save it as UTF-8.") from exc
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise TrialFileError(f"{path}: {shown}. Fix the trial list (paths are relative to {base}).")
    if len(styles) > 1:
        raise TrialFileError(f"{path}: mixes 'LABEL speaker path' and 'LABEL path path' lines; use one style.")
    if not any(t.target for t in trials) or all(t.target for t in trials):
        raise TrialFileError(f"{path}: needs at least one target (1) and one non-target (0) trial.")
    return styles.pop(), trials


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a file to read; a name the system refuses to look up (over 255 bytes,
    a folder this user may not enter) is none, reported with its line rather than a traceback."""
    try:
        return path.is_file()
    except OSError:
        return False


def score_file(services: Services, path: str | os.PathLike, root: str | os.PathLike | None = None,
               progress: Progress | None = None) -> Scores:
    """Read the trial list at ``path`` (:func:`read_trials`) and score it (:func:`score_trials`)."""
    style, trials = read_trials(path, {row.name for row in services.repository.speakers()}, root)
    return score_trials(services, style, trials, progress)


def score_trials(services: Services, style: str, trials: list[Trial], progress: Progress | None = None) -> Scores:
    """Score every trial with the bank's model and score definition, embedding each file once."""
    files = sorted({str(t.right) for t in trials} | ({t.left for t in trials} if style == PAIRS else set()))
    left_out: dict[str, str] = {}
    vectors = services.encoder.embed_many(files, progress,
                                          on_error=lambda i, exc: left_out.__setitem__(files[i], str(exc)))
    embedded = dict(zip(files, vectors))
    usable = [t for t in trials if str(t.right) not in left_out and (style != PAIRS or t.left not in left_out)]
    dropped, trials = len(trials) - len(usable), usable
    if not any(t.target for t in trials) or all(t.target for t in trials):
        raise TrialFileError(
            f"{len(left_out)} of {len(files)} recordings could not be used, which leaves "
            f"{'no trials' if not trials else 'no ' + ('non-target' if trials[0].target else 'target') + ' trials'}"
            f" to score. First: {next(iter(left_out.items()), ('', ''))[1]}")
    scorer = identification.scorer(services, services.repository.settings(), WIDEBAND)
    right = np.stack([embedded[str(t.right)] for t in trials])
    if style == PAIRS:
        left, exclude = np.stack([embedded[t.left] for t in trials]), [()] * len(trials)
    else:
        prints = {name: services.repository.voiceprint(validate.name(name), WIDEBAND) for name in {t.left for t in trials}}
        lacking = sorted(name for name, (_, vector) in prints.items() if vector is None)
        if lacking:
            raise TrialFileError(f"{', '.join(map(repr, lacking[:5]))} enrolled over the telephone only: a trial list "
                                 "is scored against wideband voiceprints, which they have none of. Leave their trials "
                                 "out, or enroll them from wideband recordings too.")
        left = np.stack([prints[t.left][1] for t in trials])
        exclude = [(prints[t.left][0],) for t in trials]
    scores = scorer.score(right, left, exclude, exclude)
    labels = np.array([t.target for t in trials])
    return Scores(scores[labels], scores[~labels], scorer.kind, left_out, dropped, len(files))



def _resolve(base: Path, name: str) -> Path:
    candidate = Path(name).expanduser()
    return candidate if candidate.is_absolute() else base / candidate
