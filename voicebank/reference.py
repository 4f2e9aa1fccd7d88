"""A reference set: embeddings of people who will never be enrolled, shipped with the package.

A new or small bank has too few strangers of its own to measure what a threshold promises: a
false-alarm rate of 1% needs 200 unknown-person trials, and a bank of 10 people enrolled with
three recordings each has 30. The reference set fills in, in every channel: each of its
recordings is scored against the bank's voiceprints as a stranger's would be. Its people speak
other languages and through other microphones than a given bank's callers, and strangers from
one's own population score higher against one's voiceprints than strangers from elsewhere; so
calibration moves the reference's scores to the level of the bank's own strangers where the bank
has some (see ``calibration.level_shift``).

A set is one ``.npz`` file per model in ``voicebank/references/`` (embeddings only, float16; the
sources and their licences in ``voicebank/references/NOTICE.md``), made by
``python bench/reference_set.py``. Only the resemblyzer backend's is shipped: the WavLM weights
could not be downloaded where voicebank is developed.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .channel import CHANNELS

log = logging.getLogger(__name__)

FOLDER = Path(__file__).resolve().parent / "references"
WINDOW = "@window"  # the suffix of a channel's scan windows in the file
_lock = threading.Lock()
_loaded: dict[str, "Reference | None"] = {}


@dataclass(frozen=True)
class Reference:
    """Recordings of people who are not enrolled: ``embeddings[channel]`` (n, dimension) float32
    L2-normalized, row i of every channel the same recording; ``speakers`` (n,) which person each
    row is (recordings of one person share a number); ``model_id`` the model that embedded them.
    ``windows[channel]``: the same people's speech cut as `voicebank scan` cuts it (windows of its
    default length), with ``window_speakers`` saying whose each is: scan's strangers."""

    model_id: str
    embeddings: dict[str, np.ndarray]
    speakers: np.ndarray
    corpora: np.ndarray  # (n,) the corpus each row came from
    windows: dict[str, np.ndarray] = field(default_factory=dict)
    window_speakers: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.speakers)

    def people(self) -> int:
        return len(np.unique(self.speakers))

    def voiceprints(self, channel: str) -> tuple[np.ndarray, np.ndarray]:
        """(person numbers, (people, dimension) voiceprints of each person's recordings in ``channel``)."""
        from .vectors import voiceprint

        people = np.unique(self.speakers)
        rows = self.embeddings[channel]
        return people, np.stack([voiceprint(rows[self.speakers == p]) for p in people])

    def twin(self, channel: str) -> float:
        """A voiceprint score no two different people of the set reach in ``channel``: the highest
        between two of them. A person of the set scoring above it against an enrolled voiceprint is
        taken for the enrolled person (``evaluation`` leaves them out of the strangers)."""
        _, prints = self.voiceprints(channel)
        sims = prints.astype(np.float64) @ prints.T.astype(np.float64)
        np.fill_diagonal(sims, -np.inf)
        return float(sims.max())

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, model_id=np.array(self.model_id), speakers=self.speakers.astype(np.int32),
                            corpora=self.corpora.astype(str), window_speakers=self.window_speakers.astype(np.int32),
                            **{c: e.astype(np.float16) for c, e in self.embeddings.items()},
                            **{f"{c}{WINDOW}": e.astype(np.float16) for c, e in self.windows.items()})


def load(path: Path) -> Reference:
    """A reference set from its file."""
    with np.load(path, allow_pickle=False) as z:
        embeddings = {c: _normalized(z[c]) for c in CHANNELS if c in z.files}
        windows = {c: _normalized(z[c + WINDOW]) for c in CHANNELS if c + WINDOW in z.files}
        window_speakers = z["window_speakers"].astype(np.int64) if "window_speakers" in z.files else np.zeros(0, np.int64)
        return Reference(str(z["model_id"]), embeddings, z["speakers"].astype(np.int64), z["corpora"].astype(str),
                         windows, window_speakers)


def for_model(model_id: str) -> Reference | None:
    """The shipped reference set of the model ``model_id``, or None when none is shipped for it."""
    with _lock:
        if model_id not in _loaded:
            _loaded[model_id] = _find(model_id)
        return _loaded[model_id]


def _find(model_id: str) -> Reference | None:
    for path in sorted(FOLDER.glob("*.npz")):
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["model_id"]) != model_id:
                    continue
            reference = load(path)
        except (OSError, ValueError, KeyError) as exc:  # a damaged file costs the reference, not the bank
            log.warning("cannot read the reference set %s (%s); calibrating without it", path, exc)
            continue
        log.info("reference set %s: %d recordings of %d people", path.name, len(reference), reference.people())
        return reference
    return None


def _normalized(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
