"""The fast WavLM x-vector path (voicebank.embedding.fast) against the model card's usage.

The reference is transformers' own forward pass, float32, one utterance per call. The fast path
must give every utterance the same embedding (cosine >= 0.999, float32 ~exactly) whatever it is
batched with, on the tiny model of conftest and on the full wavlm-base-plus-sv architecture with
random weights. The random models get a position bias and gate of a trained model's size (the
default initialization makes them ~0, which would leave the attention mask untested).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SPEECH, SR, synth_voice
from voicebank.embedding import embed_recordings
from voicebank.embedding import fast as fastmod
from voicebank.embedding.fast import FastXVector, pad_batch, plan_batches, supports
from voicebank.embedding.wavlm import XVectorEmbedder
from voicebank.errors import InvalidInputError

TINY = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
    conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    tdnn_dim=(32, 32, 32, 32, 64), xvector_output_dim=24,
)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def make_model(seed: int = 0, **config):
    """A random-weight WavLMForXVector whose relative position bias and gate are not ~0."""
    from transformers import WavLMConfig, WavLMForXVector

    torch.manual_seed(seed)
    model = WavLMForXVector(WavLMConfig(**config)).eval()
    with torch.no_grad():
        for layer in model.wavlm.encoder.layers:
            attention = layer.attention
            if hasattr(attention, "rel_attn_embed"):
                attention.rel_attn_embed.weight.normal_(0.0, 2.0)
            attention.gru_rel_pos_const.uniform_(0.5, 2.0)
            attention.gru_rel_pos_linear.weight.normal_(0.0, 0.5)
    return model


def save(model, directory: Path, do_normalize: bool = False) -> str:
    from transformers import Wav2Vec2FeatureExtractor

    model.save_pretrained(directory)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=do_normalize, return_attention_mask=True
    ).save_pretrained(directory)
    return str(directory)


def reference(directory: str):
    """The model card's usage, straight from transformers: one utterance, float32, normalized."""
    from transformers import Wav2Vec2FeatureExtractor, WavLMForXVector

    extractor = Wav2Vec2FeatureExtractor.from_pretrained(directory)
    model = WavLMForXVector.from_pretrained(directory).eval()

    def embed(waves: list[np.ndarray]) -> np.ndarray:
        out = []
        for wave in waves:
            inputs = extractor(wave, sampling_rate=SR, return_tensors="pt", padding=True)
            with torch.no_grad():
                embeddings = model(**inputs).embeddings
            out.append(torch.nn.functional.normalize(embeddings, dim=-1)[0].numpy())
        return np.stack(out)

    return embed


def spy_on_batches(runner) -> tuple[list[tuple[int, ...]], object]:
    """The (rows, samples) of every forward pass, and whether its rows had different lengths."""
    seen: list[tuple[int, ...]] = []

    def hook(_module, _args, kwargs):
        mask = kwargs["attention_mask"]
        seen.append((*kwargs["input_values"].shape, int(len(set(mask.sum(-1).tolist())) > 1)))

    return seen, runner.register_forward_pre_hook(hook, with_kwargs=True)


# -- models --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    return save(make_model(**TINY, use_weighted_layer_sum=True), tmp_path_factory.mktemp("tiny-biased"))


@pytest.fixture(scope="module")
def full_dir(tmp_path_factory) -> str:
    """The full microsoft/wavlm-base-plus-sv architecture (WavLMConfig()), random weights."""
    return save(make_model(), tmp_path_factory.mktemp("full-random"))


@pytest.fixture(scope="module")
def mixed() -> list[np.ndarray]:
    """Speech-like utterances of different lengths (none equal), to be batched together."""
    return [synth_voice(f0, s, seed=k) for k, (f0, s) in enumerate([(110.0, 0.9), (170.0, 2.35), (240.0, 1.6),
                                                                   (300.0, 3.2), (140.0, 1.15), (370.0, 2.0)])]


# -- (a) the fast path gives the reference's embeddings ------------------------------------------


