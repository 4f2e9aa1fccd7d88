"""Where speech begins and ends in a recording, to within a millisecond.

The speech detector decides in 32 ms frames counted from the file's start, so a cut on its frames
moves with where a word sits in the file, and with the cut moves the model's own framing
(resemblyzer's 10 ms mel frames and 30 ms voice-activity windows, WavLM's 20 ms frames). Cut where
the speech itself starts and stops, what is embedded no longer depends on where a word sits in its
file, nor on the silence or faint noise around it (``python bench/placement.py`` measures it).

Plain numpy; memory is bounded by ``CHUNK`` whatever the recording's length.
"""

from __future__ import annotations

import numpy as np

# The envelope that finds the speech: mean power over 10 ms, long enough that single noise samples
# do not reach the level, short enough to keep a word's first syllable.
ENVELOPE_SECONDS = 0.010
# The envelope that places the edge once found: 1 ms, so the cut lies within a millisecond of the
# same sample of the word wherever the word sits, and a word cut off at the file's edge loses no
# more than that against the same word inside silence.
EDGE_SECONDS = 0.001
# How far below the loudest 10 ms a stretch still counts as speech. Soft consonants at the edges of
# words sit 20 to 30 dB under the vowels; a noise floor lower than this is left out.
BELOW_PEAK_DB = 35.0
CHUNK = 1 << 20  # samples per pass: the envelopes of a 30-minute recording without 30 minutes of float64


def span(samples: np.ndarray, sample_rate: int) -> tuple[int, int]:
    """``(first, end)``: the samples from ``first`` up to ``end`` are the speech of ``samples``,
    from where the 10 ms envelope first comes within ``BELOW_PEAK_DB`` of its peak to where it last
    does, each edge then placed by the 1 ms envelope. ``(0, len(samples))`` for silence or input
    shorter than 10 ms."""
    win = max(1, round(ENVELOPE_SECONDS * sample_rate))
    fine = max(1, round(EDGE_SECONDS * sample_rate))
    n = len(samples)
    if n < win:
        return 0, n
    peak = max(_envelope(samples, start, min(start + CHUNK, n - win + 1), win).max()
               for start in range(0, n - win + 1, CHUNK))
    if peak <= 0.0:
        return 0, n
    level = peak * 10.0 ** (-BELOW_PEAK_DB / 10.0)
    first = _first_at(samples, level, win, 0, n - win + 1)
    last = _last_at(samples, level, win, 0, n - win + 1)
    # within the first (last) 10 ms window at the level, the first (last) 1 ms window at it
    lo, hi = first, min(first + win, n - fine + 1)
    head = _first_at(samples, level, fine, lo, hi) if hi > lo else None
    lo, hi = last, min(last + win, n - fine + 1)
    tail = _last_at(samples, level, fine, lo, hi) if hi > lo else None
    first = head if head is not None else first
    end = tail + fine if tail is not None else last + win
    return first, max(end, first + 1)


def _envelope(samples: np.ndarray, start: int, stop: int, win: int) -> np.ndarray:
    """Mean power of ``samples[i:i + win]`` for ``start <= i < stop``."""
    power = np.square(np.asarray(samples[start : stop + win - 1], dtype=np.float64))
    total = np.concatenate(([0.0], np.cumsum(power)))
    return (total[win:] - total[:-win]) / win


def _first_at(samples: np.ndarray, level: float, win: int, start: int, stop: int) -> int | None:
    for a in range(start, stop, CHUNK):
        hit = np.flatnonzero(_envelope(samples, a, min(a + CHUNK, stop), win) >= level)
        if hit.size:
            return a + int(hit[0])
    return None


def _last_at(samples: np.ndarray, level: float, win: int, start: int, stop: int) -> int | None:
    for b in range(stop, start, -CHUNK):
        a = max(start, b - CHUNK)
        hit = np.flatnonzero(_envelope(samples, a, b, win) >= level)
        if hit.size:
            return a + int(hit[-1])
    return None
