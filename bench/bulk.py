"""Enrolling an organization from precomputed embeddings: `voicebank import FILE.npz` at 100,000 people.

    python bench/bulk.py [--people 100000] [--per 3] [--dim 512] [--db sqlite|postgresql|both]
                         [--kills 5] [--batch-size 1000] [--seed 0] [--out bench/results/bulk.json]

Writes one file of random unit embeddings (``--per`` for each person, made by a stand-in model of
``--dim`` dimensions, whose id the banks are created with), then on each database:

1. a clean import by the command itself, in a process of its own as a user runs it: people per
   second, and that process's resident memory (VmRSS, read every 0.1 s) printed at 10 points of the
   run with the people stored by then, and its peak (VmHWM);
2. on a fresh bank, ``--kills`` runs of the same command killed with SIGKILL at a random moment of
   their storing (after the check of the file, which stores nothing), then one left to finish;
   then SQL is read back: people stored twice, people missing, people whose
   embedding count is not ``--per``, and whether the index agrees with SQL.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _env import describe, machine  # noqa: E402
from enroll import drop_postgres, postgres_url  # noqa: E402  (bench/enroll.py: a fresh PostgreSQL database)
from voicebank import VoiceBank, __version__  # noqa: E402
from voicebank.embeddings_file import write  # noqa: E402
from voicebank.store import resolve_url  # noqa: E402
from voicebank.vectors import l2_normalize  # noqa: E402

SAMPLE_S, COUNT_S = 0.1, 0.5  # how often the child's memory, and the people stored, are read


class StandIn:
    """The model the embeddings claim to come from: a bank is bound to its id and dimension. Never
    called: nothing is embedded in an import. The command reopens the bank by its source name, which
    voicebank takes for a hub id and never loads."""

    sample_rate = 16_000

    def __init__(self, dimension: int):
        self.dimension = dimension
        self.source = f"bench-stand-in-{dimension}"
        self.model_id = f"bench-stand-in-{dimension}:1"

    def embed(self, waveforms):
        raise RuntimeError("the stand-in model embeds nothing")


def make_file(path: Path, people: int, per: int, dim: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    embeddings = l2_normalize(rng.standard_normal((people * per, dim), dtype=np.float32))
    names = [f"person {k:06d}" for k in range(people)]
    return write(path, StandIn(dim).model_id, names, np.repeat(np.arange(people), per), embeddings)


def new_bank(kind: str, tmp: Path, dim: int, tag: str) -> str:
    url = f"sqlite:///{tmp / f'{tag}.db'}" if kind == "sqlite" else postgres_url()
    VoiceBank.open(url, StandIn(dim), create=True, threshold=0.8).close()
    return url


def counter(url: str):
    """A function counting the speakers stored, on one connection pool."""
    import sqlalchemy as sa

    engine = sa.create_engine(resolve_url(url))

    def count() -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT COUNT(*) FROM speakers")).scalar_one())

    count.engine = engine
    return count


def status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run_import(url: str, file: Path, batch: int, count, log: Path, kill_after: float | None = None) -> dict:
    """The command, run to the end or SIGKILLed ``kill_after`` seconds after it began to store
    (its check of the file stores nothing, so a kill there proves nothing), watched from outside."""
    argv = [sys.executable, "-m", "voicebank", "--db", url, "import", str(file), "--batch-size", str(batch), "--json"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with open(log, "w") as out, open(log.with_suffix(".err"), "w") as err:
        started = time.monotonic()
        child = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        rss, stored, peak, killed, last_count = [], [], 0, False, -COUNT_S
        before, storing = count(), None  # when this run was first seen to have stored someone
        while child.poll() is None:
            now = time.monotonic() - started
            if kill_after is not None and storing is None and count() > before:
                storing = now
            if storing is not None and now - storing >= kill_after:
                os.kill(child.pid, signal.SIGKILL)
                killed = True
                child.wait()
                break
            kb, hwm = status_kb(child.pid, "VmRSS"), status_kb(child.pid, "VmHWM")
            if kb is not None:
                rss.append((now, kb))
                peak = max(peak, hwm or 0)
            if now - last_count >= COUNT_S:
                stored.append((now, count()))
                last_count = now
            time.sleep(SAMPLE_S)
        wall = time.monotonic() - started
    stored.append((wall, count()))
    text = log.read_text().strip()
    return {"wall_s": wall, "returncode": child.returncode, "killed": killed, "rss_kb": rss, "stored": stored,
            "peak_rss_kb": peak, "report": json.loads(text) if text and not killed else None}


def curve(run: dict, points: int = 10) -> list[dict]:
    """The run cut into ``points`` equal spans of time: at the end of each, the people stored and
    the most resident memory seen in it."""
    out = []
    for k in range(1, points + 1):
        end, start = run["wall_s"] * k / points, run["wall_s"] * (k - 1) / points
        seen = [kb for t, kb in run["rss_kb"] if start <= t <= end]
        stored = max([n for t, n in run["stored"] if t <= end], default=0)
        out.append({"seconds": round(end, 1), "stored": stored, "rss_mb": round(max(seen) / 1024, 1) if seen else None})
    return out


def read_back(url: str, people: int, per: int) -> dict:
    """People stored twice, missing, or with another count of embeddings than ``per``; the index."""
    import sqlalchemy as sa

    engine = sa.create_engine(resolve_url(url))
    with engine.connect() as conn:
        twice = conn.execute(sa.text("SELECT COUNT(*) FROM (SELECT name FROM speakers GROUP BY name "
                                     "HAVING COUNT(*) > 1) AS t")).scalar_one()
        names = set(conn.execute(sa.text("SELECT name FROM speakers")).scalars())
        uneven = conn.execute(sa.text("SELECT COUNT(*) FROM (SELECT speaker_id FROM utterances GROUP BY speaker_id "
                                      f"HAVING COUNT(*) != {int(per)}) AS t")).scalar_one()
        utterances = conn.execute(sa.text("SELECT COUNT(*) FROM utterances")).scalar_one()
    engine.dispose()
    missing = sum(f"person {k:06d}" not in names for k in range(people))
    with VoiceBank.open(url) as bank:
        report = bank.index.check()
    return {"stored": len(names), "stored_twice": int(twice), "missing": int(missing), "utterances": int(utterances),
            "people_with_another_count": int(uneven), "index_agrees": report.ok,
            "index_held": report.speakers_in_index}


def one_database(kind: str, args, file: Path, tmp: Path) -> dict:
    result: dict = {}
    url = new_bank(kind, tmp, args.dim, "clean")
    count = counter(url)
    try:
        clean = run_import(url, file, args.batch_size, count, tmp / f"{kind}-clean.log")
        if clean["returncode"] != 0:
            raise SystemExit(f"the import failed: {(tmp / f'{kind}-clean.err').read_text()[-2000:]}")
        report = clean["report"]
        result["clean"] = {"wall_s": clean["wall_s"], "people_per_s": args.people / clean["wall_s"],
                           "library_s": report["seconds"], "peak_rss_mb": clean["peak_rss_kb"] / 1024,
                           "curve": curve(clean), "report": report, "read_back": read_back(url, args.people, args.per)}
    finally:
        count.engine.dispose()
        if kind == "postgresql":
            drop_postgres(url)
    # Each run is killed at a moment of its storing drawn so that the kills spread over the import:
    # up to twice an even share of what is left, at the clean run's pace (never past the end).
    first = min((t for t, n in clean["stored"] if n > 0), default=0.0)
    full = min((t for t, n in clean["stored"] if n >= args.people), default=clean["wall_s"])
    pace = args.people / max(full - first, 1e-3)
    url = new_bank(kind, tmp, args.dim, "killed")
    count = counter(url)
    rng = random.Random(args.seed)
    kills = []
    try:
        for k in range(args.kills):
            left = (args.people - count()) / pace
            at = rng.uniform(0.0, min(left, 2 * left / (args.kills - k + 1)))
            run = run_import(url, file, args.batch_size, count, tmp / f"{kind}-kill{k}.log", kill_after=at)
            kills.append({"kill_after_s": round(at, 2), "killed": run["killed"], "stored_after": run["stored"][-1][1]})
        final = run_import(url, file, args.batch_size, count, tmp / f"{kind}-final.log")
        result["kills"] = kills
        result["resumed"] = {"returncode": final["returncode"], "report": final["report"],
                             "read_back": read_back(url, args.people, args.per)}
    finally:
        count.engine.dispose()
        if kind == "postgresql":
            drop_postgres(url)
    return result


def show(kind: str, result: dict, args) -> None:
    clean, back = result["clean"], result["clean"]["read_back"]
    print(f"\n{kind}: {args.people:,} people x {args.per} embeddings of {args.dim} dimensions, batches of "
          f"{args.batch_size}")
    print(f"  clean import: {clean['wall_s']:.1f} s wall ({clean['people_per_s']:,.0f} people/s; the library "
          f"{clean['library_s']:.1f} s), peak RSS {clean['peak_rss_mb']:.0f} MB; stored {back['stored']:,}, "
          f"twice {back['stored_twice']}, missing {back['missing']}, index agrees: {back['index_agrees']}")
    print(f"  {'tenth':>5} {'seconds':>8} {'stored':>9} {'RSS MB':>7}")
    for k, point in enumerate(clean["curve"], 1):
        rss = "-" if point["rss_mb"] is None else f"{point['rss_mb']:.0f}"
        print(f"  {k:>5} {point['seconds']:>8.1f} {point['stored']:>9,} {rss:>7}")
    print(f"  {'kill':>5} {'storing s':>9} {'stored':>9}")
    for k, kill in enumerate(result["kills"], 1):
        print(f"  {k:>5} {kill['kill_after_s']:>9.1f} {kill['stored_after']:>9,}"
              + ("" if kill["killed"] else "  (finished first)"))
    back = result["resumed"]["read_back"]
    print(f"  after {len(result['kills'])} kills and one run to the end: stored {back['stored']:,}, twice "
          f"{back['stored_twice']}, missing {back['missing']}, another count of embeddings "
          f"{back['people_with_another_count']}, utterances {back['utterances']:,}, index agrees: "
          f"{back['index_agrees']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--per", type=int, default=3)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/bulk.json"))
    args = parser.parse_args()
    results = {"machine": machine(), "versions": {"python": platform.python_version(), "numpy": np.__version__,
                                                  "voicebank": __version__},
               "command": " ".join(sys.argv), "args": {k: str(v) for k, v in vars(args).items()}, "runs": {}}
    print(describe(results["machine"], results["versions"]))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["VOICEBANK_CACHE"] = str(tmp / "index-cache")  # PostgreSQL banks' index files
        started = time.monotonic()
        file = make_file(tmp / "people.npz", args.people, args.per, args.dim, args.seed)
        results["file"] = {"bytes": file.stat().st_size, "write_s": time.monotonic() - started}
        print(f"file: {file.stat().st_size / 1e6:,.0f} MB, written in {results['file']['write_s']:.1f} s")
        for kind in (["sqlite", "postgresql"] if args.db == "both" else [args.db]):
            results["runs"][kind] = one_database(kind, args, file, tmp)
            show(kind, results["runs"][kind], args)
    results["machine"]["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
