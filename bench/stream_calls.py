"""The calls the live benchmarks feed: who is enrolled, the two halves of the people, and the calls.

People: every speaker with 6+ recordings, of ../shared/data/speech (LibriSpeech test-other, VCTK:
the group ``speech``) and, with ``--speechocean``, of ../shared/data/speechocean762-dev (the group
``speechocean``: 100 non-native speakers, 41 of them children, short sentences). Each is enrolled
from their first 3 recordings (4 or 5 where 3 hold too little speech: ``enroll``); their other
recordings make their calls. Strangers (never enrolled) are LibriSpeech train-clean-100's 100
speakers, one recording each, in the ``speech`` group.

Halves: within each group, the people (and strangers) sorted by id and dealt alternately to half
``a`` and half ``b``, so a rule's constants can be chosen on one half and measured on people it
never saw. A two-person call takes both people from the first person's group and half.

A *call* of one person is their held-out recordings one after another with 0.3 s gaps, rotated
(rotation ``r`` starts on their ``r``-th held-out recording), cut to ``2 * turn`` seconds; a
*two-person call* is ``turn`` seconds of one person's call then ``turn`` seconds of another's: on
even rotations another enrolled person, on odd ones a stranger (where the group has strangers).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

SR = 16_000
GAP = 0.3  # seconds of silence between a person's recordings in a call
HALVES = ("a", "b")


@dataclass(frozen=True)
class Person:
    name: str
    group: str  # "speech" or "speechocean"
    half: str  # "a" or "b"
    recordings: tuple[Path, ...]
    enrolled_count: int = 3  # enrolled from the first 3 recordings, more where 3 hold too little speech

    @property
    def enrolled(self) -> tuple[Path, ...]:
        return self.recordings[: self.enrolled_count]

    @property
    def held(self) -> tuple[Path, ...]:
        return self.recordings[self.enrolled_count:]


@dataclass(frozen=True)
class Call:
    claimed: str  # the first person, claimed
    samples: np.ndarray  # float32 at 16 kHz
    switch: int | None  # the sample the second person starts at (None: one person)
    second: str | None = None  # the second person's name, or "stranger:<path stem>"
    half: str = "a"
    group: str = "speech"
    rotation: int = 0


def corpus(root: Path, speechocean: bool = False) -> tuple[list[Person], list[Person]]:
    """(enrolled people, strangers), each with its group and half (see the module's docstring)."""
    people: dict[tuple[str, str], list[Path]] = {}
    strangers: list[tuple[str, str, Path]] = []
    sources = [("speech", root / "speech")] + ([("speechocean", root / "speechocean762-dev")] if speechocean else [])
    for group, folder in sources:
        with open(folder / "manifest.csv", newline="") as f:
            for row in csv.DictReader(f):
                path = folder / row["path"]
                if row.get("corpus") == "librispeech-train-clean-100":
                    strangers.append((group, row["speaker"], path))
                else:
                    people.setdefault((group, row["speaker"]), []).append(path)
    kept = sorted((g, n, tuple(sorted(p))) for (g, n), p in people.items() if len(p) >= 6)
    return _deal([Person(n, g, "", p) for g, n, p in kept]), _deal([Person(n, g, "", (p,)) for g, n, p in
                                                                   sorted(strangers)])


def _deal(people: list[Person]) -> list[Person]:
    out, seen = [], {}
    for p in people:  # sorted by (group, name): alternate within each group
        k = seen[p.group] = seen.get(p.group, -1) + 1
        out.append(Person(p.name, p.group, HALVES[k % 2], p.recordings))
    return out


def enroll(bank, people: list[Person]) -> list[Person]:
    """Enroll each person from their first 3 recordings, or 4 or 5 where the bank finds too little
    speech in 3 (short sentences); the people as enrolled."""
    from voicebank.errors import NotEnoughSpeechError

    out = []
    for who in people:
        for count in (3, 4, 5):
            try:
                bank.enroll(who.name, [str(x) for x in who.recordings[:count]], allow_inconsistent=True)
            except NotEnoughSpeechError:
                continue
            out.append(replace(who, enrolled_count=count))
            break
    return out


def decode(path: Path) -> np.ndarray:
    import soundfile as sf

    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == SR, path
    return samples.mean(axis=1)


def join(paths: tuple[Path, ...] | list[Path], start: int, seconds: float | None = None) -> np.ndarray:
    """The recordings from the ``start``-th on (wrapping round), 0.3 s apart, cut to ``seconds``."""
    gap = np.zeros(int(GAP * SR), np.float32)
    pieces = [x for k in range(len(paths)) for x in (decode(paths[(start + k) % len(paths)]), gap)]
    out = np.concatenate(pieces)
    return out if seconds is None else out[: int(seconds * SR)]


def calls(people: list[Person], strangers: list[Person], rotations: int, turn: float,
          halves: tuple[str, ...] = HALVES, seed: int = 0) -> tuple[list[Call], list[Call]]:
    """(one-person calls, two-person calls) of the people in ``halves``, ``rotations`` of each."""
    rng = np.random.default_rng(seed)
    single, double = [], []
    for who in people:
        if who.half not in halves:
            continue
        others = [p for p in people if p.group == who.group and p.half == who.half and p.name != who.name]
        outsiders = [s for s in strangers if s.group == who.group and s.half == who.half]
        for r in range(rotations):
            single.append(Call(who.name, join(who.held, r, 2 * turn), None, None, who.half, who.group, r))
            if r % 2 == 1 and outsiders:
                stranger = outsiders[int(rng.integers(len(outsiders)))]
                second, label = join(stranger.recordings, 0, turn), f"stranger:{stranger.recordings[0].stem}"
            else:
                other = others[int(rng.integers(len(others)))]
                second, label = join(other.held, r, turn), other.name
            first = join(who.held, r, turn)
            double.append(Call(who.name, np.concatenate([first, second]), len(first), label, who.half, who.group, r))
    return single, double


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score 95% interval of a rate of ``k`` in ``n``."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    scale = 1 + z * z / n
    centre, spread = (p + z * z / (2 * n)) / scale, z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / scale
    return max(0.0, float(centre - spread)), min(1.0, float(centre + spread))


def rate(k: int, n: int) -> str:
    """``k of n (p%, 95% CI lo-hi%)``."""
    lo, hi = wilson(k, n)
    return f"{k} of {n} ({k / max(n, 1):.1%}, 95% CI {lo:.1%}-{hi:.1%})"
