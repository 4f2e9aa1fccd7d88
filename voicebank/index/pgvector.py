"""The ``pgvector`` index kind: candidate search inside PostgreSQL, in the same database as the truth.

The voiceprint is copied into a pgvector column of ``speakers`` by a trigger, so it is written in the
transaction that writes the speaker, by whatever process writes it, and a removed speaker's vector
goes with its row at commit: no index file, no catch-up, nothing for a replica to rebuild.

- Column: ``embedding halfvec(d)``: the voiceprint rounded to 16-bit floats (half the bytes of
  ``vector``, so the graph walk reads half the pages: 1.4x faster at the same recall on 100k
  voiceprints, see bench/search.py). Rounding moves a unit vector's inner product by at most
  2 x 2^-11 (both sides rounded, |q_i x_i| summing to <= 1), so the index may order two candidates
  within ~1e-3 of each other wrongly; it never decides: :meth:`PgVectorSearch.search` fetches
  :data:`OVERFETCH` more rows than asked and scores them against the stored float32 voiceprints
  read in the same query. The trigger decodes the voiceprint's little-endian float32 bytes with
  ``voicebank_f32le`` (migration 0005), in SQL, without any extension of our own. A bank switched
  to this kind by an earlier version has a ``vector`` column; it keeps working, and ``reindex
  --index pgvector`` turns it into ``halfvec``.
- Index: HNSW over inner product (``halfvec_ip_ops``; ``<#>`` is the *negative* inner product, so
  ascending order is best first), built with :data:`HNSW_M` and :data:`HNSW_EF_CONSTRUCTION`. HNSW
  takes inserts and deletes as they come; IVFFlat's lists are trained once on the rows present and
  would go stale as a bank grows from empty, and on voice-shaped data nearly every voiceprint falls
  into a few of them (see bench/search.py).
- Search: one query per probe, ``ORDER BY embedding <#> q LIMIT k + OVERFETCH`` with
  ``hnsw.ef_search`` set for that transaction only and scaled with the bank's size
  (:func:`ef_search_for`). The facade rescores the proposed candidates against the stored
  voiceprints (float64 cosine) before it decides (``VoiceBank._candidates``), as for every kind:
  the index only proposes.

The graph walk reads index pages at random, so it is fast only while the index fits in PostgreSQL's
``shared_buffers``: at 100k voiceprints (a 164 MB index), 512 MB of shared_buffers answered in
12.5 ms (p50) where PostgreSQL's default of 128 MB, which keeps re-reading pages from the operating
system's cache, took 21.7 ms (bench/search.py, ``--pg-shared-buffers``; 2-core AMD EPYC).
:func:`cache_fit` measures it; a process logs a warning once when the index outgrows
shared_buffers, and ``voicebank check`` shows both sizes.

Switching a bank to or from this kind (``init --index pgvector``, ``reindex --index ...``) creates or
drops the column, trigger and index in the transaction that changes the bank's kind (:func:`switch`).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time

import numpy as np
from sqlalchemy import text

from ..errors import DatabaseError, InvalidInputError
from ..store import Store

log = logging.getLogger(__name__)

KIND = "pgvector"
COLUMN_TYPE, OPCLASS = "halfvec", "halfvec_ip_ops"
OVERFETCH = 16  # rows fetched beyond k, so that a rounding-order error at the k-th place costs nothing
COLUMN, INDEX, TRIGGER, TRIGGER_FUNCTION = "embedding", "speakers_embedding_hnsw", "voicebank_embedding", "voicebank_embed_speaker"
# A graph built wider than pgvector's defaults (m=16, ef_construction=64), which lose recall@1 on
# voiceprints (they sit in a narrow cone): it finds more at the same search cost, for a slower
# build. `python bench/search.py --pg-hnsw 32:512,32:128` re-measures the trade (docs/benchmarks.md).
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 512
EF_SEARCH_MIN, EF_SEARCH_MAX = 128, 1000  # pgvector accepts 1..1000
# Above this many voiceprints the search always walks the graph: PostgreSQL's cost estimate for a
# vector sort is unreliable (it chose a table scan of 5,000 64-dim rows), and a scan of a large bank
# costs ~2 ms per 1,000 voiceprints. Below it, PostgreSQL chooses (an exact scan, usually).
GRAPH_FROM = 2_000
MIN_VERSION, SAFE_VERSION = (0, 8, 0), (0, 8, 4)  # 0.8: hnsw.iterative_scan exists (set off per search); 0.8.4: HNSW vacuum fix
INSTALL = ("install pgvector on that server (Debian/Ubuntu: apt install postgresql-NN-pgvector from the PGDG "
           "repository; most managed PostgreSQL services carry it; version 0.8.4 or newer), then run "
           "`CREATE EXTENSION vector;` as a user allowed to, or choose another index kind (--index flat, hnsw or ivf)")


def ef_search_for(n: int, k: int) -> int:
    """HNSW's candidate list for a bank of ``n`` voiceprints: 128 up to 10k, 4x every 10x (512 at
    100k, pgvector's maximum of 1000 from ~160k), never below the rows fetched (pgvector returns at
    most ef_search). On voice-shaped 512-dim voiceprints (bench/search.py, halfvec column, the graph
    of :data:`HNSW_M` and :data:`HNSW_EF_CONSTRUCTION`), recall@1 against exact search at 100k was
    0.882 with 40 (pgvector's default), 0.959 with 128, 0.983 with 256, 0.994 with 512, 0.998 with
    1000, and no decision of 2,000 differed from exact search's at 512 (bench/search_decisions.py).
    With the graph of earlier versions (ef_construction 128): 0.99 at 10k with 128, 0.988 at 100k
    with 512, 0.947 at 1M with 1000."""
    grow = 4 ** max(0.0, math.log10(max(n, 1) / 10_000))
    return int(min(EF_SEARCH_MAX, max(EF_SEARCH_MIN * grow, k + OVERFETCH)))


def build_memory_mb(n: int, dimension: int) -> int:
    """``maintenance_work_mem`` for building the graph of ``n`` voiceprints in memory: per voiceprint its
    half-precision vector (2 bytes a dimension) and its layer-0 neighbour list (2 x m entries of
    ~16 bytes), plus overhead; at least 64 MB, at most 8 GB (a 1M-voiceprint bank of 512 dimensions:
    ~2.3 GB)."""
    per_voiceprint = 2 * dimension + 2 * HNSW_M * 16 + 256
    return int(min(8192, max(64, math.ceil(n * per_voiceprint * 1.1 / 2 ** 20))))


_warned: set[str] = set()


def graph_options(session) -> dict[str, int]:
    """The HNSW index's build options as PostgreSQL holds them (``m``, ``ef_construction``); {} without one."""
    found = session.execute(text("SELECT reloptions FROM pg_class WHERE oid = to_regclass(:i)"), {"i": INDEX}).scalar()
    return {k: int(v) for k, v in (o.split("=", 1) for o in found or [])}


def index_scans(store: Store, at_least: int = 0, wait_s: float = 12.0) -> int:
    """How many searches walked the HNSW index (PostgreSQL's ``idx_scan``), for benchmarks and tests
    that must know the graph, not a table scan, answered. A backend reports its statistics when it
    goes idle, at most once a second (else within 10 s), so ask for a flush and wait up to ``wait_s``
    until the count reaches ``at_least``."""
    deadline = time.monotonic() + wait_s
    while True:
        with store.read() as session:
            session.execute(text("SELECT pg_stat_force_next_flush()"))
        with store.read() as session:
            found = int(session.execute(text("SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_user_indexes "
                                             "WHERE indexrelname = :i"), {"i": INDEX}).scalar_one())
        if found >= at_least or time.monotonic() >= deadline:
            return found
        time.sleep(0.5)


def cache_fit(session) -> tuple[int, int]:
    """(bytes of the HNSW index, bytes of the server's ``shared_buffers``); the index is 0 while it does
    not exist."""
    index_bytes, buffers = session.execute(text(
        "SELECT coalesce(pg_relation_size(to_regclass(:i)), 0), pg_size_bytes(current_setting('shared_buffers'))"),
        {"i": INDEX}).one()
    return int(index_bytes), int(buffers)


def cache_advice(index_bytes: int, buffers: int) -> str | None:
    """What to do when an index of ``index_bytes`` does not fit in ``buffers`` of shared_buffers, else None."""
    if index_bytes <= buffers:
        return None
    wanted = 2 ** math.ceil(math.log2(index_bytes * 1.25 / 2 ** 20))  # MB, with room for the table's hot pages
    return (f"the pgvector index ({index_bytes / 2 ** 20:,.0f} MB) is larger than PostgreSQL's shared_buffers "
            f"({buffers / 2 ** 20:,.0f} MB), so every search re-reads index pages from outside PostgreSQL's cache "
            f"(1.7x slower at 100k voiceprints in bench/search.py): set shared_buffers = {wanted}MB or more in "
            "postgresql.conf (up to ~25% of the server's memory) and restart PostgreSQL")


def _status(index_bytes: int, buffers: int, options: dict[str, int] | None = None) -> str:
    graph = "".join(f", {k}={v}" for k, v in (options or {}).items())
    where = f"index {index_bytes / 2 ** 20:,.1f} MB, shared_buffers {buffers / 2 ** 20:,.0f} MB"
    advice = cache_advice(index_bytes, buffers)
    return (f"none: the index lives in PostgreSQL (pgvector HNSW{graph}; {where}"
            + (f"; WARNING: {advice})" if advice else ")"))


def refuse_unless_usable(store: Store, where: str) -> None:
    """Raise a clear error unless ``store`` is a PostgreSQL whose server offers pgvector."""
    if store.engine.url.get_backend_name() != "postgresql":
        raise InvalidInputError(
            f"the pgvector index kind needs a PostgreSQL bank, and {where} is {store.engine.url.get_backend_name()}: "
            "SQLite banks use --index flat, hnsw or ivf (one host); for pgvector create the bank on PostgreSQL, "
            "e.g. `voicebank --db postgresql://USER@HOST/DB init --index pgvector`.")
    with store.read() as session:
        found = session.execute(text("SELECT coalesce(installed_version, default_version) FROM pg_available_extensions "
                                     "WHERE name = 'vector'")).scalar()
    if found is None:
        raise DatabaseError(f"the PostgreSQL server of {where} has no pgvector extension: {INSTALL}.")
    version = tuple(int(p) for p in re.findall(r"\d+", found)[:3])
    if version < MIN_VERSION:
        raise DatabaseError(f"{where} offers pgvector {found}, older than {'.'.join(map(str, MIN_VERSION))}: "
                            f"upgrade it ({INSTALL}).")
    if version < SAFE_VERSION and found not in _warned:
        _warned.add(found)  # once per process
        log.warning("pgvector %s: versions before 0.8.4 can corrupt an HNSW index during VACUUM; upgrade the extension", found)


def switch(session, kind: str, dimension: int) -> None:
    """Make the database match index ``kind`` inside the caller's transaction: for pgvector, create the
    extension (if allowed), column, trigger and HNSW index and fill the column; for any other kind,
    drop them. Idempotent. Lock the bank row first, so no enrollment commits between the two."""
    session.execute(text("SELECT change_seq FROM bank WHERE id = 1 FOR UPDATE"))
    present = column_type(session)
    if kind != KIND or (present is not None and present != COLUMN_TYPE):  # another kind, or an older column type
        if present is not None:
            session.execute(text(f"DROP TRIGGER IF EXISTS {TRIGGER} ON speakers"))
            session.execute(text(f"ALTER TABLE speakers DROP COLUMN IF EXISTS {COLUMN}"))  # drops the index too
            log.info("dropped the pgvector column (%s) and its index", present)
        if kind != KIND:
            return
    session.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
    if column_type(session) is None:
        session.execute(text(f"ALTER TABLE speakers ADD COLUMN {COLUMN} {COLUMN_TYPE}({int(dimension)})"))
    session.execute(text(
        f"CREATE OR REPLACE FUNCTION {TRIGGER_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"NEW.{COLUMN} := voicebank_f32le(NEW.voiceprint)::{COLUMN_TYPE}; RETURN NEW; END $$"))
    session.execute(text(f"DROP TRIGGER IF EXISTS {TRIGGER} ON speakers"))
    session.execute(text(f"CREATE TRIGGER {TRIGGER} BEFORE INSERT OR UPDATE OF voiceprint ON speakers "
                         f"FOR EACH ROW EXECUTE FUNCTION {TRIGGER_FUNCTION}()"))
    filled = session.execute(text(f"UPDATE speakers SET {COLUMN} = voicebank_f32le(voiceprint)::{COLUMN_TYPE} "
                                  f"WHERE {COLUMN} IS NULL")).rowcount
    session.execute(text(f"DROP INDEX IF EXISTS {INDEX}"))
    rows = int(session.execute(text("SELECT count(*) FROM speakers")).scalar_one())
    # the graph built in memory is far faster than one that spills to disk; for this transaction only
    session.execute(text(f"SET LOCAL maintenance_work_mem = '{build_memory_mb(rows, dimension)}MB'"))
    session.execute(text(f"CREATE INDEX {INDEX} ON speakers USING hnsw ({COLUMN} {OPCLASS}) "
                         f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"))
    log.info("pgvector index built (%d voiceprints copied into the column)", filled)


def column_type(session) -> str | None:
    """The pgvector column's type name (``halfvec``, or ``vector`` as earlier versions made it), or None."""
    found = session.execute(text(
        "SELECT t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = to_regclass('speakers') AND a.attname = :c AND NOT a.attisdropped"), {"c": COLUMN}).scalar()
    return None if found is None else str(found)


class PgVectorSearch:
    """:class:`~voicebank.index.search.Search` through PostgreSQL: the HNSW index over the column the
    trigger keeps equal to the wideband voiceprints. Making one makes the column, trigger and index
    of a bank created with this kind (which must be through the primary). Thread-safe without a lock:
    every search is its own transaction."""

    kind = KIND

    def __init__(self, store: Store, dimension: int, where: str):
        refuse_unless_usable(store, where)
        self.store, self.dimension = store, dimension
        self._count: tuple[int, int] | None = None  # (change_seq, speakers) last counted
        self._count_lock = threading.Lock()
        with self.store.read() as session:
            present = column_type(session)
        if present is None:  # a bank created with this kind: the column comes with its first use
            with self.store.edit("make the pgvector column (a bank created with --index pgvector gets it on its "
                                 "first use, which must be through the primary)") as session:
                switch(session, KIND, self.dimension)
                present = column_type(session)
        elif present != COLUMN_TYPE:
            log.info("the pgvector column is %s, as an earlier version made it; `voicebank reindex --index "
                     "pgvector` makes it %s (half the size, faster)", present, COLUMN_TYPE)
        self._type = present  # the column's type as found (an earlier version's bank: vector)
        self._advise()

    def _advise(self) -> None:
        with self.store.read() as session:
            advice = cache_advice(*cache_fit(session))
            built = graph_options(session).get("ef_construction", HNSW_EF_CONSTRUCTION)
        if built < HNSW_EF_CONSTRUCTION:
            log.info("the pgvector index was built with ef_construction=%d, as an earlier version built it; `voicebank "
                     "reindex --index pgvector` rebuilds it with %d (more recall at the same search time)",
                     built, HNSW_EF_CONSTRUCTION)
        if advice is not None and "shared_buffers" not in _warned:
            _warned.add("shared_buffers")  # once per process
            log.warning("%s", advice)

    def rebuild(self) -> int:
        """Rebuild the column and HNSW index from the stored voiceprints."""
        with self.store.edit("reindex") as session:
            if column_type(session) is not None:  # copy every voiceprint again: the column may have been edited by hand
                session.execute(text(f"UPDATE speakers SET {COLUMN} = NULL"))
            switch(session, KIND, self.dimension)
            held = int(session.execute(text("SELECT count(*) FROM speakers")).scalar_one())
        self._type, self._count = COLUMN_TYPE, None
        return held

    def save(self) -> None:
        """Nothing to save: the index is PostgreSQL's."""

    def catch_up(self) -> None:
        """Nothing to catch up: the trigger keeps the column, and so the index, up to date."""

    def _counted(self, cursor, seq: int) -> int:
        cached = self._count
        if cached is None or cached[0] != seq:
            cursor.execute("SELECT count(*) FROM speakers")
            cached = (seq, int(cursor.fetchone()[0]))
            with self._count_lock:
                self._count = cached
        return cached[1]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Top-``k`` (scores, ids) for each row of ``queries`` ((n, d) or (d,)), best first:
        (n, min(k, size)), and the size (speakers in the bank, counted in the same transaction);
        fewer columns where a removal committed between the count and a query (every statement
        sees the latest commit). HNSW proposes ``k +`` :data:`OVERFETCH` rows in the column's precision;
        each is scored against its stored float32 voiceprint, read in the same query, and the best
        ``k`` returned with those scores (float32 cosines, within ~1e-6 of exact). The caller still
        rescores them against SQL (``identification._candidates``): the index only proposes.

        One transaction on the driver's own cursor (a search is a few hundred microseconds of work
        for PostgreSQL; SQLAlchemy's statement handling cost more than that): one statement reads the
        change sequence and sets the search parameters for this transaction only, then one
        ``ORDER BY embedding <#> q LIMIT k + OVERFETCH`` per query."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        out_scores, out_ids = [], []
        with self.store.read() as session:
            cursor = session.connection().connection.dbapi_connection.cursor()
            known = self._count[1] if self._count is not None else None
            seq = self._configure(cursor, known, k)
            size = self._counted(cursor, seq)
            if size != known:  # the bank changed size: parameters for the new size
                self._configure(cursor, size, k)
            k = min(k, size)
            sql = (f"SELECT id, voiceprint FROM speakers ORDER BY {COLUMN} <#> %s::{self._type} "
                   f"LIMIT {k + OVERFETCH if k else 0}")
            for query in queries:
                literal = "[" + ",".join(map(repr, query.astype(float).tolist())) + "]"
                cursor.execute(sql, (literal,))
                rows = cursor.fetchall() if k else []
                if len(rows) < k:  # the graph walk found fewer live rows than asked: scan exactly
                    log.debug("HNSW returned %d of %d rows: exact scan", len(rows), k)
                    cursor.execute("SELECT set_config('enable_indexscan', 'off', true), set_config('enable_seqscan', 'on', true)")
                    cursor.execute(sql, (literal,))
                    rows = cursor.fetchall()
                    self._configure(cursor, size, k)
                ids = np.array([r[0] for r in rows], dtype=np.int64)
                scores = (np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype="<f4").reshape(len(rows), -1) @ query
                          if rows else np.zeros(0, dtype=np.float32))
                best = np.argsort(-scores, kind="stable")[:k]
                out_ids.append(ids[best])
                out_scores.append(scores[best])
        k = min([k, *map(len, out_ids)])
        return (np.array([s[:k] for s in out_scores], dtype=np.float32).reshape(len(queries), k),
                np.array([i[:k] for i in out_ids], dtype=np.int64).reshape(len(queries), k), size)

    @staticmethod
    def _configure(cursor, size: int | None, k: int) -> int:
        """Set this transaction's search parameters for a bank of ``size`` (None: not known yet);
        returns the bank's change sequence."""
        size = size or 0
        # Iterative scans (pgvector 0.8) would keep walking the graph past rows deleted but not yet
        # vacuumed, at a cost on every search; a walk that returns fewer than k live rows is answered
        # by an exact scan instead (:meth:`search`), so they stay off, whatever the server's default.
        # set_config(..., true) lasts until the end of this transaction.
        cursor.execute("SELECT change_seq, set_config('hnsw.ef_search', %s, true), "
                       "set_config('hnsw.iterative_scan', 'off', true), "
                       "set_config('enable_seqscan', %s, true), set_config('enable_indexscan', 'on', true) "
                       "FROM bank WHERE id = 1", (str(ef_search_for(size, k)), "on" if size < GRAPH_FROM else "off"))
        return int(cursor.fetchone()[0])

    def contents(self) -> tuple[np.ndarray, np.ndarray, str]:
        """All (ids (n,), vectors (n, d)) as the pgvector column holds them: float16 for ``halfvec``
        (every value exactly as stored), float32 for ``vector``; and where the index lives, its size
        and whether it fits in shared_buffers."""
        with self.store.read() as session:
            rows = session.execute(text(f"SELECT id, {COLUMN}::real[] FROM speakers WHERE {COLUMN} IS NOT NULL "
                                        "ORDER BY id")).all()
            status = _status(*cache_fit(session), graph_options(session))
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        dtype = np.float16 if self._type == "halfvec" else np.float32
        vectors = np.array([r[1] for r in rows], dtype=np.float32).reshape(len(rows), self.dimension).astype(dtype)
        return ids, vectors, status
