"""bench/embed.py's inputs: speech-like synthetic utterances (or cuts of real recordings) and a random-weight
model of the full wavlm-base-plus-sv architecture, saved as a checkpoint.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

SR = 16_000


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """A voiced, speech-like signal: harmonics of a wobbling pitch under a syllable-rate envelope,
    with pauses and a little noise (what a random-weight model sees as "speech")."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = rng.uniform(90, 300)
    pitch = f0 * (1 + 0.06 * np.sin(2 * np.pi * rng.uniform(2, 5) * t) + 0.03 * np.sin(2 * np.pi * 0.3 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    wave = sum(np.sin(k * phase + rng.uniform(0, 6)) * rng.uniform(0.3, 1) / k for k in range(1, 20))
    syllables = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2.5, 4.5) * t + rng.uniform(0, 6))
    pauses = (np.sin(2 * np.pi * rng.uniform(0.2, 0.5) * t + rng.uniform(0, 6)) > -0.7).astype(float)
    wave = 0.3 * wave * syllables * pauses / np.max(np.abs(wave))
    return (wave + 0.005 * rng.standard_normal(t.size)).astype(np.float32)


def utterances(count: int, audio_glob: str | None, seed: int = 0) -> list[np.ndarray]:
    """``count`` utterances of 2-12 s: synthetic, or cut from the recordings matching ``audio_glob``."""
    rng = np.random.default_rng(seed)
    lengths = rng.uniform(2.0, 12.0, size=count)
    if not audio_glob:
        return [speechlike(float(s), seed=1000 + i) for i, s in enumerate(lengths)]
    from voicebank.audio import AudioLimits, load

    files = sorted(glob.glob(audio_glob, recursive=True))
    if not files:
        raise SystemExit(f"no file matches {audio_glob}")
    limits = AudioLimits(min_seconds=0.0, min_speech_seconds=0.0)
    out: list[np.ndarray] = []
    for i, seconds in enumerate(lengths):
        wave = load(files[i % len(files)], SR, limits=limits).samples
        want = int(seconds * SR)
        while len(wave) < want:  # short file: append the next one
            wave = np.concatenate([wave, load(files[(i + len(out) + 1) % len(files)], SR, limits=limits).samples])
        out.append(np.ascontiguousarray(wave[:want], dtype=np.float32))
    return out


def build_random_model(directory: Path) -> Path:
    """The full wavlm-base-plus-sv architecture (``WavLMConfig()``), random weights, saved as a checkpoint."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    torch.manual_seed(0)
    WavLMForXVector(WavLMConfig()).eval().save_pretrained(directory)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=False, return_attention_mask=True
    ).save_pretrained(directory)
    return directory
