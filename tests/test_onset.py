"""Where the sound of an utterance begins and ends (voicebank.onset), and what of a recording is
embedded once that cut is made (voicebank.audio.near_speech). No model: signals built here."""

from __future__ import annotations

import numpy as np
import pytest

from voicebank import audio, onset

RATE = 16_000


def word(seconds: float = 1.2, seed: int = 0) -> np.ndarray:
    """A stand-in for a word cut out of speech: loud at both ends, syllables 150 ms apart."""
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(seed)
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * t / 0.15) ** 2
    return (0.3 * envelope * np.sin(2 * np.pi * 140 * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def placed(lead: float, tail: float, noise: float = 0.0, seed: int = 1) -> tuple[np.ndarray, int]:
    w = word()
    out = np.concatenate([np.zeros(round(lead * RATE), np.float32), w, np.zeros(round(tail * RATE), np.float32)])
    if noise:
        out = out + (noise * np.random.default_rng(seed).standard_normal(len(out))).astype(np.float32)
    return out, round(lead * RATE)


@pytest.mark.parametrize("lead", [0.05, 0.0731, 0.4, 0.9999])
@pytest.mark.parametrize("noise", [0.0, 10 ** (-60 / 20)])
def test_a_word_after_silence_or_faint_noise_is_cut_to_within_a_millisecond_of_itself(lead, noise):
    samples, at = placed(lead, 0.7, noise)
    start, end = onset.sound_edges(samples, RATE)
    assert abs(start - at) <= RATE // 1000, (start, at)
    assert abs(end - (at + len(word()))) <= RATE // 1000, (end, at + len(word()))


def test_a_word_alone_or_with_a_few_quiet_milliseconds_around_it_is_left_whole():
    alone = word()
    assert onset.sound_edges(alone, RATE) == (0, len(alone))
    short, _ = placed(0.03, 0.03)  # under MIN_QUIET_SECONDS at each edge: kept
    assert onset.sound_edges(short, RATE) == (0, len(short))


def test_silence_and_tiny_inputs_are_left_as_they_are():
    for samples in (np.zeros(RATE, np.float32), np.zeros(10, np.float32), np.ones(5, np.float32)):
        assert onset.sound_edges(samples, RATE) == (0, len(samples))


def test_the_level_is_relative_to_the_loudest_sound_not_absolute():
    samples, at = placed(0.3, 0.3)
    quiet = samples * 1e-3  # the same word 60 dB down is cut in the same place
    assert onset.sound_edges(quiet, RATE) == onset.sound_edges(samples, RATE)
    assert abs(onset.sound_edges(samples, RATE)[0] - at) <= RATE // 1000


def test_what_is_embedded_starts_where_the_word_does_wherever_it_sat():
    """near_speech: frames far from speech go, then the edges are cut; the same word 0.2 s or 0.8 s
    into its file, or in the middle of a minute of silence, comes out the same length."""
    frame = round(audio.vad.FRAME_SECONDS * RATE)
    lengths = set()
    for lead in (0.2, 0.8, 30.0):
        samples, at = placed(lead, 1.5)
        voiced = np.zeros(-(-len(samples) // frame), dtype=bool)
        voiced[at // frame: (at + len(word())) // frame] = True
        lengths.add(len(audio.near_speech(samples, RATE, voiced)))
    assert max(lengths) - min(lengths) <= 2 * RATE // 1000, lengths