@pytest.mark.parametrize("precision,floor", [("bf16", 0.999), ("fp32", 0.99999)])
def test_tiny_model_mixed_lengths_batched_match_the_reference(tiny_dir, mixed, precision, floor):
    embedder = XVectorEmbedder(tiny_dir, device="cpu", precision=precision)
    runner = embedder._load()[0]
    assert isinstance(runner, FastXVector)
    assert runner.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
    seen, handle = spy_on_batches(runner)
    try:
        ours = embedder.embed(mixed)
    finally:
        handle.remove()
    assert any(rows > 1 and ragged for rows, _, ragged in seen), f"nothing was padded into a batch: {seen}"
    assert ours.dtype == np.float32 and ours.shape == (len(mixed), 24)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)
    cos = cosines(ours, reference(tiny_dir)(mixed))
    assert cos.min() >= floor, cos
    # and alone, one at a time: the same as in the batch
    alone = np.stack([embedder.embed([w])[0] for w in mixed])
    assert cosines(alone, ours).min() >= 0.99999


@pytest.mark.slow
def test_full_size_model_matches_the_reference(full_dir):
    """wavlm-base-plus-sv's architecture (random weights): bf16 fast path on the CPU, the CUDA
    code path (time-major encoder, bf16 mask) run on the CPU, and float32."""
    waves = [synth_voice(130.0, 1.3, seed=31), synth_voice(260.0, 2.1, seed=32), synth_voice(200.0, 0.8, seed=33)]
    real = sorted(SPEECH.glob("*/*/*.flac")) if SPEECH.is_dir() else []
    if real:  # a real recording as well, where it is here
        from voicebank.audio import AudioLimits, load

        waves.append(load(real[0], SR, AudioLimits(min_seconds=0.0, min_speech_seconds=0.0)).samples[: int(1.7 * SR)])
    expected = reference(full_dir)(waves)

    embedder = XVectorEmbedder(full_dir, device="cpu", precision="bf16")
    assert embedder.dimension == 512
    ours = embedder.embed(waves)
    assert cosines(ours, expected).min() >= 0.999

    model = embedder._load()[0].model
    values, mask = pad_batch(waves, "cpu", normalize=False)
    cuda_path = FastXVector(model, torch.bfloat16, conv_layout="time", float32_mask=False)
    exact = FastXVector(model, torch.float32)
    with torch.inference_mode():
        via_cuda_path = torch.nn.functional.normalize(cuda_path(values, mask), dim=-1).numpy()
        float32 = torch.nn.functional.normalize(exact(values, mask), dim=-1).numpy()
    assert cosines(via_cuda_path, expected).min() >= 0.999
    assert cosines(float32, expected).min() >= 0.99999


@pytest.mark.parametrize(
    "variant",
    [
        dict(use_weighted_layer_sum=True),
        dict(use_weighted_layer_sum=False),
        dict(do_stable_layer_norm=True, use_weighted_layer_sum=True),
        dict(do_stable_layer_norm=True, use_weighted_layer_sum=False),
        dict(feat_extract_norm="layer", conv_bias=True),
    ],
    ids=["weighted", "last-layer", "stable-weighted", "stable-last", "layer-norm-encoder"],
)
@pytest.mark.parametrize("layout", ["time", "channels"])
def test_every_wavlm_variant_in_float32_is_exact(variant, layout, mixed):
    """Against model(...).embeddings of each utterance alone; batched, in float32, blocked small."""
    model = make_model(seed=3, **TINY, **variant)
    waves = mixed[:4]
    with torch.inference_mode():
        expected = torch.cat([model(torch.from_numpy(w)[None]).embeddings for w in waves])
        runner = FastXVector(model, torch.float32, frame_budget=40, mask_budget=3000, conv_layout=layout)
        ours = runner(*pad_batch(waves, "cpu", normalize=False))
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


def test_the_normalizing_feature_extractor_is_reproduced_on_the_device(tmp_path, mixed):
    """Checkpoints whose extractor normalizes (zero mean, unit variance per utterance)."""
    from transformers import Wav2Vec2FeatureExtractor

    directory = save(make_model(seed=4, **TINY), tmp_path / "normalizing", do_normalize=True)
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(directory)
    waves = [w * 3.0 + 0.01 for w in mixed[:3]]
    expected = extractor(waves, sampling_rate=SR, padding=True, return_tensors="pt")
    values, mask = pad_batch(waves, "cpu", normalize=True)
    torch.testing.assert_close(values, expected["input_values"], rtol=1e-4, atol=1e-5)
    assert torch.equal(mask, expected["attention_mask"].to(mask.dtype))
    ours = XVectorEmbedder(directory, device="cpu").embed(waves)
    assert cosines(ours, reference(directory)(waves)).min() >= 0.999


