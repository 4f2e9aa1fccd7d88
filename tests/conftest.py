"""Shared fixtures. Nothing here reaches the network: the hub is switched off before transformers
is imported, and the WavLM model is a tiny random-weight one built and saved per session."""

from __future__ import annotations

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


def synth_voice(f0: float, seconds: float = 3.0, seed: int = 0, sr: int = SR) -> np.ndarray:
    """A voiced, speech-like signal: harmonics of a wobbling pitch under a syllable-rate envelope.

    ``f0`` and ``seed`` make the "speaker"; different seeds give different "utterances".
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    wave = sum(np.sin(k * phase) / k for k in range(1, 15))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(2, 4) * t + rng.uniform(0, 6))
    wave = 0.3 * wave * envelope / np.max(np.abs(wave))
    return (wave + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


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
TINY_THRESHOLD = 0.9996


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "bank.db"


@pytest.fixture
def bank(db_path, tiny_model):
    from voicebank import VoiceBank

    with VoiceBank.open(db_path, str(tiny_model), create=True, threshold=TINY_THRESHOLD) as opened:
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
