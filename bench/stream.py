"""Live sessions on real speech (resemblyzer): how soon they decide, what an update costs, how many
sessions the CPU holds in real time, and how the change-of-speaker rule does.

A bank (temporary SQLite, ``VoiceBank.enroll``) holds every speaker of ../shared/data/speech with
6+ recordings (LibriSpeech test-other, VCTK) and, with ``--speechocean``, the 100 of
speechocean762-dev, each enrolled from its first 3 recordings. One-person calls (``2 * --turn``
seconds of a person's held-out recordings) and two-person calls (``--turn`` seconds of one, then
of another of the same corpus and half, or of a stranger) are made by ``bench/stream_calls.py``,
``--rotations`` of each per person; ``--half a|b`` keeps one half of the people. Every call is fed
to ``bank.listen`` in 20 ms chunks as fast as it goes, the first person claimed. Rates are given
with their Wilson 95% intervals.

- first decision: seconds of audio from the first speech to the first decision;
- update gap: seconds of audio between decisions;
- one person: share of calls where a change of speaker was reported (wrongly); the final
  decision accepted;
- two people: share of calls where a change was reported within 4 s of the second person's
  speech, and how much of it was heard by then;
- update cost: wall seconds of the ``feed`` calls that made a decision, p50/p95, alone and with
  ``--sessions`` sessions fed at once in real time (100 ms chunks, one thread each);
- capacity: the most sessions fed at once in real time for ``--seconds`` without any falling
  behind (its last chunk done within 1 s of when it was spoken).

    python bench/stream.py [--data-root ../shared/data] [--rotations 4] [--turn 10] [--sessions 4]
                           [--seconds 20] [--speechocean] [--half a|b|all] [--quality-only]
                           [--out bench/results/stream.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _env import describe, machine  # noqa: E402
from stream_calls import HALVES, calls, corpus, enroll, join, rate, wilson  # noqa: E402

SR = 16_000
CHUNK = 0.02  # seconds per chunk when fed as fast as it goes (a typical RTP/WebRTC frame)
LIVE_CHUNK = 0.1  # seconds per chunk when fed in real time
WITHIN = 4.0  # seconds of the new person's speech within which a change must be reported
RULE = ("FIRST_SPEECH", "UPDATE_SPEECH", "PIECE_SECONDS", "MAX_PIECES", "RECENT_PIECES", "MIN_EARLIER_PIECES",
        "CHANGE_OFFSET", "CHANGE_CONFIRM", "CHANGE_AT_ONCE", "CHECK_SPEECH")  # live's constants, as found
BEHIND = 1.0  # seconds after it was spoken that a real-time session's last chunk may be done


def run_call(bank, name: str, samples: np.ndarray, switch: int | None = None) -> dict:
    """Feed one call; what happened, in audio seconds (``switch``: the sample the second person starts at)."""
    session = bank.listen(name)
    step = int(CHUNK * SR)
    decisions, changes, costs, switch_heard = [], [], [], None
    for at in range(0, len(samples), step):
        if switch is not None and switch_heard is None and at >= switch:
            switch_heard = session.heard
        began = time.perf_counter()
        updates = session.feed(samples[at: at + step])
        spent = time.perf_counter() - began
        for u in updates:
            if u.event == "decision":
                decisions.append((u.at, u.heard, u.change_score, u.change_threshold))
            elif u.event == "change":
                changes.append((u.at, u.heard))
        if any(u.event == "decision" for u in updates):
            costs.append(spent)
    final = session.close()
    return {"started": session.speech_started, "decisions": decisions, "changes": changes, "costs": costs,
            "accepted": bool(final.result and final.result.accepted), "switch_heard": switch_heard}


def realtime(bank, name: str, calls: list[np.ndarray], seconds: float) -> tuple[list[float], list[float]]:
    """Feed each call in its own thread at the pace it was spoken; (update costs, how far behind
    each session finished in seconds)."""
    costs: list[float] = []
    behind: list[float] = [0.0] * len(calls)
    lock = threading.Lock()
    start = time.perf_counter() + 0.5

    def one(k: int) -> None:
        session = bank.listen(name)
        step = int(LIVE_CHUNK * SR)
        samples = calls[k][: int(seconds * SR)]
        mine = []
        for n, at in enumerate(range(0, len(samples), step)):
            due = start + (n + 1) * LIVE_CHUNK  # the chunk is complete once it has been spoken
            time.sleep(max(0.0, due - time.perf_counter()))
            began = time.perf_counter()
            if any(u.event == "decision" for u in session.feed(samples[at: at + step])):
                mine.append(time.perf_counter() - began)
        behind[k] = time.perf_counter() - due
        session.close()
        with lock:
            costs.extend(mine)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return costs, behind


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--rotations", type=int, default=4, help="calls per person (each starting on another recording)")
    p.add_argument("--turn", type=float, default=10.0, help="seconds of each person in a two-person call")
    p.add_argument("--sessions", type=int, default=4, help="sessions fed at once for the update cost")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds of each real-time session")
    p.add_argument("--max-sessions", type=int, default=16, help="the most sessions tried for capacity")
    p.add_argument("--network", choices=["auto", "numpy", "torch"], default="auto",
                   help="where the speech detector's and resemblyzer's networks run (VOICEBANK_NETS; default auto: "
                        "torch, which this script imports, as a server does; numpy: as a process without torch)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stream.json")
    p.add_argument("--speechocean", action="store_true",
                   help="the 100 people of speechocean762-dev too (bench/stream_calls.py): hundreds of calls")
    p.add_argument("--half", choices=[*HALVES, "all"], default="all", help="the calls of one half of the people")
    p.add_argument("--quality-only", action="store_true", help="the calls only: no real-time runs, no capacity")
    args = p.parse_args()
    os.environ["VOICEBANK_NETS"] = args.network

    import torch  # noqa: F401  (imported, so the networks run in torch, as in `voicebank serve`)

    from voicebank import VoiceBank, live, runtime

    runtime.configure()
    people, strangers = corpus(args.data_root, args.speechocean)
    res: dict = {"machine": machine(torch=True), "network": args.network, "half": args.half,
                 "rule": {k: getattr(live, k, None) for k in RULE}}
    print(describe(res["machine"]))
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder, VoiceBank.open(Path(folder) / "bank.db", "resemblyzer",
                                                                 create=True) as bank:
        people = enroll(bank, people)
        res["bank"] = {"people": len(people), "verify_threshold": bank.thresholds.operating_points()["verify"].threshold,
                       "consistency_threshold": bank.thresholds.enrollment_checks[0]}
        single_calls, double_calls = calls(people, strangers, args.rotations, args.turn,
                                           HALVES if args.half == "all" else (args.half,))
        single = [run_call(bank, c.claimed, c.samples) | {"group": c.group, "half": c.half} for c in single_calls]
        double = [run_call(bank, c.claimed, c.samples, c.switch) | {"second": c.second, "group": c.group, "half": c.half}
                  for c in double_calls]
        res["quality"] = summarize(single, double)
        res["quality"]["seconds"] = round(time.perf_counter() - began, 1)
        if args.quality_only:
            return finish(res, began, args.out)
        speech = [who for who in people if who.group == "speech"]
        names = [who.name for who in speech]
        calls_ = [join(speech[k % len(speech)].held, k, args.seconds) for k in range(args.max_sessions)]
        costs, behind = realtime(bank, names[0], calls_[: args.sessions], args.seconds)
        res["realtime"] = {"sessions": args.sessions, "updates": len(costs), "p50_ms": 1000 * pct(costs, 50),
                           "p95_ms": 1000 * pct(costs, 95), "max_behind_s": max(behind)}
        held, n = 0, 1
        res["capacity_runs"] = []
        while n <= args.max_sessions:
            costs, behind = realtime(bank, names[0], calls_[:n], args.seconds)
            ok = max(behind) <= BEHIND
            res["capacity_runs"].append({"sessions": n, "max_behind_s": round(max(behind), 3),
                                         "p95_ms": round(1000 * pct(costs, 95), 1), "kept_up": ok})
            if not ok:
                break
            held, n = n, n * 2 if n < 4 else n + 2
        res["capacity"] = held
    finish(res, began, args.out)


def finish(res: dict, began: float, out: Path) -> None:
    res["seconds"] = round(time.perf_counter() - began, 1)
    res["machine"]["load_1min_at_end"] = round(os.getloadavg()[0], 2)  # other work on the machine slows every figure
    print(table(res))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=float))
    print(f"wrote {out}")


def summarize(single: list[dict], double: list[dict]) -> dict:
    firsts = [c["decisions"][0][0] - c["started"] for c in single + double if c["decisions"] and c["started"] is not None]
    gaps = [b[0] - a[0] for c in single + double for a, b in zip(c["decisions"], c["decisions"][1:])]
    costs = [x for c in single + double for x in c["costs"]]
    found = [_found(c) for c in double]
    genuine = [s for c in single for s in _scores(c)]
    crossing = [s for c in double for s in _scores(c, after=c["switch_heard"] + 3.0)]
    heard = [f for f in found if f is not None]
    return {"single_calls": len(single), "double_calls": len(double),
            "first_decision_s": {"p50": pct(firsts, 50), "p95": pct(firsts, 95), "max": max(firsts, default=None)},
            "update_gap_s": {"p50": pct(gaps, 50), "p95": pct(gaps, 95), "max": max(gaps, default=None)},
            "update_cost_ms_alone": {"p50": 1000 * pct(costs, 50), "p95": 1000 * pct(costs, 95)},
            "false_change": _count([bool(c["changes"]) for c in single]),
            "accepted_one_person": _count([c["accepted"] for c in single]),
            "change_within_4s": _count([f is not None and f <= WITHIN for f in found]),
            "change_found": _count([f is not None for f in found]),
            "by": {f"{key} {v}": {"false_change": _count([bool(c["changes"]) for c in single if c[key] == v]),
                                   "change_within_4s": _count([f is not None and f <= WITHIN
                                                               for c, f in zip(double, found) if c[key] == v])}
                   for key in ("half", "group") for v in sorted({c[key] for c in single})},
            "change_heard_s": {"p50": pct(heard, 50), "p95": pct(heard, 95), "max": max(heard, default=None)},
            # the recent-against-earlier cosines, for choosing the rule's constants without rerunning
            "drift_one_person": {"p1": pct(genuine, 1), "p5": pct(genuine, 5), "p50": pct(genuine, 50)},
            "drift_across_people": {"p50": pct(crossing, 50), "p95": pct(crossing, 95), "p99": pct(crossing, 99)}}


def _found(c: dict) -> float | None:
    """Seconds of the second person's speech heard when the first change after the switch was reported."""
    heard = [h - c["switch_heard"] for _, h in c["changes"] if h >= c["switch_heard"]]
    return heard[0] if heard else None