# -- (b) the pieces, numerically -----------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1])
def test_sdpa_attention_equals_the_eager_attention(index):
    """The gated relative-position attention through SDPA (float32 additive mask, -inf on padded
    keys) against transformers' WavLMAttention, with padding, in float32."""
    model = make_model(seed=5, num_hidden_layers=2)
    runner = FastXVector(model, torch.float32)
    runner.prepare()
    layers = model.wavlm.encoder.layers
    B, T, D = 2, 90, model.config.hidden_size
    H = model.config.num_attention_heads
    torch.manual_seed(6)
    x = torch.randn(B, T, D)
    valid = torch.tensor([T, T - 23])
    key_mask = torch.arange(T)[None, :] < valid[:, None]
    with torch.inference_mode():
        bias = layers[0].attention.compute_bias(T, T)  # (H, T, T), what layer 0 hands to the others
        position_bias = bias.unsqueeze(0).repeat(B, 1, 1, 1).view(B * H, T, T)
        eager, _, _ = layers[index].attention(x, attention_mask=key_mask.long(), position_bias=position_bias)
        torch.testing.assert_close(runner.position_bias(T, x.device), bias, rtol=0, atol=0)
        table = runner.relative_bias(T, x.device)
        full = runner.attention(runner._layers[index], x, table, key_mask)
        runner.mask_budget = 2 * H * 7 * T  # blocks of 7 query rows
        blocked = runner.attention(runner._layers[index], x, table, key_mask)
    for ours in (full, blocked):
        for b in range(B):  # padded query rows are garbage in both; only valid rows are compared
            n = int(valid[b])
            torch.testing.assert_close(ours[b, :n], eager[b, :n], rtol=1e-5, atol=1e-5)


def test_the_feature_encoder_normalizes_each_utterance_by_its_own_frames(mixed):
    """GroupNorm statistics of each row's own samples (folded into the first convolution), not
    of the padded batch: each row equals transformers' feature encoder run on it alone."""
    model = make_model(seed=7, **TINY)
    waves = [mixed[1], mixed[0], mixed[3]]
    values, mask = pad_batch(waves, "cpu", normalize=False)
    lengths = [len(w) for w in waves]
    with torch.inference_mode():
        for layout, budget in [("time", 10_000), ("time", 17), ("channels", 10_000), ("channels", 17)]:
            runner = FastXVector(model, torch.float32, frame_budget=budget, conv_layout=layout)
            runner.prepare()
            feats, frames = runner.features(values, lengths)
            for row, wave in enumerate(waves):
                alone = model.wavlm.feature_extractor(torch.from_numpy(wave)[None])[0].t()
                assert frames[row] == alone.shape[0]
                torch.testing.assert_close(feats[row, : frames[row]], alone, rtol=1e-4, atol=1e-5)


# -- (c) long recordings in bounded memory -------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_long_recordings_run_in_bounded_blocks(tiny_dir, monkeypatch, precision):
    """Four minutes through embed_recordings: windows, then blocks of the convolutional encoder
    and of the attention mask, each within its budget; the result is the blocked-or-not result.
    Both precisions, whatever this CPU prefers: they encode with different conv layouts (matmuls
    over time-major activations for bf16, F.conv1d for float32 on the CPU), and both must block."""
    embedder = XVectorEmbedder(tiny_dir, device="cpu", precision=precision)
    runner = embedder._load()[0]
    monkeypatch.setattr(runner, "frame_budget", 300)
    monkeypatch.setattr(runner, "mask_budget", 2**18)
    long = np.concatenate([synth_voice(f0, 30.0, seed=40 + k) for k, f0 in enumerate([120.0, 200.0] * 4)])
    assert len(long) == 240 * SR

    blocks: list[int] = []
    masks: list[int] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(encode):
        def spy_encode(values, folded):
            blocks.append(values.numel())
            return encode(values, folded)
        return spy_encode

    def spy_sdpa(q, k, v, attn_mask=None, **kw):
        masks.append(attn_mask.numel())
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)

    for layout in ("encode_time_major", "encode_channels_first"):  # whichever this precision uses
        monkeypatch.setattr(runner.encoder, layout, spy(getattr(runner.encoder, layout)))
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy_sdpa)
    out = embed_recordings(embedder, [long], window_seconds=30.0)
    assert out.shape == (1, 24) and abs(float(np.linalg.norm(out[0])) - 1) < 1e-5
    assert len(blocks) > 8 and max(blocks) <= (300 + 2) * 320  # ~6 s of audio at a time
    assert len(masks) > 8 * 4 and max(masks) <= 2**18
    monkeypatch.undo()

    # the same numbers as without blocks
    window = 30 * SR
    pieces = [long[i * window : (i + 1) * window] for i in range(8)]
    unblocked = FastXVector(runner.model, runner.dtype, frame_budget=10**6, mask_budget=2**40)
    with torch.inference_mode():
        rows = torch.nn.functional.normalize(unblocked(*pad_batch(pieces, "cpu", False)), dim=-1).numpy()
    expected = rows.mean(0)
    assert float(cosines(out[0], expected)) >= (0.99999 if precision == "fp32" else 0.9999)


