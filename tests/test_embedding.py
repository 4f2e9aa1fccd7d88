"""voicebank.embedding with the tiny random-weight WavLM x-vector model of conftest, loaded from a
local directory through the same code path as a hub checkpoint."""

from __future__ import annotations

import math
import shutil
import socket
import time

import numpy as np
import pytest

from conftest import SR, synth_voice
from voicebank.embedding import DEFAULT_MODEL, Embedder, embed_recordings, load_embedder
from voicebank.embedding.wavlm import XVectorEmbedder, resolve_device
from voicebank.errors import ModelError


def cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def assert_unit_rows(x: np.ndarray, n: int, dim: int) -> None:
    assert x.dtype == np.float32
    assert x.shape == (n, dim)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)


@pytest.fixture(scope="module")
def embedder(tiny_model) -> XVectorEmbedder:
    return XVectorEmbedder(str(tiny_model), device="cpu")


@pytest.fixture(scope="module")
def reference(tiny_model):
    """The model card's usage, straight from transformers: extractor -> WavLMForXVector -> normalize."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WavLMForXVector

    extractor = Wav2Vec2FeatureExtractor.from_pretrained(tiny_model)
    model = WavLMForXVector.from_pretrained(tiny_model).eval()

    def embed(wave: np.ndarray) -> np.ndarray:
        inputs = extractor(wave, sampling_rate=16000, return_tensors="pt", padding=True)
        with torch.no_grad():
            embeddings = model(**inputs).embeddings
        embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
        return embeddings[0].numpy()

    return embed


def test_the_surface(embedder):
    assert isinstance(embedder, Embedder)
    assert embedder.sample_rate == SR
    assert embedder.dimension == 24  # xvector_output_dim of the tiny config
    assert embedder.device == "cpu"
    assert isinstance(embedder.model_id, str) and embedder.model_id


# -- (a) fidelity ------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [0.6, 1.0, 2.37, 4.0])
def test_matches_the_model_card_usage(embedder, reference, seconds):
    wave = synth_voice(170.0, seconds=seconds, seed=int(seconds * 100))
    ours = embedder.embed([wave])
    assert_unit_rows(ours, 1, 24)
    assert cos(ours[0], reference(wave)) >= 0.9999


def test_the_reference_tells_the_voices_apart(reference):
    """Guards the fidelity test: were every embedding the same, matching the reference would mean nothing."""
    a, b = reference(synth_voice(120.0, 2.0, seed=1)), reference(synth_voice(330.0, 2.0, seed=2))
    assert cos(a, b) < 0.9999


# -- (b) batching does not change results ------------------------------------------------------


def _forward_batch_sizes(embedder: XVectorEmbedder) -> tuple[list[tuple[int, ...]], object]:
    model = embedder._load()[0]
    shapes: list[tuple[int, ...]] = []

    def hook(_module, _args, kwargs):
        shapes.append(tuple(kwargs["input_values"].shape))

    return shapes, model.register_forward_pre_hook(hook, with_kwargs=True)


def test_different_lengths_embed_alone_or_together_the_same(embedder):
    waves = [
        synth_voice(130.0, 1.0, seed=1),
        synth_voice(200.0, 2.6, seed=2),
        synth_voice(260.0, 1.7, seed=3),
        synth_voice(310.0, 3.1, seed=4),
    ]
    together = embedder.embed(waves)
    assert_unit_rows(together, 4, 24)
    for wave, row in zip(waves, together):
        assert cos(embedder.embed([wave])[0], row) >= 0.999
    # and in another order, interleaved with other recordings
    shuffled = embedder.embed([waves[3], synth_voice(90.0, 1.2, seed=9), waves[0], waves[2], waves[1]])
    for i, j in [(0, 3), (2, 0), (3, 2), (4, 1)]:
        assert cos(shuffled[i], together[j]) >= 0.999


def test_equal_lengths_are_batched_without_changing_results(embedder):
    waves = [synth_voice(f0, 2.0, seed=s) for s, f0 in enumerate([110.0, 180.0, 250.0, 320.0, 390.0])]
    shapes, handle = _forward_batch_sizes(embedder)
    try:
        together = embedder.embed(waves)
    finally:
        handle.remove()
    assert shapes == [(5, 2 * SR)], f"equal lengths were not batched together: {shapes}"
    assert_unit_rows(together, 5, 24)
    for wave, row in zip(waves, together):
        assert cos(embedder.embed([wave])[0], row) >= 0.99999
    # distinct voices stay distinct inside the batch (rows were not mixed up or copied)
    assert cos(together[0], together[4]) < 0.9999


def test_embedding_nothing(embedder):
    assert embedder.embed([]).shape == (0, 24)
    assert embed_recordings(embedder, []).shape == (0, 24)


# -- (c) long recordings -----------------------------------------------------------------------


class CountingEmbedder:
    """Passes through to the real embedder and remembers the lengths it was asked to embed."""

    def __init__(self, inner: XVectorEmbedder):
        self.inner, self.lengths = inner, []
        self.source = inner.source

    model_id = property(lambda self: self.inner.model_id)
    sample_rate = property(lambda self: self.inner.sample_rate)
    dimension = property(lambda self: self.inner.dimension)

    def embed(self, waveforms):
        self.lengths.append([len(w) for w in waveforms])
        return self.inner.embed(waveforms)


def test_long_recording_is_the_mean_of_its_windows(embedder):
    # 7 s made of four 1.75 s stretches of different voices, so that its windows embed differently
    # and their mean is not any one of them
    long = np.concatenate([synth_voice(f0, 1.75, seed=20 + k) for k, f0 in enumerate([110.0, 190.0, 270.0, 350.0])])
    short = synth_voice(240.0, seconds=1.5, seed=22)
    assert len(long) == 7 * SR
    spy = CountingEmbedder(embedder)
    out = embed_recordings(spy, [long, short], window_seconds=2.0)
    assert_unit_rows(out, 2, 24)

    # windows of at most 2 s: ceil(7 / 2) = 4 equal windows of 7 / 4 = 1.75 s (28 000 samples)
    count = math.ceil(len(long) / (2 * SR))
    size = len(long) // count
    assert (count, size) == (4, 28_000)
    windows = [long[i * size : (i + 1) * size] for i in range(count)]
    alone = np.stack([embedder.embed([w])[0] for w in windows])
    expected = alone.mean(axis=0)
    expected /= np.linalg.norm(expected)
    assert cos(out[0], expected) >= 0.9999
    assert max(cos(expected, w) for w in alone) < 0.9999  # guards the line above

    # the shorter-than-a-window recording is embedded whole, as embed() does
    assert cos(out[1], embedder.embed([short])[0]) >= 0.9999
    # bounded memory: nothing longer than a window reached the model
    assert max(max(call) for call in spy.lengths) <= 2 * SR
    assert sorted(length for call in spy.lengths for length in call) == sorted([size] * 4 + [len(short)])


def test_recording_of_exactly_one_window_is_not_cut(embedder):
    wave = synth_voice(200.0, seconds=2.0, seed=23)
    spy = CountingEmbedder(embedder)
    out = embed_recordings(spy, [wave], window_seconds=2.0)
    assert spy.lengths == [[2 * SR]]
    assert cos(out[0], embedder.embed([wave])[0]) >= 0.9999


# -- (d) model identity ------------------------------------------------------------------------


def test_model_id_is_stable_and_tells_models_apart(tiny_model, other_tiny_model, tmp_path, embedder):
    again = XVectorEmbedder(str(tiny_model), device="cpu")
    assert again is not embedder and again.model_id == embedder.model_id
    # the same weights under another path are the same model
    copy = shutil.copytree(tiny_model, tmp_path / "copy-of-tiny")
    assert XVectorEmbedder(str(copy), device="cpu").model_id == embedder.model_id
    other = XVectorEmbedder(str(other_tiny_model), device="cpu")
    assert other.model_id != embedder.model_id
    assert other.dimension == embedder.dimension  # same shape, other weights: only the id tells


def test_load_embedder_defaults_to_the_hub_model_and_loads_lazily(tiny_model):
    default = load_embedder()
    assert isinstance(default, XVectorEmbedder) and default.source == DEFAULT_MODEL
    assert default.sample_rate == SR  # known without loading anything (nothing on the hub is reached)
    assert default._loaded is None
    assert load_embedder(str(tiny_model)).source == str(tiny_model)


# -- (e) errors --------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"the test reached for the network: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_missing_model_directory(no_network):
    embedder = XVectorEmbedder("./no-such-model")
    with pytest.raises(ModelError) as excinfo:
        embedder.embed([synth_voice(150.0, 1.0)])
    message = str(excinfo.value)
    assert "./no-such-model" in message
    assert "--model" in message  # how to point at a local copy
    assert f"download {DEFAULT_MODEL}" in message  # and how to get one


def test_hub_model_while_offline_fails_fast_without_network(no_network, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # no directory of that name here either
    start = time.monotonic()
    with pytest.raises(ModelError) as excinfo:
        XVectorEmbedder(DEFAULT_MODEL, device="cpu").model_id
    assert time.monotonic() - start < 10
    message = str(excinfo.value)
    assert DEFAULT_MODEL in message
    assert "--model" in message and "HF_HUB_OFFLINE" in message


def test_directory_holding_a_plain_wavlm_is_not_a_speaker_model(tiny_model, tmp_path):
    """A WavLMModel checkpoint has no x-vector head: loading it as one would embed with random weights."""
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

    directory = tmp_path / "plain-wavlm"
    WavLMModel(WavLMConfig.from_pretrained(tiny_model)).save_pretrained(directory)
    Wav2Vec2FeatureExtractor.from_pretrained(tiny_model).save_pretrained(directory)
    with pytest.raises(ModelError) as excinfo:
        XVectorEmbedder(str(directory), device="cpu").model_id
    message = str(excinfo.value)
    assert str(directory) in message and "x-vector" in message


def test_directory_holding_a_text_model_is_not_a_speaker_model(tiny_model, tmp_path):
    from transformers import BertConfig, BertModel, Wav2Vec2FeatureExtractor

    directory = tmp_path / "bert"
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)).save_pretrained(directory)
    Wav2Vec2FeatureExtractor.from_pretrained(tiny_model).save_pretrained(directory)
    with pytest.raises(ModelError) as excinfo:
        XVectorEmbedder(str(directory), device="cpu").model_id
    assert str(directory) in str(excinfo.value) and "x-vector" in str(excinfo.value)


def test_directory_without_a_model(tmp_path):
    (tmp_path / "empty-model").mkdir()
    with pytest.raises(ModelError) as excinfo:
        XVectorEmbedder(str(tmp_path / "empty-model"), device="cpu").model_id
    assert "--model" in str(excinfo.value)


# -- (f) device --------------------------------------------------------------------------------


def test_resolve_device_honours_the_environment(monkeypatch):
    import torch

    monkeypatch.setenv("VOICEBANK_DEVICE", "cpu")
    assert resolve_device() == "cpu"
    monkeypatch.setenv("VOICEBANK_DEVICE", "cuda")
    assert resolve_device() == "cuda"
    assert resolve_device("cpu") == "cpu"  # an explicit device wins over the environment
    monkeypatch.setenv("VOICEBANK_DEVICE", "auto")
    assert resolve_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.delenv("VOICEBANK_DEVICE")
    assert resolve_device() == ("cuda" if torch.cuda.is_available() else "cpu")


def test_embedder_uses_the_device_from_the_environment(monkeypatch, tiny_model):
    monkeypatch.setenv("VOICEBANK_DEVICE", "cpu")
    embedder = XVectorEmbedder(str(tiny_model))
    assert embedder.device == "cpu"
    assert next(embedder._load()[0].parameters()).device.type == "cpu"


def test_a_machine_that_cannot_reach_the_hub_fails_in_seconds_naming_every_way_forward(monkeypatch, tmp_path):
    """No retries for a minute: one probe of the hub's address (here a closed local port), then one
    error naming a local directory, `hf download`, and the offline resemblyzer backend."""
    import time

    from voicebank.embedding.wavlm import XVectorEmbedder
    from voicebank.errors import ModelError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    start = time.monotonic()
    with pytest.raises(ModelError) as failed:
        XVectorEmbedder("someone/not-cached-model").dimension
    assert time.monotonic() - start < 10
    message = str(failed.value)
    assert "cannot reach the Hugging Face hub (127.0.0.1" in message
    assert "hf download" in message and "--model ./wavlm-base-plus-sv" in message and "--model resemblyzer" in message
