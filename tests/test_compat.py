"""voicebank.compat: each reach into another package's private names still finds the name, and the
name still does what voicebank relies on. A failure here is an upstream change: read the function's
docstring (the version it was checked against), then adapt it or find a public way."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from voicebank import compat

SR = 16_000


def test_sndfile_read_float_reads_what_soundfile_reads(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    rng = np.random.default_rng(0)
    written = (0.5 * rng.standard_normal((1_000, 2))).astype(np.float32)
    path = tmp_path / "two-channels.wav"
    soundfile.write(path, written, SR, subtype="FLOAT")
    expected, _ = soundfile.read(path, dtype="float32", always_2d=True)
    got, counts = [], []
    with soundfile.SoundFile(path) as f:
        while True:
            block = np.full((300, f.channels), np.nan, dtype=np.float32)
            count = compat.sndfile_read_float(f, block)
            counts.append(count)
            if count == 0:
                break
            got.append(block[:count])
    assert counts == [300, 300, 300, 100, 0]  # frames, not samples; 0 at the end
    np.testing.assert_array_equal(np.concatenate(got), expected)


def _frames() -> list[bytes]:
    """30 ms frames of 16-bit PCM at 16 kHz: silence, then a voiced buzz, then silence again."""
    t = np.arange(SR) / SR
    buzz = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 20)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    wave = np.concatenate([np.zeros(SR // 2), 0.3 * buzz, np.zeros(SR // 2)])
    pcm = np.round(wave * 32767).astype(np.int16)
    return [pcm[i : i + 480].tobytes() for i in range(0, len(pcm) - 479, 480)]


def test_webrtcvad_speech_decides_as_the_public_vad():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        webrtcvad = pytest.importorskip("webrtcvad")
    through_extension = compat.webrtcvad_speech(3, SR)
    assert through_extension is not None, "webrtcvad is installed but its C extension _webrtcvad is not there"
    public = webrtcvad.Vad(3)
    frames = _frames()
    expected = [public.is_speech(frame, SR) for frame in frames]
    assert True in expected and False in expected  # the comparison below can tell them apart
    assert [through_extension(frame) for frame in frames] == expected


def test_cpu_has_bf16_dot_says_what_the_cpu_has():
    torch = pytest.importorskip("torch")
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        assert isinstance(getattr(torch.cpu, name)(), bool), f"torch.cpu.{name}() is gone or changed"
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file() or "flags" not in cpuinfo.read_text():
        pytest.skip("no /proc/cpuinfo flags to compare with")
    flags = set(next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split())
    if not flags & {"avx512f", "avx2", "sse2"}:
        pytest.skip("not an x86 CPU: torch's checks are x86 ones")
    assert compat.cpu_has_bf16_dot(torch) == bool(flags & {"avx512_bf16", "amx_tile"})


def _warn() -> None:
    warnings.warn("compat test: shown once per place until the filters change", UserWarning)


def test_warnings_filters_changed_forgets_what_was_shown():
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")  # once per place, remembered in the module's registry
        _warn()
        _warn()
        assert len(shown) == 1
        compat.warnings_filters_changed()
        _warn()
        assert len(shown) == 2  # forgotten: shown again
        _warn()
        assert len(shown) == 2  # and remembered again


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_silero_network_is_the_16khz_network_the_scripted_model_runs():
    torch = pytest.importorskip("torch")
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("silero-vad is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.jit"
    scripted = torch.jit.load(str(path), map_location="cpu").eval()
    network = compat.silero_network(scripted)
    for part in (network.stft, network.encoder, network.decoder.rnn.weight_ih, network.decoder.decoder):
        assert part is not None  # what voicebank.vad runs, part by part
    t = np.arange(6 * 512) / SR
    wave = (0.3 * np.sin(2 * np.pi * 150 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32)
    context = int(network.context_size_samples)
    with torch.inference_mode():
        scripted.reset_states()
        expected = [float(scripted(torch.from_numpy(wave[i : i + 512])[None], SR)) for i in range(0, len(wave), 512)]
        before, state, got = torch.zeros(1, context), torch.zeros(2, 1, 128), []
        for i in range(0, len(wave), 512):
            x = torch.cat([before, torch.from_numpy(wave[i : i + 512])[None]], dim=1)
            out, state = network(x, state)
            before = x[:, -context:]
            got.append(float(out))
    assert max(expected) - min(expected) > 0.1  # it hears something change, so the match means something
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_the_compat_module_imports_nothing_heavy():
    """Importing it must not import what it reaches into (voicebank --help stays instant)."""
    import subprocess

    code = "import sys, voicebank.compat; print(sorted({'torch', 'soundfile', '_webrtcvad'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"
