"""Shared fixtures. Nothing here reaches the network: the hub is switched off before transformers
is imported, and the WavLM model is a tiny random-weight one built and saved per session."""

from __future__ import annotations

import contextlib
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.pop("VOICEBANK_DB", None)
os.environ.pop("VOICEBANK_MODEL", None)

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SPEECH = REPO.parent / "shared" / "data" / "speech"
SR = 16_000


# Formants F1-F3 of ten English vowels (Peterson & Barney 1952, men's means), in Hz: the
# targets the synthetic syllables move between.
VOWELS = np.array([
    [270, 2290, 3010], [390, 1990, 2550], [530, 1840, 2480], [660, 1720, 2410], [730, 1090, 2440],
    [570, 840, 2410], [440, 1020, 2240], [300, 870, 2240], [640, 1190, 2390], [490, 1350, 1690],
], dtype=float)
FORMANT_BANDWIDTHS = np.array([70.0, 100.0, 140.0, 220.0])  # Hz, F1-F4, at f0 = 120 Hz
FORMANT_GAINS = 10 ** (np.array([0.0, -3.0, -8.0, -10.0]) / 20)


def synth_voice(f0: float, seconds: float = 3.0, seed: int = 0, sr: int = SR) -> np.ndarray:
    """Synthetic speech that silero-vad hears as speech: a source-filter (formant) synthesizer.

    Syllables of 140-240 ms, each a consonant onset (a fricative hiss, a stop's closure and burst,
    or a voiced sonorant) then a vowel whose four formants glide from the previous vowel's. The
    voice is a glottal pulse train around ``f0`` Hz with declination, an accent per syllable, 3%
    jitter and 6% shimmer; each pulse rings the formants of its moment (FOF synthesis), and a
    one-pole filter gives the source its natural spectral tilt. Higher voices get a shorter vocal
    tract (formants scaled by ``(f0 / 120) ** 0.15``), wider formants, and F1 above the pitch.
    Peak 0.3, over a faint noise floor. ``f0`` and ``seed`` make the "speaker"; different seeds
    give different "utterances".

    silero-vad marks 97.5% of the frames of these as speech: of 480 voices of 2.5 s from 90 to
    420 Hz, 1 had less than 90% heard, 88.6% (tests/test_vad.py checks a sample). Its recurrent
    state starts cold: each utterance opens on a fricative and the vowel of "sit", without which
    the first second of some voices went unheard. The consonants' noise is kept faint: it is alike
    in every voice, and louder it made the tiny random WavLM's embeddings of different speakers
    alike too (the `voices` below came within 2e-6 of TINY_THRESHOLD; now 0.99933 at most, and
    0.99992 at least between one speaker's takes).
    """
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    if n == 0:
        return np.zeros(0, np.float32)
    t = np.arange(n) / sr
    bounds = np.cumsum(np.concatenate([[0.0], rng.uniform(0.14, 0.24, int(seconds / 0.14) + 2)]))
    count = int(np.searchsorted(bounds, seconds)) + 1  # syllables that start before the end
    bounds = bounds[: count + 1]
    tract = (f0 / 120.0) ** 0.15
    targets = VOWELS[rng.integers(0, len(VOWELS), count)] * tract
    targets[0] = VOWELS[1] * tract  # every utterance opens on "sih-" (see the docstring)
    syl = np.minimum(np.searchsorted(bounds, t, side="right") - 1, count - 1)
    pos = (t - bounds[syl]) / (bounds[syl + 1] - bounds[syl])  # 0 -> 1 through each syllable
    glide = np.clip(pos / 0.4, 0, 1)[:, None]
    glide = glide * glide * (3 - 2 * glide)
    formants = np.vstack([targets[:1], targets[:-1]])[syl] * (1 - glide) + targets[syl] * glide
    accent = rng.uniform(-0.08, 0.12, count)
    pitch = f0 * (1.08 - 0.16 * t / seconds) * (1 + accent[syl] * np.sin(np.pi * pos))
    pitch *= 1 + 0.02 * np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 6))
    jitter = 1 + 0.03 * rng.standard_normal(int(seconds * pitch.max() * 1.2) + 8)
    pulses, at = [], rng.uniform(0, 1 / f0)
    while at < seconds:
        pulses.append(int(at * sr))
        at += jitter[len(pulses) % len(jitter)] / pitch[min(int(at * sr), n - 1)]
    k = np.minimum(np.array(pulses), n - 1)
    onset = rng.uniform(0.18, 0.32, count)  # share of the syllable taken by its consonant
    kind = rng.integers(0, 3, count)  # 0 fricative, 1 stop, 2 sonorant (voiced throughout)
    kind[0] = 0  # the "s" of "sih-"
    voicing = np.clip((pos - onset[syl]) / 0.12, 0, 1) * np.clip((1 - pos) / 0.15, 0, 1)
    voicing = np.where(kind[syl] == 2, np.maximum(voicing, 0.35), voicing)
    amplitude = voicing[k] * (1 + 0.06 * rng.standard_normal(len(k)))
    freqs = np.concatenate([formants[k], np.full((len(k), 1), 3500 * tract)], axis=1)
    freqs[:, 0] = np.maximum(freqs[:, 0], 1.2 * pitch[k])
    freqs[:, 1] = np.maximum(freqs[:, 1], freqs[:, 0] + 300)
    ring = np.arange(int(0.025 * sr)) / sr
    decay = np.exp(-np.pi * np.outer(FORMANT_BANDWIDTHS * f0 / 120.0, ring)) * FORMANT_GAINS[:, None]
    wave = np.zeros(n + len(ring))
    for first in range(0, len(k), 2048):  # pulses in blocks: memory stays small for long voices
        block = slice(first, first + 2048)
        grains = sum(decay[i] * np.sin(2 * np.pi * np.outer(freqs[block, i], ring)) for i in range(4))
        grains *= (1 - np.exp(-ring / 0.0008)) * amplitude[block, None]
        wave += np.bincount((k[block, None] + np.arange(len(ring))).ravel(), grains.ravel(), len(wave))
    wave = lfilter([1.0], [1.0, -0.95], wave[:n])
    wave /= np.max(np.abs(wave)) + 1e-12
    noise = rng.standard_normal(n)
    hiss = (kind[syl] == 0) & (pos < onset[syl])
    wave += 0.05 * hiss * np.sin(np.pi * np.clip(pos / onset[syl], 0, 1)) * np.diff(noise, prepend=0.0)
    burst = (kind[syl] == 1) & (pos > 0.6 * onset[syl]) & (pos < onset[syl])
    wave += 0.1 * burst * noise * np.exp(-30 * np.maximum(pos - 0.6 * onset[syl], 0))
    wave = 0.3 * wave / np.max(np.abs(wave))
    return (wave + 0.003 * rng.standard_normal(n)).astype(np.float32)


