"""Does where a short word sits in its file change its score? For people of each corpus, 1.5 s of
speech cut out mid-word is scored against its speaker (enrolled from 3 other recordings) alone,
after 0 to 2 s of silence (any offset), inside a minute of silence, and inside 30 s of noise at
-60 dBFS. Prints, per corpus, the largest difference from the word alone, and writes JSON.

    python bench/placement.py [--speakers 12] [--data-root ../shared/data] [--out bench/results/placement.json]
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

warnings.filterwarnings("ignore")  # pkg_resources deprecation from webrtcvad (via resemblyzer)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import quality_data as data  # noqa: E402
from _env import describe, machine  # noqa: E402

from voicebank import VoiceBank, audio  # noqa: E402
from voicebank.errors import NotEnoughSpeechError  # noqa: E402

RATE, WORD_SECONDS = 16_000, 1.5
PLACEMENTS = ("lead 0-2 s", "in 60 s of silence", "in -60 dBFS noise")


def placed(word: np.ndarray, how: str, rng: np.random.Generator) -> np.ndarray:
    if how == PLACEMENTS[0]:
        return np.concatenate([np.zeros(int(rng.uniform(0, 2) * RATE), np.float32), word, np.zeros(RATE, np.float32)])
    length = 60 * RATE if how == PLACEMENTS[1] else 30 * RATE
    out = np.zeros(length, np.float32) if how == PLACEMENTS[1] else \
        (10 ** (-60 / 20) * rng.standard_normal(length)).astype(np.float32)
    at = int(rng.uniform(2, length / RATE - 3) * RATE)
    out[at:at + len(word)] += word
    return out


def cut_word(path: Path) -> np.ndarray:
    """1.5 s from half a second after the speech starts: a word cut off at both ends."""
    loaded = audio.load(path, RATE)
    start = int(np.argmax(loaded.speech_frames)) * round(audio.vad.FRAME_SECONDS * RATE) + RATE // 2
    return loaded.samples[start:start + int(WORD_SECONDS * RATE)]


def measure(corpus: data.Corpus, speakers: int, tries: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    by: dict[str, list[Path]] = {}
    for path, speaker in zip(corpus.paths, corpus.speakers):
        by.setdefault(speaker, []).append(path)
    chosen = [s for s in sorted(by) if len(by[s]) >= 4]
    chosen = chosen[:: max(1, len(chosen) // speakers)][:speakers]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bank = VoiceBank.open(Path(tmp) / "bank.db", "resemblyzer", create=True)
        for speaker in chosen:
            paths = sorted(by[speaker], key=lambda p: p.stat().st_size)
            bank.enroll(speaker, [str(p) for p in paths[-3:]])
            word = cut_word(paths[-4])
            try:
                alone = bank.verify(speaker, (word, RATE)).score
            except NotEnoughSpeechError:  # a pause in those 1.5 s: no decision to compare
                continue
            row = {"speaker": speaker, "alone": alone, "refused": 0}
            for how in PLACEMENTS:
                row[how] = 0.0
                for _ in range(tries):
                    try:
                        row[how] = max(row[how], abs(bank.verify(speaker, (placed(word, how, rng), RATE)).score - alone))
                    except NotEnoughSpeechError:  # the detector's frames heard under 1 s of speech there
                        row["refused"] += 1
            rows.append(row)
        bank.close()
    worst_all = [max(r[how] for how in PLACEMENTS) for r in rows]
    return {"words": len(rows), "tries": tries, "rows": rows,
            "median": float(np.median(worst_all)) if rows else None, "max": float(max(worst_all)) if rows else None,
            "within_0_02": int(sum(w < 0.02 for w in worst_all)), "refused": sum(r["refused"] for r in rows)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--speakers", type=int, default=12, help="people per corpus (one word each)")
    p.add_argument("--tries", type=int, default=4, help="placements of each kind per word")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "placement.json")
    args = p.parse_args()
    res = {"machine": machine(torch=True), "word_s": WORD_SECONDS, "corpora": {}}
    print(describe(res["machine"]))
    print(f"{'corpus':<12} {'words':>5} {'median':>7} {'max':>7} {'within 0.02':>12} {'refused':>8}   "
          "largest difference from the word alone; placements refused for too little speech")
    for name in data.CORPORA:
        corpus = data.read_corpus(name, args.data_root)
        if corpus is None:
            continue
        start = time.perf_counter()
        got = res["corpora"][name] = measure(corpus, args.speakers, args.tries, args.seed)
        got["wall_s"] = time.perf_counter() - start
        if got["words"]:
            print(f"{name:<12} {got['words']:>5} {got['median']:>7.3f} {got['max']:>7.3f} "
                  f"{got['within_0_02']:>5} of {got['words']:<4} {got['refused']:>4} of {got['words'] * 3 * args.tries}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
