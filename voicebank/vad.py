"""Speech detection by a trained voice activity detector: silero-vad, run through torch.

:func:`speech_probabilities` gives one probability per 32 ms frame (512 samples at 16 kHz);
:func:`speech_frames` turns them into decisions the way silero's own ``get_speech_timestamps``
does (hysteresis, a minimum speech run, short silences bridged). Noise, tones, hum, clicks and
music get probabilities near 0, which frame energy alone cannot tell from speech.

The TorchScript model that the silero-vad wheel ships is loaded once per process, on first use.
It is called without its built-in state (the recurrent state is passed explicitly), so any
number of threads can detect speech at once with the same model and get the same answers as
one thread. No process-wide setting is touched: the ``silero_vad`` package itself is never
imported, because importing it calls ``torch.set_num_threads(1)``.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .compat import silero_network
from .errors import ModelError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # the rate the model runs at; other rates are resampled to it
FRAME = 512  # samples per decision at SAMPLE_RATE
FRAME_SECONDS = FRAME / SAMPLE_RATE  # 0.032
_CONTEXT = 64  # samples of the previous frame the model sees before each frame
_BLOCK = 1024  # frames encoded per call (33 s of audio): bounds memory for long recordings

# silero's get_speech_timestamps defaults: speech starts at p >= 0.5 and lasts until p < 0.35;
# shorter runs than 250 ms are dropped (a click, a cough), silences under 100 ms are bridged.
THRESHOLD, NEG_THRESHOLD = 0.5, 0.35
MIN_SPEECH_FRAMES = round(0.250 / FRAME_SECONDS)  # 8
MIN_SILENCE_FRAMES = round(0.100 / FRAME_SECONDS)  # 3

_lock = threading.Lock()
_model: Any = None


def speech_probabilities(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Speech probability in [0, 1] per 32 ms frame of ``samples`` (float32 mono at ``sample_rate``).

    Frame ``i`` covers seconds ``[i * FRAME_SECONDS, (i + 1) * FRAME_SECONDS)``; the last one
    is padded with silence. Returns float32 of shape ``(ceil(duration / FRAME_SECONDS),)``.
    """
    samples = _at_model_rate(np.asarray(samples, dtype=np.float32), sample_rate)
    frames = -(-len(samples) // FRAME)
    if frames == 0:
        return np.zeros(0, dtype=np.float32)
    padded = np.zeros(_CONTEXT + frames * FRAME, dtype=np.float32)
    padded[_CONTEXT : _CONTEXT + len(samples)] = samples
    return _run(padded, None)[0]


class Stream:
    """Speech probabilities of audio that arrives in pieces (a call, live): the detector's recurrent
    state and the context it sees are carried from one piece to the next, so each frame gets the
    probability :func:`speech_probabilities` would give it within the whole. Audio at
    ``SAMPLE_RATE``; one instance per stream, not shared between threads."""

    def __init__(self) -> None:
        self._held = np.zeros(_CONTEXT, dtype=np.float32)  # the context, then samples not yet a frame
        self._state: Any = None

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """float32 probabilities of the whole frames completed by ``samples`` (mono float32 at
        ``SAMPLE_RATE``), in order; samples short of a frame wait for the next call."""
        held = np.concatenate([self._held, np.asarray(samples, dtype=np.float32)])
        frames = (len(held) - _CONTEXT) // FRAME
        if frames == 0:
            self._held = held
            return np.zeros(0, dtype=np.float32)
        used = _CONTEXT + frames * FRAME
        out, self._state = _run(held[:used], self._state)
        self._held = held[used - _CONTEXT :]
        return out


def _run(padded: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
    """Probabilities of the frames of ``padded`` (``_CONTEXT`` samples, then whole frames), from the
    recurrent ``state`` (None: a cold start), and the state after the last frame."""
    import torch

    model, sequence = _load()
    frames = (len(padded) - _CONTEXT) // FRAME
    windows = np.lib.stride_tricks.sliding_window_view(padded, _CONTEXT + FRAME)[::FRAME]
    out = np.empty(frames, dtype=np.float32)
    if state is None:
        state = (torch.zeros(1, 1, 128), torch.zeros(1, 1, 128))
    with torch.inference_mode():
        for first in range(0, frames, _BLOCK):
            block = torch.from_numpy(np.array(windows[first : first + _BLOCK]))  # a writable copy: no torch warning
            features = model.encoder(model.stft(block)).squeeze(-1)  # (frames, 128): no state
            # the recurrent part, frame after frame: silero's LSTMCell run over the block as one sequence
            hidden, state = sequence(features.unsqueeze(1), state)  # (frames, 1, 128)
            head = model.decoder.decoder(hidden.squeeze(1).unsqueeze(-1))  # (frames, 1, 1)
            out[first : first + len(hidden)] = head.reshape(len(hidden), -1).mean(dim=1).numpy()
    return out, state


def speech_frames(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """One bool per 32 ms frame (as :func:`speech_probabilities`): is it speech?"""
    return decide(speech_probabilities(samples, sample_rate))


def decide(probabilities: np.ndarray) -> np.ndarray:
    """Frame probabilities to speech decisions: enter speech at ``THRESHOLD``, leave it below
    ``NEG_THRESHOLD``; drop speech runs shorter than ``MIN_SPEECH_FRAMES``, then bridge
    silences shorter than ``MIN_SILENCE_FRAMES`` between speech."""
    speech = np.zeros(len(probabilities), dtype=bool)
    inside = False
    for i, p in enumerate(probabilities.tolist()):
        inside = p >= THRESHOLD or (inside and p >= NEG_THRESHOLD)
        speech[i] = inside
    starts, stops = _runs(speech)
    for a, b in zip(starts, stops):
        if b - a < MIN_SPEECH_FRAMES:
            speech[a:b] = False
    starts, stops = _runs(~speech)
    for a, b in zip(starts, stops):
        if 0 < a and b < len(speech) and b - a < MIN_SILENCE_FRAMES:
            speech[a:b] = True
    return speech


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return edges[::2], edges[1::2]


def _at_model_rate(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    from .decode import resample

    return resample(samples, sample_rate, SAMPLE_RATE)


def _load() -> tuple[Any, Any]:
    """The 16 kHz network inside silero's TorchScript model, and its recurrent cell as a sequence
    model (``_as_sequence``), loaded once per process."""
    global _model
    with _lock:
        if _model is None:
            import torch

            path = _model_path()
            try:
                model = silero_network(torch.jit.load(str(path), map_location="cpu").eval())
                for part in (model.stft, model.encoder, model.decoder.rnn, model.decoder.decoder):
                    part.eval()
                sequence = _as_sequence(torch, model.decoder.rnn)
            except Exception as exc:  # a damaged file, or a silero-vad laid out unlike 5.1-6.2
                raise ModelError(
                    f"the speech detector at {path} could not be loaded ({exc}). Reinstall it, at a "
                    'version voicebank was checked with: pip install --force-reinstall "silero-vad==6.2.3"'
                ) from exc
            _model = (model, sequence)
            log.debug("loaded silero-vad from %s", path)
        return _model


def _as_sequence(torch: Any, cell: Any) -> Any:
    """An eager ``nn.LSTM`` with the weights of silero's scripted ``LSTMCell``: the same step over
    a whole block in one call. Called frame by frame, the scripted cell cost about 3 ms a frame
    (the TorchScript interpreter's per-call overhead), most of the detector's time."""
    lstm = torch.nn.LSTM(cell.weight_ih.shape[1], cell.weight_hh.shape[1])
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(lstm, f"{name}_l0").copy_(getattr(cell, name))
    return lstm.eval()


def _model_path() -> Path:
    # find_spec locates the package without running its __init__ (which changes torch's threads)
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError('speech detection needs silero-vad, which is not installed: pip install "silero-vad>=6.2.3"')
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.jit"
    if not path.is_file():
        raise ModelError(f"silero-vad is installed but {path} is missing: pip install --force-reinstall silero-vad")
    return path
