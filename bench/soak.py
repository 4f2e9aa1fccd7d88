"""The HTTP server under a long mixed load: does its memory level off, does it answer every request,
and is every change it acknowledged still there at the end?

Builds a bank as `bench/serve.py` does (the tests' tiny random-weight WavLM unless `--model`), starts
`voicebank serve` on 127.0.0.1 and, for `--minutes`, drives it with:

- identifying clients (`--identifiers`), each checking that the speaker sent is the one named;
- one verifying client, claiming the speaker sent;
- enrolling clients (`--writers`): each enrolls new people (its own synthetic voices, a fresh take
  each time so no recording is ever enrolled twice) and removes half of them again;
- one client sending what a careless or hostile caller sends (noise, an empty file, text, a
  truncated WAV, a name with a control character), which must be refused with a 4xx every time.

The server's resident memory is read from /proc every `--sample` seconds. At the end the server is
stopped and the bank read back: the people in it must be exactly the enrolled ones plus those whose
enrollment was acknowledged (201) and whose removal was not. Prints the memory curve and the
tallies, writes everything to JSON.

    python bench/soak.py [--minutes 30] [--identifiers 6] [--writers 2] [--out bench/results/soak.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import SR, synth_voice, take  # noqa: E402  (sets HF offline)
from serve import build_bank, start_server, wav  # noqa: E402

import httpx  # noqa: E402

from _env import describe, machine, rss_mb  # noqa: E402
from voicebank import VoiceBank  # noqa: E402


def hostile_uploads(rng: np.random.Generator) -> list[tuple[str, dict, dict]]:
    """(path, form fields, files) a careless or hostile caller sends; each must get a 4xx."""
    noise = wav((0.3 * rng.standard_normal(SR * 2)).astype(np.float32))
    return [
        ("/identify", {}, {"file": ("noise.wav", noise, "audio/wav")}),
        ("/identify", {}, {"file": ("empty.wav", b"", "audio/wav")}),
        ("/identify", {}, {"file": ("text.wav", b"this is not audio " * 200, "audio/wav")}),
        ("/identify", {}, {"file": ("cut.wav", noise[:300], "audio/wav")}),
        ("/identify", {"top_k": "0"}, {"file": ("noise.wav", noise, "audio/wav")}),
        ("/verify", {"name": "nobody-here"}, {"file": ("noise.wav", noise, "audio/wav")}),
        ("/speakers", {"name": "bad\x07name"}, {"files": ("noise.wav", noise, "audio/wav")}),
    ]


class Tally:
    def __init__(self) -> None:
        self.requests = 0
        self.by_kind: dict[str, int] = {}
        self.server_errors: list[str] = []  # 5xx, dropped connections, timeouts
        self.unexpected: list[str] = []  # a 4xx where a success was due, a success where a refusal was
        self.wrong = 0

    def count(self, kind: str) -> None:
        self.requests += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1


async def soak(url: str, reader: str, admin: str, probes: list, args: argparse.Namespace) -> tuple[Tally, set, set]:
    """Run the mixed load until the deadline; returns the tally, the names whose enrollment stands
    acknowledged, and the names whose state is unknown (the request failed without an answer)."""
    tally, present, unknown = Tally(), set(), set()
    deadline = time.monotonic() + 60 * args.minutes
    read_h, admin_h = {"Authorization": f"Bearer {reader}"}, {"Authorization": f"Bearer {admin}"}

    async def call(http: httpx.AsyncClient, kind: str, method: str, path: str, **kw) -> httpx.Response | None:
        tally.count(kind)
        try:
            response = await http.request(method, path, **kw)
        except httpx.HTTPError as e:
            tally.server_errors.append(f"{kind}: {type(e).__name__}: {e}")
            return None
        if response.status_code >= 500:
            tally.server_errors.append(f"{kind}: {response.status_code} {response.text[:200]}")
        return response

    async def identifier(http: httpx.AsyncClient, seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            name, data = rng.choice(probes)
            r = await call(http, "identify", "POST", "/identify", headers=read_h,
                           files={"file": (f"{name}.wav", data, "audio/wav")})
            # the best candidate, not the match: the tiny random model's scores clear no margin
            if r is not None and r.status_code == 200 and (r.json()["candidates"] or [{}])[0].get("name") != name:
                tally.wrong += 1
            elif r is not None and r.status_code != 200 and r.status_code < 500:
                tally.unexpected.append(f"identify: {r.status_code} {r.text[:200]}")

    async def verifier(http: httpx.AsyncClient) -> None:
        rng = random.Random(7)
        while time.monotonic() < deadline:
            name, data = rng.choice(probes)
            r = await call(http, "verify", "POST", "/verify", headers=read_h, data={"name": name},
                           files={"file": (f"{name}.wav", data, "audio/wav")})
            if r is not None and r.status_code == 200 and not r.json()["accepted"]:
                tally.wrong += 1
            elif r is not None and r.status_code != 200 and r.status_code < 500:
                tally.unexpected.append(f"verify: {r.status_code} {r.text[:200]}")

    async def writer(http: httpx.AsyncClient, w: int) -> None:
        voices = [synth_voice(300.0 + 11.0 * (w * 8 + v), seconds=args.seconds, seed=500 + w * 8 + v) for v in range(8)]
        rng, n = random.Random(100 + w), 0
        while time.monotonic() < deadline:
            n += 1
            name, base = f"soak-{w}-{n:05d}", voices[n % len(voices)]
            files = [("files", (f"{name}-{i}.wav", wav(take(base, 100_000 * (w + 1) + 10 * n + i)), "audio/wav"))
                     for i in range(2)]
            r = await call(http, "enroll", "POST", "/speakers", headers=admin_h, data={"name": name}, files=files)
            if r is None or r.status_code >= 500:
                unknown.add(name)
                continue
            if r.status_code != 201:
                tally.unexpected.append(f"enroll: {r.status_code} {r.text[:200]}")
                continue
            present.add(name)
            if rng.random() < 0.5:
                r = await call(http, "remove", "DELETE", f"/speakers/{name}", headers=admin_h)
                if r is None or r.status_code >= 500:
                    present.discard(name)
                    unknown.add(name)
                elif r.status_code == 200:
                    present.discard(name)
                else:
                    tally.unexpected.append(f"remove: {r.status_code} {r.text[:200]}")
            await call(http, "list", "GET", "/speakers", headers=read_h)

    async def hostile(http: httpx.AsyncClient) -> None:
        cases = hostile_uploads(np.random.default_rng(3))
        k = 0
        while time.monotonic() < deadline:
            path, data, files = cases[k % len(cases)]
            k += 1
            headers = admin_h if path == "/speakers" else read_h
            r = await call(http, "hostile", "POST", path, headers=headers, data=data, files=files)
            if r is not None and not 400 <= r.status_code < 500:
                tally.unexpected.append(f"hostile {path}: {r.status_code} {r.text[:200]}")
            await asyncio.sleep(0.2)

    clients = args.identifiers + args.writers + 2
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        await asyncio.gather(*(identifier(http, i) for i in range(args.identifiers)), verifier(http),
                             *(writer(http, w) for w in range(args.writers)), hostile(http))
    return tally, present, unknown


async def sample_memory(pid: int, every: float, stop: asyncio.Event, curve: list) -> None:
    started = time.monotonic()
    while not stop.is_set():
        mb = rss_mb(pid)
        if mb is not None:
            curve.append((round(time.monotonic() - started, 1), round(mb, 1)))
        try:
            await asyncio.wait_for(stop.wait(), every)
        except asyncio.TimeoutError:
            pass


async def run(url: str, pid: int, reader: str, admin: str, probes: list, args) -> tuple[Tally, set, set, list]:
    curve: list = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_memory(pid, args.sample, stop, curve))
    try:
        tally, present, unknown = await soak(url, reader, admin, probes, args)
    finally:
        stop.set()
        await sampler
    return tally, present, unknown, curve


def plateau(curve: list) -> dict:
    """Memory at the end of each quarter of the run, and the growth over its second half (a
    plateau: the second half adds little next to the first)."""
    if len(curve) < 8:
        return {}
    quarters = [curve[min(len(curve) - 1, round(q * (len(curve) - 1) / 4))][1] for q in range(5)]
    return {"start_mb": quarters[0], "quarters_mb": quarters[1:], "peak_mb": max(mb for _, mb in curve),
            "first_half_growth_mb": round(quarters[2] - quarters[0], 1),
            "second_half_growth_mb": round(quarters[4] - quarters[2], 1)}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="hub id or directory (default: a tiny random-weight WavLM built here)")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--speakers", type=int, default=20, help="synthetic speakers enrolled before the load")
    p.add_argument("--seconds", type=float, default=2.5, help="length of every recording")
    p.add_argument("--identifiers", type=int, default=6, help="identifying clients")
    p.add_argument("--writers", type=int, default=2, help="enrolling-and-removing clients")
    p.add_argument("--workers", type=int, default=32, help="the server's --workers")
    p.add_argument("--sample", type=float, default=10.0, help="seconds between memory readings")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="voicebank-soak-") as tmp:
        db, model, reader, probes = build_bank(Path(tmp), args.model, args.speakers, args.seconds)
        with VoiceBank.open(db, model) as bank:
            _, admin = bank.api_keys.create("soak-admin", "admin")
        proc, url = start_server(db, model, args.workers)
        started = time.monotonic()
        try:
            tally, present, unknown, curve = asyncio.run(run(url, proc.pid, reader, admin, probes, args))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        seconds = time.monotonic() - started
        with VoiceBank.open(db, model) as bank:
            stored = {s.name for s in bank.speakers()}
            report = bank.index.check()
    expected = {name for name, _ in probes} | present
    lost = sorted(expected - stored)
    extra = sorted(stored - expected - unknown)
    result = {
        "what": "voicebank serve under mixed load on loopback: identify, verify, enroll/remove, list, hostile uploads",
        "model": args.model or "tiny random-weight WavLM (tests/conftest.py): measures the server, not a real model",
        "minutes": round(seconds / 60, 1), "clients": {"identify": args.identifiers, "verify": 1, "enroll_remove": args.writers,
                                                       "hostile": 1},
        "server_workers": args.workers,
        "machine": machine(torch=True),
        "requests": tally.requests, "by_kind": tally.by_kind, "requests_per_s": round(tally.requests / seconds, 2),
        "server_errors": len(tally.server_errors), "server_error_samples": tally.server_errors[:10],
        "unexpected": len(tally.unexpected), "unexpected_samples": tally.unexpected[:10], "wrong_answers": tally.wrong,
        "acknowledged_present": len(present), "lost": lost, "unacknowledged_present": extra,
        "state_unknown": sorted(unknown), "check_clean": report.ok,
        "memory": plateau(curve), "memory_curve": curve,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(describe(result["machine"]))
    print(f"{result['minutes']} min, {tally.requests} requests ({result['requests_per_s']}/s): {tally.by_kind}")
    print(f"server errors {result['server_errors']}, unexpected answers {result['unexpected']}, wrong {tally.wrong}, "
          f"acknowledged changes lost {len(lost)}, bank check clean: {result['check_clean']}")
    step = max(1, len(curve) // 12)
    print("server memory (MB): " + ", ".join(f"{t / 60:.0f} min {mb:.0f}" for t, mb in curve[::step] + curve[-1:]))
    if result["memory"]:
        m = result["memory"]
        print(f"growth: first half {m['first_half_growth_mb']} MB, second half {m['second_half_growth_mb']} MB, peak {m['peak_mb']} MB")
    for line in tally.server_errors[:5] + tally.unexpected[:5]:
        print("  " + line)
    print(f"\nwritten to {args.out}")
    if lost or tally.server_errors or tally.unexpected:
        sys.exit(1)


if __name__ == "__main__":
    main()
