"""Throughput and latency of the HTTP API's `POST /identify` at 1, 8 and 32 concurrent clients.

Builds a bank in a temporary directory (by default with the tests' tiny random-weight WavLM, so
nothing is downloaded: the figures measure the server, not a real model), enrolls synthetic
speakers, starts `voicebank serve` as a subprocess on 127.0.0.1 (a free port), and drives it from
this process with an asyncio httpx client: each of C clients sends its next request as soon as
its last one is answered. Every answer is checked against the speaker who was sent. Prints a table
and writes every figure to JSON.

    python bench/serve.py [--model DIR|ID] [--requests 300] [--clients 1 8 32] [--out bench/results/serve.json]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import SR, TINY_THRESHOLD, build_tiny_wavlm, synth_voice, take  # noqa: E402  (sets HF offline)

import httpx  # noqa: E402
import soundfile as sf  # noqa: E402

from _env import describe, machine  # noqa: E402
from voicebank import VoiceBank  # noqa: E402


def wav(samples: np.ndarray) -> bytes:
    out = io.BytesIO()
    sf.write(out, samples, SR, format="WAV")
    return out.getvalue()


def build_bank(directory: Path, model: str | None, speakers: int, seconds: float) -> tuple[Path, str, str, list]:
    """A bank of ``speakers`` synthetic voices, each enrolled from two ``seconds``-long takes and
    probed with a third; returns (db, model, reader key, [(name, probe WAV bytes)])."""
    threshold = None
    if model is None:
        model, threshold = str(build_tiny_wavlm(directory / "tiny-wavlm")), TINY_THRESHOLD
    db = directory / "bench.db"
    probes = []
    logging.getLogger("voicebank").setLevel(logging.ERROR)  # the random model finds "duplicate voices"
    with VoiceBank.open(db, model, create=True, threshold=threshold) as bank:
        for k in range(speakers):
            name, base = f"speaker{k:03d}", synth_voice(90.0 + 7.0 * k, seconds=seconds, seed=k)
            bank.enroll(name, [(take(base, 10 * k + i), SR) for i in range(2)])
            probes.append((name, wav(take(base, 10 * k + 2))))
        _, key = bank.api_keys.create("bench", "reader")
    return db, model, key, probes


def start_server(db: Path, model: str, workers: int) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-c", "from voicebank.cli import main; main()", "--db", str(db), "--model", model,
               "serve", "--host", "127.0.0.1", "--port", "0", "--workers", str(workers), "--log-level", "info"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    deadline, seen = time.monotonic() + 300, []
    while time.monotonic() < deadline and proc.poll() is None:
        line = proc.stderr.readline()
        seen.append(line)
        found = re.search(r"running on (http://127\.0\.0\.1:\d+)", line)
        if found:
            return proc, found.group(1)
    proc.kill()
    raise SystemExit("the server did not start:\n" + "".join(seen))


async def run_level(url: str, key: str, probes: list, clients: int, requests: int) -> dict:
    """``requests`` identify calls from ``clients`` concurrent clients; latencies in ms."""
    latencies: list[float] = []
    errors = wrong = 0
    counter = iter(())
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors, wrong
        for i in counter:
            name, data = probes[i % len(probes)]
            started = time.perf_counter()
            response = await http.post("/identify", files={"file": (f"{name}.wav", data, "audio/wav")}, headers=headers)
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                errors += 1
            elif (response.json()["match"] or {}).get("name") != name:
                wrong += 1

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        counter = iter(range(3 * clients))  # warm-up: connections, the index, caches
        await asyncio.gather(*(client(http) for _ in range(clients)))
        counter = iter(range(requests))
        latencies.clear()
        errors = wrong = 0
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        seconds = time.perf_counter() - started
    lat = np.array(latencies)
    return {"clients": clients, "requests": requests, "seconds": round(seconds, 3),
            "requests_per_s": round(requests / seconds, 2), "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2), "mean_ms": round(float(lat.mean()), 2),
            "max_ms": round(float(lat.max()), 2), "errors": errors, "wrong_answers": wrong}


def table(results: list[dict]) -> str:
    lines = [f"{'clients':>7} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'wrong':>5}"]
    lines += [f"{r['clients']:>7} {r['requests']:>8} {r['requests_per_s']:>8.1f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
              f"{r['errors']:>6} {r['wrong_answers']:>5}" for r in results]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="hub id or directory (default: a tiny random-weight WavLM built here)")
    p.add_argument("--speakers", type=int, default=20, help="synthetic speakers to enroll")
    p.add_argument("--seconds", type=float, default=2.5, help="length of every recording (>= 2.5: enrollment needs 4 s of speech)")
    p.add_argument("--requests", type=int, default=300, help="measured requests per concurrency level")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32], help="concurrency levels")
    p.add_argument("--workers", type=int, default=32, help="the server's --workers")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve.json")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="voicebank-bench-") as tmp:
        db, model, key, probes = build_bank(Path(tmp), args.model, args.speakers, args.seconds)
        proc, url = start_server(db, model, args.workers)
        try:
            results = [asyncio.run(run_level(url, key, probes, c, args.requests)) for c in args.clients]
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    report = {
        "what": "POST /identify over HTTP/1.1 keep-alive, server and client on one machine",
        "model": args.model or "tiny random-weight WavLM (tests/conftest.py): measures the server, not a real model",
        "speakers": args.speakers, "recording_seconds": args.seconds, "server_workers": args.workers,
        "machine": machine(torch=True),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(describe(report["machine"]))
    print(table(results))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
