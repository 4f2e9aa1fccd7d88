"""Where speech begins and ends (voicebank.onset): a word's cut does not depend on where it sits."""

from __future__ import annotations

import numpy as np
import pytest

from voicebank import onset

RATE = 16_000


def word(seconds: float = 1.2, seed: int = 0) -> np.ndarray:
    """A made-up word: a soft onset rising into a loud middle, cut off at both ends."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    loudness = np.minimum(1.0, t / 0.05) * (0.3 + 0.2 * np.sin(2 * np.pi * 3 * t) ** 2)
    return (loudness * np.sin(2 * np.pi * 180 * t + rng.uniform(0, 6)) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_the_same_word_is_cut_the_same_wherever_it_sits_in_silence():
    w = word()
    alone = onset.span(w, RATE)
    inside, rng = set(), np.random.default_rng(1)
    for lead in [0, 1, 7, 159, 160, 511, 512, 513, *rng.integers(0, 40_000, 8)]:
        placed = np.concatenate([np.zeros(lead, np.float32), w, np.zeros(int(rng.integers(0, 30_000)), np.float32)])
        a, b = onset.span(placed, RATE)
        # a word cut off at the file's edge differs from itself inside silence by under 1 ms
        assert abs((a - lead) - alone[0]) < 16 and abs((b - lead) - alone[1]) < 16, lead
        if lead >= 160:
            inside.add((a - lead, b - lead))
    assert len(inside) == 1  # inside silence: to the sample


def test_faint_noise_around_the_word_is_left_out_and_loud_noise_is_not_guessed_at():
    w = word()
    rng = np.random.default_rng(2)
    quiet = (10 ** (-70 / 20) * rng.standard_normal(3 * RATE)).astype(np.float32)
    quiet[RATE:RATE + len(w)] += w
    a, b = onset.span(quiet, RATE)
    assert abs(a - RATE) < 16 and abs(b - (RATE + len(w))) < 16
    loud = (0.2 * rng.standard_normal(3 * RATE)).astype(np.float32)  # noise as loud as the word: all of it
    loud[RATE:RATE + len(w)] += w
    a, b = onset.span(loud, RATE)
    assert a < 16 and b > len(loud) - 16


def test_silence_and_input_shorter_than_the_envelope_are_kept_whole():
    assert onset.span(np.zeros(RATE, np.float32), RATE) == (0, RATE)
    assert onset.span(np.ones(100, np.float32), RATE) == (0, 100)
    assert onset.span(np.zeros(0, np.float32), RATE) == (0, 0)


@pytest.mark.parametrize("chunk", [997, 5_000, 1 << 20])
def test_the_answer_does_not_depend_on_the_pass_size(monkeypatch, chunk):
    w = word(2.0, seed=3)
    placed = np.concatenate([np.zeros(12_345, np.float32), w, np.zeros(23_456, np.float32)])
    expected = onset.span(placed, RATE)
    monkeypatch.setattr(onset, "CHUNK", chunk)
    assert onset.span(placed, RATE) == expected
