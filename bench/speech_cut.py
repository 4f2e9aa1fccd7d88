"""How much of the corpora voicebank leaves out when it embeds a recording: non-speech farther than
``voicebank.audio.SPEECH_PAD_SECONDS`` from speech (``voicebank.audio.speech_only``). Prints, per
corpus, how many recordings lose anything and how much, and writes the figures to JSON.

    python bench/speech_cut.py [--data-root ../shared/data] [--out bench/results/speech_cut.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import quality_data as data  # noqa: E402
from _env import describe, machine  # noqa: E402
from voicebank.audio import SPEECH_PAD_SECONDS, AudioLimits, load, speech_only  # noqa: E402
from voicebank.errors import AudioError  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "speech_cut.json")
    args = p.parse_args()
    res = {"machine": machine(), "pad_s": SPEECH_PAD_SECONDS, "corpora": {}}
    print(describe(res["machine"]))
    print(f"{'corpus':<12} {'recordings':>10} {'cut':>6} {'seconds cut':>12} {'of audio':>9}")
    for name in data.CORPORA:
        corpus = data.read_corpus(name, args.data_root)
        if corpus is None:
            continue
        start, total, cut, seconds, audio_s = time.perf_counter(), 0, 0, 0.0, 0.0
        for path in corpus.paths:
            try:
                audio = load(str(path), 16_000, AudioLimits())
            except AudioError:
                continue
            kept = speech_only(audio)
            total, audio_s = total + 1, audio_s + audio.duration
            if len(kept) < len(audio.samples):
                cut, seconds = cut + 1, seconds + (len(audio.samples) - len(kept)) / audio.sample_rate
        res["corpora"][name] = {"recordings": total, "cut": cut, "seconds_cut": seconds, "audio_s": audio_s,
                                "wall_s": time.perf_counter() - start}
        print(f"{name:<12} {total:>10} {cut:>6} {seconds:>12.1f} {seconds / audio_s:>9.2%}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
