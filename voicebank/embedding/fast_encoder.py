"""WavLM's convolutional feature encoder, for the fast path: waveforms -> (B, T, 512) features.

* **The GroupNorm of the first convolution** normalizes each channel over the whole utterance.
  That convolution's output is linear in the 10-sample windows of the waveform, so its
  per-channel mean and variance follow exactly from the windows' mean and 10 x 10 covariance
  (float64), and the normalization folds into that convolution's weights, per utterance: each
  row of a padded batch is normalized by its own samples only.
* **Two layouts**: matmuls over time-major (B, T, C) activations (bf16: oneDNN matmuls beat
  convolution kernels), or ``F.conv1d`` over (B, C, T) (float32 on the CPU, where it is faster).
* **Bounded memory**: blocks of output frames, each block's input overlapping the next by the
  stack's receptive field, so no full-rate activation of a long input is held whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .fast_weights import ConvWeights, Norm


def conv_out(length: int, kernel: int, stride: int) -> int:
    return (length - kernel) // stride + 1


def layer_norm(x: torch.Tensor, norm: Norm) -> torch.Tensor:
    """LayerNorm over the last axis, in float32."""
    return F.layer_norm(x.float(), x.shape[-1:], norm.weight, norm.bias, norm.eps)


def windows(values: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
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


@dataclass
class _Conv:
    source: ConvWeights
    weight: torch.Tensor  # (C_out, C_in, k) in the layer's dtype, for F.conv1d
    bias: torch.Tensor | None
    taps: list[tuple[int, int, torch.Tensor]]  # time-major form: (row offset, taps, (taps * C_in, C_out))
    dtype: torch.dtype


class ConvEncoder:
    """The conv stack of ``convs`` with matmuls in ``dtype`` (the first layer, one input channel
    and cheap, always in float32); ``time_major`` picks the layout (see the module's docstring)."""

    def __init__(self, convs: list[ConvWeights], dtype: torch.dtype, time_major: bool):
        self.dtype = dtype
        self.time_major = time_major
        self.convs = []
        for i, c in enumerate(convs):
            cdt = torch.float32 if i == 0 else dtype
            weight = c.weight.to(cdt)
            c_out, c_in, k = weight.shape
            s = c.stride
            flat = weight.permute(2, 1, 0).reshape(k * c_in, c_out)  # row j * C_in + ch: tap j, channel ch
            taps = [(b, min(s, k - b * s), flat[b * s * c_in : (b * s + min(s, k - b * s)) * c_in].contiguous())
                    for b in range(-(-k // s))]
            self.convs.append(_Conv(c, weight, None if c.bias is None else c.bias.to(cdt), taps, cdt))
        self.stride = math.prod(c.stride for c in convs)
        field = 1
        for c in reversed(convs):
            field = (field - 1) * c.stride + c.kernel
        self.field = field

    def frames(self, samples: int) -> int:
        """Encoder frames of a waveform of ``samples`` samples."""
        for c in self.convs:
            samples = conv_out(samples, c.source.kernel, c.source.stride)
        return max(0, samples)

    def features(self, values: torch.Tensor, lengths: list[int], frame_budget: int) -> tuple[torch.Tensor, list[int]]:
        """(B, T, C) features of (B, N) float32 waveforms and each row's frame count, computed in
        blocks of at most ``frame_budget`` frames x rows."""
        B = values.shape[0]
        frames = [self.frames(n) for n in lengths]
        T = max(frames)
        S, R = self.stride, self.field
        folded = self.fold_group_norm(values, lengths) if self.convs[0].source.norm_kind == "group" else None
        per_block = max(1, frame_budget // B)
        out = None
        for start in range(0, T, per_block):
            count = min(T, start + per_block) - start
            # enough input for ``count`` frames, rounded up to whole strides (zeros past the end)
            need = (count - 1) * S + R
            width = -(-need // S) * S
            segment = values[:, start * S : start * S + width]
            if segment.shape[1] < width:
                segment = F.pad(segment, (0, width - segment.shape[1]))
            if self.time_major:
                h = self.encode_time_major(segment.contiguous(), folded)
            else:
                h = self.encode_channels_first(segment, folded)
            if out is None:
                out = h.new_empty((B, T, h.shape[-1]))
            out[:, start : start + count] = h[:, :count]
        return out, frames

    def encode_time_major(self, values: torch.Tensor, folded: tuple[torch.Tensor, ...] | None) -> torch.Tensor:
        """The stack over (B, L) values (L a multiple of the total stride) as matmuls: each layer
        maps (B, L_i, C) to (B, L_i / stride, C'); outputs past a row's own length (which read
        padding or the next row) are never read by its valid outputs."""
        B = values.shape[0]
        first = self.convs[0]
        win = windows(values, first.source.kernel, first.source.stride)  # (B, L / s, k), float32
        if folded is not None:
            h = torch.baddbmm(folded[1], win, folded[0])
        else:
            h = win @ (first.taps[0][2] if len(first.taps) == 1 else torch.cat([t[2] for t in first.taps]))
            if first.bias is not None:
                h = h + first.bias
        h = self._after_conv(h, first)
        for conv in self.convs[1:]:
            _, L, c_in = h.shape
            rows = L // conv.source.stride
            z = h.reshape(B * rows, conv.source.stride * c_in)
            _, taps, w = conv.taps[0]
            y = torch.mm(z[:, : taps * c_in], w) if conv.bias is None else torch.addmm(conv.bias, z[:, : taps * c_in], w)
            for offset, taps, w in conv.taps[1:]:
                y[: B * rows - offset].addmm_(z[offset:, : taps * c_in], w)
            h = self._after_conv(y.view(B, rows, -1), conv)
        return h

    def _after_conv(self, h: torch.Tensor, conv: _Conv) -> torch.Tensor:
        if conv.source.norm_kind == "layer":
            h = layer_norm(h, conv.source.norm)
        # cast, then activate: GELU on bf16 costs a third of GELU on float32 then a cast
        return conv.source.activation(h.to(self.dtype))

    def encode_channels_first(self, values: torch.Tensor, folded: tuple[torch.Tensor, ...] | None) -> torch.Tensor:
        """The same stack with F.conv1d over (B, C, L)."""
        h = values[:, None, :]
        for i, conv in enumerate(self.convs):
            h = F.conv1d(h.to(conv.dtype), conv.weight, conv.bias, stride=conv.source.stride)
            if i == 0 and folded is not None:
                h = torch.addcmul(folded[3], h, folded[2])
            elif conv.source.norm_kind == "layer":
                h = layer_norm(h.transpose(1, 2), conv.source.norm).transpose(1, 2)
            h = conv.source.activation(h)
        return h.transpose(1, 2)

    def fold_group_norm(self, values: torch.Tensor, lengths: list[int]) -> tuple[torch.Tensor, ...]:
        """The first layer's GroupNorm over each row's own frames, folded into its convolution:
        (B, k, C) weights and (B, 1, C) biases, and for the channels-first layout (B, C, 1) scales
        and shifts. Its per-channel mean and variance are exact functions of the mean and
        covariance of the row's k-sample windows, accumulated in float64."""
        conv = self.convs[0]
        k, s = conv.source.kernel, conv.source.stride
        B, N = values.shape
        device = values.device
        valid = torch.tensor([conv_out(n, k, s) for n in lengths], device=device, dtype=torch.float64)
        rows = -(-N // s)
        blocks = -(-k // s)
        padded = F.pad(values, (0, (rows + blocks - 1) * s - N))
        sums = torch.zeros((B, k), device=device, dtype=torch.float64)
        gram = torch.zeros((B, k, k), device=device, dtype=torch.float64)
        step = 1 << 16
        for first in range(0, rows, step):
            last = min(rows, first + step)
            segment = padded[:, first * s : (last + blocks - 1) * s].contiguous()
            win = windows(segment, k, s)[:, : last - first].double()
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
        norm = conv.source.norm
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
