"""Live verification against whole-recording verification of the same audio (resemblyzer, real speech).

Issue 24 asks that a claimed-name live session, once 6 s of speech have been heard, accept as
often as ``verify`` of the same audio would. For each corpus a bank is drawn (people with 6+
recordings, each enrolled from its first 3 through ``VoiceBank.enroll``; the bank calibrates
itself, 1% false accepts per claim, as a new bank does). A *call* is a person's held-out
recordings one after another with 0.3 s gaps, each call starting on another recording. Every
call is fed to ``bank.listen(claimed)`` in 20 ms chunks until the first decision that rests on at
least ``--speech`` seconds of speech; the audio fed until then is verified whole
(``bank.verify(claimed, (samples, 16000))``). Genuine claims: a person's own call; impostor
claims: another enrolled person's call claiming them. Per corpus: accept rates live and whole,
both with Wilson 95% intervals, and how many claims the two decided differently.

    python bench/live_verify.py [--data-root ../shared/data] [--size 30] [--rotations 2] [--speech 6]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import quality_data as data  # noqa: E402
from _env import describe, machine  # noqa: E402
from stream_calls import wilson  # noqa: E402

GAP = 0.3  # seconds of silence between a person's recordings in a call
CHUNK = 0.02  # seconds per chunk (a typical RTP/WebRTC frame)


def call(corpus, rows: list[int], start: int) -> np.ndarray:
    gap = np.zeros(int(GAP * data.SR), np.float32)
    order = [rows[(start + k) % len(rows)] for k in range(len(rows))]
    return np.concatenate([x for r in order for x in (data.decode(corpus.paths[r]), gap)])


def live_then_whole(bank, claimed: str, samples: np.ndarray, speech: float) -> tuple[bool, bool, float, float] | None:
    """(accepted live, accepted whole, live score, whole score) at the first decision on ``speech``
    seconds of speech; None when the call holds too little speech for one."""
    session = bank.listen(claimed)
    step = int(CHUNK * data.SR)
    try:
        for at in range(0, len(samples), step):
            for u in session.feed(samples[at: at + step]):
                if u.event == "decision" and u.speech >= speech:
                    whole = bank.verify(claimed, (samples[: at + step], data.SR))
                    return u.result.accepted, whole.accepted, u.result.score, whole.score
    finally:
        session.close()
    return None


def run(corpus, size: int, rotations: int, speech: float, folder: Path, rng) -> dict:
    from voicebank import VoiceBank
    from voicebank.errors import VoiceBankError

    by_speaker = corpus.by_speaker()
    eligible = sorted(s for s, rows in by_speaker.items() if len(rows) >= 6)
    drawn = sorted(rng.choice(eligible, min(size, len(eligible)), replace=False))
    people, refused = [], []
    out: dict = {"genuine": [], "impostor": []}
    with VoiceBank.open(folder / f"{corpus.name}.db", "resemblyzer", create=True) as bank:
        for who in drawn:
            try:  # as a user would: a person the enrollment checks refuse is not in the bank
                bank.enroll(who, [str(corpus.paths[i]) for i in by_speaker[who][:3]], allow_inconsistent=True)
                people.append(who)
            except VoiceBankError as exc:
                refused.append(f"{who}: {exc}")
        point = bank.thresholds.operating_points()["verify"]
        for who in people:
            for r in range(rotations):
                own = call(corpus, by_speaker[who][3:], r)
                other = str(rng.choice([p for p in people if p != who]))
                for kind, samples in (("genuine", own), ("impostor", call(corpus, by_speaker[other][3:], r))):
                    found = live_then_whole(bank, who, samples, speech)
                    if found is not None:
                        out[kind].append(found)
    summary = {"people": len(people), "refused": refused, "verify_threshold": point.threshold, "method": point.method,
               "target": point.target, "trials": point.trials}
    for kind, rows in out.items():
        live_k, whole_k = sum(r[0] for r in rows), sum(r[1] for r in rows)
        summary[kind] = {"claims": len(rows), "live_accepted": live_k, "whole_accepted": whole_k,
                         "live_interval": wilson(live_k, len(rows)), "whole_interval": wilson(whole_k, len(rows)),
                         "live_only": sum(r[0] and not r[1] for r in rows),
                         "whole_only": sum(r[1] and not r[0] for r in rows),
                         "score_difference_p50": float(np.median([abs(r[2] - r[3]) for r in rows])) if rows else None}
    return summary


def table(res: dict) -> str:
    head = (f"{'corpus':<12} {'bank':>4}  {'claims':<9} {'n':>5}  {'accepted live':<30} {'accepted whole':<30} "
            f"{'live only':>9} {'whole only':>10}  |score diff| p50")
    lines = [head]
    for name, r in res["corpora"].items():
        for kind in ("genuine", "impostor"):
            g = r[kind]
            n = g["claims"]
            lines.append(f"{name:<12} {r['people']:>4}  {kind:<9} {n:>5}  {_rate(g['live_accepted'], n, g['live_interval']):<30} "
                         f"{_rate(g['whole_accepted'], n, g['whole_interval']):<30} {g['live_only']:>9} {g['whole_only']:>10}  "
                         f"{g['score_difference_p50']:.4f}")
    return "\n".join(lines)


def _rate(k: int, n: int, ci: tuple[float, float]) -> str:
    return f"{k}/{n} ({k / n:.1%}; {ci[0]:.1%}-{ci[1]:.1%})" if n else "-"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--corpus", action="append", choices=sorted(data.CORPORA), help="default: both")
    p.add_argument("--size", type=int, default=30, help="people per bank (at most those with 6+ recordings)")
    p.add_argument("--rotations", type=int, default=2, help="calls per person, each starting on another recording")
    p.add_argument("--speech", type=float, default=6.0, help="seconds of speech behind the compared decision")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "live-verify.json")
    args = p.parse_args()

    from voicebank import runtime

    runtime.configure()
    res: dict = {"machine": machine(), "command": " ".join(sys.argv), "speech": args.speech, "corpora": {}}
    print(describe(res["machine"]))
    began = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as folder:
        for name in args.corpus or sorted(data.CORPORA):
            corpus = data.read_corpus(name, args.data_root)
            if corpus is None:
                print(f"{name}: not found under {args.data_root}, skipped")
                continue
            res["corpora"][name] = run(corpus, args.size, args.rotations, args.speech, Path(folder), rng)
            print(f"{name}: {time.perf_counter() - began:.0f} s, {len(res['corpora'][name]['refused'])} refused at enrollment")
    res["seconds"] = round(time.perf_counter() - began, 1)
    print(table(res))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=float))
    print(f"wrote {args.out} ({res['seconds']} s)")


if __name__ == "__main__":
    main()