# -- (d) switches, identity, batching plan, threads ----------------------------------------------


def test_opt_out_keeps_the_reference_path_and_the_model_id(tiny_dir, mixed, monkeypatch):
    from transformers import WavLMForXVector

    fast = XVectorEmbedder(tiny_dir, device="cpu")
    assert fast.fast and isinstance(fast._load()[0], FastXVector)
    assert XVectorEmbedder(tiny_dir, device="cpu", fast=False)._load()[0].__class__ is WavLMForXVector
    monkeypatch.setenv("VOICEBANK_FAST", "0")
    slow = XVectorEmbedder(tiny_dir, device="cpu")
    assert not slow.fast and isinstance(slow._load()[0], WavLMForXVector)
    assert slow.compute_dtype == "float32"
    assert slow.model_id == fast.model_id  # the weights' fingerprint, whichever path runs them
    assert cosines(slow.embed(mixed[:3]), fast.embed(mixed[:3])).min() >= 0.999
    monkeypatch.setenv("VOICEBANK_FAST", "1")
    monkeypatch.setenv("VOICEBANK_PRECISION", "fp32")
    assert XVectorEmbedder(tiny_dir, device="cpu").compute_dtype == "float32"
    with pytest.raises(InvalidInputError, match="precision 'fp8' .* is not one of auto, bf16, fp32"):
        XVectorEmbedder(tiny_dir, device="cpu", precision="fp8")
    monkeypatch.setenv("VOICEBANK_FAST", "maybe")  # a typo is an error, not a silent "on"
    with pytest.raises(InvalidInputError, match="VOICEBANK_FAST='maybe' is neither on"):
        XVectorEmbedder(tiny_dir, device="cpu")


# -- (e) a transformers release the fast path does not know: fall back, once, saying why ----------


def load_then(monkeypatch, change):
    """Make the embedder's model loading apply ``change(model)`` to the loaded model, as a
    transformers release that names or computes something differently would."""
    import transformers

    original = transformers.AutoModelForAudioXVector.from_pretrained

    def from_pretrained(*args, **kwargs):
        loaded = original(*args, **kwargs)
        change(loaded[0] if isinstance(loaded, tuple) else loaded)
        return loaded

    monkeypatch.setattr(transformers.AutoModelForAudioXVector, "from_pretrained", from_pretrained)


def rename_feed_forward(model):
    """``intermediate_dense`` renamed ``up_proj``, the forward pass following the new name."""
    import types

    def forward(self, hidden):
        return self.output_dropout(self.output_dense(self.intermediate_dropout(self.intermediate_act_fn(self.up_proj(hidden)))))

    for layer in model.wavlm.encoder.layers:
        ff = layer.feed_forward
        ff.up_proj = ff.intermediate_dense
        del ff.intermediate_dense
        ff.forward = types.MethodType(forward, ff)


def flip_output_signs(model):
    """The x-vector layer's outputs multiplied by fixed signs: same names, another function."""
    layer = model.feature_extractor
    forward = layer.forward
    signs = torch.from_numpy(np.random.default_rng(0).choice([-1.0, 1.0], layer.out_features).astype(np.float32))
    layer.forward = lambda hidden: forward(hidden) * signs


