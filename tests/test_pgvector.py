"""The pgvector index kind, against a real PostgreSQL 18 with pgvector (tests/pgvector_server.py).

The contract every kind keeps is tests/test_search.py; here, what is pgvector's own: the graph at
scale and around deleted rows, the column's precision, the server's sizes, an earlier version's
index; then the facade end to end, the kind refused where it cannot work, and switching kinds both ways."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import text

import test_index as contract
from conftest import TINY_THRESHOLD
from pgvector_server import pgvector_server, pgvector_url  # noqa: F401 (fixtures)
from test_search import delete, new_bank, write
from voicebank import VoiceBank
from voicebank.errors import DatabaseError, InvalidInputError, SpeakerNotFoundError
from voicebank.index import IndexInfo, factory
from voicebank.index import pgvector as pgv
from voicebank.store import Store, resolve_url

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_bank(pgvector_url):
    """``new(dimension)``: (store, make) of a new pgvector bank in this test's database, ``make()``
    making its search as a process opening the bank does."""
    stores: list[Store] = []

    def new(dimension: int):
        info = IndexInfo("bank-pg", "m", dimension, pgv.KIND)
        store = new_bank(pgvector_url, info)
        stores.append(store)
        return store, lambda: factory.make(store, info, None, pgvector_url)

    yield new
    for store in stores:
        store.dispose()


@pytest.mark.slow
def test_recall_replace_and_remove_at_scale(pg_bank):
    """5,000 clustered voiceprints, so that PostgreSQL walks the HNSW graph (not a table scan)."""
    ids, vectors, queries = _big()
    store, make = pg_bank(contract.BIG_DIM)
    search = make()
    write(store, ids, vectors)
    contract.assert_answers_like_exact(search.search, ids, vectors, queries, min_recall=0.98)
    scans = pgv.index_scans(store, len(queries))  # the answers came from walking the graph, not from a table scan
    assert scans >= len(queries), f"the HNSW index was used for {scans} of {len(queries)} searches"
    # replace a third, remove a third: never a removed or stale answer (scores are checked against the live ones)
    rng = np.random.default_rng(5)
    changed, gone = ids[: len(ids) // 3], ids[len(ids) // 3: 2 * len(ids) // 3]
    fresh = contract.unit_vectors(len(changed), seed=6, dim=contract.BIG_DIM)
    write(store, changed, fresh)
    delete(store, gone)
    live = np.concatenate([changed, ids[2 * len(ids) // 3:]])
    live_vectors = np.concatenate([fresh, vectors[2 * len(ids) // 3:]])
    probe = np.concatenate([queries[:200], fresh[rng.choice(len(fresh), 100, replace=False)]])
    assert search.search(probe[:1], 1)[2] == len(live)
    contract.assert_answers_like_exact(search.search, live, live_vectors, probe, min_recall=0.98)


@pytest.mark.slow
def test_a_walk_through_deleted_rows_falls_back_to_an_exact_scan(pg_bank, caplog):
    """Rows deleted but not yet vacuumed stay in the graph, and the walk skips them (iterative scans
    are off): when the neighbourhood of a probe is all deleted, the walk returns fewer live rows than
    asked, and the search answers with an exact scan instead of fewer or farther speakers."""
    store, make = pg_bank(32)
    search = make()  # the column, trigger and graph, as opening the bank makes them
    vectors = contract.unit_vectors(6000, seed=8, dim=32)
    ids = np.arange(1, 6001)
    write(store, ids, vectors)
    with store.write() as session:
        session.execute(text("ALTER TABLE speakers SET (autovacuum_enabled = false)"))
    probe = vectors[0]
    near = np.argsort(-(vectors @ probe))[:3500]  # the probe's whole neighbourhood goes
    delete(store, ids[near])
    live = np.setdiff1d(np.arange(6000), near)
    assert len(live) >= pgv.GRAPH_FROM  # so the search walks the graph
    caplog.set_level("DEBUG", logger=pgv.__name__)
    scores, found, _ = search.search(probe[None], 5)
    exact = live[np.argsort(-(vectors[live] @ probe))[:5]] + 1
    assert found[0].tolist() == exact.tolist()
    np.testing.assert_allclose(scores[0], vectors[exact - 1] @ probe, atol=1e-6)
    assert any("exact scan" in r.getMessage() for r in caplog.records), "the walk found enough rows: no hole was made"


def test_an_index_built_by_an_earlier_version_is_named_and_reindex_rebuilds_it(pg_bank, caplog):
    store, make = pg_bank(8)
    make()
    write(store, np.arange(1, 51), contract.unit_vectors(50, seed=9, dim=8))
    with store.write() as session:  # the graph an earlier version built
        session.execute(text(f"DROP INDEX {pgv.INDEX}"))
        session.execute(text(f"CREATE INDEX {pgv.INDEX} ON speakers USING hnsw ({pgv.COLUMN} {pgv.OPCLASS}) "
                             "WITH (m = 32, ef_construction = 128)"))
    caplog.set_level("INFO", logger=pgv.__name__)
    search = make()  # the bank opened again
    assert any("ef_construction=128" in r.getMessage() and "reindex" in r.getMessage() for r in caplog.records)
    assert "ef_construction=128;" in search.contents()[2]
    assert search.rebuild() == 50
    with store.read() as session:
        assert pgv.graph_options(session) == {"m": pgv.HNSW_M, "ef_construction": pgv.HNSW_EF_CONSTRUCTION}


def _big():
    vectors, queries = contract.clustered(contract.BIG, seed=20, n_queries=1000)
    ids = np.random.default_rng(21).permutation(10 * contract.BIG)[: contract.BIG].astype(np.int64) + 1
    return ids, vectors, queries


def test_the_column_holds_the_voiceprint_rounded_to_half_precision(pg_bank):
    store, make = pg_bank(512)
    search = make()
    vectors = contract.unit_vectors(20, seed=3, dim=512)
    vectors[0, :3] = [1e-40, -3e-6, 0.99]  # float16 subnormals and zero, and a large component
    write(store, np.arange(1, 21), vectors)
    ids, held, _ = search.contents()
    assert ids.tolist() == list(range(1, 21)) and held.dtype == np.float16
    np.testing.assert_array_equal(held, vectors.astype(np.float16))  # rounded exactly as numpy rounds
    # the search scores candidates against the float32 voiceprints, not the rounded column
    scores, found, _ = search.search(vectors[:5], 3)
    assert found[:, 0].tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(scores[:, 0], np.sum(vectors[:5].astype(np.float64) ** 2, axis=1), atol=1e-6)
    assert np.max(np.abs(held.astype(np.float64) - vectors)) > 1e-5  # the column is rounded: this test can tell


def test_the_sql_decoder_reads_float32_bytes_exactly(pg_bank):
    """voicebank_f32le (migration 0005) on the edge cases of float32: subnormals, huge values, -0."""
    store, _ = pg_bank(8)
    values = np.array([1e-40, -2.5e-39, 3.4e38, -3.4e38, -0.0, 1.0, np.float32(1) / 3, 1e-45], dtype=np.float32)
    with store.read() as session:
        decoded = session.execute(text("SELECT voicebank_f32le(:b)"), {"b": values.tobytes()}).scalar_one()
    np.testing.assert_array_equal(np.array(decoded, dtype=np.float32), values)


def test_the_index_size_and_shared_buffers_are_read_from_the_server(pg_bank):
    store, make = pg_bank(64)
    search = make()
    write(store, np.arange(1, 301), contract.unit_vectors(300, seed=5, dim=64))
    with store.read() as session:
        index_bytes, buffers = pgv.cache_fit(session)
        pages = session.execute(text("SELECT relpages FROM pg_class WHERE relname = :i"), {"i": pgv.INDEX}).scalar_one()
        shown = session.execute(text("SHOW shared_buffers")).scalar_one()
    assert index_bytes >= 8192 * max(pages, 1) and index_bytes % 8192 == 0
    assert shown.endswith("MB") and buffers == int(shown[:-2]) * 2 ** 20, shown
    status = search.contents()[2]
    assert f"shared_buffers {buffers / 2 ** 20:,.0f} MB" in status and "WARNING" not in status, status
    assert f"m={pgv.HNSW_M}, ef_construction={pgv.HNSW_EF_CONSTRUCTION};" in status, status


def test_an_index_larger_than_shared_buffers_is_reported_with_what_to_set():
    mb = 2 ** 20
    assert pgv.cache_advice(100 * mb, 128 * mb) is None
    assert pgv.cache_advice(128 * mb, 128 * mb) is None
    advice = pgv.cache_advice(164 * mb, 128 * mb)  # 100k voiceprints on PostgreSQL's default
    assert "(164 MB)" in advice and "(128 MB)" in advice and "shared_buffers = 256MB" in advice, advice
    assert "shared_buffers = 4096MB" in pgv.cache_advice(1640 * mb, 128 * mb)  # 1M: 2 GB would be tight
    assert "WARNING: " + advice in pgv._status(164 * mb, 128 * mb)


def test_a_process_warns_once_when_its_index_outgrows_shared_buffers(pg_bank, monkeypatch, caplog):
    monkeypatch.setattr(pgv, "_warned", set())
    _, make = pg_bank(8)
    make()
    assert not [r for r in caplog.records if "shared_buffers" in r.getMessage()]  # a tiny index fits
    monkeypatch.setattr(pgv, "cache_fit", lambda session: (300 * 2 ** 20, 128 * 2 ** 20))
    make()
    make()  # a second search in the same process: no second warning
    warned = [r for r in caplog.records if "shared_buffers" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelname == "WARNING" and "512MB" in warned[0].getMessage()


# -- through the facade ----------------------------------------------------------------------------


def open_bank(url, model, **kw):
    return VoiceBank.open(url, str(model), create=True, threshold=TINY_THRESHOLD, identify_rule="best", **kw)


def test_enroll_identify_verify_remove_through_the_facade(pgvector_url, tiny_model, voices, tmp_path):
    with open_bank(pgvector_url, tiny_model, index="pgvector") as bank:
        assert bank.index.kind == "pgvector"
        for name in ("alice", "bob", "carol"):
            bank.enroll(name, voices[name][:2])
        for name in ("alice", "bob", "carol"):
            found = bank.identify(voices[name][2])
            assert found.match is not None and found.match.name == name
        assert bank.identify(voices["stranger"][0]).match is None
        assert bank.verify("bob", voices["bob"][2]).accepted
        bank.add_recordings("alice", [voices["alice"][2]])  # the voiceprint changes: the column follows
        bank.remove("carol")
        with pytest.raises(SpeakerNotFoundError):
            bank.verify("carol", voices["carol"][2])
        assert "carol" not in [c.name for c in bank.identify(voices["carol"][2]).candidates]
        report = bank.index.check()
        assert report.ok and report.speakers_in_index == 2, report
        with Store(resolve_url(pgvector_url)).write() as session:  # a column edited by hand: check says so
            session.execute(text(f"UPDATE speakers SET {pgv.COLUMN} = ({pgv.COLUMN}::real[])[1:1] || "
                                 f"array_fill(0.01::real, ARRAY[dimension - 1]) FROM bank WHERE name = 'bob'"))
        assert bank.index.check().wrong_vectors == ["bob"]
        assert bank.index.rebuild("pgvector") == 2 and bank.index.check().ok  # and reindex repairs it
        # the wideband voiceprints live in PostgreSQL: no index file for them; the telephone voiceprints
        # have no pgvector column, and are searched in a FAISS cache like a flat bank's
        files = sorted(p.name for p in tmp_path.glob("index-cache/**/*.faiss"))
        assert all(name.endswith(".telephone.faiss") for name in files), "pgvector must not write an index file"
        # and back: flat (a FAISS file again), then pgvector once more, with the same answers
        assert bank.index.rebuild("flat") == 2 and bank.index.kind == "flat"
        assert bank.identify(voices["bob"][2]).match.name == "bob"
        with Store(resolve_url(pgvector_url)).read() as session:
            assert pgv.column_type(session) is None, "the column and its index go with the kind"
        assert bank.index.rebuild("pgvector") == 2
        assert bank.identify(voices["bob"][2]).match.name == "bob"
        assert bank.index.check().ok


def test_a_vector_column_of_an_earlier_version_works_until_reindex_makes_it_halfvec(pgvector_url, tiny_model, voices):
    with open_bank(pgvector_url, tiny_model, index="pgvector") as bank:
        bank.enroll("alice", voices["alice"][:2])
        bank.enroll("bob", voices["bob"][:2])
    store = Store(resolve_url(pgvector_url))
    with store.write() as session:  # the column, trigger and index as the previous version made them
        dimension = session.execute(text("SELECT dimension FROM bank")).scalar_one()
        session.execute(text(f"DROP TRIGGER {pgv.TRIGGER} ON speakers"))
        session.execute(text(f"ALTER TABLE speakers DROP COLUMN {pgv.COLUMN}"))
        session.execute(text(f"ALTER TABLE speakers ADD COLUMN {pgv.COLUMN} vector({dimension})"))
        session.execute(text(f"CREATE OR REPLACE FUNCTION {pgv.TRIGGER_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                             f"BEGIN NEW.{pgv.COLUMN} := voicebank_f32le(NEW.voiceprint)::vector; RETURN NEW; END $$"))
        session.execute(text(f"CREATE TRIGGER {pgv.TRIGGER} BEFORE INSERT OR UPDATE OF voiceprint ON speakers "
                             f"FOR EACH ROW EXECUTE FUNCTION {pgv.TRIGGER_FUNCTION}()"))
        session.execute(text(f"UPDATE speakers SET {pgv.COLUMN} = voicebank_f32le(voiceprint)::vector"))
        session.execute(text(f"CREATE INDEX {pgv.INDEX} ON speakers USING hnsw ({pgv.COLUMN} vector_ip_ops)"))
    try:
        with VoiceBank.open(pgvector_url, str(tiny_model)) as bank:
            bank.enroll("carol", voices["carol"][:2])
            for name in ("alice", "bob", "carol"):
                assert bank.identify(voices[name][2]).match.name == name
            assert bank.index.check().ok
            with store.read() as session:
                assert pgv.column_type(session) == "vector", "opening a bank must not rebuild its index unasked"
            assert bank.index.rebuild("pgvector") == 3
            with store.read() as session:
                assert pgv.column_type(session) == "halfvec"
            for name in ("alice", "bob", "carol"):
                assert bank.identify(voices[name][2]).match.name == name
            report = bank.index.check()
            assert report.ok and report.speakers_in_index == 3, report
    finally:
        store.dispose()


def test_a_sqlite_bank_refuses_the_kind(tmp_path, tiny_model):
    path = tmp_path / "bank.db"
    with pytest.raises(InvalidInputError, match="needs a PostgreSQL bank"):
        open_bank(path, tiny_model, index="pgvector")
    assert not path.exists(), "a refused bank leaves no file"
    with open_bank(path, tiny_model) as bank:
        with pytest.raises(InvalidInputError, match="needs a PostgreSQL bank"):
            bank.index.rebuild("pgvector")
        assert bank.index.kind == "flat"


def test_a_postgresql_without_pgvector_says_how_to_install_it(pg_url, tiny_model):
    with pytest.raises(DatabaseError, match="no pgvector extension.*apt install postgresql-NN-pgvector"):
        open_bank(pg_url, tiny_model, index="pgvector")
    with open_bank(pg_url, tiny_model) as bank:  # nothing half-made: a flat bank can be created there
        with pytest.raises(DatabaseError, match="no pgvector extension"):
            bank.index.rebuild("pgvector")
        assert bank.index.kind == "flat"


# -- several processes, and kill -9 (the FAISS tests' workers and scripts, on a pgvector bank) -------

import test_crash  # noqa: E402
import test_processes  # noqa: E402
from bank_worker import consistency_problems, speaker_voices, voice  # noqa: E402
from test_crash import zygote  # noqa: E402,F401 (fixture)
from test_processes import pool, workers  # noqa: E402,F401 (fixtures)


def new_pgvector_bank(db_url: str, model) -> None:
    open_bank(db_url, model, index="pgvector").close()


@pytest.mark.slow
def test_four_processes_enroll_25_each_and_a_removal_is_never_returned(pgvector_url, tiny_model, workers, tmp_path,
                                                                       monkeypatch):
    P, N = test_processes.PROCESSES, test_processes.PER_PROCESS
    new_pgvector_bank(pgvector_url, tiny_model)
    procs = workers(P, pgvector_url)  # all open before anything is enrolled
    start_line = tmp_path / "start"
    names = {p: [f"p{p}-speaker-{i:02d}" for i in range(N)] for p in range(P)}
    for p, worker in enumerate(procs):
        worker.send(op="barrier", dir=str(start_line), n=P)
        for i, name in enumerate(names[p]):
            k = p * N + i
            worker.send(op="enroll", name=name, voices=speaker_voices(80.0 + 3 * k, 10 + k))
    for worker in procs:
        test_processes.ok(worker.read())
    replies = {p: [worker.read() for _ in range(N)] for p, worker in enumerate(procs)}
    failures = [r for rs in replies.values() for r in rs if not r.get("ok")]
    assert failures == [], failures[:3]
    expected = sorted(n for ns in names.values() for n in ns)
    for worker in procs:
        assert test_processes.ok(worker.call(op="names"))["names"] == expected
        report = test_processes.ok(worker.call(op="check"))["report"]
        assert report["ok"] and report["speakers_in_sql"] == report["speakers_in_index"] == P * N, report
    # every process finds another's speaker at once, with no index file and nothing to catch up
    for p, worker in enumerate(procs):
        k = ((p + 1) % P) * N + 7
        found = test_processes.ok(worker.call(op="identify", voices=[voice(80.0 + 3 * k, 10 + k, take_no=5)]))
        assert test_processes.names_of(found)[0] == names[(p + 1) % P][7], found
    # one process removes a speaker; none of the others, all open and warm, ever returns it again
    victim, k = names[2][7], 2 * N + 7
    probe = [voice(80.0 + 3 * k, 10 + k, take_no=5)]
    test_processes.ok(procs[0].call(op="remove", name=victim))
    for worker in procs[1:]:
        found = test_processes.ok(worker.call(op="identify", voices=probe))
        assert victim not in test_processes.names_of(found), found
        assert test_processes.ok(worker.call(op="names"))["names"] == sorted(set(expected) - {victim})
    assert consistency_problems(pgvector_url, utterances_per_speaker=2) == []
    wideband = [p for p in tmp_path.rglob("*.faiss") if not p.name.endswith(".telephone.faiss")]
    assert not wideband, "a pgvector bank writes no index file for its wideband voiceprints"


SQL_POINTS = [p for p in test_crash.POINTS if not p[0].startswith(("index_", "sidecar_"))]


@pytest.mark.slow
@pytest.mark.parametrize("point,at,effect", SQL_POINTS, ids=[p[0] for p in SQL_POINTS])
def test_kill_at_a_chosen_point(pgvector_url, tiny_model, zygote, tmp_path, point, at, effect, monkeypatch):
    monkeypatch.setattr(test_crash, "new_bank", new_pgvector_bank)
    test_crash.test_kill_at_a_chosen_point(pgvector_url, tiny_model, zygote, tmp_path, point, at, effect)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2))
def test_kill_at_a_random_time(pgvector_url, tiny_model, zygote, tmp_path, seed, monkeypatch):
    monkeypatch.setattr(test_crash, "new_bank", new_pgvector_bank)
    test_crash.test_kill_at_a_random_time(pgvector_url, tiny_model, zygote, tmp_path, seed)


# -- stateless replicas: two `voicebank serve` processes on one pgvector bank ------------------------


def _serve(url: str, model) -> tuple:
    import os
    import re
    import subprocess
    import sys
    import time

    from conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", "from voicebank.cli import main; main()", "--db", url, "--model", str(model),
               "serve", "--host", "127.0.0.1", "--port", "0"]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    lines, deadline = [], time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        lines.append(proc.stderr.readline())
        found = re.search(r"running on (http://127\.0\.0\.1:\d+)", lines[-1])
        if found:
            return proc, found.group(1)
    proc.kill()
    raise AssertionError("voicebank serve did not start:\n" + "".join(lines))


@pytest.mark.slow
def test_two_serve_processes_on_one_pgvector_bank(pgvector_url, tiny_model, voices):
    """Enroll through one replica while the other identifies; remove through one: the other never
    answers with the removed speaker. Neither keeps an index of its own."""
    import signal
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    from click.testing import CliRunner

    from voicebank.cli import main

    new_pgvector_bank(pgvector_url, tiny_model)
    key = CliRunner().invoke(main, ["--db", pgvector_url, "apikey", "create", "ops", "--role", "admin"]).stdout.strip()
    headers = {"Authorization": f"Bearer {key}"}
    (a, url_a), (b, url_b) = _serve(pgvector_url, tiny_model), _serve(pgvector_url, tiny_model)
    files = lambda paths: [("files", (p.name, p.read_bytes(), "audio/wav")) for p in paths]  # noqa: E731
    probe = lambda name: [("file", (voices[name][2].name, voices[name][2].read_bytes(), "audio/wav"))]  # noqa: E731
    try:
        with httpx.Client(timeout=120, headers=headers) as http:
            assert http.post(f"{url_a}/speakers", data={"name": "bob"}, files=files(voices["bob"][:2])).status_code == 201
            # at once: A enrolls alice and carol while B identifies bob again and again
            with ThreadPoolExecutor(3) as pool:
                enrolled = [pool.submit(http.post, f"{url_a}/speakers", data={"name": n}, files=files(voices[n][:2]))
                            for n in ("alice", "carol")]
                seen = [pool.submit(http.post, f"{url_b}/identify", files=probe("bob")) for _ in range(4)]
                assert [f.result().status_code for f in enrolled] == [201, 201]
                assert all(f.result().json()["match"]["name"] == "bob" for f in seen)
            for name in ("alice", "carol"):  # B answers with what A enrolled, with nothing to catch up
                assert http.post(f"{url_b}/identify", files=probe(name)).json()["match"]["name"] == name
            assert http.delete(f"{url_a}/speakers/alice").status_code == 200
            for _ in range(3):
                answer = http.post(f"{url_b}/identify", files=probe("alice")).json()
                assert "alice" not in [c["name"] for c in answer["candidates"]], answer
            assert http.post(f"{url_b}/verify", data={"name": "alice"}, files=probe("alice")).status_code == 404
    finally:
        for proc in (a, b):
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except Exception:
                proc.kill()
