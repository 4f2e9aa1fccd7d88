"""Every reach into another package's private names, one function each, in one place.

Each was checked against the upstream version its docstring names, and tests/test_compat.py fails
when the name disappears or stops doing what it did then: that is where an upgrade shows it. No
other module of voicebank uses a private name of another package (tests/test_architecture.py).

This module imports nothing of voicebank, so any layer may import it; and nothing heavy at import
time: each function imports what it reaches into.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


def sndfile_read_float(sound_file: Any, block: np.ndarray) -> int:
    """Read up to ``len(block)`` frames of ``sound_file`` (an open ``soundfile.SoundFile``) into
    ``block`` ((frames, channels) float32, C-contiguous) with libsndfile's own ``sf_readf_float``;
    returns how many frames were read, 0 at the end.

    soundfile's own reads first ask libsndfile where they are, which a file whose length is unknown
    (a streamed FLAC) or that cannot seek (GSM 6.10 in WAV) cannot answer. Reaches
    ``soundfile._snd``, ``soundfile._ffi`` and ``SoundFile._file``; checked against soundfile 0.14.0.
    """
    from soundfile import _ffi, _snd

    return int(_snd.sf_readf_float(sound_file._file, _ffi.cast("float *", block.ctypes.data), len(block)))


def sndfile_error(sound_file: Any) -> str | None:
    """What libsndfile says went wrong in the last call on ``sound_file`` (an open
    ``soundfile.SoundFile``), e.g. "flac decoder lost sync."; None when nothing did.

    ``sf_readf_float`` returns what it decoded before a fault and sets the error only until the
    next call, so it is asked after each read. Reaches ``soundfile._snd``, ``soundfile._ffi`` and
    ``SoundFile._file``; checked against soundfile 0.14.0.
    """
    from soundfile import _ffi, _snd

    if _snd.sf_error(sound_file._file) == 0:
        return None
    return _ffi.string(_snd.sf_strerror(sound_file._file)).decode("utf-8", "replace")


def webrtcvad_speech(mode: int, rate: int) -> Callable[[bytes], bool] | None:
    """``webrtcvad.Vad(mode).is_speech(pcm, rate)`` (10, 20 or 30 ms of 16-bit mono PCM) through the
    package's C extension ``_webrtcvad``, or None where the extension is not there.

    The public module imports pkg_resources for its version string: 0.1 to 0.4 s of a command's
    start, and a deprecation warning. Checked against webrtcvad 2.0.10.
    """
    try:
        import _webrtcvad
    except ImportError:
        return None
    vad = _webrtcvad.create()
    _webrtcvad.init(vad)
    _webrtcvad.set_mode(vad, mode)
    return lambda pcm: bool(_webrtcvad.process(vad, rate, pcm, len(pcm) // 2))


def cpu_has_bf16_dot(torch: Any) -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX tiles), as torch sees
    them (``torch.cpu._is_avx512_bf16_supported``, ``torch.cpu._is_amx_tile_supported``); False
    where this torch cannot say. Checked against torch 2.13.0."""
    cpu = getattr(torch, "cpu", None)
    try:
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def warnings_filters_changed() -> None:
    """What ``warnings.filterwarnings`` calls after editing ``warnings.filters``: forget which
    warnings were already shown, so an edited list applies to them too. ``warnings._filters_mutated``,
    or ``_filters_mutated_lock_held`` where a newer Python has only that; checked against Python 3.11.7."""
    changed = getattr(warnings, "_filters_mutated", None) or getattr(warnings, "_filters_mutated_lock_held", None)
    if changed is not None:
        changed()