@pytest.mark.parametrize(
    "change,reason",
    [(rename_feed_forward, r"cannot run this model \(UnsupportedModel: .*intermediate_dense"),
     (flip_output_signs, r"self-check against transformers' forward gave cosine 0\.\d+ < 0\.999")],
    ids=["renamed-attribute", "changed-computation"],
)
def test_a_model_the_fast_path_cannot_follow_falls_back_with_one_warning(tiny_dir, mixed, monkeypatch, caplog, change, reason):
    import logging
    import re

    from transformers import WavLMForXVector

    monkeypatch.delenv("VOICEBANK_FAST", raising=False)
    load_then(monkeypatch, change)
    caplog.set_level(logging.WARNING, logger="voicebank.embedding.wavlm")
    embedder = XVectorEmbedder(tiny_dir, device="cpu")
    assert embedder.fast
    model = embedder._load()[0]
    assert type(model) is WavLMForXVector  # the reference path runs
    ours = np.concatenate([embedder.embed(mixed[:3]), embedder.embed(mixed[3:])])
    with torch.inference_mode():  # what the changed model computes, through its own forward pass
        expected = torch.nn.functional.normalize(
            torch.cat([model(torch.from_numpy(w)[None]).embeddings for w in mixed]), dim=-1).numpy()
    assert cosines(ours, expected).min() >= 0.99999
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "voicebank.embedding.wavlm"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert message.startswith("the fast WavLM path is off: ") and re.search(reason, message), message


def test_int8_that_misses_the_self_check_gives_way_to_float32_with_one_warning(tiny_dir, monkeypatch, caplog):
    import logging

    from voicebank.embedding import fast

    real = fast.self_check
    monkeypatch.setattr(fast, "self_check", lambda runner: 0.99 if runner.dtype == fast.INT8 else real(runner))
    caplog.set_level(logging.WARNING, logger="voicebank.embedding.wavlm")
    embedder = XVectorEmbedder(tiny_dir, device="cpu", precision="int8")
    runner = embedder._load()[0]
    assert isinstance(runner, FastXVector) and runner.dtype == torch.float32
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["the fast WavLM path runs in float32: with int8 linear layers its self-check against "
                        "transformers' forward gave cosine 0.990000 < 0.999."]


def test_the_self_check_passes_where_the_fast_path_computes_the_model(tiny_dir, caplog):
    import logging

    from voicebank.embedding.fast import self_check

    caplog.set_level(logging.WARNING, logger="voicebank.embedding.wavlm")
    for precision in ("fp32", "bf16"):
        runner = XVectorEmbedder(tiny_dir, device="cpu", precision=precision)._load()[0]
        assert isinstance(runner, FastXVector)
        assert self_check(runner) >= (0.99999 if precision == "fp32" else 0.999)
    model = make_model(seed=9, **TINY)
    flip_output_signs(model)
    assert self_check(FastXVector(model, torch.float32)) < 0.999  # the check can fail
    assert not caplog.records


def test_other_xvector_models_keep_the_reference_path(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForXVector

    config = Wav2Vec2Config(**{k: v for k, v in TINY.items()})
    directory = tmp_path / "w2v2"
    Wav2Vec2ForXVector(config).eval().save_pretrained(directory)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, return_attention_mask=True).save_pretrained(directory)
    embedder = XVectorEmbedder(str(directory), device="cpu")
    assert not supports(embedder._load()[0])
    out = embedder.embed([synth_voice(150.0, 1.0), synth_voice(200.0, 1.3)])
    assert out.shape == (2, 24)


def test_plan_batches_groups_similar_lengths_within_bounds():
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.uniform(1, 12, size=200) * SR]
    batches = plan_batches(lengths, max_samples=40 * SR, max_padding=0.15)
    assert sorted(i for b in batches for i in b) == list(range(200))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert longest * len(batch) <= 40 * SR or len(batch) == 1
        assert longest * len(batch) <= 1.15 * sum(lengths[i] for i in batch) + 1e-9
    assert len(batches) < 100  # it does batch
    assert plan_batches([10 * 60 * SR, SR], max_samples=40 * SR) == [[0], [1]]  # too long: alone
    assert plan_batches([], 10) == []


def test_threads_are_lowered_to_the_usable_cores_never_raised(monkeypatch):
    from voicebank import runtime

    state = {"threads": 64}
    monkeypatch.setattr(runtime, "_wanted", None)  # restored after the test: the library's own state
    monkeypatch.setattr(runtime, "_applied", set())
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: state["threads"])
    monkeypatch.setattr(torch, "set_num_threads", lambda n: state.update(threads=n))
    monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # idle: this test is about the cores
    monkeypatch.setattr(runtime, "faiss_loaded", lambda faiss: None)  # this test is about torch
    configure = lambda: runtime.configure(quiet=False)  # noqa: E731
    configure()
    assert state["threads"] == 2
    state["threads"] = 1
    configure()
    assert state["threads"] == 1
    state["threads"] = 8
    monkeypatch.setenv("OMP_NUM_THREADS", "8")  # the user's explicit choice stands
    configure()
    assert state["threads"] == 8