def take(base: np.ndarray, seed: int) -> np.ndarray:
    """Another "recording" of the same voice: ``base`` with its own faint noise and a gain change.

    A random-weight model cannot tell real voices apart, but it maps near-identical signals to
    near-identical embeddings, so these act as one speaker's recordings in pipeline tests.
    """
    rng = np.random.default_rng(1000 + seed)
    return (base * rng.uniform(0.8, 1.0) + 0.002 * rng.standard_normal(base.size)).astype(np.float32)


def build_tiny_wavlm(directory: Path, seed: int = 0) -> Path:
    """Save a random-weight WavLMForXVector and its feature extractor, as a hub checkpoint would be."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    torch.manual_seed(seed)
    config = WavLMConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        tdnn_dim=(32, 32, 32, 32, 64), xvector_output_dim=24, use_weighted_layer_sum=True,
    )
    WavLMForXVector(config).eval().save_pretrained(directory)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=False, return_attention_mask=True
    ).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_wavlm(tmp_path_factory.mktemp("tiny-wavlm"))


@pytest.fixture(scope="session")
def other_tiny_model(tmp_path_factory) -> Path:
    """Same architecture, other weights: a different model as far as a bank is concerned."""
    return build_tiny_wavlm(tmp_path_factory.mktemp("tiny-wavlm-other"), seed=1)


# -- a fake speaker model, for the tests that are not about the model ----------------------------
FAKE_PREFIX = "fake-embedder:"
FAKE_MODEL = FAKE_PREFIX + "0"
OTHER_FAKE_MODEL = FAKE_PREFIX + "1"


class FakeEmbedder:
    """A stand-in for a speaker model: numpy only, a millisecond per recording, no weights to load.

    The embedding is the long-term spectrum of a recording's loud frames (the mean power spectrum of
    32 ms frames within 13 dB of the loudest, averaged into log-spaced bands), in dB less its mean
    (so a gain change is invisible), projected by a fixed random matrix to ``dimension`` and
    L2-normalized. Its 31 Hz resolution sees the harmonics of the pitch and the formants, which is
    what makes the `voices` below speakers: one voice's takes score at least 0.99996 against each
    other, different voices at most 0.939 (so TINY_THRESHOLD separates them for both models).
    Each recording is embedded alone, so batching cannot change a result. ``seed`` picks the
    projection: another seed is another model (another ``model_id``), like other weights.
    """

    sample_rate = SR
    dimension = 24  # the tiny WavLM's too, so the shapes that tests spell out hold for both
    FRAME, HOP = 512, 256
    BANDS = np.geomspace(60.0, 7600.0, 49)  # edges of 48 log-spaced bands, in Hz

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.source = f"{FAKE_PREFIX}{self.seed}"
        band = np.digitize(np.fft.rfftfreq(self.FRAME, 1 / SR), self.BANDS) - 1
        members = np.stack([band == b for b in range(len(self.BANDS) - 1)]).astype(np.float64)
        members = members[members.sum(1) > 0]  # the lowest bands hold no bin at this resolution
        self._bands = members / members.sum(1, keepdims=True)  # (bands, bins): the mean of each band
        rng = np.random.default_rng(self.seed)
        self._projection = rng.standard_normal((len(members), self.dimension)) / np.sqrt(self.dimension)

    @property
    def model_id(self) -> str:
        return f"fake-spectrum-{self.dimension}:{self.seed}"

    def embed(self, waveforms) -> np.ndarray:
        """(len(waveforms), dimension) float32 L2-normalized rows, one recording at a time."""
        rows = np.stack([self._embed_one(np.asarray(w, dtype=np.float64)) for w in waveforms]) if len(waveforms) else \
            np.zeros((0, self.dimension))
        return rows.astype(np.float32)

    def _embed_one(self, wave: np.ndarray) -> np.ndarray:
        wave = np.pad(wave, (0, max(0, self.FRAME - wave.size)))
        frames = np.lib.stride_tricks.sliding_window_view(wave, self.FRAME)[:: self.HOP] * np.hanning(self.FRAME)
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        energy = power.sum(1)
        spectrum = power[energy >= 0.05 * energy.max()].mean(0)
        level = 10 * np.log10(self._bands @ spectrum + 1e-10 * spectrum.sum() + 1e-20)
        vector = (level - level.mean()) @ self._projection
        norm = np.linalg.norm(vector)
        if norm == 0:  # silence, or a flat spectrum: a fixed direction, as a model would give something
            vector, norm = self._projection.sum(0), np.linalg.norm(self._projection.sum(0))
        return vector / norm


def _teach_load_embedder_the_fake() -> None:
    """Make ``load_embedder`` (which the CLI, the server and ``VoiceBank.open`` call with a model
    source string) answer FAKE_PREFIX sources with a FakeEmbedder; any other source still goes to
    voicebank's own. voicebank has no registry of backends, so every module that bound its
    ``load_embedder`` (test modules too) is given this one, and modules imported later take it from
    the package. Done once, when the first test asks for the fake. Other processes do not see it:
    tests that start one use the tiny WavLM."""
    import sys

    import voicebank.embedding

    original = voicebank.embedding.load_embedder
    if getattr(original, "knows_the_fake", False):
        return

    def load_embedder(source=None, device=None):
        if source is not None and str(source).startswith(FAKE_PREFIX):
            return FakeEmbedder(int(str(source)[len(FAKE_PREFIX):]))
        return original(source, device)

    load_embedder.__doc__, load_embedder.knows_the_fake = original.__doc__, True
    for module in list(sys.modules.values()):
        if getattr(module, "load_embedder", None) is original:
            module.load_embedder = load_embedder


_HEARD: dict[bytes, np.ndarray] = {}  # silero-vad's answers, by the samples it was given


@pytest.fixture(scope="module")
def remembered_vad():
    """silero-vad runs once per distinct recording in the session, then its answer is remembered.

    The VAD is the costliest step of loading a recording (its recurrent part runs frame after frame:
    more than the fake embedder and the decoding together), and the tests load the same few
    `voices` hundreds of times. An answer is keyed by the exact samples and rate, so it is the one the VAD gave.
    For tests that are not about speech detection (test_vad.py runs it every time); module-scoped,
    so that a module's own module-scoped fixtures use it too (``usefixtures`` in ``pytestmark``).
    """
    import hashlib

    from voicebank import vad

    real = vad.speech_probabilities

    def speech_probabilities(samples: np.ndarray, sample_rate: int) -> np.ndarray:
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        key = hashlib.blake2b(samples.tobytes(), digest_size=20, person=str(sample_rate).encode()).digest()
        if key not in _HEARD:
            _HEARD[key] = real(samples, sample_rate)
        return _HEARD[key].copy()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vad, "speech_probabilities", speech_probabilities)
        yield


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pyproject.toml's addopts): a worker per core this process may use, at most 4
    (each imports torch and builds its own tiny models; the crash and server tests start processes
    of their own), none on one core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cores, 4) if cores > 1 else 0


def pytest_configure(config):
    config.addinivalue_line("markers", 'embedder(kind): "fake" or "tiny", the model that the `model` fixture '
                                       "gives the test (on a test, or a whole module as pytestmark); default tiny")


def model_of(request, other: bool = False) -> str:
    """The model source (as ``--model`` takes it) for the test, module or class that ``request``
    belongs to: the tiny random WavLM's directory, or FAKE_MODEL under ``@pytest.mark.embedder("fake")``;
    ``other``: another model of the same kind (other weights, the same dimension). The WavLM is
    built only when some test asks for it. For fixtures of a wider scope than ``model``'s."""
    marker = request.node.get_closest_marker("embedder")
    kind = marker.args[0] if marker else "tiny"
    assert kind in ("fake", "tiny"), f"@pytest.mark.embedder takes 'fake' or 'tiny', not {kind!r}"
    if kind == "fake":
        _teach_load_embedder_the_fake()
        return OTHER_FAKE_MODEL if other else FAKE_MODEL
    return str(request.getfixturevalue("other_tiny_model" if other else "tiny_model"))


