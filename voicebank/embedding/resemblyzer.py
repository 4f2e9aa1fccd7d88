"""Resemblyzer's GE2E speaker encoder (256-dim, 16 kHz): an optional backend that runs offline.

The weights ship inside the ``resemblyzer`` wheel, so it needs no hub access and is fast on a CPU.
Install with ``pip install "voicebank[resemblyzer]"``; select with ``--model resemblyzer``.

The package's own code is not imported: its ``__init__`` imports librosa (and with it numba and
scipy.signal, 2 to 4 s of a command's start) for one mel spectrogram. This module does what
``preprocess_wav`` then ``VoiceEncoder.embed_utterance`` do, step for step (volume normalization,
webrtcvad silence trimming, librosa's slaney mel spectrogram, partial utterances of 1.6 s), with
numpy, webrtcvad and the package's weights; tests/test_audio.py holds it to the package's output.
The network is ``voicebank/nets.py``'s: its LSTM runs in numpy where torch is not loaded, so a
resemblyzer command never imports it (1 to 2 s of every start), and in torch in a process that
has loaded it already (a server: ``voicebank serve`` does, once, at start). Both compute the same
embeddings (tests/test_audio.py holds each to the package's).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import checkpoint, runtime
from ..compat import webrtcvad_speech
from ..errors import ModelError
from ..nets import ENGINES, Ge2e
from ..vectors import l2_normalize

log = logging.getLogger(__name__)

NAME = "resemblyzer"
RATE = 16_000
# resemblyzer/hparams.py
MEL_WINDOW, MEL_HOP, MEL_CHANNELS = 400, 160, 40  # 25 ms windows every 10 ms, 40 mel bands
PARTIAL_FRAMES, PARTIAL_RATE, MIN_COVERAGE = 160, 1.3, 0.75  # 1.6 s partials, 1.3 per second
VAD_WINDOW, VAD_AVERAGE, VAD_MAX_SILENCE = 480, 8, 6  # 30 ms webrtcvad windows
BATCH = 64  # partials through the network at once (about 8 MB of LSTM gates)
TARGET_DBFS = -30
INT16_MAX = 2**15 - 1


class ResemblyzerEmbedder:
    """GE2E embeddings as the package's reference usage computes them: every partial is 1.6 s, so
    batching the partials of several recordings pads nothing and changes no embedding."""

    source = NAME
    kind = NAME
    sample_rate = RATE
    dimension = 256

    def __init__(self, device: str | None = None, network: str = "auto"):
        """``device``: ``cuda`` runs the network there (in torch); ``network``: where its LSTM runs
        on a CPU, ``numpy``, ``torch`` or ``auto`` (``voicebank.nets.Lstm``)."""
        if network not in ENGINES:
            raise ValueError(f"network must be auto, numpy or torch, not {network!r}")
        self._device, self._network = device, network
        self._lock = threading.Lock()
        self._loaded: tuple[Ge2e, str] | None = None

    @property
    def model_id(self) -> str:
        return self._load()[1]

    def embed(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """(n, 256) float32 L2-normalized embeddings of float32 mono waveforms at 16 kHz."""
        network, _ = self._load()
        # every recording's 1.6 s partials go through the network together, up to BATCH at a time:
        # each step of the LSTM is then one larger matrix product, 2 to 3 times the work per second
        mels, owner = [], []
        for i, wave in enumerate(waveforms):
            wave = np.asarray(wave, dtype=np.float32)
            trimmed = preprocess(wave)  # volume normalization + VAD trim
            # The VAD can trim short or quiet input to nothing; the raw wave is then the best we have.
            partials = partial_mels(trimmed if len(trimmed) >= RATE // 2 else wave)
            mels += partials
            owner += [i] * len(partials)
        out = np.zeros((len(waveforms), self.dimension), dtype=np.float32)
        for first in range(0, len(mels), BATCH):
            np.add.at(out, owner[first : first + BATCH], network(np.array(mels[first : first + BATCH])))
        return l2_normalize(out)  # each recording's mean of its partials' embeddings, normalized

    def _load(self) -> tuple[Ge2e, str]:
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = self._load_now()
        return self._loaded

    def _load_now(self) -> tuple[Ge2e, str]:
        spec = importlib.util.find_spec(NAME)  # where the package is, without running its __init__
        if spec is None or not spec.submodule_search_locations:
            raise ModelError('the resemblyzer backend needs its extra: pip install "voicebank[resemblyzer]".')
        weights = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
        if not weights.is_file():
            raise ModelError(f"resemblyzer is installed but {weights} is missing: pip install --force-reinstall resemblyzer")
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
        # a GPU only when asked for by name: deciding on ``auto`` would import torch to ask
        # whether there is one, and this LSTM is quick on a CPU
        device = self._device or os.environ.get("VOICEBANK_DEVICE") or "auto"
        gpu = device.startswith("cuda")
        if gpu:
            import torch

            from .wavlm import usable_device

            runtime.torch_loaded(torch)
            usable_device(device, torch)
        try:
            state = checkpoint.read_torch_legacy(weights)["model_state"]
            network = Ge2e(state, "torch" if gpu else self._network, device if gpu else "cpu")
        except (checkpoint.CheckpointError, KeyError, TypeError, IndexError) as exc:
            raise ModelError(f"{weights} could not be read ({exc}): pip install --force-reinstall resemblyzer") from exc
        log.info("loaded resemblyzer GE2E (%s)", digest)
        return network, f"resemblyzer-ge2e:{digest}"


def partial_mels(wave: np.ndarray) -> list[np.ndarray]:
    """The (160, 40) mel spectrograms of the 1.6 s partials of ``wave`` (its embedding is the
    normalized mean of theirs, as in resemblyzer's ``VoiceEncoder.embed_utterance``)."""
    starts = partial_starts(len(wave))
    stop = (starts[-1] + PARTIAL_FRAMES) * MEL_HOP
    if stop >= len(wave):
        wave = np.pad(wave, (0, stop - len(wave)))
    mel = mel_spectrogram(wave)
    return [mel[s : s + PARTIAL_FRAMES] for s in starts]


def partial_starts(samples: int) -> list[int]:
    """First mel frame of each partial of a ``samples``-long wave (``compute_partial_slices``)."""
    frames = int(np.ceil((samples + 1) / MEL_HOP))
    step = int(np.round((RATE / PARTIAL_RATE) / MEL_HOP))
    starts = list(range(0, max(1, frames - PARTIAL_FRAMES + step + 1), step))
    coverage = (samples - starts[-1] * MEL_HOP) / (PARTIAL_FRAMES * MEL_HOP)
    if coverage < MIN_COVERAGE and len(starts) > 1:
        starts.pop()
    return starts


def preprocess(wave: np.ndarray) -> np.ndarray:
    """``preprocess_wav`` of 16 kHz float32: louder to -30 dBFS (never quieter), long silences cut."""
    rms = np.sqrt(np.mean((wave * INT16_MAX) ** 2))
    change = TARGET_DBFS - 20 * np.log10(rms / INT16_MAX)
    if change > 0:
        wave = wave * (10 ** (change / 20))
    return trim_long_silences(wave)


def trim_long_silences(wave: np.ndarray) -> np.ndarray:
    """The parts of ``wave`` webrtcvad (mode 3) hears as voice, smoothed and widened as resemblyzer
    does; silences longer than about 0.2 s are cut."""
    wave = wave[: len(wave) - len(wave) % VAD_WINDOW]
    pcm = np.round(wave * INT16_MAX).astype(np.int16).tobytes()
    is_speech = _webrtcvad(mode=3)
    flags = np.array([is_speech(pcm[i * 2 : (i + VAD_WINDOW) * 2]) for i in range(0, len(wave), VAD_WINDOW)], dtype=float)
    width = VAD_AVERAGE
    padded = np.concatenate((np.zeros((width - 1) // 2), flags, np.zeros(width // 2)))
    total = np.cumsum(padded, dtype=float)
    total[width:] = total[width:] - total[:-width]
    mask = np.round(total[width - 1 :] / width).astype(bool)
    # scipy's binary_dilation with a structure of VAD_MAX_SILENCE + 1 ones, centred
    mask = np.convolve(mask.astype(np.int32), np.ones(VAD_MAX_SILENCE + 1, np.int32), mode="same") > 0
    return wave[np.repeat(mask, VAD_WINDOW)]


def _webrtcvad(mode: int) -> Any:
    """``webrtcvad.Vad(mode).is_speech`` of 30 ms of 16-bit PCM at 16 kHz. Called through the
    package's C extension when it is there: ``webrtcvad.py`` imports pkg_resources for its version
    string, 0.1 to 0.4 s of a command's start (and a deprecation warning)."""
    through_extension = webrtcvad_speech(mode, RATE)
    if through_extension is not None:
        return through_extension
    with warnings.catch_warnings():  # laid out differently: the public module, quietly
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        import webrtcvad
    public = webrtcvad.Vad(mode)
    return lambda pcm: public.is_speech(pcm, RATE)


def mel_spectrogram(wave: np.ndarray) -> np.ndarray:
    """(frames, 40) float32 power mel spectrogram, as ``librosa.feature.melspectrogram`` (0.10+)
    with resemblyzer's parameters: periodic Hann windows of 400 samples every 160, centred with
    zero padding, slaney mel bands from 0 to 8 kHz."""
    padded = np.pad(wave.astype(np.float32, copy=False), MEL_WINDOW // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, MEL_WINDOW)[::MEL_HOP]
    spectrum = np.abs(np.fft.rfft(frames * _hann(), axis=1).astype(np.complex64)) ** 2  # (frames, 201)
    return (spectrum @ _mel_basis().T).astype(np.float32)


_cache: dict[str, np.ndarray] = {}


def _hann() -> np.ndarray:
    if "hann" not in _cache:
        # float64, as scipy's get_window gives it to librosa: the windowed frames are float64 too
        _cache["hann"] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(MEL_WINDOW) / MEL_WINDOW)
    return _cache["hann"]


def _mel_basis() -> np.ndarray:
    """(40, 201) float32: ``librosa.filters.mel(sr=16000, n_fft=400, n_mels=40)`` (slaney scale and norm)."""
    if "mel" not in _cache:
        freqs = np.fft.rfftfreq(MEL_WINDOW, 1 / RATE)
        edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(RATE / 2), MEL_CHANNELS + 2))
        widths = np.diff(edges)
        ramps = np.subtract.outer(edges, freqs)
        basis = np.zeros((MEL_CHANNELS, len(freqs)), dtype=np.float32)
        for i in range(MEL_CHANNELS):
            basis[i] = np.maximum(0, np.minimum(-ramps[i] / widths[i], ramps[i + 2] / widths[i + 1]))
        basis *= (2.0 / (edges[2 : MEL_CHANNELS + 2] - edges[:MEL_CHANNELS]))[:, None]
        _cache["mel"] = basis
    return _cache["mel"]


_F_SP, _MIN_LOG_HZ, _LOG_STEP = 200.0 / 3, 1000.0, np.log(6.4) / 27.0  # the slaney mel scale
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP


def _hz_to_mel(hz: float) -> float:
    return hz / _F_SP if hz < _MIN_LOG_HZ else _MIN_LOG_MEL + np.log(hz / _MIN_LOG_HZ) / _LOG_STEP


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    return np.where(mels >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOG_STEP * (mels - _MIN_LOG_MEL)), _F_SP * mels)
