"""A server's memory through one enrollment of many long takes in one request (resemblyzer).

Starts ``voicebank serve`` on a new bank of three people, measures its resident memory idle, after
one small identification (warm: the models and thread pools are up), and every 0.2 s through one
``POST /speakers`` of ``--takes`` FLAC takes of ``--minutes`` minutes each (synthetic voices, as the
tests make them), then after it. What the issue asks: memory per request bounded by what it
decodes at a time, not by the upload.

    python bench/upload_memory.py [--takes 120] [--minutes 2] [--port 8765]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from _env import describe, machine  # noqa: E402
from conftest import SR, synth_voice, take  # noqa: E402  (the tests' synthetic voices)


def flac(samples: np.ndarray) -> bytes:
    import soundfile as sf

    out = io.BytesIO()
    sf.write(out, samples.astype(np.float32), SR, format="FLAC")
    return out.getvalue()


def rss_mb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) // 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--takes", type=int, default=120)
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "upload-memory.json")
    args = p.parse_args()
    import httpx

    res: dict = {"machine": machine(), "command": " ".join(sys.argv), "takes": args.takes, "minutes": args.minutes}
    print(describe(res["machine"]))
    folder = Path(tempfile.mkdtemp(prefix="vb-upload-"))
    env = {**os.environ, "VOICEBANK_MODEL": "resemblyzer", "VOICEBANK_DB": str(folder / "bank.db")}
    cli = lambda *a, **kw: subprocess.run(["voicebank", *a], env=env, check=True, capture_output=True,  # noqa: E731
                                          text=True, **kw)
    cli("init")
    key = cli("apikey", "create", "ops", "--role", "admin").stdout.split()[-1]
    for k, f0 in enumerate((120.0, 150.0, 200.0)):
        path = folder / f"p{k}.flac"
        path.write_bytes(flac(take(synth_voice(f0, seconds=8.0, seed=10 + k), 2)))
        cli("enroll", f"p{k}", str(path))
    base = synth_voice(150.0, seconds=8.0, seed=3)
    long = np.concatenate([take(base, 5 + k) for k in range(int(np.ceil(args.minutes * 60 / 8)))])[: int(args.minutes * 60 * SR)]
    takes = [flac(long * (0.5 + 0.001 * i)) for i in range(args.takes)]
    res["upload_mb"] = round(sum(map(len, takes)) / 1e6, 1)
    server = subprocess.Popen(["voicebank", "serve", "--port", str(args.port), "--max-upload-mb", "4000",
                               "--max-seconds", str(args.minutes * 60 + 10)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{args.port}", timeout=7200) as client:
            for _ in range(180):
                try:
                    client.get("/health")
                    break
                except httpx.TransportError:
                    time.sleep(1)
            time.sleep(2)
            res["idle_mb"] = rss_mb(server.pid)
            client.post("/identify", files={"file": ("probe.flac", flac(take(base, 1)), "audio/flac")}, headers=headers)
            res["warm_mb"] = peak = rss_mb(server.pid)
            curve, stop = [], threading.Event()

            def watch() -> None:
                started = time.time()
                while not stop.is_set():
                    curve.append((round(time.time() - started, 1), rss_mb(server.pid)))
                    time.sleep(0.2)

            watcher = threading.Thread(target=watch)
            watcher.start()
            started = time.time()
            answer = client.post("/speakers", data={"name": "alice", "allow_inconsistent": "true"}, headers=headers,
                                 files=[("files", (f"take{i}.flac", t, "audio/flac")) for i, t in enumerate(takes)])
            stop.set()
            watcher.join()
        res["status"], res["seconds"] = answer.status_code, round(time.time() - started, 1)
        peak = max([peak] + [m for _, m in curve])
        res.update(peak_mb=peak, after_mb=rss_mb(server.pid), peak_over_warm_mb=peak - res["warm_mb"],
                   peak_over_idle_mb=peak - res["idle_mb"], curve=curve[:: max(1, len(curve) // 100)])
    finally:
        server.terminate()
        server.wait()
    print(f"{args.takes} takes of {args.minutes:g} min ({res['upload_mb']} MB of FLAC), answered {res['status']} in "
          f"{res['seconds']} s")
    print(f"{'idle':>8} {'warm':>8} {'peak':>8} {'after':>8} {'peak - warm':>12} {'peak - idle':>12}  (MB resident)")
    print(f"{res['idle_mb']:>8} {res['warm_mb']:>8} {res['peak_mb']:>8} {res['after_mb']:>8} "
          f"{res['peak_over_warm_mb']:>12} {res['peak_over_idle_mb']:>12}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
