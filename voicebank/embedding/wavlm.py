"""Any transformers ``*ForXVector`` checkpoint (default: microsoft/wavlm-base-plus-sv).

The model is loaded on first use, once, and then shared by every thread of the process.

WavLM x-vector models run through ``fast.FastXVector`` (SDPA attention, bf16 matmuls where the
device supports them, int8 linear layers on CPUs without bf16, batching of different lengths
that cannot change results); on the CPU, several utterances are spread over one single-threaded
worker per core (``parallel.py``). The fast path is checked at load against the model's own
forward pass (``fast.self_check``); a model it cannot read or reproduce (e.g. after a
transformers release it does not know) runs the reference path instead, with one warning. The
reference path (transformers' own forward, float32, only equal lengths batched) stays one switch
away: ``XVectorEmbedder(..., fast=False)`` or ``VOICEBANK_FAST=0``; ``precision=`` or
``VOICEBANK_PRECISION`` (``fp32``, ``bf16``, ``int8``) overrides the fast path's choice, which
is logged at load.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import runtime
from ..compat import cpu_has_bf16_dot
from ..errors import ModelError
from ..vectors import l2_normalize
from .base import group_by_length

log = logging.getLogger(__name__)

DEFAULT_MODEL = "microsoft/wavlm-base-plus-sv"
# Total audio samples per forward pass (2 minutes at 16 kHz): bounds activation memory.
MAX_BATCH_SAMPLES = 16_000 * 120
# The fast path's memory bounds, per device: padded samples per forward pass (per worker's forward
# pass, with CPU workers), samples per call of ``embed`` from callers with many recordings, encoder
# frames x rows per block of the convolutional encoder, and float32 attention-mask elements per
# block of query rows.
FAST_LIMITS = {
    "cpu": {"batch_samples": 16_000 * 60, "chunk_samples": 16_000 * 120, "worker_samples": 16_000 * 20,
            "frame_budget": 500, "mask_budget": 2**24},
    "cuda": {"batch_samples": 16_000 * 1200, "chunk_samples": 16_000 * 1200, "frame_budget": 16_384,
             "mask_budget": 2**30},
}
_OFF = ("0", "false", "no", "off")
_ON = ("1", "true", "yes", "on")
PRECISIONS = ("auto", "bf16", "fp32", "int8")


def resolve_device(device: str | None = None) -> str:
    """``cuda`` or ``cpu``: the given device, else ``VOICEBANK_DEVICE``, else CUDA when present."""
    device = device or os.environ.get("VOICEBANK_DEVICE") or "auto"
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def usable_device(device: str, torch: Any) -> str:
    """``device`` if this machine can run a model there, else a ModelError saying what to use.
    Asked before moving the model: torch's own refusal differs by build ("Torch not compiled
    with CUDA enabled", a driver error, or none at all until the first tensor op)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"the model was asked to run on {device!r} (--device or VOICEBANK_DEVICE), but this "
                         "machine has no CUDA GPU that torch can use: use --device cpu or auto.")
    return device


