"""The weights adapter: the one place that reads transformers' ``WavLMForXVector`` internals.

``read_weights(model)`` copies nothing: it collects references to the model's float32 tensors,
and the few integers and callables the forward pass needs, into plain dataclasses. The fast path
(``fast.py``, ``fast_encoder.py``, ``fast_attention.py``) computes from these only, so that a
renamed attribute in a later transformers release fails here, at load, with an
:class:`UnsupportedModel` naming what is missing (the embedder then falls back to transformers'
own forward pass), and never at the first embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

Activation = Callable[[torch.Tensor], torch.Tensor]


class UnsupportedModel(ValueError):
    """The model is not one the fast path reproduces, or its layout is not the one it knows."""


@dataclass(frozen=True)
class Norm:
    """A LayerNorm or GroupNorm: float32 (C,) affine parameters (None when absent) and epsilon."""

    weight: torch.Tensor | None
    bias: torch.Tensor | None
    eps: float


@dataclass(frozen=True)
class ConvWeights:
    """One layer of the convolutional feature encoder: (C_out, C_in, kernel) float32 weight."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: int
    norm_kind: str  # "group" (first layer only), "layer" or ""
    norm: Norm | None
    activation: Activation

    @property
    def kernel(self) -> int:
        return int(self.weight.shape[-1])


@dataclass(frozen=True)
class LayerWeights:
    """One transformer layer. Linear weights are (out, in) float32, as ``F.linear`` takes them."""

    q: tuple[torch.Tensor, torch.Tensor]
    k: tuple[torch.Tensor, torch.Tensor]
    v: tuple[torch.Tensor, torch.Tensor]
    out: tuple[torch.Tensor, torch.Tensor]
    gate: tuple[torch.Tensor, torch.Tensor]  # gru_rel_pos_linear: (8, head_dim) weight, (8,) bias
    gate_const: torch.Tensor  # (1, 1, H, 1)
    norm1: Norm  # layer_norm
    ff1: tuple[torch.Tensor, torch.Tensor]
    activation: Activation
    ff2: tuple[torch.Tensor, torch.Tensor]
    norm2: Norm  # final_layer_norm


@dataclass(frozen=True)
class WavLMWeights:
    """Everything ``FastXVector`` computes from, in float32 on the model's device."""

    convs: list[ConvWeights]
    projection_norm: Norm
    projection: tuple[torch.Tensor, torch.Tensor]
    pos_weight: torch.Tensor  # (D, D / groups, kernel), the weight norm already applied
    pos_bias: torch.Tensor
    pos_padding: int
    pos_groups: int
    pos_remove: int  # frames cut from the end of the positional convolution's output
    pos_activation: Activation
    encoder_norm: Norm
    stable_layer_norm: bool  # pre-norm layers (do_stable_layer_norm) or post-norm
    layers: list[LayerWeights]
    heads: int
    rel_embed: torch.Tensor  # (num_buckets, H) relative position embedding
    num_buckets: int
    max_distance: int
    layer_weights: list[float] | None  # softmaxed; None: the last layer only
    # whether the weighted sum takes the last layer's output after the encoder's final LayerNorm
    # (pre-norm models: transformers 4.x and early 5.x do, later releases do not)
    last_state_normed: bool
    projector: tuple[torch.Tensor, torch.Tensor]
    tdnn: list[tuple[torch.Tensor, torch.Tensor, int]]  # (C_out, C_in, kernel) weight, bias, dilation
    xvector: tuple[torch.Tensor, torch.Tensor]

    @property
    def hidden_size(self) -> int:
        return int(self.projection[0].shape[0])


def supports(model: Any) -> bool:
    """Whether the fast path is meant for this model: a ``WavLMForXVector`` without adapter, its
    feature encoder normalized by group or layer norm. (``read_weights`` may still refuse it.)"""
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


def read_weights(model: Any) -> WavLMWeights:
    """The fast path's view of a loaded ``WavLMForXVector`` (its tensors are shared, not copied).

    Raises :class:`UnsupportedModel` when the model is not supported or any attribute it reads is
    missing or shaped otherwise than expected (e.g. renamed by a transformers release).
    """
    if not supports(model):
        raise UnsupportedModel(f"the fast path does not support {type(model).__name__} with this configuration")
    try:
        return _read(model)
    except (AttributeError, IndexError, KeyError, TypeError, RuntimeError) as exc:
        raise UnsupportedModel(f"cannot read the WavLM weights ({type(exc).__name__}: {exc})") from exc


