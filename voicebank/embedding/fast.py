"""A faster forward pass for transformers' ``WavLMForXVector``: the same function, computed cheaper.

``FastXVector`` wraps a loaded ``WavLMForXVector`` (its weights are read, never changed) and
computes what ``model(input_values, attention_mask).embeddings`` computes:

* **Attention** through ``torch.nn.functional.scaled_dot_product_attention``; WavLM's gated
  relative position bias becomes its additive float mask (``-inf`` on padded keys). No attention
  weights are returned or averaged, Q, K and V come from one fused matmul, and with the keys in
  reverse order the (heads, T, T) position bias is a strided view of a (heads, 2T - 1) table.
* **Mixed precision** (``dtype=torch.bfloat16``): the matmuls (the convolutions are computed as
  matmuls too) run in bf16 with float32 accumulation, while the residual stream, every
  normalization, the position gate, the attention mask, the x-vector head and its statistics
  pooling stay in float32. The first convolution (one input channel: cheap) stays in float32 too.
* **The GroupNorm of the convolutional encoder** normalizes each channel of the first
  convolution's output over the whole utterance. That output is linear in the 10-sample windows
  of the waveform, so its per-channel mean and variance follow exactly from the windows' mean
  and 10 x 10 covariance (computed in float64); the normalization is then folded into that
  convolution's weights, per utterance.
* **Batching different lengths without changing results.** Transformers' GroupNorm would take
  padding into its statistics; here they come from each utterance's own samples. Every later
  step either sees only its own frame (LayerNorm, feed-forward), masks padded keys (attention),
  sees zeros where an unpadded sequence has its zero padding (the positional convolution:
  padded frames are zeroed first, as transformers does), or reads only valid frames (the
  unpadded convolutions and the masked statistics pooling). So an utterance's embedding does
  not depend on the batch it is in.
* **Bounded memory**: the convolutional encoder runs in blocks of output frames (overlapping by
  its receptive field), and the attention mask is built in blocks of query rows.

``supports()`` says whether a model qualifies (a ``WavLMForXVector`` without adapter); any
other model keeps the reference forward pass.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F


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


# -- parameters, prepared once ------------------------------------------------------------------


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
    weight: torch.Tensor  # (C_out, C_in, k), for F.conv1d
    bias: torch.Tensor | None
    taps: list[tuple[int, int, torch.Tensor]]  # time-major form: (row offset, taps, (taps * C_in, C_out))
    stride: int
    kernel: int
    norm: str  # "group" (first layer only), "layer" or ""
    norm_params: _Norm | None
    activation: Callable[[torch.Tensor], torch.Tensor]
    dtype: torch.dtype


@dataclass
class _Layer:
    qkv: _Linear
    out: _Linear
    gate: _Linear  # gru_rel_pos_linear with its 2 x 4 outputs summed: (2, head_dim), float32
    gate_const: torch.Tensor  # (1, 1, H, 1)
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


def _windows(values: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """(B, L // stride, kernel) windows ``values[:, t * stride : t * stride + kernel]`` of (B, L)
    ``values`` (L a multiple of stride); windows running past the end are zero-padded."""
    B, L = values.shape
    rows = L // stride
    blocks = -(-kernel // stride)
    z = values.view(B, rows, stride)
    if blocks > 1:
        z = F.pad(z, (0, 0, 0, blocks - 1))
    parts = [z[:, b : b + rows, : min(stride, kernel - b * stride)] for b in range(blocks)]
    return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]


class FastXVector(torch.nn.Module):
    """``WavLMForXVector`` inference: ``forward(input_values, attention_mask)`` returns the (B, D)
    float32 x-vector embeddings (not normalized), as ``model(...).embeddings`` does.

    ``dtype`` is the precision of the matmuls (float32 or bfloat16). The wrapped model is
    registered as a submodule (``.parameters()`` and ``.config`` see it); its weights are read,
    never modified, and the casts and fused forms of them are kept here. ``frame_budget`` (encoder
    frames x batch rows per block of the convolutional encoder) and ``mask_budget`` (elements of
    the float32 (batch, heads, queries, keys) attention mask per block of query rows) bound memory.
    ``conv_layout`` picks how the convolutional encoder runs: ``time`` (matmuls over time-major
    activations), ``channels`` (F.conv1d) or ``auto`` (time-major except float32 on the CPU).
    ``float32_mask`` gives SDPA the float32 mask beside bf16 queries (default: on the CPU only).
    With ``conv_layout="time", float32_mask=False`` the CPU runs the code path CUDA runs.
    """

    def __init__(
        self,
        model: Any,
        dtype: torch.dtype = torch.float32,
        frame_budget: int = 1500,
        mask_budget: int = 2**24,
        conv_layout: str = "auto",
        float32_mask: bool | None = None,
    ):
        super().__init__()
        if not supports(model):
            raise ValueError(f"FastXVector does not support {type(model).__name__} with this configuration")
        self.model = model
        self.dtype = dtype
        self.frame_budget = frame_budget
        self.mask_budget = mask_budget
        if conv_layout not in ("auto", "time", "channels"):
            raise ValueError(f"conv_layout must be auto, time or channels, not {conv_layout!r}")
        self.conv_layout = conv_layout
        self.float32_mask = float32_mask
        self._prepared_on: torch.device | None = None
        self._prepare_lock = threading.Lock()

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
        with self._prepare_lock:
            if self._prepared_on != device:
                self._prepare_now(device)

    def _prepare_now(self, device: torch.device) -> None:
        model, cfg, dt = self.model, self.model.config, self.dtype

        def lin(module: torch.nn.Module, dtype: torch.dtype = dt) -> _Linear:
            bias = module.bias
            return _Linear(module.weight.detach().to(dtype), None if bias is None else bias.detach().to(dtype))

        wavlm = model.wavlm
        # The convolutions run as matmuls over time-major (B, T, C) activations in bf16, where
        # oneDNN/cuBLAS matmuls beat convolution kernels; in float32 on the CPU, F.conv1d is faster.
        auto = dt != torch.float32 or device.type != "cpu"
        self._time_major = auto if self.conv_layout == "auto" else self.conv_layout == "time"
        convs = []
        for i, layer in enumerate(wavlm.feature_extractor.conv_layers):
            conv = layer.conv
            cdt = torch.float32 if i == 0 else dt  # the first layer sees raw audio: float32
            weight = conv.weight.detach().to(cdt)
            c_out, c_in, k = weight.shape
            s = int(conv.stride[0])
            flat = weight.permute(2, 1, 0).reshape(k * c_in, c_out)  # row j * C_in + c: tap j, channel c
            taps = [
                (b, min(s, k - b * s), flat[b * s * c_in : (b * s + min(s, k - b * s)) * c_in].contiguous())
                for b in range(-(-k // s))
            ]
            norm = getattr(layer, "layer_norm", None)
            kind = "" if norm is None else ("group" if isinstance(norm, torch.nn.GroupNorm) else "layer")
            if kind == "group" and i > 0:  # pragma: no cover - no transformers config does this
                raise ValueError("GroupNorm after the first convolution is not supported")
            convs.append(
                _Conv(
                    weight,
                    None if conv.bias is None else conv.bias.detach().to(cdt),
                    taps,
                    s,
                    k,
                    kind,
                    None if norm is None else _norm(norm),
                    layer.activation,
                    cdt,
                )
            )
        self._convs = convs
        self._stride = math.prod(c.stride for c in convs)
        field = 1
        for c in reversed(convs):
            field = (field - 1) * c.stride + c.kernel
        self._field = field
        self._proj_norm = _norm(wavlm.feature_projection.layer_norm)
        self._proj = lin(wavlm.feature_projection.projection)

        encoder = wavlm.encoder
        pos = encoder.pos_conv_embed
        self._pos_weight = pos.conv.weight.detach().to(dt)  # the weight norm, applied once here
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
            gate = att.gru_rel_pos_linear
            head_dim = gate.weight.shape[1]
            layers.append(
                _Layer(
                    _Linear(qkv_w, qkv_b),
                    lin(att.out_proj),
                    _Linear(
                        gate.weight.detach().float().view(2, 4, head_dim).sum(1),
                        gate.bias.detach().float().view(2, 4).sum(1),
                    ),
                    att.gru_rel_pos_const.detach().float().view(1, 1, -1, 1),
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
            torch.softmax(model.layer_weights.detach().float(), dim=-1).tolist() if cfg.use_weighted_layer_sum else None
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
        # SDPA on the CPU takes a float32 mask beside bf16 queries (more exact than a bf16 mask);
        # CUDA's kernels want the queries' dtype
        self._mask_any_dtype = device.type == "cpu" if self.float32_mask is None else self.float32_mask
        self._prepared_on = device

    # -- the convolutional feature encoder --------------------------------------------------------
    def features(self, input_values: torch.Tensor, lengths: list[int]) -> tuple[torch.Tensor, list[int]]:
        """(B, T, C) features of (B, N) float32 waveforms and each row's frame count.

        Computed in blocks of output frames (each block's input overlaps the next by the stack's
        receptive field), so that no full-rate activation of a long input is held whole.
        """
        B = input_values.shape[0]
        frames = [self.frames(n) for n in lengths]
        T = max(frames)
        S, R = self._stride, self._field
        folded = self._fold_group_norm(input_values, lengths) if self._convs[0].norm == "group" else None
        per_block = max(1, self.frame_budget // B)
        out = None
        for start in range(0, T, per_block):
            count = min(T, start + per_block) - start
            size = -(-((count - 1) * S + R) // S) * S  # input samples, a multiple of the total stride
            segment = input_values[:, start * S : start * S + size]
            if segment.shape[1] < size:
                segment = F.pad(segment, (0, size - segment.shape[1]))
            if self._time_major:
                h = self._encode_time_major(segment.contiguous(), folded)
            else:
                h = self._encode_channels_first(segment, folded)
            if out is None:
                out = h.new_empty((B, T, h.shape[-1]))
            out[:, start : start + count] = h[:, :count]
        return out, frames

    def _encode_time_major(self, values: torch.Tensor, folded: tuple[torch.Tensor, ...] | None) -> torch.Tensor:
        """The conv stack over (B, L) values (L a multiple of the total stride) as matmuls: each
        layer maps (B, L_i, C) to (B, L_i / stride, C'), where the outputs past a row's own length
        (which read padding or the next row) are never read by its valid outputs."""
        B = values.shape[0]
        first = self._convs[0]
        windows = _windows(values, first.kernel, first.stride)  # (B, L / s, k), float32
        if folded is not None:
            h = torch.baddbmm(folded[1], windows, folded[0])
        else:
            h = windows @ first.taps[0][2] if len(first.taps) == 1 else windows @ torch.cat([t[2] for t in first.taps])
            if first.bias is not None:
                h = h + first.bias
        h = self._after_conv(h, first)
        for conv in self._convs[1:]:
            _, L, c_in = h.shape
            rows = L // conv.stride
            z = h.reshape(B * rows, conv.stride * c_in)
            _, taps, w = conv.taps[0]
            y = torch.mm(z[:, : taps * c_in], w) if conv.bias is None else torch.addmm(conv.bias, z[:, : taps * c_in], w)
            for offset, taps, w in conv.taps[1:]:
                y[: B * rows - offset].addmm_(z[offset:, : taps * c_in], w)
            h = self._after_conv(y.view(B, rows, -1), conv)
        return h

    def _after_conv(self, h: torch.Tensor, conv: _Conv) -> torch.Tensor:
        if conv.norm == "layer":
            h = _layer_norm(h, conv.norm_params)
        # cast, then activate: GELU on bf16 costs a third of GELU on float32 then a cast
        return conv.activation(h.to(self.dtype))

    def _encode_channels_first(self, values: torch.Tensor, folded: tuple[torch.Tensor, ...] | None) -> torch.Tensor:
        """The same stack with F.conv1d over (B, C, L) (float32 on the CPU, where it is faster)."""
        h = values[:, None, :]
        for i, conv in enumerate(self._convs):
            h = F.conv1d(h.to(conv.dtype), conv.weight, conv.bias, stride=conv.stride)
            if i == 0 and folded is not None:
                h = torch.addcmul(folded[3], h, folded[2])
            elif conv.norm == "layer":
                h = _layer_norm(h.transpose(1, 2), conv.norm_params).transpose(1, 2)
            h = conv.activation(h)
        return h.transpose(1, 2)

    def _fold_group_norm(self, values: torch.Tensor, lengths: list[int]) -> tuple[torch.Tensor, ...]:
        """The first layer's GroupNorm over each row's own frames, folded into its convolution:
        (B, k, C) weights and (B, 1, C) biases, and for the channels-first path (B, C, 1) scales
        and shifts. Its per-channel mean and variance are exact functions of the mean and
        covariance of the row's k-sample windows, accumulated here in float64."""
        conv = self._convs[0]
        k, s = conv.kernel, conv.stride
        B, N = values.shape
        device = values.device
        valid = torch.tensor([_conv_out(n, k, s) for n in lengths], device=device, dtype=torch.float64)
        rows = -(-N // s)
        blocks = -(-k // s)
        padded = F.pad(values, (0, (rows + blocks - 1) * s - N))
        sums = torch.zeros((B, k), device=device, dtype=torch.float64)
        gram = torch.zeros((B, k, k), device=device, dtype=torch.float64)
        step = 1 << 16
        for first in range(0, rows, step):
            last = min(rows, first + step)
            segment = padded[:, first * s : (last + blocks - 1) * s].contiguous()
            win = _windows(segment, k, s)[:, : last - first].double()
            index = torch.arange(first, last, device=device, dtype=torch.float64)
            win = win * (index[None, :] < valid[:, None]).to(win.dtype)[..., None]
            sums += win.sum(1)
            gram += win.transpose(1, 2) @ win
        n = valid[:, None]
        mean_u = sums / n  # (B, k)
        cov = gram / n[..., None] - mean_u[:, :, None] * mean_u[:, None, :]
        w = conv.weight[:, 0, :].t().double()  # (k, C)
        mean = mean_u @ w  # (B, C)
        var = ((cov @ w) * w).sum(1).clamp_min(0)
        if conv.bias is not None:
            mean = mean + conv.bias.double()
        norm = conv.norm_params
        scale = torch.rsqrt(var + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight.double()
        shift = -mean * scale
        if norm.bias is not None:
            shift = shift + norm.bias.double()
        # y = (windows @ w + b - mean) * scale + beta = windows @ (w * scale) + ((b - mean) * scale + beta)
        bias = shift if conv.bias is None else shift + conv.bias.double() * scale
        return (
            (w[None] * scale[:, None, :]).float(),
            bias.float()[:, None, :],
            scale.float()[:, :, None],
            shift.float()[:, :, None],
        )

    # -- the transformer --------------------------------------------------------------------------
    def relative_bias(self, length: int, device: torch.device) -> torch.Tensor:
        """(H, 2T - 1) float32 relative position bias, laid out for keys in reverse order: column
        t + j holds the bias between query t and key T - 1 - j (key - query = T - 1 - t - j).
        Then the (H, T, T) bias of query rows a..b is a strided view of this table (``bias_rows``),
        never a tensor of its own. Every layer gates the same bias (as in transformers)."""
        relative = torch.arange(length - 1, -length, -1, dtype=torch.long, device=device)
        buckets = relative_position_bucket(relative, self._num_buckets, self._max_distance)
        return self._rel_embed.to(device)[buckets].t().contiguous()

    @staticmethod
    def bias_rows(table: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """(H, stop - start, T) bias of query rows start..stop against the keys in reverse order:
        a view of ``relative_bias``'s table."""
        length = (table.shape[1] + 1) // 2
        return table.as_strided((table.shape[0], stop - start, length), (table.stride(0), 1, 1), table.storage_offset() + start)

    def position_bias(self, length: int, device: torch.device) -> torch.Tensor:
        """(H, T, T) relative position bias, keys in order: what WavLMAttention.compute_bias gives."""
        return self.bias_rows(self.relative_bias(length, device), 0, length).flip(-1)

    def attention(
        self, layer: _Layer, x: torch.Tensor, table: torch.Tensor, key_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """WavLM's gated relative-position self-attention of (B, T, D) float32 ``x`` through SDPA.

        ``table`` is ``relative_bias(T)``; ``key_mask`` a (B, T) bool of valid frames, or None.
        The keys and values go in reverse order (attention does not depend on the order of its
        keys), so that the position bias is a strided view. The additive mask gate * bias, -inf on
        padded keys, is built in float32, in blocks of query rows within ``mask_budget``.
        """
        B, T, D = x.shape
        H = self._heads
        hd = D // H
        # the gate, from the attention input, in float32 (a tiny matmul)
        gate = torch.sigmoid(layer.gate(x.view(B, T, H, hd)))  # (B, T, H, 2)
        gate = gate[..., :1] * (gate[..., 1:] * layer.gate_const - 1.0) + 2.0  # (B, T, H, 1)
        gate = gate.permute(0, 2, 1, 3)  # (B, H, T, 1)
        qkv = layer.qkv(x.to(self.dtype)).view(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1].flip(2), qkv[2].flip(2)
        padded = None if key_mask is None else ~key_mask.flip(-1)[:, None, None, :]
        rows = min(T, max(16, self.mask_budget // max(1, B * H * T)))
        out = None
        for start in range(0, T, rows):
            stop = min(T, start + rows)
            if self._mask_any_dtype:
                mask = gate.new_empty((B, H, stop - start, T))
            else:  # in the queries' dtype, its rows 16-element aligned, as CUDA's kernels take it
                mask = q.new_empty((B, H, stop - start, -(-T // 16) * 16))[..., :T]
            torch.mul(gate[:, :, start:stop], self.bias_rows(table, start, stop), out=mask)  # in float32
            if padded is not None:
                mask.masked_fill_(padded, float("-inf"))
            try:
                part = F.scaled_dot_product_attention(q[:, :, start:stop], k, v, attn_mask=mask)
            except RuntimeError:
                if mask.dtype == q.dtype:
                    raise
                self._mask_any_dtype = False  # an older torch: the mask in the queries' dtype
                part = F.scaled_dot_product_attention(q[:, :, start:stop], k, v, attn_mask=mask.to(q.dtype))
            if stop - start == T:
                out = part
            else:
                if out is None:
                    out = q.new_empty((B, H, T, hd))
                out[:, :, start:stop] = part
        return layer.out(out.transpose(1, 2).reshape(B, T, D))

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

        x = self._proj(_layer_norm(feats, self._proj_norm).to(self.dtype))
        del feats
        if key_mask is not None:
            x = x * key_mask[..., None]  # padded frames are zero before the positional convolution
        pos = F.conv1d(
            x.transpose(1, 2).to(self.dtype), self._pos_weight, self._pos_bias, padding=self._pos_padding, groups=self._pos_groups
        )
        if self._pos_remove:
            pos = pos[..., : -self._pos_remove]
        x = x.float() + self._pos_act(pos).transpose(1, 2)
        del pos
        if not self._stable:
            x = _layer_norm(x, self._encoder_norm)

        table = self.relative_bias(T, x.device)
        weights = self._layer_weights
        pooled = x * weights[0] if weights is not None else None
        for i, layer in enumerate(self._layers):
            if self._stable:
                x = x + self.attention(layer, _layer_norm(x, layer.norm1), table, key_mask)
                h = _layer_norm(x, layer.norm2).to(self.dtype)
                x = x + layer.ff2(layer.act(layer.ff1(h)))
            else:
                x = _layer_norm(x + self.attention(layer, x, table, key_mask), layer.norm1)
                h = layer.ff2(layer.act(layer.ff1(x.to(self.dtype))))
                x = _layer_norm(x + h, layer.norm2)
            if weights is not None:
                pooled.add_(x, alpha=weights[i + 1])
        del table
        if weights is None:
            pooled = _layer_norm(x, self._encoder_norm) if self._stable else x
        del x
        return self.head(pooled, frames)

    # -- the x-vector head ------------------------------------------------------------------------
    def head(self, hidden: torch.Tensor, frames: list[int]) -> torch.Tensor:
        """Projector, TDNN and statistics pooling over each row's valid frames; float32."""
        h = self._projector(hidden.float()).transpose(1, 2)  # (B, C, T)
        lengths = list(frames)
        for weight, bias, dilation, kernel in self._tdnn:
            h = torch.relu(F.conv1d(h, weight, bias, dilation=dilation))
            lengths = [n - dilation * (kernel - 1) for n in lengths]
        T = h.shape[-1]
        count = torch.tensor(lengths, device=h.device, dtype=h.dtype)[:, None]
        if min(lengths) == T:
            mean, std = h.mean(-1), h.std(-1)
        else:
            mask = (torch.arange(T, device=h.device)[None, :] < count)[:, None, :].to(h.dtype)
            mean = (h * mask).sum(-1) / count
            std = (((h - mean[..., None]) * mask).square().sum(-1) / (count - 1)).sqrt()
        return self._xvector(torch.cat([mean, std], dim=-1))


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
