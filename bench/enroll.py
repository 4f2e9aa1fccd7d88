"""Enrolling many speakers through the store and index path, with the model bypassed.

    python bench/enroll.py [--count 10000] [--db sqlite|postgresql|both] [--out bench/results/enroll.json]

Each speaker enrolls from two 2.5 s recordings given as arrays; a stand-in embedder returns a
speaker centre plus per-recording noise (512-dim), so everything but the neural network runs as
in production: decoding checks, enrollment checks (speech, consistency, duplicate voice via the
index), the SQL transaction with its change sequence, and the index catching up. Prints time per
enrollment in slices of the run (flat = nothing costs O(bank size)), the database and index
sizes, and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _env import describe, machine  # noqa: E402
from voicebank import VoiceBank, __version__  # noqa: E402
from voicebank.vectors import l2_normalize  # noqa: E402

DIM, SR, SECONDS = 512, 16_000, 2.5
PG_ADMIN = os.environ.get("VOICEBANK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


class SuppliedEmbedder:
    """Reads the speaker number hidden in a recording's first sample; returns its centre + noise."""

    source = "bench-supplied"
    model_id = "bench-supplied:1"
    sample_rate = SR
    dimension = DIM

    def embed(self, waveforms):
        out = []
        for wave in waveforms:
            # the telephone view enrollment also embeds has passed through a codec: its first sample
            # is not the hidden one, and it gets some speaker's centre (this times storage, not recognition)
            speaker, take = divmod(abs(int(round(float(wave[0]) * 1e5))), 10)
            centre = np.random.default_rng(speaker).standard_normal(DIM)
            out.append(centre + 0.3 * np.random.default_rng(10**7 + 10 * speaker + take).standard_normal(DIM))
        return l2_normalize(np.stack(out))


_voice: list[np.ndarray] = []


def recording(speaker: int, take: int) -> tuple[np.ndarray, int]:
    """The test suite's synthetic speech (the speech detector must hear speech in it), made once,
    with a faint noise of its own and the speaker and take hidden in its first sample."""
    if not _voice:
        from conftest import synth_voice  # tests/conftest.py: the one synthesizer of speech

        _voice.append(synth_voice(150.0, seconds=SECONDS, seed=0))
    rng = np.random.default_rng(10 * speaker + take)
    wave = (_voice[0] + 0.002 * rng.standard_normal(_voice[0].size)).astype(np.float32)
    wave[0] = (10 * speaker + take) / 1e5
    return wave, SR


def run(url: str, count: int, index_path: Path) -> dict:
    slices, sizes = [], []
    with VoiceBank.open(url, SuppliedEmbedder(), create=True, threshold=0.8, index_path=index_path) as bank:
        step = max(1, count // 10)
        started = time.perf_counter()
        mark = started
        for speaker in range(count):
            bank.enroll(f"speaker-{speaker:06d}", [recording(speaker, 0), recording(speaker, 1)])
            if (speaker + 1) % step == 0:
                now = time.perf_counter()
                slices.append({"enrolled": speaker + 1, "ms_per_enrollment": 1000 * (now - mark) / step})
                mark = now
        total = time.perf_counter() - started
        assert len(bank) == count and bank.index.check().ok
        bank.index.save()
        sizes = {"index_bytes": index_path.stat().st_size}
    return {"seconds": total, "per_second": count / total, "slices": slices, **sizes}


def postgres_url() -> str:
    import psycopg

    name = f"vb_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def drop_postgres(url: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def database_bytes(url: str, sqlite_file: Path | None) -> int:
    if sqlite_file is not None:
        return sum(p.stat().st_size for p in sqlite_file.parent.glob(sqlite_file.name + "*") if not p.name.endswith((".faiss", ".json", ".lock")))
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
        return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--out", type=Path, default=Path("bench/results/enroll.json"))
    args = parser.parse_args()
    results = {"machine": machine(),
               "versions": {"python": platform.python_version(), "numpy": np.__version__, "voicebank": __version__},
               "command": " ".join(sys.argv), "count": args.count, "runs": {}}
    print(describe(results["machine"], results["versions"]))
    with tempfile.TemporaryDirectory() as tmp:
        for kind in (["sqlite", "postgresql"] if args.db == "both" else [args.db]):
            sqlite_file = Path(tmp) / "bench.db" if kind == "sqlite" else None
            url = f"sqlite:///{sqlite_file}" if sqlite_file else postgres_url()
            try:
                result = run(url, args.count, Path(tmp) / f"{kind}.faiss")
                result["database_bytes"] = database_bytes(url, sqlite_file)
            finally:
                if sqlite_file is None:
                    drop_postgres(url)
            results["runs"][kind] = result
            first, last = result["slices"][0]["ms_per_enrollment"], result["slices"][-1]["ms_per_enrollment"]
            print(f"{kind:<11} {args.count} speakers in {result['seconds']:.1f} s ({result['per_second']:.1f}/s); "
                  f"ms per enrollment first/last tenth {first:.1f} / {last:.1f} (ratio {last / first:.2f}); "
                  f"database {result['database_bytes'] / 1e6:.1f} MB, index {result['index_bytes'] / 1e6:.1f} MB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