def _t(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().float()


def _lin(module: Any) -> tuple[torch.Tensor, torch.Tensor]:
    bias = module.bias
    weight = _t(module.weight)
    return weight, (torch.zeros(weight.shape[0], device=weight.device) if bias is None else _t(bias))


def _norm(module: Any) -> Norm:
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    return Norm(None if weight is None else _t(weight), None if bias is None else _t(bias), float(module.eps))


def _read(model: Any) -> WavLMWeights:
    cfg, wavlm = model.config, model.wavlm
    convs = []
    for i, layer in enumerate(wavlm.feature_extractor.conv_layers):
        norm = getattr(layer, "layer_norm", None)
        kind = "" if norm is None else ("group" if isinstance(norm, torch.nn.GroupNorm) else "layer")
        if kind == "group" and i > 0:
            raise UnsupportedModel("GroupNorm after the first convolution is not supported")
        conv = layer.conv
        convs.append(ConvWeights(_t(conv.weight), None if conv.bias is None else _t(conv.bias), int(conv.stride[0]),
                                 kind, None if norm is None else _norm(norm), layer.activation))
    if len(convs) != len(cfg.conv_kernel) or [c.kernel for c in convs] != list(cfg.conv_kernel):
        raise UnsupportedModel("the feature encoder's convolutions do not match config.conv_kernel")

    encoder = wavlm.encoder
    pos = encoder.pos_conv_embed
    layers = []
    for layer in encoder.layers:
        att, ff = layer.attention, layer.feed_forward
        layers.append(LayerWeights(
            _lin(att.q_proj), _lin(att.k_proj), _lin(att.v_proj), _lin(att.out_proj), _lin(att.gru_rel_pos_linear),
            _t(att.gru_rel_pos_const).view(1, 1, -1, 1), _norm(layer.layer_norm), _lin(ff.intermediate_dense),
            ff.intermediate_act_fn, _lin(ff.output_dense), _norm(layer.final_layer_norm),
        ))
    first = encoder.layers[0].attention
    heads, hidden = int(first.num_heads), int(cfg.hidden_size)
    for lw in layers:  # what the attention's reshapes assume
        if lw.q[0].shape != (hidden, hidden) or lw.gate[0].shape != (8, hidden // heads) or lw.gate_const.numel() != heads:
            raise UnsupportedModel("the attention's projections or gate are not shaped as WavLM's")
    tdnn = []
    for t in model.tdnn:  # a Linear over kernel x C_in inputs, tap-major: as a conv1d weight
        weight = _t(t.kernel.weight)
        if weight.shape != (t.out_conv_dim, t.kernel_size * t.in_conv_dim):
            raise UnsupportedModel("the TDNN layers are not the (C_out, kernel * C_in) linear layers expected")
        weight = weight.view(t.out_conv_dim, t.kernel_size, t.in_conv_dim).transpose(1, 2).contiguous()
        tdnn.append((weight, _t(t.kernel.bias), int(t.dilation)))
    return WavLMWeights(
        convs=convs,
        projection_norm=_norm(wavlm.feature_projection.layer_norm),
        projection=_lin(wavlm.feature_projection.projection),
        pos_weight=_t(pos.conv.weight),  # reading it applies the weight norm (a parametrization)
        pos_bias=_t(pos.conv.bias),
        pos_padding=int(pos.conv.padding[0]),
        pos_groups=int(pos.conv.groups),
        pos_remove=int(pos.padding.num_pad_remove),
        pos_activation=pos.activation,
        encoder_norm=_norm(encoder.layer_norm),
        stable_layer_norm=bool(cfg.do_stable_layer_norm),
        layers=layers,
        heads=heads,
        rel_embed=_t(first.rel_attn_embed.weight),
        num_buckets=int(first.num_buckets),
        max_distance=int(first.max_distance),
        layer_weights=(torch.softmax(_t(model.layer_weights), dim=-1).tolist() if cfg.use_weighted_layer_sum else None),
        last_state_normed=_last_state_normed(model),
        projector=_lin(model.projector),
        tdnn=tdnn,
        xvector=_lin(model.feature_extractor),
    )


def _last_state_normed(model: Any) -> bool:
    """Whether the last of the hidden states a weighted layer sum reads is the normalized one.

    Only pre-norm models (``do_stable_layer_norm``) with ``use_weighted_layer_sum`` depend on it,
    and transformers releases differ, so it is asked of the model's public output on 0.2 s of
    noise: its last hidden state, against ``last_hidden_state`` (always normalized)."""
    cfg = model.config
    if not (cfg.do_stable_layer_norm and cfg.use_weighted_layer_sum):
        return False
    device = next(model.parameters()).device
    noise = torch.randn(1, 3200, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.inference_mode():
        out = model.wavlm(noise, output_hidden_states=True)
    return bool(torch.allclose(out.hidden_states[-1], out.last_hidden_state, rtol=1e-4, atol=1e-5))
