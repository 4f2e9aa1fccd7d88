"""Channels: how often voicebank tells a wideband recording from a telephone call, and what deciding a
call each way gives.

1. Detection (``voicebank.channel.measure``, on the speech the product's detector marks): every
   recording of ../shared/data as recorded (wideband), through 8 kHz mu-law, GSM 06.10 and AMR-NB
   (sox), and with a hiss added after the line at -50 and -60 dBFS (a recorder's noise floor): the
   share measured telephone, and the measure's spread against ``BOUNDARY_DB``.
2. The alternatives for deciding a call (``alternatives``), and other simulated lines than voicebank's.

    python bench/channel.py [--data-root ../shared/data] [--every 1]

Embeddings come from bench/quality.py's cache (bench/results/quality-cache), made on first use.
"""

from __future__ import annotations

import argparse
import json
import sys
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

CODECS = {"wideband": "wide", "mu-law": "tel", "GSM 06.10": "gsm", "AMR-NB": "amr"}
HISS_DBFS = (-60, -50)


def detection(corpora: list, every: int) -> list[dict]:
    from voicebank import audio, channel

    rng = np.random.default_rng(0)
    rows = []
    for corpus in corpora:
        picked = range(0, len(corpus.paths), every)
        variants = {name: (ch, None) for name, ch in CODECS.items()}
        variants.update({f"mu-law + hiss {d} dBFS": ("tel", d) for d in HISS_DBFS})
        variants.update({f"wideband + hiss {d} dBFS": ("wide", d) for d in HISS_DBFS})
        for name, (ch, hiss) in variants.items():
            measured = []
            for i in picked:
                w = data.waveform(corpus.paths[i], ch)
                if hiss is not None:
                    w = (w + rng.normal(0, 10 ** (hiss / 20), len(w))).astype(np.float32)
                r = channel.measure(w, data.SR, audio.voiced_frames(w, data.SR))
                measured.append((r.channel == channel.TELEPHONE, r.high_db if r.high_db is not None else np.nan))
            tel = np.array([m[0] for m in measured])
            db = np.array([m[1] for m in measured])
            rows.append({"corpus": corpus.name, "audio": name, "recordings": len(tel), "telephone": int(tel.sum()),
                         "wideband_truth": ch == "wide", "high_db_p1_p50_p99": np.nanpercentile(db, [1, 50, 99]).round(1).tolist()})
            print(f"  {corpus.name} {name}: {int(tel.sum())}/{len(tel)} telephone", file=sys.stderr, flush=True)
    return rows


ALTERNATIVES = ("today", "pooled", "cross-calibrated", "matched", "matched, call re-simulated")
LINES = {"G.711 mu-law (voicebank)": "sim", "G.712 band + mu-law": "g712", "8 kHz band limit only": "lp8"}


