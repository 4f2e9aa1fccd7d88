"""The contract every embedding backend keeps (``voicebank.embedding.base.Embedder``), checked on each:
the surface, float32 L2-normalized rows of the stated dimension, the same row for a recording
whether it is embedded alone or in a batch of other lengths and in any order, and the same rows
on a repeat. The index kinds have the same kind of test (test_index.py).

Backends: the tiny random WavLM through transformers' own forward (the reference path) and through
the fast path in float32 and in bfloat16, resemblyzer where its package is installed, and the
tests' fake embedder (conftest), which must keep the contract that it stands in for."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import FakeEmbedder, synth_voice

from voicebank.embedding import Embedder

# (voice f0 in Hz, seconds): three speakers, three lengths, short (resemblyzer's LSTM is slow on a CPU)
WAVES = [(130.0, 1.0), (230.0, 1.7), (330.0, 1.3)]


def _needs(*packages: str) -> None:
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"this backend needs {', '.join(missing)}, which is not installed")


def _wavlm(request, **options) -> Embedder:
    _needs("torch", "transformers")
    from voicebank.embedding.wavlm import XVectorEmbedder

    return XVectorEmbedder(str(request.getfixturevalue("tiny_model")), device="cpu", **options)


def _resemblyzer(request) -> Embedder:
    _needs("resemblyzer", "webrtcvad")
    from voicebank.embedding.resemblyzer import ResemblyzerEmbedder

    return ResemblyzerEmbedder(device="cpu")


BACKENDS = {
    "wavlm-reference": lambda request: _wavlm(request, fast=False),
    "wavlm-fast-fp32": lambda request: _wavlm(request, fast=True, precision="fp32"),
    "wavlm-fast-bf16": lambda request: _wavlm(request, fast=True, precision="bf16"),
    "resemblyzer": _resemblyzer,
    "fake": lambda request: FakeEmbedder(),
}


@pytest.fixture(scope="module", params=list(BACKENDS))
def backend(request) -> Embedder:
    return BACKENDS[request.param](request)


@pytest.fixture(scope="module")
def waves() -> list[np.ndarray]:
    return [synth_voice(f0, seconds=seconds, seed=k) for k, (f0, seconds) in enumerate(WAVES)]


@pytest.fixture(scope="module")
def rows(backend, waves) -> np.ndarray:
    """The backend's rows for ``waves``, embedded as one batch (once per backend)."""
    return backend.embed(waves)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (n, d) arrays, in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_the_surface(backend):
    assert isinstance(backend, Embedder)
    assert isinstance(backend.source, str) and backend.source
    assert isinstance(backend.model_id, str) and backend.model_id
    assert backend.model_id == backend.model_id  # read twice: a property that names the weights, not a call count
    assert type(backend.sample_rate) is int and backend.sample_rate == 16_000
    assert type(backend.dimension) is int and backend.dimension > 0


def test_rows_are_float32_unit_vectors_of_the_dimension(backend, waves, rows):
    assert isinstance(rows, np.ndarray) and rows.dtype == np.float32
    assert rows.shape == (len(waves), backend.dimension)
    assert np.all(np.isfinite(rows))
    np.testing.assert_allclose(np.linalg.norm(rows.astype(np.float64), axis=1), 1.0, rtol=1e-5)
    # the rows are of the recordings, not one row repeated: these are different voices
    similarity = rows @ rows.T
    assert np.max(similarity[~np.eye(len(rows), dtype=bool)]) < 0.9999


def test_embedding_nothing(backend):
    rows = backend.embed([])
    assert rows.shape == (0, backend.dimension) and rows.dtype == np.float32


def test_a_recording_embeds_the_same_alone_and_in_any_batch(backend, waves, rows):
    alone = np.concatenate([backend.embed([wave]) for wave in waves])
    assert np.min(cosines(rows, alone)) >= 0.999
    order = [2, 0, 1]
    reordered = backend.embed([waves[i] for i in order])
    assert np.min(cosines(reordered, rows[order])) >= 0.999


def test_a_repeat_gives_the_same_rows(backend, waves, rows):
    np.testing.assert_allclose(backend.embed(waves), rows, rtol=0, atol=1e-6)


def test_resemblyzer_asked_for_a_gpu_it_lacks_says_so():
    _needs("resemblyzer", "webrtcvad", "torch")
    import torch

    from voicebank.embedding.resemblyzer import ResemblyzerEmbedder
    from voicebank.errors import ModelError

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(ModelError, match="no CUDA GPU"):
        ResemblyzerEmbedder(device="cuda").embed([synth_voice(130.0, seconds=1.0)])
