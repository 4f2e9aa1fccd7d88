"""bench/embed.py's measuring tools: peak memory, device synchronisation, the model card's usage (the
reference every embedder row is compared with) and cosines between two sets of embeddings.
"""

from __future__ import annotations

import gc
import os
import threading

import numpy as np
from embed_audio import SR


class PeakMemory:
    """Peak memory above the level at entry: resident set size on the CPU (sampled every 2 ms from
    /proc/self/statm), allocated tensor memory on CUDA."""

    def __init__(self, device: str):
        self.device = device
        self.peak_bytes = 0

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        self._base = self.rss()
        self._peak = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, self.rss())

    def __exit__(self, *exc) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._base
            return
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self._peak, self.rss()) - self._base


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def reference_usage(model_dir: str, device: str):
    """The model card's usage, one utterance per call, float32."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WavLMForXVector

    extractor = Wav2Vec2FeatureExtractor.from_pretrained(model_dir)
    model = WavLMForXVector.from_pretrained(model_dir).eval().to(device)

    def embed(wave: np.ndarray) -> np.ndarray:
        inputs = extractor(wave, sampling_rate=SR, padding=True, return_tensors="pt").to(device)
        with torch.no_grad():
            embeddings = model(**inputs).embeddings
        embeddings = torch.nn.functional.normalize(embeddings, dim=-1).cpu()
        return embeddings[0].numpy()

    return embed


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
