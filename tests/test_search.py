"""The contract of voicebank.index.search.Search, run against every index kind: flat, hnsw, ivf and pgvector.

Each search is made by the factory, as a bank makes it, over a real database (SQLite for the FAISS
kinds, PostgreSQL with pgvector for pgvector: skipped where no such server can be started). The
voiceprints are written to SQL the way enrollment writes them, one transaction each with its change
record, and the search must answer like exact cosine search over what SQL holds at that moment."""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import pytest
from sqlalchemy import select

from pgvector_server import pgvector_server, pgvector_url  # noqa: F401 (fixtures)
from test_index import DIM, unit_vectors
from voicebank.index import BANK_KINDS, IndexInfo, factory
from voicebank.index.search import Search
from voicebank.store import BankRow, SpeakerRow, Store, record, resolve_url, schema

KINDS = [pytest.param(kind, marks=pytest.mark.postgres) if kind == "pgvector" else kind for kind in BANK_KINDS]


def new_bank(url: str, info: IndexInfo) -> Store:
    """An empty bank of ``info`` in the empty database at ``url``."""
    store = Store(resolve_url(url))
    schema.upgrade(store.engine)
    with store.write() as session:
        session.add(BankRow(id=1, uid=info.bank_uid, model_source="m", model_id=info.model_id, dimension=info.dimension,
                            threshold=0.5, identify_threshold=0.5, identify_rule="best", score="cosine",
                            cohort_top_n=100, index_kind=info.kind, change_seq=0))
    return store


