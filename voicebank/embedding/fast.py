"""A faster forward pass for transformers' ``WavLMForXVector``: the same function, computed cheaper.

``FastXVector`` computes what ``model(input_values, attention_mask).embeddings`` computes, from
the plain tensors that ``fast_weights.read_weights`` reads out of the model (the one place that
knows transformers' internals; the model's weights are read, never changed):

* **Attention** through ``torch.nn.functional.scaled_dot_product_attention`` (``fast_attention``).
* **Precision** (``dtype``): ``torch.float32``; ``torch.bfloat16``: the matmuls (the
  convolutions as matmuls too) in bf16 with float32 accumulation; or ``"int8"``: the transformer's
  linear layers with int8 weights and dynamically quantized inputs, the rest in float32. In every
  case the residual stream, every normalization, the position gate, the attention mask, the
  x-vector head and its statistics pooling stay in float32, and so does the first convolution.
* **The convolutional encoder** (``fast_encoder``) normalizes each utterance by its own samples.
* **Batching different lengths without changing results.** Every step either sees only its own
  frame (LayerNorm, feed-forward), masks padded keys (attention), sees zeros where an unpadded
  sequence has its zero padding (the positional convolution: padded frames are zeroed first, as
  transformers does), or reads only valid frames (the convolutions and the masked statistics
  pooling). So an utterance's embedding does not depend on the batch it is in.
* **Bounded memory**: the encoder runs in blocks of frames, the attention mask in blocks of rows.

``supports()`` says whether a model is meant for this path; ``read_weights`` raises
``UnsupportedModel`` when it cannot read one, and ``self_check`` compares this path with the
model's own forward pass on a short fixed input, so the embedder can fall back at load.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .fast_attention import INT8, Attention, Linear, bias_rows, relative_bias, relative_position_bucket
from .fast_encoder import ConvEncoder, layer_norm
from .fast_weights import Norm, UnsupportedModel, read_weights, supports

__all__ = ["FastXVector", "UnsupportedModel", "pad_batch", "plan_batches", "relative_position_bucket",
           "self_check", "supports", "INT8"]


@dataclass
class _Layer:
    attention: Attention
    norm1: Norm  # layer_norm
    ff1: Linear
    act: Callable[[torch.Tensor], torch.Tensor]
    ff2: Linear
    norm2: Norm  # final_layer_norm


class FastXVector(torch.nn.Module):
    """``WavLMForXVector`` inference: ``forward(input_values, attention_mask)`` returns the (B, D)
    float32 x-vector embeddings (not normalized), as ``model(...).embeddings`` does.

    ``dtype`` is the precision of the matmuls: ``torch.float32``, ``torch.bfloat16`` or ``"int8"``
    (see the module's docstring). The model is registered as a submodule (``.parameters()`` and
    ``.config`` see it) and read by ``read_weights`` here, at construction: a model this path
    cannot read raises ``UnsupportedModel`` now, not at the first embedding. ``frame_budget``
    (encoder frames x batch rows per block of the convolutional encoder) and ``mask_budget``
    (elements of the float32 (batch, heads, queries, keys) attention mask per block of query
    rows) bound memory. ``conv_layout``: ``time`` (matmuls over time-major activations),
    ``channels`` (F.conv1d) or ``auto`` (time-major except float32 matmuls on the CPU).
    ``float32_mask`` gives SDPA the float32 mask beside bf16 queries (default: on the CPU only).
    With ``conv_layout="time", float32_mask=False`` the CPU runs the code path CUDA runs.
    """

    def __init__(
        self,
        model: Any,
        dtype: torch.dtype | str = torch.float32,
        frame_budget: int = 1500,
        mask_budget: int = 2**24,
        conv_layout: str = "auto",
        float32_mask: bool | None = None,
    ):
        super().__init__()
        if conv_layout not in ("auto", "time", "channels"):
            raise ValueError(f"conv_layout must be auto, time or channels, not {conv_layout!r}")
        if dtype not in (torch.float32, torch.bfloat16, INT8):
            raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or 'int8', not {dtype!r}")
        self.model = model
        self.dtype = dtype
        # the dtype of activations between layers: int8 is only ever the weights of linear layers
        self.float_dtype = torch.float32 if dtype == INT8 else dtype
        self.frame_budget = frame_budget
        self.mask_budget = mask_budget
        self.conv_layout = conv_layout
        self.float32_mask = float32_mask
        self._prepared_on: torch.device | None = None
        self._prepare_lock = threading.Lock()
        self.prepare()

    @property
    def config(self) -> Any:
        return self.model.config

    def frames(self, samples: int) -> int:
        """Encoder frames of a waveform of ``samples`` samples."""
        return self.encoder.frames(samples)

    # -- weights, prepared once per device --------------------------------------------------------
    def prepare(self) -> None:
        """Ready the weights for the model's device (done at load; again after the model moves)."""
        device = next(self.model.parameters()).device
        if self._prepared_on == device:
            return
        with self._prepare_lock:
            if self._prepared_on != device:
                self._prepare_now(device)

    def _prepare_now(self, device: torch.device) -> None:
        if self.dtype == INT8 and device.type != "cpu":
            raise UnsupportedModel("int8 linear layers run on the CPU only")
        w = read_weights(self.model)
        dt, fdt = self.dtype, self.float_dtype
        # matmuls over time-major activations where bf16 (oneDNN, cuBLAS) beats convolution
        # kernels; float32 convolutions on the CPU are faster as F.conv1d
        auto = fdt != torch.float32 or device.type != "cpu"
        # (int8 convolutions were tried: cosine 0.997 against float32 on bench/embed.py's audio)
        self.encoder = ConvEncoder(w.convs, fdt, auto if self.conv_layout == "auto" else self.conv_layout == "time")
        self._proj_norm = w.projection_norm
        self._proj = Linear(*w.projection, fdt)
        self._pos = (w.pos_weight.to(fdt), w.pos_bias.to(fdt), w.pos_padding, w.pos_groups, w.pos_remove, w.pos_activation)
        self._encoder_norm = w.encoder_norm
        self._stable = w.stable_layer_norm
        self._layers = [
            _Layer(Attention(lw, w.heads, dt), lw.norm1, Linear(*lw.ff1, dt), lw.activation, Linear(*lw.ff2, dt), lw.norm2)
            for lw in w.layers
        ]
        self._heads = w.heads
        self._rel = (w.rel_embed, w.num_buckets, w.max_distance)
        self._layer_weights = w.layer_weights
        self._last_normed = w.last_state_normed
        # the x-vector head is cheap: float32
        self._projector = Linear(*w.projector, torch.float32)
        self._tdnn = w.tdnn
        self._xvector = Linear(*w.xvector, torch.float32)
        # SDPA on the CPU takes a float32 mask beside bf16 queries (more exact than a bf16 mask)
        self._float32_mask = device.type == "cpu" if self.float32_mask is None else self.float32_mask
        self._prepared_on = device

    # -- the convolutional feature encoder --------------------------------------------------------
    def features(self, input_values: torch.Tensor, lengths: list[int]) -> tuple[torch.Tensor, list[int]]:
        """(B, T, C) features of (B, N) float32 waveforms and each row's frame count."""
        return self.encoder.features(input_values, lengths, self.frame_budget)

    # -- the transformer --------------------------------------------------------------------------
    def relative_bias(self, length: int, device: torch.device) -> torch.Tensor:
        """(H, 2T - 1) float32 relative position bias table, keys in reverse order (see
        ``fast_attention.relative_bias``)."""
        embed, buckets, distance = self._rel
        return relative_bias(embed.to(device), length, buckets, distance)

    def position_bias(self, length: int, device: torch.device) -> torch.Tensor:
        """(H, T, T) relative position bias, keys in order: what WavLMAttention.compute_bias gives."""
        return bias_rows(self.relative_bias(length, device), 0, length).flip(-1)

    def attention(self, layer: _Layer, x: torch.Tensor, table: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """WavLM's gated relative-position self-attention of (B, T, D) float32 ``x``."""
        return layer.attention(x, table, key_mask, self.mask_budget, self._float32_mask)

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.prepare()
        B, N = input_values.shape
        lengths = [N] * B if attention_mask is None else [int(n) for n in attention_mask.sum(-1).tolist()]
        feats, frames = self.features(input_values.float(), lengths)
        T = feats.shape[1]
        key_mask = None
        if min(frames) < T:
            key_mask = torch.arange(T, device=feats.device)[None, :] < torch.tensor(frames, device=feats.device)[:, None]

        fdt = self.float_dtype
        x = self._proj(layer_norm(feats, self._proj_norm).to(fdt))
        del feats
        if key_mask is not None:
            x = x * key_mask[..., None]  # padded frames are zero before the positional convolution
        weight, bias, padding, groups, remove, activation = self._pos
        pos = F.conv1d(x.transpose(1, 2).to(fdt), weight, bias, padding=padding, groups=groups)
        if remove:
            pos = pos[..., :-remove]
        x = x.float() + activation(pos).transpose(1, 2)
        del pos
        if not self._stable:
            x = layer_norm(x, self._encoder_norm)

        table = self.relative_bias(T, x.device)
        weights = self._layer_weights
        pooled = x * weights[0] if weights is not None else None
        for i, layer in enumerate(self._layers):
            if self._stable:
                x = x + self.attention(layer, layer_norm(x, layer.norm1), table, key_mask)
                h = layer_norm(x, layer.norm2).to(fdt)
                x = x + layer.ff2(layer.act(layer.ff1(h)))
            else:
                x = layer_norm(x + self.attention(layer, x, table, key_mask), layer.norm1)
                h = layer.ff2(layer.act(layer.ff1(x.to(fdt))))
                x = layer_norm(x + h, layer.norm2)
            if weights is not None:
                last = self._last_normed and i + 1 == len(self._layers)
                pooled.add_(layer_norm(x, self._encoder_norm) if last else x, alpha=weights[i + 1])
        del table
        if weights is None:
            pooled = layer_norm(x, self._encoder_norm) if self._stable else x
        del x
        return self.head(pooled, frames)

    # -- the x-vector head ------------------------------------------------------------------------
    def head(self, hidden: torch.Tensor, frames: list[int]) -> torch.Tensor:
        """Projector, TDNN and statistics pooling over each row's valid frames; float32."""
        h = self._projector(hidden.float()).transpose(1, 2)  # (B, C, T)
        lengths = list(frames)
        for weight, bias, dilation in self._tdnn:
            h = torch.relu(F.conv1d(h, weight, bias, dilation=dilation))
            lengths = [n - dilation * (weight.shape[-1] - 1) for n in lengths]
        T = h.shape[-1]
        count = torch.tensor(lengths, device=h.device, dtype=h.dtype)[:, None]
        if min(lengths) == T:
            mean, std = h.mean(-1), h.std(-1)
        else:
            mask = (torch.arange(T, device=h.device)[None, :] < count)[:, None, :].to(h.dtype)
            mean = (h * mask).sum(-1) / count
            std = (((h - mean[..., None]) * mask).square().sum(-1) / (count - 1)).sqrt()
        return self._xvector(torch.cat([mean, std], dim=-1))


def self_check(runner: FastXVector, seconds: Sequence[float] = (0.6, 0.4)) -> float:
    """The smallest cosine between ``runner``'s embeddings and its model's own forward pass
    (``model(input_values).embeddings``, each utterance alone) on a short, fixed, speech-like
    synthetic input: utterances of ``seconds`` at 16 kHz, padded into one batch. About the cost of
    embedding one second of audio twice; a low value means this path no longer computes what the
    model computes (e.g. a transformers release changed the model's forward pass)."""
    rng = np.random.default_rng(20_241)
    waves = []
    for s in seconds:
        t = np.arange(int(s * 16_000)) / 16_000
        phase = 2 * np.pi * np.cumsum(rng.uniform(100, 250) * (1 + 0.05 * np.sin(2 * np.pi * 4 * t))) / 16_000
        voiced = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
        waves.append((0.2 * voiced + 0.01 * rng.standard_normal(t.size)).astype(np.float32))
    device = next(runner.model.parameters()).device
    values, mask = pad_batch(waves, device, normalize=False)
    with torch.inference_mode():
        ours = runner(values, mask).float()
        ref = torch.cat([runner.model(input_values=values[i : i + 1, : len(w)]).embeddings for i, w in enumerate(waves)])
    return float(F.cosine_similarity(ours, ref.float(), dim=-1).min())


# -- batching -----------------------------------------------------------------------------------


def plan_batches(lengths: Sequence[int], max_samples: int, max_padding: float = 0.15) -> list[list[int]]:
    """Indices in batches of similar length: longest first, a batch grows while its padded size
    stays within ``max_samples`` and its padding within ``max_padding`` of its audio.

    Padding cannot change results (see ``FastXVector``); this only bounds the work and memory it
    costs. A waveform over the limits on its own gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i in order:
        n = lengths[i]
        if current:
            longest = lengths[current[0]]
            padded = longest * (len(current) + 1)
            if padded <= max_samples and padded <= (1 + max_padding) * (total + n):
                current.append(i)
                total += n
                continue
            batches.append(current)
        current, total = [i], n
    if current:
        batches.append(current)
    return batches


def pad_batch(
    waveforms: Sequence[np.ndarray], device: str | torch.device, normalize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) float32 input values on ``device`` and their (B, N) attention mask, as
    ``Wav2Vec2FeatureExtractor(..., padding=True)`` gives them; the zero-mean unit-variance
    normalization (when the extractor does it) is computed on the device, per utterance."""
    lengths = [len(w) for w in waveforms]
    longest = max(lengths)
    host = torch.zeros((len(waveforms), longest), dtype=torch.float32)
    for row, wave in zip(host, waveforms):
        row[: len(wave)] = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    if torch.device(device).type == "cuda":
        host = host.pin_memory()
    values = host.to(device, non_blocking=True)
    n = torch.tensor(lengths, device=values.device)
    mask = torch.arange(longest, device=values.device)[None, :] < n[:, None]
    if normalize:
        count = n.to(torch.float32)[:, None]
        mean = values.sum(-1, keepdim=True) / count
        var = ((values - mean).square() * mask).sum(-1, keepdim=True) / count
        values = ((values - mean) / torch.sqrt(var + 1e-7)) * mask  # padding stays 0, as the extractor's
    return values, mask.to(torch.long)
