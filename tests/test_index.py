"""The contract of voicebank.index.SpeakerIndex, the FAISS index file, run against every FAISS kind.

The index is a cache of SQL: it must answer like exact cosine search keyed by the given ids, and
``load`` must refuse (IndexFileError) anything it cannot trust, so that the caller rebuilds. The
contract of the search over any kind, pgvector too, is tests/test_search.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from voicebank.index import KINDS, IndexFileError, IndexInfo, SpeakerIndex

DIM = 16


def unit_vectors(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(params=KINDS)
def info(request) -> IndexInfo:
    return IndexInfo(bank_uid="bank-7f3a", model_id="wavlm-xvector:0123456789abcdef", dimension=DIM, kind=request.param)


def by_id(index: SpeakerIndex) -> dict[int, np.ndarray]:
    """What the index holds, by id: float32, or float16 for an index holding half precision (pgvector's halfvec)."""
    ids, vectors = index.items()
    assert ids.dtype == np.int64 and vectors.dtype in (np.float32, np.float16)
    assert vectors.shape == (len(ids), DIM)
    assert len(set(ids.tolist())) == len(ids), "an id is held twice"
    return dict(zip(ids.tolist(), vectors))


# -- in memory ---------------------------------------------------------------------------------


def test_search_returns_ids_with_cosine_scores(info):
    index = SpeakerIndex(info)
    vectors = unit_vectors(6, seed=0)
    ids = np.array([101, 7, 55, 3, 900, 12], dtype=np.int64)  # SQL ids: sparse, unordered
    index.upsert(ids, vectors)
    assert len(index) == 6

    queries = unit_vectors(3, seed=1)
    scores, found = index.search(queries, 4)
    assert scores.shape == found.shape == (3, 4)
    expected = queries.astype(np.float64) @ vectors.T.astype(np.float64)  # cosine of unit vectors
    for q in range(3):
        order = np.argsort(-expected[q])[:4]
        assert found[q].tolist() == ids[order].tolist()
        np.testing.assert_allclose(scores[q], expected[q, order], atol=1e-5)
    # a stored vector finds itself first, with score 1
    scores, found = index.search(vectors[2], 1)
    assert found.tolist() == [[55]] and scores[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_upsert_of_an_existing_id_replaces_it(info):
    index = SpeakerIndex(info)
    old, new = unit_vectors(3, seed=2), unit_vectors(1, seed=3)
    index.upsert(np.array([1, 2, 3]), old)
    index.upsert(np.array([2]), new)
    assert len(index) == 3
    held = by_id(index)
    assert sorted(held) == [1, 2, 3]
    np.testing.assert_array_equal(held[2], new[0].astype(held[2].dtype))  # exact, in the precision held
    np.testing.assert_array_equal(held[1], old[0].astype(held[1].dtype))
    scores, found = index.search(old[1], 3)  # the old vector of 2 is gone
    assert found[0, 0] != 2 or scores[0, 0] < 0.999
    scores, found = index.search(new[0], 1)
    assert found.tolist() == [[2]] and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    index.upsert(np.array([], dtype=np.int64), np.zeros((0, DIM), np.float32))  # a no-op
    assert len(index) == 3


def test_remove(info):
    index = SpeakerIndex(info)
    vectors = unit_vectors(4, seed=4)
    index.upsert(np.array([10, 20, 30, 40]), vectors)
    index.remove(np.array([20, 40]))
    assert len(index) == 2
    assert sorted(by_id(index)) == [10, 30]
    _, found = index.search(vectors[1], 5)
    assert 20 not in found and 40 not in found
    index.remove(np.array([999]))  # absent ids are ignored
    index.remove(np.array([], dtype=np.int64))
    assert len(index) == 2


def test_search_with_k_beyond_the_size(info):
    index = SpeakerIndex(info)
    index.upsert(np.array([5, 6]), unit_vectors(2, seed=5))
    scores, found = index.search(unit_vectors(2, seed=6), 10)
    assert scores.shape == found.shape == (2, 2)  # no -1 padding for missing neighbours
    assert sorted(found[0].tolist()) == [5, 6] and sorted(found[1].tolist()) == [5, 6]
    assert np.all(np.diff(scores, axis=1) <= 0)  # best first


def test_search_of_an_empty_index(info):
    index = SpeakerIndex(info)
    scores, found = index.search(unit_vectors(3, seed=7), 5)
    assert scores.shape == found.shape == (3, 0)
    assert found.dtype == np.int64
    ids, vectors = index.items()
    assert ids.shape == (0,) and vectors.shape == (0, DIM)


def test_items_round_trip(info):
    index = SpeakerIndex(info)
    vectors = unit_vectors(5, seed=8)
    ids = np.array([42, 1, 77, 3, 19])
    index.upsert(ids, vectors)
    held = by_id(index)
    assert sorted(held) == sorted(ids.tolist())
    for i, v in zip(ids.tolist(), vectors):
        np.testing.assert_array_equal(held[i], v.astype(held[i].dtype))  # exact, in the precision held
    # feeding items() into a fresh index rebuilds the same index
    copy = SpeakerIndex(info)
    copy.upsert(*index.items())
    q = unit_vectors(2, seed=9)
    np.testing.assert_array_equal(copy.search(q, 5)[1], index.search(q, 5)[1])


# -- persistence -------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path, info) -> tuple[Path, SpeakerIndex]:
    index = SpeakerIndex(info, seq=41)
    index.upsert(np.array([3, 14, 15, 92, 65]), unit_vectors(5, seed=10))
    path = tmp_path / "idx" / "bank.faiss"  # parent does not exist yet: save makes it
    index.save(path)
    return path, index


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def test_save_load_round_trip(saved, info):
    path, index = saved
    assert path.exists() and sidecar(path).exists()
    assert not list(path.parent.glob("*.tmp")), "a temporary file was left behind"
    loaded = SpeakerIndex.load(path, info)
    assert loaded.seq == 41
    assert loaded.info == info
    assert len(loaded) == 5
    original, restored = by_id(index), by_id(loaded)
    assert sorted(restored) == [3, 14, 15, 65, 92]
    for i in original:
        np.testing.assert_array_equal(restored[i], original[i])
    q = unit_vectors(3, seed=11)
    for a, b in zip(index.search(q, 3), loaded.search(q, 3)):
        np.testing.assert_array_equal(a, b)
    # the loaded index is a working index, not a read-only copy
    loaded.upsert(np.array([14, 7]), unit_vectors(2, seed=12))
    loaded.remove(np.array([3]))
    assert sorted(by_id(loaded)) == [7, 14, 15, 65, 92]


def test_save_overwrites_and_empty_index_round_trips(tmp_path, info):
    path = tmp_path / "bank.faiss"
    index = SpeakerIndex(info, seq=1)
    index.upsert(np.array([1, 2]), unit_vectors(2, seed=13))
    index.save(path)
    index.remove(np.array([1, 2]))
    index.seq = 2
    index.save(path)
    loaded = SpeakerIndex.load(path, info)
    assert loaded.seq == 2 and len(loaded) == 0
    assert loaded.search(unit_vectors(1, seed=14), 3)[1].shape == (1, 0)


def test_load_missing_file(tmp_path, info):
    with pytest.raises(IndexFileError):
        SpeakerIndex.load(tmp_path / "nothing.faiss", info)


def test_load_missing_sidecar(saved, info):
    path, _ = saved
    sidecar(path).unlink()
    with pytest.raises(IndexFileError):
        SpeakerIndex.load(path, info)


@pytest.mark.parametrize(
    "text", ["{not json", "", "null", "[1, 2, 3]", '"a string"', '{"format": 99}']
)
def test_load_garbage_sidecar(saved, info, text):
    path, _ = saved
    sidecar(path).write_text(text)
    with pytest.raises(IndexFileError):
        SpeakerIndex.load(path, info)


def test_load_binary_garbage_sidecar(saved, info):
    path, _ = saved
    sidecar(path).write_bytes(bytes(range(256)))
    with pytest.raises(IndexFileError):
        SpeakerIndex.load(path, info)


@pytest.mark.parametrize(
    "change",
    [
        {"bank_uid": "bank-other"},
        {"model_id": "wavlm-xvector:fedcba9876543210"},
        {"dimension": DIM * 2},
        {"kind": "another"},
    ],
)
def test_load_refuses_a_foreign_index(saved, info, change):
    path, _ = saved
    if change.get("kind") == "another":
        change = {"kind": next(k for k in KINDS if k != info.kind)}
    expected = IndexInfo(**{**info.__dict__, **change})
    with pytest.raises(IndexFileError):
        SpeakerIndex.load(path, expected)


def test_load_refuses_a_sidecar_edited_to_look_right(saved, info):
    """A sidecar claiming another dimension than the index file holds is caught by the file itself."""
    path, _ = saved
    other = IndexInfo(info.bank_uid, info.model_id, DIM * 2, info.kind)
    meta = json.loads(sidecar(path).read_text())
    meta["dimension"] = DIM * 2
    sidecar(path).write_text(json.dumps(meta))
    with pytest.raises(IndexFileError):
        SpeakerIndex.load(path, other)


def _rewrite(path: Path, data: bytes, **meta_changes) -> None:
    """Replace the index file and make the sidecar's checksum match, so the bytes themselves are tested."""
    path.write_bytes(data)
    meta = json.loads(sidecar(path).read_text())
    meta.update(sha256=hashlib.sha256(data).hexdigest(), **meta_changes)
    sidecar(path).write_text(json.dumps(meta))


def test_load_checksum_mismatch(saved, info):
    path, _ = saved
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte inside a stored vector
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="checksum"):
        SpeakerIndex.load(path, info)


@pytest.mark.parametrize("replace_with", ["link to /dev/zero", "fifo", "link to a copy", "huge file"])
def test_an_index_file_that_is_not_a_plain_file_of_a_sane_size_is_refused_at_once(saved, info, replace_with):
    """Replaced by a link (even to a good copy), a FIFO or a sparse file far larger than its count
    allows: refused quickly without reading it (no hang, no gigabytes), so the bank rebuilds from SQL."""
    import os

    path, _ = saved
    copy = path.with_name("copy.faiss")
    copy.write_bytes(path.read_bytes())
    path.unlink()
    if replace_with == "link to /dev/zero":
        path.symlink_to("/dev/zero")
    elif replace_with == "fifo":
        os.mkfifo(path)
    elif replace_with == "link to a copy":
        path.symlink_to(copy)
    else:
        with open(path, "wb") as f:
            f.truncate(1 << 34)  # 16 GiB, sparse
    with pytest.raises(IndexFileError, match="not a regular file|is a symbolic link|more than an index"):
        SpeakerIndex.load(path, info)
    for link in (sidecar(path),):  # the sidecar through a link is refused the same way
        link.rename(copy.with_name("side.json"))
        link.symlink_to(copy.with_name("side.json"))
    path.unlink()
    path.write_bytes(copy.read_bytes())
    with pytest.raises(IndexFileError, match="is a symbolic link"):
        SpeakerIndex.load(path, info)


def test_load_garbage_index_bytes(saved, info):
    path, _ = saved
    garbage = np.random.default_rng(15).integers(0, 256, path.stat().st_size, dtype=np.uint8).tobytes()
    _rewrite(path, garbage)
    with pytest.raises(IndexFileError):
        SpeakerIndex.load(path, info)
    _rewrite(path, b"")  # an empty index file
    with pytest.raises(IndexFileError):
        SpeakerIndex.load(path, info)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_load_truncated_index_file(saved, info, keep):
    path, _ = saved
    data = path.read_bytes()
    cut = data[: int(len(data) * keep)]
    path.write_bytes(cut)  # as left by a crash: the checksum no longer matches
    with pytest.raises(IndexFileError):
        SpeakerIndex.load(path, info)
    _rewrite(path, cut)  # even with a matching checksum FAISS must not accept it
    with pytest.raises(IndexFileError):
        SpeakerIndex.load(path, info)


def test_load_refuses_a_count_or_seq_the_file_does_not_back(saved, info):
    path, _ = saved
    data = path.read_bytes()
    _rewrite(path, data, count=4)
    with pytest.raises(IndexFileError):
        SpeakerIndex.load(path, info)
    _rewrite(path, data, count=5, seq="41")
    with pytest.raises(IndexFileError):
        SpeakerIndex.load(path, info)
    _rewrite(path, data, seq=41)
    assert SpeakerIndex.load(path, info).seq == 41  # and the repaired sidecar is accepted again


def test_load_refuses_a_file_whose_structure_is_not_the_kind(tmp_path):
    """A sidecar edited to name another kind is caught by the structure inside the FAISS file."""
    for built, claimed in [("flat", "hnsw"), ("hnsw", "flat"), ("hnsw", "ivf")]:
        info = IndexInfo("bank-7f3a", "m", DIM, built)
        index = SpeakerIndex(info, seq=3)
        index.upsert(np.array([1, 2, 3]), unit_vectors(3, seed=16))
        path = tmp_path / f"{built}.faiss"
        index.save(path)
        meta = json.loads(sidecar(path).read_text())
        sidecar(path).write_text(json.dumps({**meta, "kind": claimed}))
        with pytest.raises(IndexFileError, match=f"as a {claimed} index"):
            SpeakerIndex.load(path, IndexInfo("bank-7f3a", "m", DIM, claimed))


# -- approximate kinds, at a size where their structure is really used -----------------------------
#
# Voiceprints clustered like real ones: speaker centres share a common offset and one of a few
# group offsets (think gender, language, channel) plus an anisotropic part; each voiceprint is the
# normalized mean of 3 noisy utterances, each query a 4th utterance of an enrolled speaker. Same-
# speaker utterance cosines come out ~0.65-0.9, different speakers ~0-0.3 (bench/search_population.py
# generates voiceprints fitted to real ones, closer together, for the benchmark).

BIG, BIG_DIM = 5_000, 64
APPROXIMATE = [k for k in KINDS if k != "flat"]


def clustered(n: int, seed: int, dim: int = BIG_DIM, n_queries: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """(voiceprints (n, dim), queries (n_queries, dim)): query i is a new utterance of speaker i."""
    rng = np.random.default_rng(seed)
    norm = lambda x: (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)  # noqa: E731
    spread = 1 / np.sqrt(1 + np.arange(dim) / 8)
    centres = norm(0.45 * norm(rng.standard_normal(dim)) + 0.55 * norm(rng.standard_normal((16, dim)))[rng.integers(0, 16, n)]
                   + rng.standard_normal((n, dim)) * spread / np.linalg.norm(spread))
    utterances = norm(centres[:, None, :] + rng.uniform(0.3, 0.75, (n, 4, 1)) * norm(rng.standard_normal((n, 4, dim))))
    return norm(utterances[:, :3].mean(axis=1)), utterances[:n_queries, 3]


@pytest.fixture(scope="module")
def big_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vectors, queries = clustered(BIG, seed=20, n_queries=1000)
    ids = np.random.default_rng(21).permutation(10 * BIG)[:BIG].astype(np.int64) + 1  # sparse SQL ids
    return ids, vectors, queries


def exact_top(ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries.astype(np.float64) @ vectors.T.astype(np.float64)
    order = np.argsort(-scores, axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


def big_index(kind: str, ids: np.ndarray, vectors: np.ndarray) -> SpeakerIndex:
    index = SpeakerIndex(IndexInfo("bank-big", "m", BIG_DIM, kind))
    index.upsert(ids, vectors)
    described = index.backend.describe()
    assert described["exact"] is False, f"{kind} at {len(ids)} voiceprints is still exact: {described}"
    return index


def assert_answers_like_exact(search, ids, vectors, queries, k: int = 5, min_recall: float = 0.98) -> None:
    """``search(queries, k)`` (a SpeakerIndex's or a Search's) returns the true cosines of the ids it
    returns, best first, and recall@1 against exact search."""
    scores, found = search(queries, k)[:2]
    assert found.shape == (len(queries), k) and (found >= 0).all()
    held = dict(zip(ids.tolist(), vectors))
    true = np.array([[queries[q] @ held[i] for i in row] for q, row in enumerate(found.tolist())])
    np.testing.assert_allclose(scores, true, atol=1e-5)  # a removed or stale id would have no entry / differ
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    recall = np.mean(found[:, 0] == exact_top(ids, vectors, queries, 1)[1][:, 0])
    assert recall >= min_recall, f"recall@1 {recall:.3f} against exact search"


@pytest.mark.parametrize("kind", APPROXIMATE)
def test_recall_against_exact_search(kind, big_data):
    ids, vectors, queries = big_data
    index = big_index(kind, ids, vectors)
    assert_answers_like_exact(index.search, ids, vectors, queries)
    # the speaker a query was drawn from is found first, as often as exact search finds it
    exact_hits = np.mean(exact_top(ids, vectors, queries, 1)[1][:, 0] == ids[: len(queries)])
    hits = np.mean(index.search(queries, 1)[1][:, 0] == ids[: len(queries)])
    assert hits >= exact_hits - 0.02


@pytest.mark.parametrize("kind", APPROXIMATE)
def test_replace_and_remove_at_scale(kind, big_data, tmp_path):
    ids, vectors, queries = big_data
    index = big_index(kind, ids, vectors)
    rng = np.random.default_rng(22)
    order = rng.permutation(BIG)
    replaced, removed = ids[order[:400]], ids[order[400:800]]
    new_vectors, _ = clustered(400, seed=23)
    index.upsert(replaced, new_vectors)
    index.remove(removed)

    current = dict(zip(ids.tolist(), vectors))
    current.update(zip(replaced.tolist(), new_vectors))
    for i in removed.tolist():
        del current[i]
    live_ids, live_vectors = np.array(list(current)), np.stack(list(current.values()))
    assert len(index) == len(current)
    held = by_id_any(index)
    assert sorted(held) == sorted(current)
    for i in replaced.tolist()[:50]:
        np.testing.assert_array_equal(held[i], current[i])

    # old vectors of replaced and removed speakers: never their stale entry, never a removed id
    stale = vectors[order[:800]]
    _, found = index.search(stale, 10)
    assert not np.isin(found, removed).any()
    # (these have no close match left, so their best is a near-tie among strangers: lower recall is fine)
    assert_answers_like_exact(index.search, live_ids, live_vectors, stale, k=10, min_recall=0.8)
    assert_answers_like_exact(index.search, live_ids, live_vectors, queries)
    scores, found = index.search(new_vectors, 1)  # a replaced voiceprint finds itself
    assert np.mean(found[:, 0] == replaced) >= 0.98

    # k as large as the index: every live id exactly once, best first (no -1 padding)
    scores, found = index.search(queries[:3], 10 * BIG)
    assert found.shape == (3, len(current))
    for row in found:
        assert sorted(row.tolist()) == sorted(current)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)

    # save and load keep all of it, tombstones included
    path = tmp_path / f"{kind}.faiss"
    index.seq = 9
    index.save(path)
    loaded = SpeakerIndex.load(path, index.info)
    assert len(loaded) == len(current)
    for a, b in zip(index.search(stale, 10), loaded.search(stale, 10)):
        np.testing.assert_array_equal(a, b)


def by_id_any(index: SpeakerIndex) -> dict[int, np.ndarray]:
    ids, vectors = index.items()
    assert ids.dtype == np.int64 and vectors.dtype == np.float32 and len(set(ids.tolist())) == len(ids)
    return dict(zip(ids.tolist(), vectors))


def test_hnsw_rebuilds_its_graph_when_tombstones_pile_up(big_data):
    from voicebank.index import kinds as index_kinds

    ids, vectors, queries = big_data
    index = SpeakerIndex(IndexInfo("bank-big", "m", BIG_DIM, "hnsw"))
    index.upsert(ids[:2000], vectors[:2000])
    index.remove(ids[:300])
    assert index.backend.tombstones == 300  # below a quarter of the live voiceprints: kept
    # the exact rescue a search falls back on when the graph walk finds fewer than k live nodes
    for got, want in zip(index.backend._exact(queries[300:310], 50), exact_top(ids[300:2000], vectors[300:2000], queries[300:310], 50)):
        np.testing.assert_allclose(got, want, atol=1e-5)
    index.remove(ids[300:500])  # 500 > 0.25 * 1500: the graph is rebuilt without them
    assert index.backend.tombstones == 0 and len(index) == 1500
    assert index_kinds.HNSW_COMPACT_FRACTION == 0.25
    assert_answers_like_exact(index.search, ids[500:2000], vectors[500:2000], queries[500:1000])


def test_ivf_is_exact_until_it_can_train_and_follows_the_bank_size(big_data, tmp_path):
    from voicebank.index.kinds import IVF_MIN_TRAIN

    ids, vectors, queries = big_data
    info = IndexInfo("bank-big", "m", BIG_DIM, "ivf")
    index = SpeakerIndex(info, seq=1)
    index.upsert(ids[:1000], vectors[:1000])
    assert index.backend.describe()["exact"] is True  # too few to train: a flat index inside
    path = tmp_path / "ivf.faiss"
    index.save(path)
    assert "untrained" in json.loads(sidecar(path).read_text())["structure"]["note"]
    loaded = SpeakerIndex.load(path, info)
    assert loaded.backend.describe()["exact"] is True
    for a, b in zip(index.search(queries, 3), exact_top(ids[:1000], vectors[:1000], queries, 3)):
        np.testing.assert_allclose(a, b, atol=1e-5)

    index.upsert(ids[1000:IVF_MIN_TRAIN], vectors[1000:IVF_MIN_TRAIN])  # one at a time would do the same
    assert index.backend.describe() == {"structure": "IndexIVFFlat", "exact": False, "nlist": 64, "nprobe": 16}
    index.remove(ids[IVF_MIN_TRAIN // 2 :])  # half the threshold: still IVF (no flip-flopping)
    assert index.backend.describe()["exact"] is False
    index.remove(ids[IVF_MIN_TRAIN // 2 - 1 : IVF_MIN_TRAIN // 2])  # below half: exact again
    assert len(index) == IVF_MIN_TRAIN // 2 - 1 and index.backend.describe()["exact"] is True
    assert sorted(by_id_any(index)) == sorted(ids[: IVF_MIN_TRAIN // 2 - 1].tolist())


# -- the index proposes, SQL decides --------------------------------------------------------------
def test_a_tampered_index_with_a_valid_checksum_cannot_change_a_decision(db_path, tiny_model, voices, caplog):
    """An index file rewritten (checksum and all) with alice's and bob's voiceprints swapped: bob's
    recording is still identified as bob, with the score verify gives, and the index is repaired."""
    from conftest import TINY_THRESHOLD
    from voicebank import VoiceBank
    from voicebank.index import IndexInfo, SpeakerIndex

    with VoiceBank.open(db_path, str(tiny_model), create=True, threshold=TINY_THRESHOLD, identify_rule="best") as bank:
        for name in ("alice", "bob", "carol"):
            bank.enroll(name, voices[name][:2])
        bank.index.save()
        info = IndexInfo(bank._search.wideband.info.bank_uid, bank.model_id, bank.dimension, bank.index.kind)
        alice, bob = (bank.voiceprint(n)[0] for n in ("alice", "bob"))
    path = db_path.with_name(db_path.name + ".faiss")
    honest = SpeakerIndex.load(path, info)
    ids, vectors = honest.items()
    swapped = vectors.copy()
    a, b = int(np.flatnonzero(ids == alice)[0]), int(np.flatnonzero(ids == bob)[0])
    swapped[[a, b]] = vectors[[b, a]]
    forged = SpeakerIndex(info, honest.seq, history=honest.history)
    forged.upsert(ids, swapped)
    forged.save(path)  # a valid file and sidecar: only SQL can tell

    with VoiceBank.open(db_path) as bank, caplog.at_level("WARNING"):
        result = bank.identify(voices["bob"][2])
        assert result.match is not None and result.match.name == "bob", result
        assert result.match.score == pytest.approx(bank.verify("bob", voices["bob"][2]).score, abs=1e-5)
        assert "the wideband index disagreed with SQL" in caplog.text
        assert bank.index.check().ok  # repaired from SQL


def test_ivf_lists_are_balanced_on_voiceprints_in_a_narrow_cone():
    """Real voiceprints sit in a narrow cone (mean-vector norm ~0.8). k-means on them as they are
    puts nearly all of them into the few lists nearest the mean direction, and probing a few lists
    scans most of the bank; the IVF kind clusters their directions around the mean instead."""
    from voicebank.index import kinds

    rng = np.random.default_rng(30)
    n, dim = 8_000, 256  # the pull of the mean grows with the dimension: 1.09 imbalance at 128 dims, 1.27 at 256
    unit = lambda x: (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)  # noqa: E731
    # the simplest cone: the mean direction plus isotropic spread (different speakers' median cosine ~0.6)
    centres = unit(1.25 * unit(rng.standard_normal(dim)) + unit(rng.standard_normal((n, dim))))
    vectors = unit(centres + 0.3 * unit(rng.standard_normal((n, dim))))
    queries = unit(centres[:300] + 0.3 * unit(rng.standard_normal((300, dim))))
    assert np.linalg.norm(vectors.mean(axis=0)) > 0.7  # as narrow as real voiceprints
    ids = np.arange(1, n + 1, dtype=np.int64)
    index = SpeakerIndex(IndexInfo("bank-cone", "m", dim, "ivf"))
    index.upsert(ids, vectors)
    ivf = index.backend.index
    sizes = np.array([ivf.invlists.list_size(i) for i in range(ivf.nlist)])
    assert ivf.invlists.imbalance_factor() < 1.1, f"lists of {sorted(sizes)[-5:]} voiceprints for {n} in {ivf.nlist} lists"
    assert (sizes > 0).mean() > 0.9
    assert_answers_like_exact(index.search, ids, vectors, queries, min_recall=0.9)  # isotropic spread: the hardest case
    # and the same lists after a save and a load (the centring travels inside the FAISS file)
    assert isinstance(kinds.adopt("ivf", dim, __import__("faiss").deserialize_index(
        __import__("faiss").serialize_index(ivf))), kinds.Ivf)
