"""bench/search.py's measuring tools, shared by its FAISS rows, its pgvector rows and bench/quality_index.py:
exact brute-force search (the baseline every index kind is compared with), timed single queries, batch
throughput, concurrent clients, resident memory, and the thread settings every figure is taken under.
"""

from __future__ import annotations

import gc
import os
import threading
import time

import numpy as np

BATCH = 64
K = 5


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


def latency_figures(times: np.ndarray) -> dict:
    return {"p50_ms": float(np.percentile(times, 50) * 1e3), "p99_ms": float(np.percentile(times, 99) * 1e3),
            "mean_ms": float(times.mean() * 1e3), "n_single": len(times)}


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


def set_threads(n: int) -> dict:
    """FAISS's OpenMP and numpy's BLAS limited to ``n`` threads, as the CLI and the server run them."""
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
