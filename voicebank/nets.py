"""The two small networks voicebank runs on every recording, in numpy: silero-vad's 16 kHz speech
detector and resemblyzer's GE2E speaker encoder. Neither needs torch, whose import costs 1 to 2 s
of every command that detects speech; their LSTMs run in torch where a process has loaded it
already (:class:`Lstm`). Both compute what the packages' own torch models compute
(tests/test_vad.py and tests/test_audio.py hold them to those, within float32 rounding).

Weights come from the files the packages ship, read without torch (``voicebank/checkpoint.py``):
silero's TorchScript ``silero_vad.jit`` and resemblyzer's ``pretrained.pt``. A network keeps no
state between calls (the recurrent state is passed in and out), so any number of threads can
share one.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import ModelError

_STEPS = 32  # steps whose input projection is computed together


ENGINES = ("auto", "numpy", "torch")


def _in_torch(engine: str) -> bool:
    if engine == "auto":  # VOICEBANK_NETS=numpy or torch overrides what the process has loaded
        engine = os.environ.get("VOICEBANK_NETS", "auto")
        if engine not in ENGINES:
            raise ModelError(f"VOICEBANK_NETS is {engine!r}: set it to numpy, torch or auto, or unset it.")
    return engine == "torch" or (engine == "auto" and "torch" in sys.modules)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # tanh form: no overflow warning for large negative inputs, and float32 stays float32
    return np.tanh(x * 0.5) * 0.5 + 0.5


class Lstm:
    """A stack of LSTM layers as ``torch.nn.LSTM`` (batch first) computes them; a single
    ``nn.LSTMCell`` is a stack of one. ``layers``: ``(weight_ih, weight_hh, bias_ih, bias_hh)``
    per layer, torch's shapes and gate order (input, forget, cell, output).

    ``engine``: ``numpy``; ``torch`` (the same layers as a ``torch.nn.LSTM``, one call per
    sequence: half numpy's time on one recording, and it releases the GIL for the whole sequence,
    where numpy's loop takes it at every step, which cost live sessions in threads a third more
    time per update); or ``auto``: torch when this process has imported it already, numpy
    otherwise, so that nothing here ever imports it (``VOICEBANK_NETS=numpy`` or ``torch`` chooses
    for the whole process)."""

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], engine: str = "auto",
                 device: str = "cpu"):
        """``device``: where the torch engine runs (a GPU: ``cuda``); numpy runs on the CPU."""
        if engine not in ENGINES:
            raise ValueError(f"engine must be auto, numpy or torch, not {engine!r}")
        self.engine, self.device, self._weights, self._torch = engine, device, layers, None
        self._lock = threading.Lock()
        self.hidden = layers[0][1].shape[1]
        order = np.r_[0 : 2 * self.hidden, 3 * self.hidden : 4 * self.hidden, 2 * self.hidden : 3 * self.hidden]
        # the gates reordered (input, forget, output, cell) so one call covers the three sigmoids
        self._layers = [(np.ascontiguousarray(w_ih[order].T, np.float32), np.ascontiguousarray(w_hh[order].T, np.float32),
                         (b_ih + b_hh)[order].astype(np.float32)) for w_ih, w_hh, b_ih, b_hh in layers]

    def run(self, x: np.ndarray, state: tuple[np.ndarray, np.ndarray] | None = None
            ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """``x`` (batch, steps, inputs) -> the last layer's outputs (batch, steps, hidden) and the
        state after the last step, ``(h, c)`` each (layers, batch, hidden); ``state`` None: zeros."""
        if _in_torch(self.engine):
            return self._run_torch(x, state)
        batch, steps, _ = x.shape
        size = self.hidden
        if state is None:
            zeros = np.zeros((len(self._layers), batch, size), np.float32)
            state = (zeros, zeros.copy())
        h_out, c_out = np.empty_like(state[0]), np.empty_like(state[1])
        gates = np.empty((batch, 4 * size), np.float32)
        for k, (w_ih, w_hh, bias) in enumerate(self._layers):
            h, c = state[0][k], state[1][k]
            out = np.empty((batch, steps, size), np.float32)
            for first in range(0, steps, _STEPS):
                # the input's share of the gates for a block of steps at once: one large product
                # instead of one per step, without holding (batch, steps, 4 x hidden) at a time
                gates_in = x[:, first : first + _STEPS].astype(np.float32, copy=False) @ w_ih + bias
                for t in range(gates_in.shape[1]):
                    np.matmul(h, w_hh, out=gates)
                    gates += gates_in[:, t]
                    sig = _sigmoid(gates[:, : 3 * size])
                    c = sig[:, size : 2 * size] * c + sig[:, :size] * np.tanh(gates[:, 3 * size :])
                    h = sig[:, 2 * size :] * np.tanh(c)
                    out[:, first + t] = h
            h_out[k], c_out[k] = h, c
            x = out
        return x, (h_out, c_out)

    def _run_torch(self, x: np.ndarray, state: tuple[np.ndarray, np.ndarray] | None
                   ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        import torch

        lstm = self._torch_lstm(torch)
        # Zero-padded input makes the LSTM compute with denormal floats, about 4x slower on a CPU
        # for 1 s clips; flushing them to zero changed no embedding (bench/quality.py). The flag
        # belongs to the calling thread: set here, put back.
        flushed = bool((torch.tensor([2.0**-126]) * 0.5).item() == 0.0)  # torch has no getter
        torch.set_flush_denormal(True)
        try:
            with torch.no_grad():
                initial = None if state is None else tuple(torch.from_numpy(s).to(self.device) for s in state)
                out, (h, c) = lstm(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device), initial)
        finally:
            torch.set_flush_denormal(flushed)
        return out.cpu().numpy(), (h.cpu().numpy(), c.cpu().numpy())

    def _torch_lstm(self, torch: Any) -> Any:
        with self._lock:
            if self._torch is None:
                lstm = torch.nn.LSTM(self._weights[0][0].shape[1], self.hidden, len(self._weights), batch_first=True)
                with torch.no_grad():
                    for k, tensors in enumerate(self._weights):
                        for name, value in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), tensors):
                            getattr(lstm, f"{name}_l{k}").copy_(torch.from_numpy(np.asarray(value, np.float32)))
                self._torch = lstm.eval().to(self.device)
            return self._torch


def _conv1d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """``torch.nn.functional.conv1d`` with padding 1 and a kernel of 3, channels last:
    ``x`` (batch, length, in) -> (batch, length', out)."""
    batch, length = x.shape[0], (x.shape[1] - 1) // stride + 1
    padded = np.pad(x, ((0, 0), (1, 1), (0, 0)))
    out = np.broadcast_to(bias, (batch * length, len(bias))).copy()
    for k in range(weight.shape[2]):
        taps = padded[:, k : k + stride * (length - 1) + 1 : stride].reshape(batch * length, -1)
        out += taps @ weight[:, :, k].T
    return out.reshape(batch, length, -1)


class Silero:
    """silero-vad's 16 kHz network (the ``_model`` of its TorchScript file, 5.x and 6.x): a fixed
    STFT, four convolutions, an LSTM cell and a sigmoid head; one probability per 512-sample frame
    seen with the 64 samples before it. ``weights``: that network's tensors by their names in it."""

    WINDOW = 576  # 64 samples of context + a 512-sample frame
    _STRIDES = (1, 2, 2, 1)

    def __init__(self, weights: Mapping[str, np.ndarray], engine: str = "auto"):
        self._basis = weights["stft.forward_basis_buffer"]
        self._window = _window_of(self._basis[:, 0, :])
        self._convs = [(weights[f"encoder.{i}.reparam_conv.weight"], weights[f"encoder.{i}.reparam_conv.bias"])
                       for i in range(4)]
        self.cell = Lstm([tuple(weights[f"decoder.rnn.{n}"] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))],
                         engine)
        self._head = (weights["decoder.decoder.2.weight"][0, :, 0], float(weights["decoder.decoder.2.bias"][0]))

    def features(self, windows: np.ndarray) -> np.ndarray:
        """(frames, 576) float32 -> (frames, 128): everything before the recurrent cell; in torch
        where the cell runs in torch (``Lstm``): numpy's many small calls hold the GIL, and four
        live sessions in threads took a third more time per update."""
        if _in_torch(self.cell.engine):
            return self._features_torch(windows)
        padded = np.concatenate([windows, windows[:, -2:-66:-1]], axis=1)  # reflect 64 samples on the right
        frames = np.lib.stride_tricks.sliding_window_view(padded, 256, axis=1)[:, ::128]  # (n, 4, 256)
        # silero's STFT is a product with a windowed DFT basis; an FFT is the same (_window_of checks)
        # and uses no BLAS, whose threads make concurrent live sessions wait on each other
        x = np.abs(np.fft.rfft(frames * self._window, axis=2)).astype(np.float32)  # (n, 4, 129)
        for (weight, bias), stride in zip(self._convs, self._STRIDES):
            x = np.maximum(_conv1d(x, weight, bias, stride), 0.0)
        return x[:, 0, :]

    def _features_torch(self, windows: np.ndarray) -> np.ndarray:
        import torch

        functional = torch.nn.functional
        with torch.no_grad():
            x = functional.pad(torch.from_numpy(np.ascontiguousarray(windows, np.float32))[:, None], (0, 64), mode="reflect")
            spectrum = functional.conv1d(x, torch.from_numpy(self._basis), stride=128)  # (n, 258, 4)
            cut = spectrum.shape[1] // 2
            x = torch.sqrt(spectrum[:, :cut] ** 2 + spectrum[:, cut:] ** 2)
            for (weight, bias), stride in zip(self._convs, self._STRIDES):
                x = torch.relu(functional.conv1d(x, torch.from_numpy(weight), torch.from_numpy(bias), stride=stride, padding=1))
            return x[:, :, 0].numpy()

    def head(self, hidden: np.ndarray) -> np.ndarray:
        """(frames, 128) outputs of the cell -> (frames,) speech probabilities."""
        weight, bias = self._head
        return _sigmoid(np.maximum(hidden, 0.0) @ weight + np.float32(bias)).astype(np.float32)


