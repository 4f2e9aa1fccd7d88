"""Where the sound of an utterance begins and ends, to the millisecond: the edges of what is embedded.

The speech detector's frames are 32 ms, and what is embedded keeps up to a second around the speech
(:func:`voicebank.audio.near_speech`), so the same word after 0.1 s or after 0.9 s of silence reached
the model with different lengths of silence before it and scored up to 0.1 apart. The outer edges are
therefore cut where the sound is rather than where the frames fall: 10 ms blocks within ``LEVEL_DB``
of the loudest find the sound, then 1 ms blocks place each edge, so the same word begins within a
millisecond of the same place wherever it sat in its file. ``python bench/placement.py`` measures it.

An edge is cut only where at least ``MIN_QUIET_SECONDS`` of it lies below that level: a few quiet
milliseconds at an edge (a consonant's onset, the decay of a last vowel) stay, since cutting there
would make two recordings of one utterance that differ only in faint noise start in different places.
"""

from __future__ import annotations

import numpy as np

# How far below the loudest 10 ms of the utterance its sound is taken to begin: below the quietest
# consonants of normal speech at conversational level (about 30 dB under its vowels) and above the
# floor of a usable recording.
LEVEL_DB = 35.0
MIN_QUIET_SECONDS = 0.05
COARSE_SECONDS, FINE_SECONDS = 0.010, 0.001


def sound_edges(samples: np.ndarray, sample_rate: int) -> tuple[int, int]:
    """``(start, end)``: the samples from the first to the last sound of ``samples`` (see the
    module's docstring); ``(0, len(samples))`` where nothing is cut."""
    n = len(samples)
    coarse, fine = max(1, round(COARSE_SECONDS * sample_rate)), max(1, round(FINE_SECONDS * sample_rate))
    quiet = round(MIN_QUIET_SECONDS * sample_rate)
    if n < quiet + coarse:
        return 0, n
    envelope = _rms(samples, coarse)
    level = float(envelope.max()) * 10 ** (-LEVEL_DB / 20)
    if level <= 0:
        return 0, n
    loud = np.flatnonzero(envelope >= level)
    first, last = int(loud[0]) * coarse, min(n, (int(loud[-1]) + 1) * coarse)
    start = _edge(samples, max(0, first - coarse), min(n, first + coarse), fine, level, True) \
        if first >= quiet else 0
    end = _edge(samples, max(0, last - coarse), min(n, last + coarse), fine, level, False) \
        if n - last >= quiet else n
    return (start, end) if end > start else (0, n)


def _rms(samples: np.ndarray, block: int) -> np.ndarray:
    """The root mean square of each ``block`` samples (the last, shorter block too)."""
    squares = np.square(samples, dtype=np.float64)
    sums = np.add.reduceat(squares, np.arange(0, len(samples), block))
    sizes = np.diff(np.append(np.arange(0, len(samples), block), len(samples)))
    return np.sqrt(sums / sizes)


def _edge(samples: np.ndarray, lo: int, hi: int, fine: int, level: float, opening: bool) -> int:
    """The first (``opening``) or last sample of ``samples[lo:hi]`` in a 1 ms block at ``level``
    or above; the window's own edge where no block reaches it."""
    envelope = _rms(samples[lo:hi], fine)
    found = np.flatnonzero(envelope >= level)
    if not len(found):
        return lo if opening else hi
    return lo + int(found[0]) * fine if opening else min(hi, lo + (int(found[-1]) + 1) * fine)
