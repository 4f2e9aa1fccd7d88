"""Who spoke when, on meetings made of real speech: how much of each enrolled person's speech
`voicebank scan` names right, and how much of each stranger's it leaves unknown.

A bank is drawn from a corpus (people with 6+ recordings; each enrolled from its first 3, through
the product: ``VoiceBank.enroll``, resemblyzer). A meeting is 8 turns, each a held-out recording
of a bank person or a recording of someone not enrolled (half each, drawn at random), separated
by gaps of 0.2 to 0.45 s as people take turns; it is written to a WAV file and scanned with the
product's defaults (``VoiceBank.scan``). The bank measures itself with the reference set built
from the other corpus (the shipped one holds both), so no stranger of its meetings is in it. Per turn, of the speech scan labelled, the share
labelled right (the person, or unknown for a stranger). Measured twice: with the bank's operating
point for scan windows (what ``scan`` uses) and with its identification threshold for whole
recordings in its place (what ``scan`` used before windows had one).

    python bench/meetings.py [--data-root ../shared/data] [--meetings 20] [--size 30]
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
from _env import describe  # noqa: E402

TURNS = 8
GAP = (0.2, 0.45)  # seconds between turns


def meeting(corpus, bank: list[str], strangers: list[str], by_speaker: dict, rng) -> tuple[np.ndarray, list]:
    """(samples at 16 kHz, [(start s, end s, who or None)]) of one meeting."""
    pieces, turns, at = [], [], 0.0
    for _ in range(TURNS):
        enrolled = rng.random() < 0.5
        who = rng.choice(bank) if enrolled else rng.choice(strangers)
        rows = by_speaker[who][3:] if enrolled else by_speaker[who]
        samples = data.decode(corpus.paths[int(rng.choice(rows))])
        gap = np.zeros(int(rng.uniform(*GAP) * data.SR), np.float32)
        pieces += [gap, samples]
        at += len(gap) / data.SR
        turns.append((at, at + len(samples) / data.SR, who if enrolled else None))
        at += len(samples) / data.SR
    pieces.append(np.zeros(int(0.5 * data.SR), np.float32))
    return np.concatenate(pieces), turns


def score(turns: list, segments: list) -> list[dict]:
    """Per turn: seconds labelled right (the person; for a stranger, unknown), wrong (another
    person; for a stranger, anyone), unknown (an enrolled person left unknown), by overlap."""
    out = []
    for start, end, who in turns:
        right = wrong = unknown = 0.0
        for s in segments:
            overlap = max(0.0, min(end, s.end) - max(start, s.start))
            if not overlap:
                continue
            if s.name == who:
                right += overlap
            elif s.name is None:
                unknown += overlap
            else:
                wrong += overlap
        out.append({"enrolled": who is not None, "right": right, "wrong": wrong, "unknown": unknown})
    return out


def summary(rows: list[dict]) -> dict:
    out = {}
    for group, enrolled in (("enrolled", True), ("strangers", False)):
        sel = [r for r in rows if r["enrolled"] == enrolled]
        total = sum(r["right"] + r["wrong"] + r["unknown"] for r in sel)
        out[group] = {"turns": len(sel), "seconds": round(total, 1),
                      **{k: (sum(r[k] for r in sel) / total if total else None) for k in ("right", "wrong", "unknown")}}
    return out


def run(corpus, size: int, meetings: int, folder: Path, rng, reference) -> dict:
    import soundfile as sf

    from voicebank import VoiceBank
    from voicebank import reference as references

    # the shipped reference set holds both corpora: the bank measures itself with the one built from
    # the other corpus, so that no stranger of these meetings is in it
    references._loaded[reference.model_id] = reference
    by_speaker = corpus.by_speaker()
    eligible = [s for s, rows in by_speaker.items() if len(rows) >= 6]
    bank_people = list(rng.choice(eligible, min(size, len(eligible) - 2), replace=False))
    strangers = [s for s in by_speaker if s not in bank_people]
    db = folder / f"{corpus.name}.db"
    results: dict = {"before": [], "after": []}
    with VoiceBank.open(db, "resemblyzer", create=True) as bank:
        for who in bank_people:
            bank.enroll(who, [str(corpus.paths[i]) for i in by_speaker[who][:3]], allow_inconsistent=True)
        scan_point = bank.thresholds.operating_points()["scan"]
        identify_point = bank.thresholds.operating_points()["identify"]
        for m in range(meetings):
            samples, turns = meeting(corpus, bank_people, strangers, by_speaker, rng)
            path = folder / f"{corpus.name}-{m}.wav"
            sf.write(path, samples, data.SR)
            results["after"] += score(turns, bank.scan(str(path)))
            results["before"] += score(turns, bank.scan(str(path), purpose="identify"))
    return {"bank": len(bank_people), "meetings": meetings,
            "thresholds": {"scan": scan_point.threshold, "identify": identify_point.threshold,
                           "scan_method": scan_point.method, "scan_target": scan_point.target},
            **{k: summary(v) for k, v in results.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--meetings", type=int, default=20)
    p.add_argument("--size", type=int, default=30, help="people enrolled (at most the corpus's people with 6+ "
                                                         "recordings, less two)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "meetings.json")
    p.add_argument("--cache", type=Path, default=ROOT / "bench" / "results" / "quality-cache",
                   help="bench/quality.py's cache, where the reference sets of each corpus are kept")
    args = p.parse_args()
    from quality import environment, references
    from voicebank.embedding import load_embedder

    embedder = load_embedder("resemblyzer")
    res = {**environment(embedder), "corpora": {}}
    refs = references(argparse.Namespace(data_root=args.data_root, cache=args.cache), embedder)
    print(describe(res["machine"], res["versions"]))
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        for name in data.CORPORA:
            corpus = data.read_corpus(name, args.data_root)
            if corpus is not None and name in refs:
                res["corpora"][name] = run(corpus, args.size, args.meetings, Path(folder), rng, refs[name])
    print("\n== Meetings: the share of each person's scanned speech labelled right")
    for name, r in res["corpora"].items():
        t = r["thresholds"]
        for when, label in (("before", f"identify threshold {t['identify']:.3f}"),
                            ("after", f"scan windows' threshold {t['scan']:.3f} ({t['scan_method']})")):
            e, s = r[when]["enrolled"], r[when]["strangers"]
            print(f"{name:<12} bank {r['bank']:>3}  {label:<42} enrolled named right {e['right']:.1%} (wrong "
                  f"{e['wrong']:.1%}, unknown {e['unknown']:.1%}; {e['seconds']:.0f} s)   strangers left unknown "
                  f"{s['right']:.1%} ({s['seconds']:.0f} s)")
    res["wall_s"] = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=float))
    print(f"\nwrote {args.out} ({res['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
