"""WavLM's gated relative-position self-attention through ``F.scaled_dot_product_attention``,
and the linear layers of the fast path in their three precisions.

* The (heads, T, T) relative position bias is a strided view of a (heads, 2T - 1) table, with
  the keys in reverse order (attention does not depend on the order of its keys).
* The gate (from the attention input, float32) times that bias, ``-inf`` on padded keys, is
  SDPA's additive float mask, built in blocks of query rows within a memory budget.
* Q, K and V come from one fused matmul; no attention weights are returned or averaged.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from .fast_weights import LayerWeights

INT8 = "int8"  # the precision name of int8 weights with dynamically quantized inputs


class Linear:
    """``y = x @ weight.T + bias`` for (..., in) ``x``, with ``precision`` the weights' form:
    ``torch.float32``, ``torch.bfloat16`` (bf16 inputs and outputs, float32 accumulation), or
    ``"int8"``: per-output-channel symmetric int8 weights, the input quantized per call (per
    tensor, 7 bits: ``reduce_range``, which CPUs without VNNI need to avoid overflow, kept on
    every CPU so results do not depend on the CPU), float32 output."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, precision: torch.dtype | str):
        self.precision = precision
        self.out_features = int(weight.shape[0])
        self.packed = None
        if precision == INT8:
            scales = (weight.abs().amax(1).double() / 127.0).clamp_min(1e-12)
            zeros = torch.zeros(weight.shape[0], dtype=torch.long)
            with warnings.catch_warnings():  # torch 2.13 announces that quantized tensors will go:
                warnings.simplefilter("ignore")  # then int8_supported() turns False, and auto picks fp32
                q = torch.quantize_per_channel(weight.float().cpu(), scales, zeros, 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(q, None if bias is None else bias.float().cpu())
        else:
            self.weight = weight.to(precision)
            self.bias = None if bias is None else bias.to(precision)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            flat = x.reshape(-1, x.shape[-1]).float().contiguous()
            y = torch.ops.quantized.linear_dynamic(flat, self.packed, True)
            return y.view(*x.shape[:-1], self.out_features)
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias)


def int8_supported() -> bool:
    """Whether this torch build runs dynamically quantized linear layers (fbgemm / x86 engine)."""
    try:
        Linear(torch.ones(2, 2), torch.zeros(2), INT8)(torch.ones(1, 2))
        return True
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


class Attention:
    """One layer's attention, prepared from its ``LayerWeights`` for matmuls in ``precision``."""

    def __init__(self, lw: LayerWeights, heads: int, precision: torch.dtype | str):
        self.heads = heads
        weight = torch.cat([lw.q[0], lw.k[0], lw.v[0]])
        self.qkv = Linear(weight, torch.cat([lw.q[1], lw.k[1], lw.v[1]]), precision)
        self.out = Linear(*lw.out, precision)
        head_dim = lw.gate[0].shape[1]
        # gru_rel_pos_linear's 2 x 4 outputs are only ever summed in fours: sum the weights instead
        self.gate = Linear(lw.gate[0].view(2, 4, head_dim).sum(1), lw.gate[1].view(2, 4).sum(1), torch.float32)
        self.gate_const = lw.gate_const

    def __call__(self, x: torch.Tensor, table: torch.Tensor, key_mask: torch.Tensor | None,
                 mask_budget: int, float32_mask: bool) -> torch.Tensor:
        """(B, T, D) float32 ``x`` -> (B, T, D) attention output (before the residual).

        ``table`` is ``relative_bias(T)``; ``key_mask`` a (B, T) bool of valid frames, or None.
        ``float32_mask`` gives SDPA the float32 mask beside bf16 queries (the CPU takes it; CUDA's
        kernels want the queries' dtype, their rows 16-element aligned).
        """
        B, T, D = x.shape
        H = self.heads
        hd = D // H
        gate = torch.sigmoid(self.gate(x.view(B, T, H, hd)))  # (B, T, H, 2), float32
        gate = gate[..., :1] * (gate[..., 1:] * self.gate_const - 1.0) + 2.0  # (B, T, H, 1)
        gate = gate.permute(0, 2, 1, 3)  # (B, H, T, 1)
        qkv = self.qkv(x).view(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1].flip(2), qkv[2].flip(2)
        padded = None if key_mask is None else ~key_mask.flip(-1)[:, None, None, :]
        rows = min(T, max(16, mask_budget // max(1, B * H * T)))
        out = None
        for start in range(0, T, rows):
            stop = min(T, start + rows)
            if float32_mask:
                mask = gate.new_empty((B, H, stop - start, T))
            else:
                mask = q.new_empty((B, H, stop - start, -(-T // 16) * 16))[..., :T]
            torch.mul(gate[:, :, start:stop], bias_rows(table, start, stop), out=mask)  # in float32
            if padded is not None:
                mask.masked_fill_(padded, float("-inf"))
            try:
                part = F.scaled_dot_product_attention(q[:, :, start:stop], k, v, attn_mask=mask)
            except RuntimeError:
                if mask.dtype == q.dtype:
                    raise
                # an older torch: the mask in the queries' dtype
                part = F.scaled_dot_product_attention(q[:, :, start:stop], k, v, attn_mask=mask.to(q.dtype))
            if stop - start == T:
                out = part
            else:
                if out is None:
                    out = q.new_empty((B, H, T, hd))
                out[:, :, start:stop] = part
        return self.out(out.transpose(1, 2).reshape(B, T, D))


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


def relative_bias(rel_embed: torch.Tensor, length: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """(H, 2T - 1) float32 relative position bias of (num_buckets, H) ``rel_embed``, laid out for
    keys in reverse order: column t + j holds the bias between query t and key T - 1 - j (key -
    query = T - 1 - t - j). The (H, T, T) bias of query rows a..b is then a strided view of this
    table (``bias_rows``), never a tensor of its own. Every layer gates the same bias."""
    relative = torch.arange(length - 1, -length, -1, dtype=torch.long, device=rel_embed.device)
    return rel_embed[relative_position_bucket(relative, num_buckets, max_distance)].t().contiguous()


def bias_rows(table: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """(H, stop - start, T) bias of query rows start..stop against the keys in reverse order: a
    view of ``relative_bias``'s table."""
    length = (table.shape[1] + 1) // 2
    return table.as_strided((table.shape[0], stop - start, length), (table.stride(0), 1, 1), table.storage_offset() + start)