def _count(hits: list[bool]) -> dict:
    k, n = int(sum(hits)), len(hits)
    return {"k": k, "n": n, "rate": k / max(n, 1), "wilson95": wilson(k, n), "text": rate(k, n)}


def _scores(c: dict, after: float | None = None) -> list[float]:
    return [s for _, h, s, _ in c["decisions"] if s is not None and (after is None or h >= after)]


def table(res: dict) -> str:
    q, r = res["quality"], res.get("realtime")
    rows = [
        ("first decision after first speech (s, p50/p95/max)",
         f"{q['first_decision_s']['p50']:.2f} / {q['first_decision_s']['p95']:.2f} / {q['first_decision_s']['max']:.2f}",
         "<= 3"),
        ("gap between updates (s of audio, p50/p95/max)",
         f"{q['update_gap_s']['p50']:.2f} / {q['update_gap_s']['p95']:.2f} / {q['update_gap_s']['max']:.2f}", "<= 1 s of speech"),
        ("update cost, one session (ms, p50/p95)",
         f"{q['update_cost_ms_alone']['p50']:.0f} / {q['update_cost_ms_alone']['p95']:.0f}", ""),
    ] + ([(f"update cost, {r['sessions']} real-time sessions (ms, p50/p95)", f"{r['p50_ms']:.0f} / {r['p95_ms']:.0f}",
           "p95 <= 100"), ("real-time sessions held", str(res["capacity"]), "")] if r else []) + [
        (f"change reported within {WITHIN:g} s of the new voice", q["change_within_4s"]["text"], ">= 90%"),
        ("change reported at all (s of new speech, p50/p95/max)", (
            f"{q['change_found']['text']}; {q['change_heard_s']['p50']:.2f} / {q['change_heard_s']['p95']:.2f} / "
            f"{q['change_heard_s']['max']:.2f}"), ""),
        ("change reported in one-person calls", q["false_change"]["text"], "<= 2%"),
        ("one-person calls accepted at the end", q["accepted_one_person"]["text"], ""),
    ] + [(f"  {g}: within {WITHIN:g} s / one-person split",
          f"{v['change_within_4s']['text']} / {v['false_change']['text']}", "") for g, v in q["by"].items()]
    width = max(len(a) for a, _, _ in rows)
    return "\n".join([f"{'measure':<{width}}  {'found':>24}  target"] +
                     [f"{a:<{width}}  {b:>24}  {c}" for a, b, c in rows])


if __name__ == "__main__":
    main()
