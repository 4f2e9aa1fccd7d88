"""voicebank.checkpoint reads torch's files without torch: what it returns is what torch saved,
and a file that asks the unpickler for anything but tensors, storages and dicts is refused
without running it. torch writes the files here (it is a dependency); the reader never imports it."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
from conftest import REPO

from voicebank import checkpoint

torch = pytest.importorskip("torch")


def test_a_legacy_checkpoint_reads_as_torch_saved_it(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    saved = {
        "step": 7,
        "model_state": OrderedDict(weight=base, transposed=base.t(), row=base[2], ints=torch.tensor([1, -2], dtype=torch.int64)),
        "history": [torch.ones(3, dtype=torch.float64), (torch.zeros(0), "label")],
    }
    path = tmp_path / "legacy.pt"
    torch.save(saved, path, _use_new_zipfile_serialization=False)
    got = checkpoint.read_torch_legacy(path)
    assert got["step"] == 7 and isinstance(got["model_state"], OrderedDict)
    for name, tensor in saved["model_state"].items():  # views of one storage: offsets and strides kept
        np.testing.assert_array_equal(got["model_state"][name], tensor.numpy())
        assert got["model_state"][name].dtype == tensor.numpy().dtype
    np.testing.assert_array_equal(got["history"][0], np.ones(3))
    assert got["history"][1][0].shape == (0,) and got["history"][1][1] == "label"


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_a_torchscript_archive_reads_as_its_parameters_and_buffers(tmp_path):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(3, 4, 3)
            self.inner = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(4, 2))
            self.register_buffer("basis", torch.randn(5, 1, 2))

        def forward(self, x):
            return self.inner(self.conv(x).mean(-1)) + self.basis.sum()

    module = torch.jit.script(Net().eval())
    path = tmp_path / "net.jit"
    module.save(str(path))
    got = checkpoint.read_torchscript(path)
    expected = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    assert set(got) == set(expected) and len(got) == 5
    for name, tensor in expected.items():
        np.testing.assert_array_equal(got[name], tensor.detach().numpy())


class _Boom:
    def __reduce__(self):
        return (open, (str(self.target), "w"))  # creates a file if it is ever called


def _legacy_with(tmp_path, payload) -> bytes:
    out = io.BytesIO()
    for head in (checkpoint._LEGACY_MAGIC, checkpoint._LEGACY_PROTOCOL, {"little_endian": True}):
        pickle.dump(head, out, protocol=2)
    pickle.dump(payload, out, protocol=2)
    pickle.dump([], out, protocol=2)
    return out.getvalue()


def test_a_checkpoint_that_asks_for_other_code_is_refused_and_never_runs_it(tmp_path):
    boom = _Boom()
    boom.target = tmp_path / "ran"
    path = tmp_path / "hostile.pt"
    path.write_bytes(_legacy_with(tmp_path, {"model_state": boom}))
    with pytest.raises(checkpoint.CheckpointError, match="refused to load .*open"):
        checkpoint.read_torch_legacy(path)
    assert not boom.target.exists()


@pytest.mark.parametrize("damage", ["truncated", "not a checkpoint", "zip format"])
def test_a_damaged_or_foreign_file_is_a_checkpoint_error(tmp_path, damage):
    path = tmp_path / "model.pt"
    if damage == "zip format":
        torch.save({"w": torch.ones(2)}, path)  # torch's current format is a zip, not the legacy one
    else:
        torch.save({"w": torch.ones(1000)}, path, _use_new_zipfile_serialization=False)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 100] if damage == "truncated" else b"\x80\x02K\x05." + data[20:])
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.read_torch_legacy(path)
    if damage != "zip format":  # (a zip of torch's is a TorchScript archive's layout: read, it holds no module)
        with pytest.raises(checkpoint.CheckpointError):
            checkpoint.read_torchscript(path)


def test_reading_imports_no_torch():
    code = ("import sys\nfrom voicebank import checkpoint, nets, vad\nimport numpy as np\n"
            "vad.speech_probabilities(np.zeros(16000, np.float32), 16000)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