def write(store: Store, ids, vectors) -> None:
    """Insert or replace the voiceprints of ``ids`` in SQL, in one transaction."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    with store.change() as (session, seq):
        held = {row.id: row for row in session.scalars(select(SpeakerRow).where(SpeakerRow.id.in_(ids.tolist())))}
        for i, vector in zip(ids.tolist(), np.atleast_2d(vectors)):
            if i in held:
                held[i].voiceprint = vector
            else:
                session.add(SpeakerRow(id=i, name=f"s{i}", skeleton=f"s{i}", meta={}, voiceprint=vector))
            record(session, seq, i, "upsert")


def delete(store: Store, ids) -> None:
    """Remove the speakers ``ids`` from SQL (absent ones are ignored), in one transaction."""
    with store.change() as (session, seq):
        for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist():
            row = session.get(SpeakerRow, i)
            if row is not None:
                record(session, seq, i, "delete")
                session.delete(row)


class Bank(NamedTuple):
    store: Store
    make: Callable[[], Search]  # its search, made as a process opening the bank makes it
    kind: str


@pytest.fixture(params=KINDS)
def bank(request, tmp_path):
    """A new, empty bank of each kind."""
    kind = request.param
    url = request.getfixturevalue("pgvector_url") if kind == "pgvector" else str(tmp_path / "bank.db")
    info = IndexInfo("bank-7f3a", "wavlm-xvector:0123456789abcdef", DIM, kind)
    store = new_bank(url, info)
    yield Bank(store, lambda: factory.make(store, info, tmp_path / "bank.faiss", url), kind)
    store.dispose()


def by_id(search) -> dict[int, np.ndarray]:
    """What the search holds, by id: float32, or float16 where it holds half precision (pgvector's halfvec)."""
    ids, vectors, status = search.contents()
    assert ids.dtype == np.int64 and vectors.dtype in (np.float32, np.float16)
    assert vectors.shape == (len(ids), DIM) and isinstance(status, str) and status
    assert len(set(ids.tolist())) == len(ids), "an id is held twice"
    return dict(zip(ids.tolist(), vectors))


def test_search_returns_ids_with_cosine_scores(bank):
    store, make, _ = bank
    search = make()
    vectors = unit_vectors(6, seed=0)
    ids = np.array([101, 7, 55, 3, 900, 12], dtype=np.int64)  # SQL ids: sparse, unordered
    write(store, ids, vectors)
    queries = unit_vectors(3, seed=1)
    scores, found, held = search.search(queries, 4)
    assert held == 6 and scores.shape == found.shape == (3, 4) and found.dtype == np.int64
    expected = queries.astype(np.float64) @ vectors.T.astype(np.float64)  # cosine of unit vectors
    for q in range(3):
        order = np.argsort(-expected[q])[:4]
        assert found[q].tolist() == ids[order].tolist()
        np.testing.assert_allclose(scores[q], expected[q, order], atol=1e-5)
    scores, found, _ = search.search(vectors[2:3], 1)  # a stored vector finds itself first, with score 1
    assert found.tolist() == [[55]] and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert search.kind == bank.kind


def test_a_replaced_voiceprint_is_found_as_it_is_now(bank):
    store, make, _ = bank
    search = make()
    old, new = unit_vectors(3, seed=2), unit_vectors(1, seed=3)
    write(store, [1, 2, 3], old)
    assert search.search(old, 1)[1][:, 0].tolist() == [1, 2, 3]  # the search holds them now
    write(store, [2], new)
    held = by_id(search)
    assert sorted(held) == [1, 2, 3]
    np.testing.assert_array_equal(held[2], new[0].astype(held[2].dtype))  # exact, in the precision held
    np.testing.assert_array_equal(held[1], old[0].astype(held[1].dtype))
    scores, found, count = search.search(old[1:2], 3)  # the old vector of 2 is gone
    assert count == 3 and (found[0, 0] != 2 or scores[0, 0] < 0.999)
    scores, found, _ = search.search(new, 1)
    assert found.tolist() == [[2]] and scores[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_a_removed_voiceprint_is_never_found(bank):
    store, make, _ = bank
    search = make()
    vectors = unit_vectors(4, seed=4)
    write(store, [10, 20, 30, 40], vectors)
    assert search.search(vectors, 1)[2] == 4
    delete(store, [20, 40, 999])  # 999 was never there
    _, found, held = search.search(vectors[1:2], 5)
    assert held == 2 and 20 not in found and 40 not in found
    assert sorted(by_id(search)) == [10, 30]


def test_search_with_k_beyond_the_size(bank):
    store, make, _ = bank
    write(store, [5, 6], unit_vectors(2, seed=5))
    scores, found, held = make().search(unit_vectors(2, seed=6), 10)
    assert held == 2 and scores.shape == found.shape == (2, 2)  # no -1 padding for missing neighbours
    assert sorted(found[0].tolist()) == [5, 6] and sorted(found[1].tolist()) == [5, 6]
    assert np.all(np.diff(scores, axis=1) <= 0)  # best first


def test_search_of_an_empty_bank(bank):
    make = bank.make
    search = make()
    scores, found, held = search.search(unit_vectors(3, seed=7), 5)
    assert held == 0 and scores.shape == found.shape == (3, 0) and found.dtype == np.int64
    ids, vectors, _ = search.contents()
    assert ids.shape == (0,) and vectors.shape == (0, DIM)


def test_contents_round_trip_and_another_process_answers_alike(bank):
    store, make, _ = bank
    search = make()
    vectors = unit_vectors(5, seed=8)
    ids = np.array([42, 1, 77, 3, 19])
    write(store, ids, vectors)
    held = by_id(search)
    assert sorted(held) == sorted(ids.tolist())
    for i, v in zip(ids.tolist(), vectors):
        np.testing.assert_array_equal(held[i], v.astype(held[i].dtype))  # exact, in the precision held
    queries = unit_vectors(2, seed=9)
    search.save()
    other = make()  # another process: from the saved file (FAISS) or the same database (pgvector)
    np.testing.assert_array_equal(other.search(queries, 5)[1], search.search(queries, 5)[1])
    assert search.rebuild() == 5 and sorted(by_id(search)) == sorted(ids.tolist())
    np.testing.assert_array_equal(search.search(queries, 5)[1], other.search(queries, 5)[1])
