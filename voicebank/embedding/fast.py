"""A faster forward pass for transformers' ``WavLMForXVector``: the same function, computed cheaper.

``FastXVector`` wraps a loaded ``WavLMForXVector`` (its weights are used, never changed) and
computes the same x-vector embeddings as ``model(input_values, attention_mask).embeddings``:

* **Attention** through ``torch.nn.functional.scaled_dot_product_attention``; WavLM's gated
  relative position bias becomes the additive float mask (with ``-inf`` on padded keys). The
  attention weights are never materialized for output, and Q, K and V come from one fused matmul.
* **Mixed precision** (``dtype=torch.bfloat16``): matmuls and convolutions run in bf16, while the
  residual stream, every normalization (GroupNorm, LayerNorm), the softmax statistics of the
  position gate, the x-vector head and its statistics pooling stay in float32. The first
  convolution (1 input channel, cheap) and its GroupNorm stay in float32 too: they see raw audio.
* **Batching different lengths without changing results**: the convolutional feature encoder's
  GroupNorm normalizes each channel over time, so padding would change its statistics. Here it
  is computed over each utterance's own valid frames only (a masked GroupNorm). Every later step
  either sees only its own frame (LayerNorm, feed-forward), masks padded keys (attention), pads
  with zeros exactly as an unpadded sequence would (the positional convolution: padded frames are
  zeroed first, as transformers does), or reads only valid frames (the unpadded TDNN convolutions
  and the masked statistics pooling). So an utterance's embedding does not depend on its batch.

Only what the reference can check is accepted: ``supports()`` says whether a model qualifies
(WavLM x-vector, no adapter); anything else keeps the reference forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# -- the function -------------------------------------------------------------------------------


def supports(model: Any) -> bool:
    """Whether ``FastXVector`` reproduces this model's forward pass."""
    try:
        from transformers import WavLMForXVector
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    config = getattr(model, "config", None)
    return (
        isinstance(model, WavLMForXVector)
        and not getattr(config, "add_adapter", False)
        and getattr(config, "feat_extract_norm", None) in ("group", "layer")
    )


@dataclass
class _Linear:
    weight: torch.Tensor
    bias: torch.Tensor | None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


@dataclass
class _Norm:
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    eps: float


@dataclass
class _Conv:
    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: int
    kernel: int
    norm: str  # "group", "layer" or ""
    norm_params: _Norm | None
    activation: Callable[[torch.Tensor], torch.Tensor]
    dtype: torch.dtype


@dataclass
class _Layer:
    qkv: _Linear
    out: _Linear
    gate: _Linear  # gru_rel_pos_linear, float32
    gate_const: torch.Tensor  # (1, H, 1, 1)
    norm1: _Norm  # layer_norm
    ff1: _Linear
    act: Callable[[torch.Tensor], torch.Tensor]
    ff2: _Linear
    norm2: _Norm  # final_layer_norm


def _norm(module: torch.nn.Module) -> _Norm:
    weight = getattr(module, "weight", None)
    bias = getattr(module, "bias", None)
    return _Norm(
        None if weight is None else weight.detach().float(),
        None if bias is None else bias.detach().float(),
        float(module.eps),
    )


def _layer_norm(x: torch.Tensor, norm: _Norm) -> torch.Tensor:
    return F.layer_norm(x.float(), x.shape[-1:], norm.weight, norm.bias, norm.eps)


def _conv_out(length: int, kernel: int, stride: int) -> int:
    return (length - kernel) // stride + 1


