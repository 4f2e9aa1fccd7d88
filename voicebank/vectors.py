"""The two vector operations every layer agrees on (pure numpy, imported by everyone)."""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm, as float32. Zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def voiceprint(embeddings: np.ndarray) -> np.ndarray:
    """A speaker's voiceprint: the L2-normalized mean of its L2-normalized utterance embeddings.

    ``embeddings`` is (n_utterances, dim); returns (dim,) float32.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(f"need a (n, dim) array with n >= 1, got {embeddings.shape}")
    return l2_normalize(l2_normalize(embeddings).mean(axis=0))