@pytest.fixture
def model(request) -> str:
    """The model source of the banks a test makes (see ``model_of``)."""
    return model_of(request)


@pytest.fixture
def other_model(request) -> str:
    """Another model of the same kind as ``model``: a bank made with one refuses the other."""
    return model_of(request, other=True)


VOICES = {"alice": 120.0, "bob": 190.0, "carol": 260.0, "dave": 330.0}


@pytest.fixture(scope="session")
def voices(tmp_path_factory) -> dict[str, list[Path]]:
    """Three WAV recordings of each of four synthetic speakers, plus 'stranger' (never enrolled)."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("voices")
    out: dict[str, list[Path]] = {}
    for k, (name, f0) in enumerate({**VOICES, "stranger": 420.0}.items()):
        base = synth_voice(f0, seconds=2.5, seed=k)
        out[name] = []
        for i in range(3):
            path = root / f"{name}{i}.wav"
            sf.write(path, take(base, 10 * k + i), SR)
            out[name].append(path)
    return out


@pytest.fixture
def corrupt(tmp_path) -> Path:
    """A file that starts like a WAV and is not one."""
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF" + bytes(range(256)) * 40)
    return path


# Same-speaker recordings above score almost exactly 1 on the random model; other voices do not.
# (Banks made with it decide identification on the best score: identify_rule="best". The margin
# rule's 2 x best - second best sits above 1 for these near-identical synthetic voices.)
# The fake embedder's scores fall on either side of the same value with more room (its docstring
# has the figures), so one constant serves the tests whichever model they run on.
TINY_THRESHOLD = 0.9996


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "bank.db"


@pytest.fixture
def bank(db_path, model):
    from voicebank import VoiceBank

    with VoiceBank.open(db_path, model, create=True, threshold=TINY_THRESHOLD, identify_rule="best") as opened:
        yield opened


def table_dump(db_path: Path) -> dict[str, list[tuple]]:
    """Every row of every voicebank table, to show that a failed call changed nothing."""
    import sqlite3

    con = sqlite3.connect(db_path)
    try:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table' order by name")]
        return {t: sorted(con.execute(f'select * from "{t}"').fetchall(), key=repr) for t in tables}
    finally:
        con.close()


# -- databases: every integration test that takes `db_url` runs on SQLite and on PostgreSQL ------
PG_ADMIN_URL = os.environ.get("VOICEBANK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres_reachable() -> bool:
    try:
        import psycopg

        psycopg.connect(PG_ADMIN_URL, connect_timeout=3).close()
        return True
    except Exception:
        return False


@pytest.fixture
def pg_url(tmp_path, monkeypatch):
    """A fresh, empty PostgreSQL database for one test, dropped afterwards.

    Skipped when the server is unreachable, except under CI (CI=true), where that is a failure.
    """
    import uuid

    import psycopg

    if not _postgres_reachable():
        message = f"PostgreSQL is not reachable at {PG_ADMIN_URL}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run the PostgreSQL tests)")
        pytest.skip(message)
    name = f"vb_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    monkeypatch.setenv("VOICEBANK_CACHE", str(tmp_path / "index-cache"))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    """A database URL for a new bank: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bank.db'}"
    return request.getfixturevalue("pg_url")


@contextlib.contextmanager
def serving(args: list[str], env: dict[str, str], timeout: float = 180.0):
    """``voicebank ARGS`` (a ``serve`` on ``--port 0``) in another process, until it says where it
    listens; yields its ``http://127.0.0.1:PORT``, and stops it (SIGINT, then kill) on leaving: it
    must then exit with 0, as Ctrl-C leaves a server."""
    import re
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", "from voicebank.cli import main; main()", *args],
                            stderr=subprocess.PIPE, text=True, env={**env, "PYTHONPATH": str(REPO)})
    try:
        url, lines = None, []
        deadline = time.monotonic() + timeout
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stderr.readline()
            lines.append(line)
            found = re.search(r"running on (http://127\.0\.0\.1:\d+)", line)
            url = found.group(1) if found else None
        assert url, "voicebank serve did not start:\n" + "".join(lines)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"voicebank serve exited with {proc.returncode} on SIGINT"