class XVectorEmbedder:
    """Speaker embeddings from a transformers x-vector model (feature extractor + ``*ForXVector``).

    ``source`` is a hub id or a local directory holding ``config.json``, the weights and
    ``preprocessor_config.json``. ``HF_HUB_OFFLINE=1`` is honoured by transformers itself.
    """

    def __init__(
        self,
        source: str = DEFAULT_MODEL,
        device: str | None = None,
        revision: str | None = None,
        fast: bool | None = None,
        precision: str | None = None,
    ):
        self.source = str(source)
        self.revision = revision
        self._device = device
        # the fast forward pass (default on); VOICEBANK_FAST=0 or fast=False keeps transformers' own
        switch = os.environ.get("VOICEBANK_FAST", "1").strip().lower()
        if fast is None and switch not in _OFF + _ON:
            from ..errors import InvalidInputError

            raise InvalidInputError(f"VOICEBANK_FAST={switch!r} is neither on ({', '.join(_ON)}) nor off "
                                    f"({', '.join(_OFF)}): set one of these, or unset it (on).")
        self.fast = fast if fast is not None else switch not in _OFF
        # "auto" (bf16 where the device computes it natively, else int8 linear layers on a CPU),
        # "bf16", "int8" (CPU) or "fp32"; the fast path only
        self.precision = (precision or os.environ.get("VOICEBANK_PRECISION") or "auto").strip().lower()
        if self.precision not in PRECISIONS:
            from ..errors import InvalidInputError

            raise InvalidInputError(f"precision {self.precision!r} (VOICEBANK_PRECISION or precision=) is not one of "
                                    f"{', '.join(PRECISIONS)}: set one of these, or unset it for auto.")
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
        """Where the model runs (or will): known without loading it."""
        return self._loaded[2] if self._loaded is not None else resolve_device(self._device)

    @property
    def chunk_seconds(self) -> float:
        """Audio per call of ``embed`` that keeps this device busy (callers with many recordings
        gather about this much before calling): the fast path's batch on a GPU, a few on a CPU."""
        kind = "cuda" if resolve_device(self._device).startswith("cuda") else "cpu"
        return FAST_LIMITS[kind]["chunk_samples"] / 16_000

    @property
    def compute_dtype(self) -> str:
        """``bfloat16``, ``int8`` or ``float32``: the precision of the forward pass's matmuls
        (``int8``: the transformer's linear layers; see ``fast.FastXVector``)."""
        runner = self._load()[0]
        return str(getattr(runner, "dtype", "torch.float32")).replace("torch.", "")

    def embed(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """(n, dimension) float32 L2-normalized embeddings of mono waveforms at ``sample_rate``.

        Fast path: waveforms of similar lengths are padded into batches, which cannot change a
        result (see ``fast.FastXVector``). Reference path: waveforms are batched only with others
        of exactly the same length, so that no padding reaches the convolutional encoder's
        GroupNorm. Either way each result equals the one-at-a-time result.
        """
        from .fast import FastXVector

        runner, extractor, device, _ = self._load()
        if isinstance(runner, FastXVector):
            return self._embed_fast(runner, extractor, device, waveforms)
        return self._embed_reference(runner, extractor, device, waveforms)

    def _embed_fast(self, runner: Any, extractor: Any, device: str, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        from .fast import pad_batch, plan_batches
        from .parallel import workers

        out = np.zeros((len(waveforms), self.dimension), dtype=np.float32)
        normalize = bool(getattr(extractor, "do_normalize", False))
        kind = "cuda" if device.startswith("cuda") else "cpu"
        lengths = [len(w) for w in waveforms]
        batches = plan_batches(lengths, FAST_LIMITS[kind]["batch_samples"])
        pool = None
        if kind == "cpu" and len(waveforms) > 1:
            # several utterances on the CPU: one worker per core, each single-threaded (parallel.py)
            pool = workers(min(torch.get_num_threads(), runtime.usable_cores()))
            if pool is not None:
                batches = plan_batches(lengths, FAST_LIMITS[kind]["worker_samples"])

        def run(batch: list[int]) -> np.ndarray:
            values, mask = pad_batch([waveforms[i] for i in batch], device, normalize)
            with torch.inference_mode():
                embeddings = runner(input_values=values, attention_mask=mask)
            return l2_normalize(embeddings.float().cpu().numpy())

        if pool is None or len(batches) < 2:
            for batch in batches:
                out[batch] = run(batch)
            return out
        runner.prepare()
        futures = [(batch, pool.submit(run, batch)) for batch in batches]  # longest first
        for batch, future in futures:
            out[batch] = future.result()
        return out

    def _embed_reference(self, model: Any, extractor: Any, device: str, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        out = np.zeros((len(waveforms), self.dimension), dtype=np.float32)
        for batch in group_by_length(waveforms, MAX_BATCH_SAMPLES):
            inputs = extractor(
                [np.asarray(waveforms[i], dtype=np.float32) for i in batch],
                sampling_rate=extractor.sampling_rate,
                return_tensors="pt",
                padding=True,
            )
            inputs = {k: v.to(device) for k, v in inputs.items() if k in ("input_values", "attention_mask")}
            # transformers' WavLM attention passes a float mask beside a bool one; torch warns on every call
            with torch.inference_mode(), runtime.quietly("Support for mismatched key_padding_mask", UserWarning):
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

        from . import fast

        runtime.transformers_loaded(sys.modules["transformers"])  # progress bars: only if configure() was called

        refuse_unusable_directory(self.source)
        local = Path(self.source).expanduser()
        where = str(local) if local.is_dir() else self.source
        device = usable_device(resolve_device(self._device), torch)

        def load(**options: Any) -> tuple[Any, Any, dict]:
            extractor = AutoFeatureExtractor.from_pretrained(where, revision=self.revision, **options)
            model, info = AutoModelForAudioXVector.from_pretrained(
                where, revision=self.revision, output_loading_info=True, **options
            )
            return extractor, model, info

        try:
            if local.is_dir():
                extractor, model, info = load()
            else:
                try:  # already in the local cache: no network at all
                    extractor, model, info = load(local_files_only=True)
                except OSError:
                    _hub_reachable_or_fail(self.source)  # seconds, not minutes of retries
                    extractor, model, info = load()
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
        runner = model
        if device == "cpu":
            runtime.torch_loaded(torch)  # threads to the usable cores: only if configure() was called
        path = "reference path (transformers' forward, float32)"
        if self.fast and fast.supports(model):
            dtype, why = compute_precision(self.precision, device, torch)
            runner = _fast_or_reference(model, dtype, device)
            if runner is not model:
                path = f"fast path, {str(runner.dtype).replace('torch.', '')} matmuls ({why})"
        log.info("loaded %s (%s) on %s, %s", self.source, model_id, device, path)
        return runner, extractor, device, model_id


# The fast path's load-time check: cosine against transformers' forward on a short fixed input.
SELF_CHECK_COSINE = 0.999


def _fast_or_reference(model: Any, dtype: Any, device: str) -> Any:
    """``fast.FastXVector`` over ``model``, or ``model`` itself (transformers' forward pass) with
    one warning saying why, when the fast path cannot read the model (e.g. an attribute renamed
    by a transformers release) or its self-check disagrees with the model's own forward pass.
    int8 linear layers that miss the check give way to the fast path in float32 (one warning)."""
    import torch

    from . import fast

    limits = FAST_LIMITS["cuda" if device.startswith("cuda") else "cpu"]
    reasons = []
    for candidate in [dtype] + ([torch.float32] if dtype == fast.INT8 else []):
        try:
            runner = fast.FastXVector(model, candidate, frame_budget=limits["frame_budget"], mask_budget=limits["mask_budget"])
            cosine = fast.self_check(runner)
        except Exception as exc:  # noqa: BLE001 - any failure of an optional speed-up means: do without it
            reasons.append(f"it cannot run this model ({type(exc).__name__}: {_first_line(exc)})")
            break  # another precision reads the same attributes: no use trying it
        name = str(candidate).replace("torch.", "")
        if cosine >= SELF_CHECK_COSINE:
            log.debug("fast path (%s) self-check: cosine %.6f against transformers' forward", name, cosine)
            if reasons:
                log.warning("the fast WavLM path runs in float32: with int8 linear layers %s.", reasons[0])
            return runner
        reasons.append(f"its self-check against transformers' forward gave cosine {cosine:.6f} < {SELF_CHECK_COSINE}")
    log.warning("the fast WavLM path is off: %s. Embedding with transformers' own forward pass instead "
                "(same results, slower). Check the transformers version against voicebank's pin.", reasons[-1])
    return model


_XVECTOR_HEAD = ("projector", "tdnn", "feature_extractor")


def compute_precision(precision: str, device: str, torch: Any) -> tuple[Any, str]:
    """The fast path's matmul precision and why: as asked, or under "auto" bf16 where the device
    computes it natively, else on a CPU int8 linear layers where torch runs them, else float32."""
    from .fast_attention import INT8, int8_supported

    if precision != "auto":
        chosen = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": INT8}[precision]
        return chosen, f"asked for: precision {precision}"
    if device.startswith("cuda"):
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "this GPU computes bf16"
        return torch.float32, "this GPU has no bf16"
    if cpu_has_native_bf16(torch):
        return torch.bfloat16, "this CPU has AVX512-BF16 or AMX"
    if int8_supported():
        return INT8, "this CPU has no native bf16; int8 linear layers instead"
    return torch.float32, "this CPU has no native bf16, and this torch no int8 linear layers"


def cpu_has_native_bf16(torch: Any) -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX), so that oneDNN's
    bf16 matmuls are faster than float32 rather than emulated."""
    return cpu_has_bf16_dot(torch)


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


def _hub_reachable_or_fail(source: str, timeout: float = 3.0) -> None:
    """A :class:`ModelError` at once when the hub cannot be reached: transformers would otherwise
    retry for over a minute, logging each try, before the same conclusion."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise ModelError(f"{source} is not in the local model cache and HF_HUB_OFFLINE is set. " + _how_to_get_it())
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ModelError(f"cannot reach the Hugging Face hub ({host}: {exc.strerror or exc}) to download {source}, "
                         "and it is not in the local model cache. " + _how_to_get_it()) from exc


def refuse_unusable_directory(source: str) -> None:
    """A ModelError when ``source`` names a local directory (a path starting with ``.``, ``/`` or
    ``~``, or one that exists) that is missing or holds no ``config.json``. A hub id passes. Asked
    before torch and transformers are imported, which takes seconds, tens of them on a busy machine."""
    local = Path(source).expanduser()
    try:
        if not local.is_dir():
            if source.startswith((".", "/", "~")):
                what = "is a file, not a directory" if local.exists() else "does not exist"
                raise ModelError(f"the model directory {source} {what}. " + _how_to_get_it())
            return
        holds_config = (local / "config.json").is_file()
    except OSError as exc:  # a name over 255 bytes, a folder this user may not enter
        raise ModelError(f"the model directory {source} cannot be read ({exc.strerror or exc}). "
                         + _how_to_get_it()) from exc
    if not holds_config:
        raise ModelError(f"the model directory {source} holds no config.json: it is not a transformers model. "
                         + _how_to_get_it())


def _how_to_get_it() -> str:
    return (
        "Either let this machine reach the Hugging Face hub (and leave HF_HUB_OFFLINE unset), or "
        f"download the model once elsewhere (`hf download {DEFAULT_MODEL} --local-dir ./wavlm-base-plus-sv`), "
        "copy the directory here and pass it with --model ./wavlm-base-plus-sv or VOICEBANK_MODEL; or use the "
        "offline backend whose weights ship with it: --model resemblyzer (pip install 'voicebank[resemblyzer]')."
    )
