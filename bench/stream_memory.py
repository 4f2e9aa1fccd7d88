"""Memory of live sessions (resemblyzer, real speech): what one open session holds, and whether
anything stays behind when sessions end.

The bank is ``bench/stream.py``'s (every speaker of ../shared/data/speech with 6+ recordings,
enrolled from their first 3). Each session is one person's held-out call, claimed as them and fed
as fast as it goes in 20 ms chunks (``stream.run_call``), then closed (one audit row each).

- per open session: ``--open`` sessions held open at once, each fed ``--seconds`` of its call;
  the memory Python and numpy allocated for them (tracemalloc), divided by their number, and the
  process's resident memory before and after;
- after many: ``--sessions`` sessions one after another, each fed ``--short`` seconds and closed;
  traced memory and resident memory every ``--every`` sessions. A leak shows as growth that goes
  on after the first hundred (caches and the audit table's pages fill early).

    python bench/stream_memory.py [--data-root ../shared/data] [--open 50] [--seconds 40]
                                  [--sessions 1000] [--short 6] [--every 100]
                                  [--out bench/results/stream-memory.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _env import describe, machine, rss_mb  # noqa: E402
from stream import CHUNK, SR, call, corpus  # noqa: E402

MB = 2**20


def feed(session, samples) -> None:
    step = int(CHUNK * SR)
    for at in range(0, len(samples), step):
        session.feed(samples[at : at + step])


def per_session(bank, calls: list[tuple[str, object]], count: int) -> dict:
    """Hold ``count`` sessions open at once, each fed its call; traced bytes per session."""
    gc.collect()
    before, rss_before = tracemalloc.get_traced_memory()[0], rss_mb(os.getpid())
    sessions = []
    for k in range(count):
        name, samples = calls[k % len(calls)]
        sessions.append(bank.listen(name))
        feed(sessions[-1], samples)
    gc.collect()
    held, rss_held = tracemalloc.get_traced_memory()[0], rss_mb(os.getpid())
    for session in sessions:
        session.close()
    return {"sessions": count, "traced_kb_per_session": round((held - before) / count / 1024, 1),
            "rss_mb_before": round(rss_before, 1), "rss_mb_with_them": round(rss_held, 1)}


def many(bank, calls: list[tuple[str, object]], count: int, every: int) -> list[dict]:
    """``count`` sessions one after another, opened, fed, closed; memory every ``every``."""
    curve = []
    began = time.perf_counter()
    for k in range(1, count + 1):
        name, samples = calls[k % len(calls)]
        session = bank.listen(name)
        feed(session, samples)
        session.close()
        if k % every == 0:
            gc.collect()
            curve.append({"sessions": k, "traced_mb": round(tracemalloc.get_traced_memory()[0] / MB, 2),
                          "rss_mb": round(rss_mb(os.getpid()), 1), "seconds": round(time.perf_counter() - began, 1)})
            print(f"  after {k:5d} sessions: traced {curve[-1]['traced_mb']:8.2f} MB, "
                  f"resident {curve[-1]['rss_mb']:7.1f} MB ({curve[-1]['seconds']:.0f} s)", flush=True)
    return curve


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--open", type=int, default=50, help="sessions held open at once")
    p.add_argument("--seconds", type=float, default=40.0, help="seconds of call fed to each open session")
    p.add_argument("--sessions", type=int, default=1000, help="sessions one after another")
    p.add_argument("--short", type=float, default=6.0, help="seconds of call fed to each of those")
    p.add_argument("--every", type=int, default=100, help="sessions between memory readings")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stream-memory.json")
    args = p.parse_args()

    import torch  # as a server has it: the networks run in torch (voicebank.nets)

    from voicebank import VoiceBank, runtime

    runtime.configure()
    people, _ = corpus(args.data_root)
    res: dict = {"machine": machine(torch=True), "versions": {"torch": torch.__version__}}
    print(describe(res["machine"], res["versions"]))
    with tempfile.TemporaryDirectory() as folder, VoiceBank.open(Path(folder) / "bank.db", "resemblyzer",
                                                                 create=True) as bank:
        for who, paths in people.items():
            bank.enroll(who, [str(x) for x in paths[:3]], allow_inconsistent=True)
        long_calls = [(who, call(paths[3:], 0, args.seconds)) for who, paths in people.items()]
        short_calls = [(who, call(paths[3:], k, args.short)) for who, paths in people.items() for k in range(3)]
        warm = bank.listen(long_calls[0][0])  # warm up: models, caches, the first audit row
        feed(warm, short_calls[0][1])
        warm.close()
        tracemalloc.start()
        res["open"] = per_session(bank, long_calls, args.open)
        print(f"{args.open} sessions open at once, {args.seconds:g} s of call each: "
              f"{res['open']['traced_kb_per_session']} KB traced per session; resident "
              f"{res['open']['rss_mb_before']} -> {res['open']['rss_mb_with_them']} MB")
        print(f"{args.sessions} sessions one after another, {args.short:g} s of call each:")
        res["many"] = many(bank, short_calls, args.sessions, args.every)
        tracemalloc.stop()
    if len(res["many"]) >= 2:
        first, last = res["many"][0], res["many"][-1]
        res["growth_after_first"] = {"traced_mb": round(last["traced_mb"] - first["traced_mb"], 2),
                                     "rss_mb": round(last["rss_mb"] - first["rss_mb"], 1),
                                     "sessions": last["sessions"] - first["sessions"]}
        print(f"growth from session {first['sessions']} to {last['sessions']}: traced "
              f"{res['growth_after_first']['traced_mb']:+.2f} MB, resident {res['growth_after_first']['rss_mb']:+.1f} MB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
