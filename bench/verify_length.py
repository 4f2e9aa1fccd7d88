"""Does a verification threshold measured on short recordings keep its promise on longer ones?

From ``bench/quality.py``'s cached embeddings (run it first): each person with 6+ recordings has a
voiceprint of their first 3 (as they enroll); their other recordings are probes, alone or averaged
2 or 3 at a time (a longer probe: resemblyzer embeds a recording as the mean of its partials, so
the mean of two recordings' embeddings stands in for one recording twice as long). Every probe is
scored against every other person's voiceprint (impostor claims) and its own (genuine). The
threshold is set where single recordings give ``--rate`` false accepts; the table shows what the
longer probes give at that same threshold.

    python bench/verify_length.py [--data-root ../shared/data] [--rate 0.01]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import quality_data as data  # noqa: E402
from _env import describe, machine  # noqa: E402
from voicebank.vectors import voiceprint  # noqa: E402

def trials(embeddings: np.ndarray, by_speaker: dict[str, list[int]], averaged: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(genuine scores, impostor scores, people) with probes of ``averaged`` recordings."""
    people = sorted(p for p, rows in by_speaker.items() if len(rows) >= 6)
    prints = np.stack([voiceprint(embeddings[by_speaker[p][:3]]) for p in people])
    genuine, impostor = [], []
    for i, p in enumerate(people):
        held = by_speaker[p][3:]
        for j in range(0, len(held) - averaged + 1, averaged):
            scores = prints @ voiceprint(embeddings[held[j:j + averaged]])  # a probe as long as ``averaged`` recordings
            genuine.append(scores[i])
            impostor.extend(np.delete(scores, i))
    return np.array(genuine), np.array(impostor), len(people)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--cache", type=Path, default=ROOT / "bench" / "results" / "quality-cache")
    p.add_argument("--rate", type=float, default=0.01, help="false accepts per claim on single recordings")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "verify-length.json")
    args = p.parse_args()
    from voicebank.embedding import load_embedder

    model_id = load_embedder("resemblyzer").model_id  # the cache is named for the model that filled it
    res: dict = {"machine": machine(), "command": " ".join(sys.argv), "rate": args.rate, "corpora": {}}
    print(describe(res["machine"]))
    print(f"{'corpus':<12} {'people':>6} {'recordings per probe':>20} {'threshold':>9} {'impostor claims accepted':>28} "
          f"{'x promise':>9} {'genuine accepted':>17}")
    for name in sorted(data.CORPORA):
        corpus = data.read_corpus(name, args.data_root)
        cache = data.cache_path(args.cache, name, "wide", model_id)
        if corpus is None or not cache.is_file():
            print(f"{name}: no corpus or no cache ({cache}); run bench/quality.py first")
            continue
        with np.load(cache) as z:
            found = dict(zip(z["keys"].tolist(), z["emb"]))
        embeddings = np.stack([found[str(q.relative_to(corpus.root))] for q in corpus.paths])
        rows = []
        threshold = None
        for averaged in (1, 2, 3):
            genuine, impostor, people = trials(embeddings, corpus.by_speaker(), averaged)
            if threshold is None:
                threshold = float(np.quantile(impostor, 1 - args.rate))
            fa = float(np.mean(impostor >= threshold))
            rows.append({"averaged": averaged, "threshold": threshold, "impostor": len(impostor),
                         "false_accepts": int(np.sum(impostor >= threshold)), "rate": fa,
                         "genuine_accepted": float(np.mean(genuine >= threshold)), "genuine": len(genuine)})
            print(f"{name:<12} {people:>6} {averaged:>20} {threshold:>9.4f} "
                  f"{rows[-1]['false_accepts']:>12}/{len(impostor):<7} ({fa:6.2%}) {fa / args.rate:>8.2f}x "
                  f"{rows[-1]['genuine_accepted']:>16.1%}")
        res["corpora"][name] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
