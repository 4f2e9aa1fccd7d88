"""Resemblyzer's GE2E speaker encoder (256-dim, 16 kHz): an optional backend that runs offline.

The weights ship inside the ``resemblyzer`` wheel, so it needs no hub access and is fast on a CPU.
Install with ``pip install "voicebank[resemblyzer]"``; select with ``--model resemblyzer``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ModelError
from ..vectors import l2_normalize

log = logging.getLogger(__name__)

NAME = "resemblyzer"


class ResemblyzerEmbedder:
    """GE2E embeddings through the package's own reference usage (``preprocess_wav`` then
    ``VoiceEncoder.embed_utterance``), one recording at a time: its LSTM sees no padding."""

    source = NAME
    kind = NAME
    sample_rate = 16_000
    dimension = 256

    def __init__(self, device: str | None = None):
        self._device = device
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any, str] | None = None

    @property
    def model_id(self) -> str:
        return self._load()[2]

    def embed(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        encoder, preprocess, _ = self._load()
        out = np.zeros((len(waveforms), self.dimension), dtype=np.float32)
        for i, wave in enumerate(waveforms):
            wave = np.asarray(wave, dtype=np.float32)
            trimmed = preprocess(wave, source_sr=self.sample_rate)  # volume normalization + VAD trim
            # The VAD can trim short or quiet input to nothing; the raw wave is then the best we have.
            out[i] = encoder.embed_utterance(trimmed if len(trimmed) >= self.sample_rate // 2 else wave)
        return l2_normalize(out)

    def _load(self) -> tuple[Any, Any, str]:
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = self._load_now()
        return self._loaded

    def _load_now(self) -> tuple[Any, Any, str]:
        try:
            with warnings.catch_warnings():  # webrtcvad imports pkg_resources, which warns on every run
                warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
                import resemblyzer
                from resemblyzer import VoiceEncoder, preprocess_wav
        except ImportError as exc:
            raise ModelError(
                f"the resemblyzer backend needs its extra: pip install \"voicebank[resemblyzer]\" ({exc})."
            ) from exc
        from .wavlm import resolve_device

        weights = Path(resemblyzer.__file__).parent / "pretrained.pt"
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
        import torch

        # Resemblyzer zero-pads short input; the LSTM then computes with denormal floats, which made
        # 1 s clips about 4x slower on CPU (bench/quality.py). Flushing them to zero changed no
        # embedding measured there. (A process-wide setting; harmless to the other backends.)
        torch.set_flush_denormal(True)
        encoder = VoiceEncoder(device=resolve_device(self._device), verbose=False)
        log.info("loaded resemblyzer GE2E (%s)", digest)
        return encoder, preprocess_wav, f"resemblyzer-ge2e:{digest}"
