"""Choosing the live change-of-speaker rule on real speech, with the speech detector in the loop.

Each call (``stream_calls``: one- and two-person calls of both halves of the people) is fed in
20 ms chunks to a live session's ear (``live_speech.Ear``, silero-vad as a stream), and the latest
2 s of speech is embedded (resemblyzer, in the session's channel) every 0.5 s of speech: a *trace*
of pieces, each with the seconds of speech heard when a session would have made it. A rule is then
replayed on the traces exactly as ``live.Session._change`` runs (the window restarting after each
change), for any cadence that is a multiple of 0.5 s, recent span, threshold, confirmation count
and a "far below: report at once" level, in numpy, in seconds. The constants are chosen on half
``a`` of the people (the most changes within 4 s with no one-person call split, ``--max-false``;
checks every 1 s of speech as now, ``--cadences``) and measured on half ``b`` (people never seen while choosing) and on all.

    python bench/stream_rules.py --speechocean [--rotations 2] [--turn 10] [--traces bench/results/stream-traces.npz]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _env import describe, machine  # noqa: E402
from stream_calls import HALVES, calls, corpus, rate  # noqa: E402

SR = 16_000
CHUNK = 0.02  # seconds per chunk, as bench/stream.py feeds
STEP = 0.5  # seconds of speech between the trace's pieces
PIECE = 2.0  # seconds of speech per piece (live.PIECE_SECONDS)
WITHIN = 4.0


@dataclass(frozen=True)
class Rule:
    cadence: float = 1.0  # seconds of speech between change checks (the defaults: the rule before issue 24's change)
    recent: int = 2  # pieces in the recent speech
    offset: float = 0.05  # threshold = consistency threshold + offset
    confirm: int = 2  # checks in a row below the threshold
    far: float | None = None  # report at once below consistency + far (None: never at once)
    earlier_s: float = 3.0  # seconds of earlier speech needed (pieces sharing no sample with the recent)

    def label(self) -> str:
        far = "" if self.far is None else f", at once below {self.far:+.3f}"
        span = PIECE + (self.recent - 1) * self.cadence
        return (f"every {self.cadence:g} s, recent {self.recent} pieces ({span:g} s), below {self.offset:+.3f} "
                f"x{self.confirm}{far}")


def trace(encoder, call) -> dict:
    """The pieces a live session would embed every 0.5 s of speech: (n, d) embeddings, the speech
    heard at each, the speech heard when the second person began (None: one person)."""
    from voicebank import channel as channel_mod
    from voicebank.live_speech import Ear

    ear, step = Ear(SR), int(CHUNK * SR)
    speech, total, heard_after, switch_heard = [], [], [], None  # total: speech samples after each chunk
    for at in range(0, len(call.samples), step):
        if call.switch is not None and switch_heard is None and at >= call.switch:
            switch_heard = ear.speech
        speech.append(ear.hear(call.samples[at: at + step]))
        total.append(len(speech[-1]) + (total[-1] if total else 0))
        heard_after.append(ear.speech)
    stream = np.concatenate(speech)
    ends = np.arange(int(PIECE * SR), len(stream) + 1, int(STEP * SR))
    if not len(ends):
        return {"E": np.zeros((0, encoder.dimension), np.float32), "heard": np.zeros(0), "switch": switch_heard}
    pieces = [stream[e - int(PIECE * SR): e] for e in ends]
    # the session measures the channel on its first piece; a claim is decided in the channel heard
    # where the claimed voiceprint has one (every person here is enrolled from wideband speech)
    if channel_mod.measure(pieces[0], SR).channel == channel_mod.TELEPHONE:
        pieces = [channel_mod.telephone(p, SR) for p in pieces]
    heard = np.array([heard_after[int(np.searchsorted(total, e))] for e in ends])
    return {"E": encoder.embed_samples(pieces), "heard": heard, "switch": switch_heard}


def replay(E: np.ndarray, heard: np.ndarray, rule: Rule, consistency: float,
           below_at: list[bool] | None = None) -> list[float]:
    """The speech heard at each change the rule reports on one trace (``live.Session._change``);
    ``below_at`` gets, for each check, whether its score was below the threshold."""
    every = round(rule.cadence / STEP)
    gap = round(PIECE / rule.cadence) - 1
    need = 1 + round((rule.earlier_s - PIECE) / rule.cadence)  # earlier pieces for earlier_s seconds
    threshold, far = consistency + rule.offset, None if rule.far is None else consistency + rule.far
    window: list[np.ndarray] = []
    below, out = 0, []
    for k in range(0, len(E), every):
        window.append(E[k])
        earlier = len(window) - rule.recent - gap
        if earlier < need:
            continue
        score = float(np.dot(_mean(window[-rule.recent:]), _mean(window[:earlier])))
        below = below + 1 if score < threshold else 0
        if below_at is not None:
            below_at.append(score < threshold)
        if below >= rule.confirm or (far is not None and score < far):
            out.append(float(heard[k]))
            window, below = [window[-1]], 0
    return out


def _mean(embeddings: list[np.ndarray]) -> np.ndarray:
    total = np.sum(np.asarray(embeddings, dtype=np.float64), axis=0)
    return total / (np.linalg.norm(total) or 1.0)


def measure(traces: list[dict], rule: Rule, consistency: float) -> dict:
    """One-person calls split; two-person calls with a change within 4 s of the new voice."""
    split, single, within, found, double, delays, below_at = 0, 0, 0, 0, 0, [], []
    for t in traces:
        changes = replay(t["E"], t["heard"], rule, consistency, below_at if t["switch"] is None else None)
        if t["switch"] is None:
            single, split = single + 1, split + bool(changes)
            continue
        double += 1
        after = [h - t["switch"] for h in changes if h >= t["switch"]]
        if after:
            found, within, delays = found + 1, within + (after[0] <= WITHIN), delays + [after[0]]
    return {"split": split, "single": single, "within": within, "found": found, "double": double,
            "one_person_checks": len(below_at), "one_person_checks_below": int(sum(below_at)),
            "heard_p50": float(np.median(delays)) if delays else None, "heard_max": max(delays, default=None)}


def rules(cadences: tuple[float, ...] = (1.0,)) -> list[Rule]:
    offsets = [round(x, 3) for x in np.arange(-0.05, 0.151, 0.025)]
    out = []
    for cadence, recent in [(1.0, 1), (1.0, 2), (1.0, 3), (0.5, 1), (0.5, 2), (0.5, 3), (0.5, 4)]:
        if cadence not in cadences:
            continue
        for offset, confirm, far in itertools.product(offsets, (1, 2, 3), (None, -0.15, -0.1, -0.05, 0.0)):
            if far is None or (confirm > 1 and far < offset):
                out.append(Rule(cadence, recent, offset, confirm, far))
    return out


def choose(traces: list[dict], consistency: float, max_false: float,
           cadences: tuple[float, ...] = (1.0,)) -> list[tuple[Rule, dict]]:
    """Every rule on ``traces``, the admissible ones (one-person calls split <= max_false) first,
    best first: most changes within 4 s, then fewest splits; among equals the cheapest and most
    wary (fewest checks per second, no "at once" level, most checks in a row, lowest threshold)."""
    scored = [(r, measure(traces, r, consistency)) for r in rules(cadences)]
    return sorted(scored, key=lambda rm: (rm[1]["split"] > max_false * rm[1]["single"], -rm[1]["within"],
                                          rm[1]["split"], -rm[0].cadence, rm[0].far is not None, -rm[0].confirm,
                                          rm[0].offset))


def report(name: str, m: dict) -> str:
    return (f"{name}: changes within {WITHIN:g} s {rate(m['within'], m['double'])}, found {m['found']}, heard p50 "
            f"{m['heard_p50'] or 0:.2f} s max {m['heard_max'] or 0:.2f} s; one-person calls split "
            f"{rate(m['split'], m['single'])}; their checks below the threshold "
            f"{m['one_person_checks_below']} of {m['one_person_checks']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--speechocean", action="store_true", help="the people of speechocean762-dev too")
    p.add_argument("--rotations", type=int, default=2)
    p.add_argument("--turn", type=float, default=10.0)
    p.add_argument("--max-false", type=float, default=0.0, help="the most one-person calls of half a split")
    p.add_argument("--cadences", type=float, nargs="+", default=[1.0],
                   help="seconds of speech between checks tried (default 1: a check every 0.5 s embeds twice as "
                        "much, and 4 sessions' update cost was at 95 of the 100 ms allowed)")
    p.add_argument("--traces", type=Path, default=ROOT / "bench" / "results" / "stream-traces.npz",
                   help="made once, then read and added to (delete it to make it again)")
    p.add_argument("--limit", type=int, default=0, help="trace at most this many calls in all (0: every call)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stream-rules.json")
    args = p.parse_args()
    info = machine(torch=False)
    print(describe(info))
    traces, consistency = load_or_make(args)
    res: dict = {"machine": info, "consistency_threshold": consistency, "calls": len(traces)}
    half = {h: [t for t in traces if t["half"] == h] for h in HALVES}
    ranked = choose(half["a"], consistency, args.max_false, tuple(args.cadences))
    before, best = Rule(), ranked[0][0]  # before: the rule until issue 24's change (the last 3 s as the recent)
    print("top rules on half a:")
    for r, m in ranked[:15]:
        print(f"  {r.label()}: {report('a', m)}")
    for name, r in [("before", before), ("chosen", best)]:
        res[name] = {"rule": asdict(r)}
        groups = [(g, [t for t in traces if t["group"] == g]) for g in sorted({t["group"] for t in traces})]
        for h, ts in [("a", half["a"]), ("b", half["b"]), ("all", traces), *groups]:
            m = res[name][h] = measure(ts, r, consistency)
            print(f"{name} ({r.label()}) {report(h, m)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=float))
    print(f"wrote {args.out}")


def load_or_make(args) -> tuple[list[dict], float]:
    """The traces of every call, made once (saved every 50 calls: a run cut short keeps what it
    made, and the next run goes on from there) and the consistency threshold of a new bank."""
    os.environ.setdefault("VOICEBANK_NETS", "auto")
    from voicebank import VoiceBank, runtime

    runtime.configure()
    people, strangers = corpus(args.data_root, args.speechocean)
    single, double = calls(people, strangers, args.rotations, args.turn)
    # people in order within each rotation, each one's two-person call then their one-person call,
    # so that any first part of the list has both halves and both kinds alike
    order = [c for pair in zip(double, single) for c in pair]
    order = sorted(order, key=lambda c: c.rotation)
    out = list(np.load(args.traces, allow_pickle=True)["traces"]) if args.traces.exists() else []
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder, VoiceBank.open(Path(folder) / "bank.db", "resemblyzer",
                                                                 create=True) as bank:
        consistency = bank.thresholds.enrollment_checks[0]  # a new bank's; the calls need no one enrolled
        for n, c in enumerate(order[len(out): args.limit or None], start=len(out)):
            out.append(trace(bank._services.encoder, c) | {"half": c.half, "group": c.group, "claimed": c.claimed,
                                                           "second": c.second, "rotation": c.rotation})
            if (n + 1) % 50 == 0 or n + 1 == len(order):
                args.traces.parent.mkdir(parents=True, exist_ok=True)
                np.savez(args.traces, traces=np.array(out, dtype=object), consistency=consistency)
                print(f"  {n + 1} of {len(order)} calls traced, {time.perf_counter() - began:.0f} s", flush=True)
    return out, consistency


if __name__ == "__main__":
    main()
