"""Model weights read into numpy without torch: a checkpoint in torch's legacy serialization
(the format of ``torch.save`` before torch 1.6, which resemblyzer's ``pretrained.pt`` uses), and
the tensors of a TorchScript archive (silero-vad's ``silero_vad.jit``).

Importing torch costs 1 to 2 s of a command's start; the speech detector and the resemblyzer
network need only their weights and a few matrix products (``voicebank/nets.py``). The legacy
readers unpickle with a closed list of classes (tensors, storages, ordered dicts, and for
TorchScript plain attribute holders in place of its modules): a file that asks for anything else
is refused, never run; TorchScript's code is never read.
"""

from __future__ import annotations

import collections
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

# torch/serialization.py: the legacy format's magic number and protocol version
_LEGACY_MAGIC, _LEGACY_PROTOCOL = 0x1950A86A20F9469CFC6C, 1001
_STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
             "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
             "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class CheckpointError(ValueError):
    """The file is not a checkpoint this module can read (damaged, or another format)."""


def read_torch_legacy(path: Path) -> Any:
    """The object a legacy ``torch.save`` file holds, with every tensor as a numpy array."""
    with open(path, "rb") as f:
        try:
            return _read_legacy(f)
        except CheckpointError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, struct.error) as exc:
            raise CheckpointError(f"{path} is not a readable torch checkpoint ({exc})") from exc


class _Tensor:
    """A tensor whose storage comes later in the file."""

    def __init__(self, storage: str, offset: int, size: tuple[int, ...], stride: tuple[int, ...]):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def _read_legacy(f: BinaryIO) -> Any:
    if pickle.load(f) != _LEGACY_MAGIC:  # plain ints: safe with any unpickler
        raise CheckpointError("not torch's legacy format (its magic number is missing)")
    if pickle.load(f) != _LEGACY_PROTOCOL:
        raise CheckpointError("a torch legacy format of another protocol version")
    info = pickle.load(f)
    if not isinstance(info, dict) or not info.get("little_endian", False):
        raise CheckpointError("a big-endian torch checkpoint")
    storages: dict[str, np.dtype] = {}
    tensors: list[_Tensor] = []
    obj = _Unpickler(f, storages, tensors).load()
    keys = _Unpickler(f, storages, tensors).load()
    data: dict[str, np.ndarray] = {}
    for key in keys:
        dtype = storages[key]
        (count,) = struct.unpack("<q", f.read(8))
        raw = f.read(count * dtype.itemsize)
        if count < 0 or len(raw) != count * dtype.itemsize:
            raise CheckpointError("the file ends inside a tensor's data")
        data[key] = np.frombuffer(raw, dtype=dtype)
    return _resolve(obj, _arrays(tensors, data))


def read_torchscript(path: Path) -> dict[str, np.ndarray]:
    """Every tensor attribute of a TorchScript archive's modules, by dotted path
    (``_model.encoder.0.reparam_conv.weight``); the scripted code is not read."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickled = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickled) != 1:
                raise CheckpointError(f"{path} is not a TorchScript archive (no data.pkl)")
            root = pickled[0][: -len("data.pkl")]
            order = archive.read(root + "byteorder").strip() if root + "byteorder" in names else b"little"
            if order != b"little":
                raise CheckpointError(f"{path} stores big-endian tensors")
            storages: dict[str, np.dtype] = {}
            tensors: list[_Tensor] = []
            with archive.open(pickled[0]) as f:
                obj = _Unpickler(f, storages, tensors).load()
            data = {key: np.frombuffer(archive.read(f"{root}data/{key}"), dtype=dtype) for key, dtype in storages.items()}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, KeyError, pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as exc:
        raise CheckpointError(f"{path} is not a readable TorchScript archive ({exc})") from exc
    out: dict[str, np.ndarray] = {}
    _flatten(_resolve(obj, _arrays(tensors, data)), "", out)
    return out


def _flatten(obj: Any, prefix: str, out: dict[str, np.ndarray]) -> None:
    if isinstance(obj, np.ndarray):
        out[prefix[:-1]] = obj
    elif isinstance(obj, _Module):
        for name, value in obj.__dict__.items():
            _flatten(value, f"{prefix}{name}.", out)


def _arrays(tensors: list[_Tensor], data: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    arrays = {}
    for tensor in tensors:
        flat = data[tensor.storage]
        end = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride)) + 1
        if tensor.offset < 0 or (all(tensor.size) and end > len(flat)):
            raise CheckpointError("a tensor reaches past its storage")
        view = np.lib.stride_tricks.as_strided(flat[tensor.offset :], tensor.size,
                                               tuple(s * flat.itemsize for s in tensor.stride))
        arrays[id(tensor)] = np.array(view)
    return arrays


def _resolve(obj: Any, arrays: dict[int, np.ndarray]) -> Any:
    if isinstance(obj, _Tensor):
        return arrays[id(obj)]
    if isinstance(obj, _Module):
        obj.__dict__.update({k: _resolve(v, arrays) for k, v in obj.__dict__.items()})
        return obj
    if isinstance(obj, dict):
        return type(obj)((k, _resolve(v, arrays)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v, arrays) for v in obj)
    return obj


class _Module:
    """A TorchScript module's attributes (its parameters, buffers and submodules), nothing else."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update({str(k): v for k, v in state.items()})


class _Unpickler(pickle.Unpickler):
    def __init__(self, f: BinaryIO, storages: dict[str, np.dtype], tensors: list[_Tensor]):
        super().__init__(f)
        self._storages, self._tensors = storages, tensors

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return self._tensor
        if module.startswith("__torch__.") and name.isidentifier():
            return _Module
        if module == "torch.jit._pickle" and name in ("build_intlist", "build_doublelist", "build_boollist"):
            return list
        if module == "torch" and name in _STORAGES:
            return np.dtype(_STORAGES[name])
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: not a tensor, storage or dict")

    def persistent_load(self, pid: Any) -> Any:
        kind, dtype, key, *rest = pid  # TorchScript: (.., location, size); legacy: (.., location, size, view)
        if kind != "storage" or not isinstance(dtype, np.dtype) or (len(rest) > 2 and rest[2] is not None):
            raise pickle.UnpicklingError(f"an unsupported stored object: {kind}")
        self._storages[str(key)] = dtype
        return str(key)

    def _tensor(self, storage: str, offset: int, size: Any, stride: Any, *_: Any) -> _Tensor:
        tensor = _Tensor(storage, offset, size, stride)
        self._tensors.append(tensor)
        return tensor