def alternatives(corpus, embedder, cache: Path) -> dict:
    """speechocean folds (bench/quality.py's protocol: 50 enrolled with 5 wideband recordings, the
    other 50 the strangers), margin rule: calls through each codec decided

    - today: against the wideband voiceprints, with the wideband calibration;
    - pooled: the same, with one threshold calibrated on the wideband trials and the same trials
      with the probe side through the simulated line, pooled;
    - cross-calibrated: the same, calibrated on those cross-channel trials alone;
    - matched: against voiceprints through the simulated line, calibrated on those, the call as it came;
    - matched, call re-simulated: the same, the call passed through the simulated line too (voicebank).

    And the last with other simulated lines in place of voicebank's (``LINES``)."""
    import quality_protocol as protocol

    from voicebank.calibration import MARGIN, OpenSetTrials, RateModel, identification_point
    from voicebank.evaluation import trials_from_embeddings
    from voicebank.norm import Normalizer
    from voicebank.vectors import voiceprint

    emb = lambda ch: data.embeddings(corpus, ch, embedder, cache)[0]  # noqa: E731
    by_speaker = corpus.by_speaker()
    (a, b), _ = protocol.halves(by_speaker)
    wide = emb("wide")

    def cross(enroll_prints, enroll_probes):
        """Each enrollment recording (as ``enroll_probes``) against the others' voiceprints (of ``enroll_prints``)."""
        rows, target, best, second, right = [], [], [], [], []
        prints = np.stack([voiceprint(e) for e in enroll_prints]).astype(np.float64)
        for k, (ep, eq) in enumerate(zip(enroll_prints, enroll_probes)):
            others = [j for j in range(len(prints)) if j != k]
            for u in range(len(eq)):
                row = prints[others] @ eq[u].astype(np.float64)
                rows.append(row)
                own = float(voiceprint(np.delete(ep, u, 0)).astype(np.float64) @ eq[u])
                top = np.sort(np.append(row, own))[::-1]
                target.append(own), best.append(top[0]), second.append(top[1]), right.append(own >= row.max())
        return OpenSetTrials(np.array(target), np.array(best), np.array(right), rows, len(prints), "cosine",
                             np.array(second), MARGIN)

    def pool(x, y):
        return OpenSetTrials(np.concatenate([x.target, y.target]), np.concatenate([x.known_best, y.known_best]),
                             np.concatenate([x.known_correct, y.known_correct]), x.unknown + y.unknown, x.gallery,
                             x.kind, np.concatenate([x.known_second, y.known_second]), x.rule)

    def measured(trials, prints, calls, genuine_rows, owner, unknown_rows):
        t = identification_point(trials, 0.01, len(prints), RateModel.fit(trials)).threshold
        sg, su = calls[genuine_rows].astype(np.float64) @ prints.T, calls[unknown_rows].astype(np.float64) @ prints.T
        got = protocol.identify_at(protocol.statistic(sg, MARGIN), sg.argmax(1) == owner, protocol.statistic(su, MARGIN), t)
        return np.array([got["false_alarms"], got["unknown"], got["correct"], got["genuine"], got["oracle_correct"]])

    out: dict = {}
    for codec, ch in CODECS.items():
        if ch == "wide":
            continue
        for line_name, line in [("", "sim")] + [(n, c) for n, c in LINES.items() if c != "sim"]:
            methods = ALTERNATIVES if not line_name else ("matched, call re-simulated",)
            sums = {m: np.zeros(5) for m in methods}
            simulated, raw_call, call = emb(line), emb(ch), emb(f"{ch}+{line}")
            for bank, away in ((a, b), (b, a)):
                enroll_rows = [by_speaker[s][:5] for s in bank]
                held = [(i, k) for k, s in enumerate(bank) for i in by_speaker[s][5:]]
                genuine_rows, owner = [i for i, _ in held], np.array([k for _, k in held])
                unknown_rows = [i for s in away for i in by_speaker[s]]
                ew, es = [wide[r] for r in enroll_rows], [simulated[r] for r in enroll_rows]
                wide_prints = np.stack([voiceprint(e) for e in ew]).astype(np.float64)
                line_prints = np.stack([voiceprint(e) for e in es]).astype(np.float64)
                speakers = lambda e: [(k + 1, x) for k, x in enumerate(e)]  # noqa: E731
                own_wide = trials_from_embeddings(speakers(ew), None, Normalizer("cosine", 0), rule=MARGIN)
                own_line = trials_from_embeddings(speakers(es), None, Normalizer("cosine", 0), rule=MARGIN)
                chosen = {"today": (own_wide, wide_prints, raw_call), "pooled": (pool(own_wide, cross(ew, es)),
                                                                                   wide_prints, raw_call),
                          "cross-calibrated": (cross(ew, es), wide_prints, raw_call),
                          "matched": (own_line, line_prints, raw_call),
                          "matched, call re-simulated": (own_line, line_prints, call)}
                for m in methods:
                    sums[m] += measured(*chosen[m], genuine_rows, owner, unknown_rows)
            for m, (fa, unknown, correct, genuine, oracle) in sums.items():
                out.setdefault(codec, []).append({
                    "method": m if not line_name else f"{m}: {line_name}", "false_alarms": int(fa),
                    "unknown": int(unknown), "correct": int(correct), "genuine": int(genuine), "oracle": int(oracle)})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--cache", type=Path, default=ROOT / "bench" / "results" / "quality-cache")
    p.add_argument("--every", type=int, default=1, help="measure detection on every Nth recording (default all)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "channel.json")
    args = p.parse_args()
    from quality import environment
    from voicebank.channel import BOUNDARY_DB
    from voicebank.embedding import load_embedder

    corpora = [c for c in (data.read_corpus(n, args.data_root) for n in data.CORPORA) if c]
    if not corpora:
        sys.exit(f"no corpus found under {args.data_root}")
    embedder = load_embedder("resemblyzer")
    res = {**environment(embedder), "boundary_db": BOUNDARY_DB}
    print(describe(res["machine"], res["versions"]))
    start = time.perf_counter()
    res["detection"] = detection(corpora, args.every)
    print(f"\n== Channel measured (boundary {BOUNDARY_DB:g} dB: speech above 4.6 kHz against the telephone band)")
    for r in res["detection"]:
        wrong = r["telephone"] if r["wideband_truth"] else r["recordings"] - r["telephone"]
        print(f"{r['corpus']:<12} {r['audio']:<26} telephone {r['telephone']:>4}/{r['recordings']:<4} "
              f"wrong {wrong:>4} ({wrong / r['recordings']:.1%})   high band dB p1/p50/p99 {r['high_db_p1_p50_p99']}")
    speechocean = next((c for c in corpora if c.name == "speechocean"), None)
    if speechocean is not None:
        res["alternatives"] = alternatives(speechocean, embedder, args.cache)
        print("\n== Deciding calls (speechocean, 2 folds of 50 enrolled from 5 wideband recordings; 1% promised, "
              "margin rule)")
        for codec, rows in res["alternatives"].items():
            for r in rows:
                print(f"{codec:<10} {r['method']:<58} false alarms {r['false_alarms']:>3}/{r['unknown']} "
                      f"({r['false_alarms'] / r['unknown'] / 0.01:.2f}x)  identified {r['correct'] / r['genuine']:.1%} "
                      f"(best single threshold {r['oracle'] / r['genuine']:.1%})")
    res["wall_s"] = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(f"\nwrote {args.out} ({res['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
