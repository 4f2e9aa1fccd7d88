"""bench/search.py's FAISS rows: numpy brute force (the baseline) and every FAISS kind built through the
product's own ``SpeakerIndex``: build, save and load time, bytes per speaker (file and resident memory),
single-query latency, batch and concurrent throughput, recall@1, decisions, and the search-time knob sweep.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np
from search_measure import (
    K,
    exact_search,
    latency_figures,
    numpy_search,
    rss_bytes,
    singles,
    threaded_qps,
    throughput,
)

from voicebank.index import IndexInfo, SpeakerIndex
from voicebank.index import kinds as index_kinds


def measure_numpy(prints, queries, truth, decisions, args) -> dict:
    search = lambda q, k: numpy_search(prints, q, k)  # noqa: E731
    times = singles(search, queries, args.single_budget, args.singles)
    qps, n_batch = throughput(search, queries, args.batch_budget)
    dim = prints.shape[1]
    return {"kind": "numpy", "build_s": 0.0, "file_bytes_per_speaker": dim * 4.0, "rss_bytes_per_speaker": dim * 4.0,
            **latency_figures(times), "batch_qps": qps, "n_batch_queries": n_batch, "recall_at_1": 1.0,
            "decisions": decisions(exact_search(prints)),
            "structure": {"structure": "numpy float32 matrix, brute force", "exact": True}}


def measure_kind(label: str, prints, queries, truth, own, decisions, args, tmp: Path) -> tuple[dict, list[dict]]:
    if label == "ivf-raw":  # the IVF kind with k-means on the raw voiceprints, not centred on the bank's mean
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
    info = IndexInfo("bench", "synthetic", prints.shape[1], kind)
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
