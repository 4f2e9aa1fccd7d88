"""Speech detection by a trained voice activity detector: silero-vad, run in numpy.

:func:`speech_probabilities` gives one probability per 32 ms frame (512 samples at 16 kHz);
:func:`speech_frames` turns them into decisions the way silero's own ``get_speech_timestamps``
does (hysteresis, a minimum speech run, short silences bridged). Noise, tones, hum, clicks and
music get probabilities near 0, which frame energy alone cannot tell from speech.

The weights of the TorchScript model that the silero-vad wheel ships are read once per process,
on first use, and its 16 kHz network runs in numpy (``voicebank/nets.py``): detecting speech
never imports torch (1 to 2 s of a command's start). The recurrent state is passed explicitly,
so any number of threads can detect speech at once with the same network and get the same
answers as one thread. No process-wide setting is touched: the ``silero_vad`` package itself is
never imported, because importing it calls ``torch.set_num_threads(1)``.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from . import checkpoint
from .errors import ModelError
from .nets import Silero

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
    network = _load()
    frames = (len(padded) - _CONTEXT) // FRAME
    windows = np.lib.stride_tricks.sliding_window_view(padded, _CONTEXT + FRAME)[::FRAME]
    out = np.empty(frames, dtype=np.float32)
    for first in range(0, frames, _BLOCK):
        features = network.features(np.array(windows[first : first + _BLOCK]))  # (frames, 128): no state
        # the recurrent part, frame after frame: silero's LSTMCell run over the block as one sequence
        hidden, state = network.cell.run(features[None], state)
        out[first : first + len(features)] = network.head(hidden[0])
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


def _load() -> Silero:
    """The 16 kHz network of silero's TorchScript model, loaded once per process."""
    global _model
    with _lock:
        if _model is None:
            path = _model_path()
            try:
                tensors = checkpoint.read_torchscript(path)
                _model = Silero({k.removeprefix("_model."): v for k, v in tensors.items() if k.startswith("_model.")})
            except (checkpoint.CheckpointError, KeyError, IndexError, ValueError) as exc:
                # a damaged file, or a silero-vad laid out unlike 5.1-6.2
                raise ModelError(
                    f"the speech detector at {path} could not be loaded ({exc}). Reinstall it, at a "
                    'version voicebank was checked with: pip install --force-reinstall "silero-vad==6.2.3"'
                ) from exc
            log.debug("loaded silero-vad from %s", path)
        return _model


def _model_path() -> Path:
    # find_spec locates the package without running its __init__ (which imports torch and changes its threads)
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError('speech detection needs silero-vad, which is not installed: pip install "silero-vad>=6.2.3"')
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.jit"
    if not path.is_file():
        raise ModelError(f"silero-vad is installed but {path} is missing: pip install --force-reinstall silero-vad")
    return path