def _window_of(basis: np.ndarray) -> np.ndarray:
    """The window of silero's STFT basis ((258, 256): the real then the imaginary parts of a
    windowed 256-point DFT, 129 bins each), checked to be exactly that."""
    window = basis[0].astype(np.float64)  # bin 0: cos(0) = 1 times the window
    bins, samples = np.arange(basis.shape[0] // 2)[:, None], np.arange(basis.shape[1])
    phase = 2 * np.pi * bins * samples / basis.shape[1]
    expected = np.concatenate([window * np.cos(phase), -window * np.sin(phase)])
    if basis.shape != (258, 256) or np.max(np.abs(basis - expected)) > 1e-5:
        raise ValueError("the speech detector's STFT is not the windowed DFT voicebank computes")
    return window.astype(np.float32)


class Ge2e:
    """resemblyzer's VoiceEncoder: three LSTM layers of 256 over 40 mel bands, then a linear layer,
    a ReLU and L2 normalization of the last step's output."""

    def __init__(self, state: Mapping[str, np.ndarray], engine: str = "auto", device: str = "cpu"):
        self._lstm = Lstm([tuple(state[f"lstm.{n}_l{k}"] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                           for k in range(3)], engine, device)
        self._linear = (np.ascontiguousarray(state["linear.weight"].T, np.float32), state["linear.bias"].astype(np.float32))

    def __call__(self, mels: np.ndarray) -> np.ndarray:
        """(batch, frames, 40) -> (batch, 256), each L2-normalized."""
        _, (hidden, _) = self._lstm.run(mels)
        weight, bias = self._linear
        raw = np.maximum(hidden[-1] @ weight + bias, 0.0)
        return raw / np.linalg.norm(raw, axis=1, keepdims=True)