def relative_position_bucket(relative: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """WavLM's bucketing of relative positions (``WavLMAttention._relative_positions_bucket``)."""
    num_buckets = num_buckets // 2
    buckets = (relative > 0).to(torch.long) * num_buckets
    relative = torch.abs(relative)
    max_exact = num_buckets // 2
    is_small = relative < max_exact
    large = torch.log(relative.float() / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    large = torch.clamp_max((max_exact + large).to(torch.long), num_buckets - 1)
    return buckets + torch.where(is_small, relative, large)


class FastXVector(torch.nn.Module):
    """``WavLMForXVector`` inference: ``forward(input_values, attention_mask)`` returns the (B, D)
    float32 x-vector embeddings (not normalized), as ``model(...).embeddings`` does.

    ``dtype`` is the compute precision of matmuls and convolutions (float32 or bfloat16). The
    wrapped model is registered as a submodule (so ``.parameters()`` and ``.to()`` see it) and
    its weights are read, never modified; bf16 copies of the matmul weights are kept here.
    """

    def __init__(
        self,
        model: Any,
        dtype: torch.dtype = torch.float32,
        frame_budget: int = 1500,
        mask_budget: int = 2**24,
    ):
        super().__init__()
        if not supports(model):
            raise ValueError(f"FastXVector does not support {type(model).__name__} with this configuration")
        self.model = model
        self.dtype = dtype
        # memory bounds: encoder frames (x batch rows) per block of the convolutional encoder, and
        # elements of the (batch, heads, queries, keys) attention mask per block of query rows
        self.frame_budget = frame_budget
        self.mask_budget = mask_budget
        self._prepared_on: torch.device | None = None

    @property
    def config(self) -> Any:
        return self.model.config

    def frames(self, samples: int) -> int:
        """Encoder frames of a waveform of ``samples`` samples."""
        for kernel, stride in zip(self.config.conv_kernel, self.config.conv_stride):
            samples = _conv_out(samples, kernel, stride)
        return max(0, samples)

    # -- weights, prepared once per device --------------------------------------------------------
    def _prepare(self) -> None:
        device = next(self.model.parameters()).device
        if self._prepared_on == device:
            return
        model, cfg, dt = self.model, self.model.config, self.dtype

        def lin(module: torch.nn.Module, dtype: torch.dtype = dt) -> _Linear:
            bias = module.bias
            return _Linear(module.weight.detach().to(dtype), None if bias is None else bias.detach().to(dtype))

        wavlm = model.wavlm
        convs = []
        for i, layer in enumerate(wavlm.feature_extractor.conv_layers):
            conv = layer.conv
            # the first convolution sees raw audio and feeds GroupNorm: float32 (it is cheap)
            cdt = torch.float32 if i == 0 else dt
            norm = getattr(layer, "layer_norm", None)
            kind = "" if norm is None else ("group" if isinstance(norm, torch.nn.GroupNorm) else "layer")
            convs.append(
                _Conv(
                    conv.weight.detach().to(cdt),
                    None if conv.bias is None else conv.bias.detach().to(cdt),
                    int(conv.stride[0]),
                    int(conv.kernel_size[0]),
                    kind,
                    None if norm is None else _norm(norm),
                    layer.activation,
                    cdt,
                )
            )
        self._convs = convs
        self._proj_norm = _norm(wavlm.feature_projection.layer_norm)
        self._proj = lin(wavlm.feature_projection.projection)

        encoder = wavlm.encoder
        pos = encoder.pos_conv_embed
        self._pos_weight = pos.conv.weight.detach().to(dt)  # weight norm applied once, here
        self._pos_bias = pos.conv.bias.detach().to(dt)
        self._pos_padding = int(pos.conv.padding[0])
        self._pos_groups = int(pos.conv.groups)
        self._pos_remove = int(pos.padding.num_pad_remove)
        self._pos_act = pos.activation
        self._encoder_norm = _norm(encoder.layer_norm)
        self._stable = bool(cfg.do_stable_layer_norm)

        layers = []
        for layer in encoder.layers:
            att = layer.attention
            qkv_w = torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]).detach().to(dt)
            qkv_b = torch.cat([att.q_proj.bias, att.k_proj.bias, att.v_proj.bias]).detach().to(dt)
            layers.append(
                _Layer(
                    _Linear(qkv_w, qkv_b),
                    lin(att.out_proj),
                    lin(att.gru_rel_pos_linear, torch.float32),
                    att.gru_rel_pos_const.detach().float(),
                    _norm(layer.layer_norm),
                    lin(layer.feed_forward.intermediate_dense),
                    layer.feed_forward.intermediate_act_fn,
                    lin(layer.feed_forward.output_dense),
                    _norm(layer.final_layer_norm),
                )
            )
        self._layers = layers
        first = encoder.layers[0].attention
        self._heads = int(first.num_heads)
        self._rel_embed = first.rel_attn_embed.weight.detach().float()
        self._num_buckets = int(first.num_buckets)
        self._max_distance = int(first.max_distance)

        self._layer_weights = (
            torch.softmax(model.layer_weights.detach().float(), dim=-1) if cfg.use_weighted_layer_sum else None
        )
        # the x-vector head is cheap: float32
        self._projector = lin(model.projector, torch.float32)
        self._tdnn = [
            (
                t.kernel.weight.detach().float().view(t.out_conv_dim, t.kernel_size, t.in_conv_dim).transpose(1, 2).contiguous(),
                t.kernel.bias.detach().float(),
                int(t.dilation),
                int(t.kernel_size),
            )
            for t in model.tdnn
        ]
        self._xvector = lin(model.feature_extractor, torch.float32)
        # SDPA on the CPU takes a float32 mask beside bf16 queries (more exact than a bf16 mask)
        self._mask_any_dtype = device.type == "cpu"
        self._prepared_on = device

    # -- pieces -----------------------------------------------------------------------------------
    def relative_bias(self, length: int, device: torch.device) -> torch.Tensor:
        """(H, 2T - 1) float32: the relative position bias for key - query = r at column r + T - 1.
        Every layer gates the same bias (transformers computes it in the first layer only)."""
        relative = torch.arange(-(length - 1), length, dtype=torch.long, device=device)
        buckets = relative_position_bucket(relative, self._num_buckets, self._max_distance)
        return self._rel_embed.to(device)[buckets].t().contiguous()

    @staticmethod
    def bias_rows(relative: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """(H, stop - start, T) rows of the (H, T, T) position bias from ``relative_bias``."""
        length = (relative.shape[1] + 1) // 2
        queries = torch.arange(start, stop, device=relative.device)[:, None]
        keys = torch.arange(length, device=relative.device)[None, :]
        return relative[:, keys - queries + length - 1]

    def attention(
        self,
        layer: _Layer,
        x: torch.Tensor,
        relative: torch.Tensor,
        key_mask: torch.Tensor | None,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """WavLM's gated relative-position self-attention of (B, T, D) float32 ``x`` through SDPA.

        ``relative`` is ``relative_bias(T)`` (``bias``, when given, its full (H, T, T) rows);
        ``key_mask`` a (B, T) bool of valid frames, or None. The additive mask
        gate * bias (-inf on padded keys) is built in float32, in blocks of query rows that bound
        its memory, and given to SDPA.
        """
        B, T, D = x.shape
        H = self._heads
        hd = D // H
        # the gate, from the attention input, in float32 (a tiny matmul)
        gate = layer.gate(x.view(B, T, H, hd).permute(0, 2, 1, 3))  # (B, H, T, 8)
        gate = torch.sigmoid(gate.view(B, H, T, 2, 4).sum(-1))
        gate = gate[..., :1] * (gate[..., 1:] * layer.gate_const - 1.0) + 2.0  # (B, H, T, 1)
        qkv = layer.qkv(x.to(self.dtype)).view(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        padded = None if key_mask is None else ~key_mask[:, None, None, :]
        rows = T if bias is not None else max(16, self.mask_budget // max(1, B * H * T))
        out = q.new_empty((B, H, T, hd))
        for start in range(0, T, rows):
            stop = min(T, start + rows)
            block = bias[:, start:stop] if bias is not None and rows == T else self.bias_rows(relative, start, stop)
            mask = gate[:, :, start:stop] * block[None]
            if padded is not None:
                mask.masked_fill_(padded, float("-inf"))
            if not self._mask_any_dtype:
                mask = mask.to(q.dtype)
            out[:, :, start:stop] = F.scaled_dot_product_attention(q[:, :, start:stop], k, v, attn_mask=mask)
        return layer.out(out.transpose(1, 2).reshape(B, T, D))

    def features(self, input_values: torch.Tensor, lengths: list[int]) -> tuple[torch.Tensor, list[int]]:
        """The convolutional feature encoder: (B, T, C) float32 features and each row's frame count.

        Run in blocks of output frames (the stack's receptive field overlaps the blocks), so that
        no full-rate activation of a long input is ever held whole. The first layer's GroupNorm
        needs each channel's statistics over the whole utterance: a first pass gathers them
        (Chan's parallel mean/variance over blocks), counting each row's valid frames only.
        """
        convs = self._convs
        B = input_values.shape[0]
        frames = [self.frames(n) for n in lengths]
        T = max(frames)
        stride = math.prod(c.stride for c in convs)
        field = 1
        for c in reversed(convs):
            field = (field - 1) * c.stride + c.kernel
        per_block = max(1, self.frame_budget // B)
        first = convs[0]
        stats = None
        if first.norm == "group":
            stats = self._first_layer_stats(input_values, lengths, per_block * stride // first.stride)
        out = None
        for start in range(0, T, per_block):
            stop = min(T, start + per_block)
            h = input_values[:, None, start * stride : (stop - 1) * stride + field]
            for i, conv in enumerate(convs):
                h = F.conv1d(h.to(conv.dtype), conv.weight, conv.bias, stride=conv.stride)
                if conv.norm == "group":
                    if i == 0:
                        mean, scale, shift = stats
                        h = torch.addcmul(shift, h, scale)  # (h - mean) * scale + beta
                    else:  # GroupNorm after the first layer: not in any transformers config
                        raise NotImplementedError("GroupNorm after the first convolution")
                elif conv.norm == "layer":
                    h = _layer_norm(h.transpose(1, 2), conv.norm_params).transpose(1, 2)
                h = conv.activation(h)
            if out is None:
                out = h.new_empty((B, T, h.shape[1]))
            out[:, start:stop] = h.transpose(1, 2)
        return out, frames

    def _first_layer_stats(
        self, input_values: torch.Tensor, lengths: list[int], per_block: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per row and channel: the mean, the GroupNorm scale (gamma / std) and shift
        (beta - mean * scale) of the first convolution's output over the row's valid frames."""
        conv = self._convs[0]
        B = input_values.shape[0]
        valid = torch.tensor([_conv_out(n, conv.kernel, conv.stride) for n in lengths], device=input_values.device)
        T0 = int(valid.max())
        count = torch.zeros((B, 1, 1), device=input_values.device)
        mean = torch.zeros((B, conv.weight.shape[0], 1), device=input_values.device)
        m2 = torch.zeros_like(mean)
        for start in range(0, T0, per_block):
            stop = min(T0, start + per_block)
            h = F.conv1d(
                input_values[:, None, start * conv.stride : (stop - 1) * conv.stride + conv.kernel].float(),
                conv.weight.float(), None if conv.bias is None else conv.bias.float(), stride=conv.stride,
            )
            n = (valid - start).clamp(0, stop - start).to(h.dtype)[:, None, None]
            inside = (torch.arange(stop - start, device=h.device)[None, None, :] < n).to(h.dtype)
            block_mean = (h * inside).sum(-1, keepdim=True) / n.clamp_min(1)
            block_m2 = ((h - block_mean).square_().mul_(inside)).sum(-1, keepdim=True)
            total = count + n
            delta = block_mean - mean
            mean = mean + delta * (n / total.clamp_min(1))
            m2 = m2 + block_m2 + delta.square() * (count * n / total.clamp_min(1))
            count = total
        norm = conv.norm_params
        scale = torch.rsqrt(m2 / count + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight[None, :, None]
        shift = -mean * scale
        if norm.bias is not None:
            shift = shift + norm.bias[None, :, None]
        return mean, scale, shift

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        self._prepare()
        B, N = input_values.shape
        if attention_mask is None:
            lengths = [N] * B
        else:
            lengths = [int(n) for n in attention_mask.sum(-1).tolist()]
        feats, frames = self.features(input_values.float(), lengths)
        T = feats.shape[1]
        key_mask = None
        if min(frames) < T:
            key_mask = torch.arange(T, device=feats.device)[None, :] < torch.tensor(frames, device=feats.device)[:, None]

        x = self._proj(_layer_norm(feats, self._proj_norm).to(self.dtype)).float()
        del feats
        if key_mask is not None:
            x = x * key_mask[..., None]  # padded frames are zero before the positional convolution
        pos = F.conv1d(
            x.transpose(1, 2).to(self.dtype), self._pos_weight, self._pos_bias, padding=self._pos_padding, groups=self._pos_groups
        )
        if self._pos_remove:
            pos = pos[..., : -self._pos_remove]
        x = x + self._pos_act(pos).transpose(1, 2)
        del pos
        if not self._stable:
            x = _layer_norm(x, self._encoder_norm)

        relative = self.relative_bias(T, x.device)
        # the whole (H, T, T) bias once for every layer, unless it is over the memory budget
        bias = self.bias_rows(relative, 0, T) if self._heads * T * T <= self.mask_budget // max(1, B) else None
        weights = self._layer_weights
        pooled = x * weights[0] if weights is not None else None
        for i, layer in enumerate(self._layers):
            if self._stable:
                x = x + self.attention(layer, _layer_norm(x, layer.norm1), relative, key_mask, bias)
                h = _layer_norm(x, layer.norm2).to(self.dtype)
                x = x + layer.ff2(layer.act(layer.ff1(h)))
            else:
                x = _layer_norm(x + self.attention(layer, x, relative, key_mask, bias), layer.norm1)
                h = layer.ff2(layer.act(layer.ff1(x.to(self.dtype))))
                x = _layer_norm(x + h, layer.norm2)
            if weights is not None:
                pooled = pooled + x * weights[i + 1]
        del bias, relative
        if weights is None:
            pooled = _layer_norm(x, self._encoder_norm) if self._stable else x
        del x
        return self.head(pooled, frames)

    def head(self, hidden: torch.Tensor, frames: list[int]) -> torch.Tensor:
        """Projector, TDNN and statistics pooling over each row's valid frames; float32."""
        h = self._projector(hidden.float()).transpose(1, 2)  # (B, C, T)
        lengths = list(frames)
        for weight, bias, dilation, kernel in self._tdnn:
            h = torch.relu(F.conv1d(h, weight, bias, dilation=dilation))
            lengths = [n - dilation * (kernel - 1) for n in lengths]
        T = h.shape[-1]
        count = torch.tensor(lengths, device=h.device, dtype=h.dtype)[:, None]
        mask = (torch.arange(T, device=h.device)[None, :] < count)[:, None, :].to(h.dtype)
        mean = (h * mask).sum(-1) / count
        std = ((((h - mean[..., None]) * mask).square().sum(-1)) / (count - 1)).sqrt()
        return self._xvector(torch.cat([mean, std], dim=-1))


# -- batching -----------------------------------------------------------------------------------


def plan_batches(
    lengths: Sequence[int],
    max_samples: int,
    max_padding: float = 0.15,
    max_mask: int | None = None,
    frames: Callable[[int], int] | None = None,
) -> list[list[int]]:
    """Indices in batches of similar length: longest first, a batch grows while its padded size
    stays within ``max_samples``, its padding within ``max_padding`` of its audio and, given
    ``frames`` (samples -> encoder frames), its batch * frames**2 within ``max_mask``.

    Padding cannot change results (see ``FastXVector``); this only bounds the work and memory it costs.
    A waveform over the limits on its own gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i in order:
        n = lengths[i]
        if current:
            longest = lengths[current[0]]
            count = len(current) + 1
            padded = longest * count
            fits = padded <= max_samples and padded <= (1 + max_padding) * (total + n)
            if fits and max_mask is not None and frames is not None:
                fits = count * frames(longest) ** 2 <= max_mask
            if fits:
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