def test_bf16_is_chosen_only_where_the_device_has_it(monkeypatch, tiny_dir):
    from voicebank.embedding import wavlm

    from voicebank.embedding import fast_attention

    monkeypatch.delenv("VOICEBANK_PRECISION", raising=False)  # "auto" is what is tested
    monkeypatch.setattr(wavlm, "cpu_has_native_bf16", lambda _torch: False)
    assert XVectorEmbedder(tiny_dir, device="cpu").compute_dtype == "int8"  # where torch runs int8
    monkeypatch.setattr(fast_attention, "int8_supported", lambda: False)
    assert XVectorEmbedder(tiny_dir, device="cpu").compute_dtype == "float32"
    monkeypatch.setattr(wavlm, "cpu_has_native_bf16", lambda _torch: True)
    assert XVectorEmbedder(tiny_dir, device="cpu").compute_dtype == "bfloat16"
    assert XVectorEmbedder(tiny_dir, device="cpu", precision="fp32").compute_dtype == "float32"
    assert XVectorEmbedder(tiny_dir, device="cpu", precision="int8").compute_dtype == "int8"


def test_int8_linear_layers_keep_the_embeddings(full_dir, caplog):
    """int8 weights and dynamically quantized inputs in the transformer's linear layers, against
    the model card's usage, on the full-size architecture: each utterance alone and batched."""
    import logging

    caplog.set_level(logging.INFO, logger="voicebank.embedding.wavlm")
    waves = [synth_voice(f0, s, seed=60 + k) for k, (f0, s) in enumerate([(120.0, 2.3), (210.0, 1.4), (330.0, 1.9)])]
    embedder = XVectorEmbedder(full_dir, device="cpu", precision="int8")
    runner = embedder._load()[0]
    assert isinstance(runner, FastXVector) and runner.dtype == "int8"
    assert any("fast path, int8 matmuls" in r.getMessage() for r in caplog.records)  # the choice is logged
    quantized = runner._layers[0].ff1
    assert quantized.packed is not None  # int8 weights, not float32 ones called int8
    expected = reference(full_dir)(waves)
    together = embedder.embed(waves)
    alone = np.stack([embedder.embed([w])[0] for w in waves])
    assert cosines(together, expected).min() >= 0.999
    # the inputs' int8 scale is one per matmul, so per batch: batching moves results a little
    assert cosines(alone, together).min() >= 0.9999
    assert cosines(together, expected).min() < 0.9999999  # it is not the float32 path


def test_frames_follow_the_model(tiny_dir):
    runner = XVectorEmbedder(tiny_dir, device="cpu")._load()[0]
    for n in [400, 401, 719, 720, 16_000, 123_457]:
        assert runner.frames(n) == int(runner.model._get_feat_extract_output_lengths(torch.tensor(n)))
    assert math.prod(runner.config.conv_stride) == 320


def test_cpu_workers_give_the_inline_results_and_leave_threads_alone(tiny_dir, mixed):
    import threading

    from voicebank.embedding import parallel

    before = torch.get_num_threads()
    embedder = XVectorEmbedder(tiny_dir, device="cpu")
    pool = parallel.workers(2)
    if pool is None:
        pytest.skip("torch's parallel backend here is not OpenMP")
    seen: list[tuple[str, int]] = []
    runner = embedder._load()[0]
    handle = runner.register_forward_pre_hook(
        lambda *_: seen.append((threading.current_thread().name, torch.get_num_threads()))
    )
    try:
        together = embedder.embed(mixed)  # several batches: the workers take them
    finally:
        handle.remove()
    if min(torch.get_num_threads(), parallel_cores()) >= 2:
        assert {name for name, _ in seen} <= {f"voicebank-embed-{i}" for i in range(2)}
        assert all(threads == 1 for _, threads in seen)
    alone = np.stack([embedder.embed([w])[0] for w in mixed])  # one piece of work: inline
    assert cosines(alone, together).min() >= 0.99999
    assert torch.get_num_threads() == before
    other: list[int] = []
    thread = threading.Thread(target=lambda: other.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert other == [before]  # threads started later begin with the usual count


def parallel_cores() -> int:
    from voicebank.runtime import usable_cores

    return usable_cores()

