"""The surface every embedding backend shares, and windowing for long recordings."""

from __future__ import annotations

import math
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from ..vectors import l2_normalize

DEFAULT_WINDOW_SECONDS = 30.0


@runtime_checkable
class Embedder(Protocol):
    """A speaker-embedding model.

    ``source`` is what was asked for (hub id, directory or backend name); ``model_id`` identifies
    the weights themselves, so a bank can tell the same model given another way from a different
    one. ``embed`` takes mono float32 waveforms at ``sample_rate`` Hz and returns a
    (len(waveforms), dimension) float32 array of L2-normalized rows, on the CPU.
    """

    source: str

    @property
    def model_id(self) -> str: ...

    @property
    def sample_rate(self) -> int: ...

    @property
    def dimension(self) -> int: ...

    def embed(self, waveforms: Sequence[np.ndarray]) -> np.ndarray: ...


def embed_recordings(
    embedder: Embedder, waveforms: Sequence[np.ndarray], window_seconds: float = DEFAULT_WINDOW_SECONDS
) -> np.ndarray:
    """Embed whole recordings of any length in bounded memory.

    A recording up to ``window_seconds`` long is embedded in one pass. A longer one is cut into
    the fewest equal-length windows no longer than that (a few trailing samples may be dropped),
    and its embedding is the L2-normalized mean of the windows' embeddings. Equal lengths let the
    backend batch the windows without padding, so batching cannot change the result.
    Returns (len(waveforms), dimension) float32, L2-normalized.
    """
    window = max(1, int(window_seconds * embedder.sample_rate))
    pieces: list[np.ndarray] = []
    owners: list[int] = []
    for i, wave in enumerate(waveforms):
        count = max(1, math.ceil(len(wave) / window))
        size = len(wave) // count
        pieces.extend(wave[j * size : (j + 1) * size] for j in range(count))
        owners.extend([i] * count)
    if not pieces:
        return np.zeros((0, embedder.dimension), dtype=np.float32)
    piece_embeddings = embedder.embed(pieces)
    sums = np.zeros((len(waveforms), piece_embeddings.shape[1]), dtype=np.float64)
    np.add.at(sums, np.asarray(owners), piece_embeddings)
    return l2_normalize(sums)


def group_by_length(waveforms: Sequence[np.ndarray], max_batch_samples: int) -> list[list[int]]:
    """Indices of ``waveforms`` in batches of equal length holding at most ``max_batch_samples``
    samples in all (a single longer waveform gets a batch of its own). Nothing is padded."""
    by_length: dict[int, list[int]] = {}
    for i, wave in enumerate(waveforms):
        by_length.setdefault(len(wave), []).append(i)
    batches = []
    for length, indices in by_length.items():
        per_batch = max(1, max_batch_samples // max(1, length))
        batches.extend(indices[k : k + per_batch] for k in range(0, len(indices), per_batch))
    return batches
