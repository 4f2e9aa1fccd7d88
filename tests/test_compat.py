"""voicebank.compat: each reach into another package's private names still finds the name, and the
name still does what voicebank relies on. A failure here is an upstream change: read the function's
docstring (the version it was checked against), then adapt it or find a public way."""

from __future__ import annotations

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


def test_sndfile_error_says_what_the_last_read_hit():
    soundfile = pytest.importorskip("soundfile")
    import io

    out = io.BytesIO()
    soundfile.write(out, np.sin(np.arange(3 * SR) / 7).astype(np.float32), SR, format="FLAC")
    data = out.getvalue()
    with soundfile.SoundFile(io.BytesIO(data[: len(data) // 2])) as f:
        assert compat.sndfile_error(f) is None
        block = np.empty((3 * SR, 1), dtype=np.float32)
        assert 0 < compat.sndfile_read_float(f, block) < 3 * SR
        assert "lost sync" in compat.sndfile_error(f)


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


def test_the_compat_module_imports_nothing_heavy():
    """Importing it must not import what it reaches into (voicebank --help stays instant)."""
    import subprocess

    code = "import sys, voicebank.compat; print(sorted({'torch', 'soundfile', '_webrtcvad'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"
