"""Any transformers ``*ForXVector`` checkpoint (default: microsoft/wavlm-base-plus-sv).

The model is loaded on first use, once, and then shared by every thread of the process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ModelError
from ..vectors import l2_normalize
from .base import group_by_length

log = logging.getLogger(__name__)

DEFAULT_MODEL = "microsoft/wavlm-base-plus-sv"
# Total audio samples per forward pass (2 minutes at 16 kHz): bounds activation memory.
MAX_BATCH_SAMPLES = 16_000 * 120


def resolve_device(device: str | None = None) -> str:
    """``cuda`` or ``cpu``: the given device, else ``VOICEBANK_DEVICE``, else CUDA when present."""
    device = device or os.environ.get("VOICEBANK_DEVICE") or "auto"
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class XVectorEmbedder:
    """Speaker embeddings from a transformers x-vector model (feature extractor + ``*ForXVector``).

    ``source`` is a hub id or a local directory holding ``config.json``, the weights and
    ``preprocessor_config.json``. ``HF_HUB_OFFLINE=1`` is honoured by transformers itself.
    """

    def __init__(self, source: str = DEFAULT_MODEL, device: str | None = None, revision: str | None = None):
        self.source = str(source)
        self.revision = revision
        self._device = device
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any, str, str] | None = None

    # -- the Embedder surface ------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self._load()[3]

    @property
    def sample_rate(self) -> int:
        if self._loaded is None and self.source == DEFAULT_MODEL:
            return 16_000  # known without loading; keeps decoding off the model's critical path
        return int(self._load()[1].sampling_rate)

    @property
    def dimension(self) -> int:
        return int(self._load()[0].config.xvector_output_dim)

    @property
    def device(self) -> str:
        return self._load()[2]

    def embed(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """(n, dimension) float32 L2-normalized embeddings of mono waveforms at ``sample_rate``.

        Waveforms are batched only with others of exactly the same length, so that no padding
        reaches the convolutional encoder's GroupNorm: each result equals the one-at-a-time result.
        """
        import torch

        model, extractor, device, _ = self._load()
        out = np.zeros((len(waveforms), self.dimension), dtype=np.float32)
        for batch in group_by_length(waveforms, MAX_BATCH_SAMPLES):
            inputs = extractor(
                [np.asarray(waveforms[i], dtype=np.float32) for i in batch],
                sampling_rate=extractor.sampling_rate,
                return_tensors="pt",
                padding=True,
            )
            inputs = {k: v.to(device) for k, v in inputs.items() if k in ("input_values", "attention_mask")}
            with torch.inference_mode():
                embeddings = model(**inputs).embeddings
            out[batch] = l2_normalize(embeddings.float().cpu().numpy())
        return out

    # -- loading -------------------------------------------------------------------------------
    def _load(self) -> tuple[Any, Any, str, str]:
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = self._load_now()
        return self._loaded

    def _load_now(self) -> tuple[Any, Any, str, str]:
        import torch
        from transformers import AutoFeatureExtractor, AutoModelForAudioXVector
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the library never prints; the CLI owns the terminal
        # transformers' WavLM attention passes a float mask beside a bool one; torch warns on every call.
        warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask", category=UserWarning)

        local = Path(self.source).expanduser()
        if not local.is_dir() and self.source.startswith((".", "/", "~")):
            raise ModelError(f"the model directory {self.source} does not exist. " + _how_to_get_it())
        where = str(local) if local.is_dir() else self.source
        device = resolve_device(self._device)
        try:
            extractor = AutoFeatureExtractor.from_pretrained(where, revision=self.revision)
            model, info = AutoModelForAudioXVector.from_pretrained(
                where, revision=self.revision, output_loading_info=True
            )
        except ValueError as exc:
            raise ModelError(f"{self.source} is not a speaker (x-vector) model: {_first_line(exc)}") from exc
        except OSError as exc:
            raise ModelError(f"cannot load the speaker model {self.source} ({_first_line(exc).rstrip('.')}). " + _how_to_get_it()) from exc
        # A checkpoint of the bare encoder (e.g. WavLMModel) loads "successfully" with a random x-vector head.
        head = sorted(k for k in info.get("missing_keys", ()) if k.split(".")[0] in _XVECTOR_HEAD)
        if head:
            raise ModelError(
                f"{self.source} is not a speaker (x-vector) model: it has no weights for {', '.join(head[:3])}"
                f"{', ...' if len(head) > 3 else ''}. Give a *ForXVector checkpoint such as {DEFAULT_MODEL}."
            )
        try:
            model.eval().to(device)
        except (RuntimeError, AssertionError) as exc:  # e.g. VOICEBANK_DEVICE=cuda on a machine without CUDA
            raise ModelError(f"cannot run the model on {device!r}: {_first_line(exc)}. Use --device cpu or auto.") from exc
        model_id = f"{model.config.model_type}-xvector:{_fingerprint(model, torch)}"
        log.info("loaded %s (%s) on %s", self.source, model_id, device)
        return model, extractor, device, model_id


_XVECTOR_HEAD = ("projector", "tdnn", "feature_extractor")


def _fingerprint(model: Any, torch: Any) -> str:
    """A content hash of the weights (names, shapes and a strided sample of every tensor).

    It tells checkpoints apart whatever path or hub id they were loaded from, and costs
    milliseconds rather than hashing every byte.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 256)][:256].to("cpu", torch.float32).numpy()
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        digest.update(np.round(sample, 6).tobytes())
    return digest.hexdigest()[:16]


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _how_to_get_it() -> str:
    return (
        "Either let this machine reach the Hugging Face hub (and leave HF_HUB_OFFLINE unset), or "
        f"download the model once elsewhere (`hf download {DEFAULT_MODEL} --local-dir ./wavlm-base-plus-sv`), "
        "copy the directory here and pass it with --model ./wavlm-base-plus-sv or VOICEBANK_MODEL."
    )
