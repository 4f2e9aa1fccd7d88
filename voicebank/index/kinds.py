"""The index kinds behind :class:`voicebank.index.SpeakerIndex`: one small class per FAISS structure.

Every kind answers like exact cosine search over the live voiceprints: upsert replaces, remove
removes, search returns (scores, ids) with true inner products of the stored float32 vectors (none
of these kinds quantizes, so no re-scoring is needed), best first, never a removed or replaced id and
never -1 padding, and ``items()`` returns the exact vectors. The approximate kinds may miss the true
nearest neighbour now and then (recall@1 is measured in ``bench/search.py``), never more than that.

- ``flat``: ``IndexIDMap2(IndexFlatIP)``, brute force; ~2.1 KB per 512-dim voiceprint.
- ``hnsw``: ``IndexIDMap(IndexHNSWFlat)``, a graph; ~2.4 KB per voiceprint. A graph cannot forget a
  node, so a removed or replaced voiceprint is a tombstone (its id set to -1 in the id map) that
  searches skip through a FAISS ID selector; the graph is rebuilt when tombstones pass a quarter of
  the live voiceprints.
- ``ivf``: ``IndexIVFFlat`` with spherical k-means lists of the voiceprints' directions around their
  mean (see :func:`_centred_ivf`), trained on the voiceprints themselves; ~2.1 KB per voiceprint. Below :data:`IVF_MIN_TRAIN` voiceprints there is too little to train on and
  it stays exact (a ``flat`` index inside), and it goes back to exact below half that. It has about
  sqrt(n) lists and is re-trained (on the whole bank) when that ideal doubles (the bank has grown
  ~3-4 fold since training) or falls to a quarter (it has shrunk ~16 fold).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from .. import runtime

log = logging.getLogger(__name__)

# Chosen with bench/search.py on clustered synthetic 512-dim voiceprints, 100k of them, one thread:
HNSW_M = 32  # graph degree: M=16 reached only 0.83 recall@1; 48 and 64 did no better than 32 for their cost
HNSW_EF_CONSTRUCTION = 160  # recall@1 at efSearch=128: 0.969 with 40, 0.993 with 80, 1.000 with 160 (2x the build time of 40)
HNSW_EF_SEARCH = 512  # voice-shaped data at 100k: recall@1 0.909 at 128, 0.970 at 512 (bench/search.py)
HNSW_COMPACT_FRACTION = 0.25  # rebuild the graph when tombstones exceed this share of the live count
IVF_MIN_TRAIN = 4096  # fewer voiceprints than this: exact search (k-means needs ~40+ points per list)
IVF_TRAIN_PER_LIST = 64  # k-means sample: this many voiceprints per list, at most
# nprobe = max(IVF_MIN_PROBE, nlist // IVF_PROBE_SHARE): a quarter of the lists. Voiceprints sit in a
# narrow cone, so the right list is often not among the nearest few (`python bench/search.py`
# measures recall@1 by the share probed).
IVF_PROBE_SHARE = 4
IVF_MIN_PROBE = 8
_ANY_LIVE_ID = (0, 2**62)  # ids in [0, 2**62) are live; tombstones are -1


def make(kind: str, dimension: int):
    """An empty index of ``kind`` for ``dimension``-dim vectors."""
    return KIND_CLASSES[kind](dimension)


def adopt(kind: str, dimension: int, index):
    """Wrap a deserialized FAISS index (as ``faiss.deserialize_index`` returns it: already of its
    concrete class, and owning its memory) as ``kind``; ``ValueError`` if its structure is not that kind's."""
    import faiss

    if index.d != dimension or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ValueError(f"the file holds a {index.d}-dim index with metric {index.metric_type}, "
                         f"not a {dimension}-dim inner-product index")
    return KIND_CLASSES[kind].adopt(dimension, index)


class Flat:
    """Exact search: FAISS flat inner product under an id map that can remove."""

    def __init__(self, dimension: int, index=None):
        import faiss

        runtime.faiss_loaded(faiss)  # one matrix product per batch of queries: only if configure() was called
        self.dimension = dimension
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))

    @classmethod
    def adopt(cls, dimension: int, index) -> "Flat":
        import faiss

        if not (isinstance(index, faiss.IndexIDMap2) and isinstance(faiss.downcast_index(index.index), faiss.IndexFlat)):
            raise ValueError(f"the file holds a {type(index).__name__}, not a flat index")
        return cls(dimension, index)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def faiss_index(self):
        return self.index

    def describe(self) -> dict:
        return {"structure": "IndexIDMap2(IndexFlatIP)", "exact": True}

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.remove(ids)
        self.index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> None:
        self.index.remove_ids(ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, k)

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        if not len(self):
            return ids, np.zeros((0, self.dimension), dtype=np.float32)
        flat = faiss.downcast_index(self.index.index)
        return ids, np.asarray(flat.reconstruct_n(0, len(self)), dtype=np.float32)


class Hnsw:
    """HNSW graph over the float32 vectors; deletions are tombstones skipped at search time."""

    def __init__(self, dimension: int, index=None):
        import faiss

        self.dimension = dimension
        if index is None:
            graph = faiss.IndexHNSWFlat(dimension, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            index = faiss.IndexIDMap(graph)
        self.index = index
        self.ef_search = HNSW_EF_SEARCH
        self._live = int(np.count_nonzero(self._id_map() >= 0))

    @classmethod
    def adopt(cls, dimension: int, index) -> "Hnsw":
        import faiss

        if not (type(index) is faiss.IndexIDMap and isinstance(faiss.downcast_index(index.index), faiss.IndexHNSWFlat)):
            raise ValueError(f"the file holds a {type(index).__name__}, not an HNSW index")
        return cls(dimension, index)

    def __len__(self) -> int:
        return self._live

    @property
    def faiss_index(self):
        return self.index

    @property
    def tombstones(self) -> int:
        return int(self.index.ntotal) - self._live

    def describe(self) -> dict:
        import faiss

        graph = faiss.downcast_index(self.index.index).hnsw  # as built, whatever the constants are now
        return {"structure": "IndexIDMap(IndexHNSWFlat)", "exact": False, "M": int(graph.nb_neighbors(1)),
                "efConstruction": int(graph.efConstruction), "efSearch": self.ef_search, "tombstones": self.tombstones}

    def _id_map(self) -> np.ndarray:
        """A writable view of FAISS's row -> id map (valid until the next add)."""
        import faiss

        if self.index.ntotal == 0:
            return np.zeros(0, dtype=np.int64)
        return faiss.rev_swig_ptr(self.index.id_map.data(), self.index.ntotal)

    def _storage(self) -> np.ndarray:
        """A read-only view of the float32 vectors, row by row (valid until the next add)."""
        import faiss

        storage = faiss.downcast_index(faiss.downcast_index(self.index.index).storage)
        view = faiss.rev_swig_ptr(storage.get_xb(), self.index.ntotal * self.dimension)
        return view.reshape(-1, self.dimension)

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._tombstone(ids)
        self.index.add_with_ids(vectors, ids)
        self._live += len(ids)
        self._compact_if_needed()

    def remove(self, ids: np.ndarray) -> None:
        self._tombstone(ids)
        self._compact_if_needed()

    def _tombstone(self, ids: np.ndarray) -> None:
        id_map = self._id_map()
        hit = np.isin(id_map, ids) & (id_map >= 0)
        id_map[hit] = -1  # the graph keeps routing through the node; searches no longer return it
        self._live -= int(np.count_nonzero(hit))

    def _compact_if_needed(self) -> None:
        if self.tombstones > HNSW_COMPACT_FRACTION * self._live:
            ids, vectors = self.items()
            log.info("rebuilding the HNSW graph: %d tombstones for %d voiceprints", self.tombstones, len(ids))
            fresh = Hnsw(self.dimension)
            if len(ids):
                fresh.index.add_with_ids(vectors, ids)
            self.index, self._live = fresh.index, len(ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.ef_search, k)
        live_only = faiss.IDSelectorRange(*_ANY_LIVE_ID)  # referenced until the search returns
        if self.tombstones:
            params.sel = live_only
        scores, ids = self.index.search(queries, k, params=params)
        short = np.flatnonzero((ids < 0).any(axis=1))
        if short.size:  # the graph walk found fewer than k live nodes: answer those rows exactly
            scores[short], ids[short] = self._exact(queries[short], k)
        return scores, ids

    def _exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        storage = faiss.downcast_index(faiss.downcast_index(self.index.index).storage)
        scores, rows = storage.search(queries, min(k + self.tombstones, int(self.index.ntotal)))
        ids = self._id_map()[rows]
        out_s, out_i = np.empty((len(queries), k), np.float32), np.empty((len(queries), k), np.int64)
        for q in range(len(queries)):
            live = ids[q] >= 0
            out_s[q], out_i[q] = scores[q][live][:k], ids[q][live][:k]
        return out_s, out_i

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        id_map = self._id_map()
        live = id_map >= 0
        vectors = self._storage()[live] if len(id_map) else np.zeros((0, self.dimension), np.float32)
        return id_map[live].copy(), np.array(vectors, dtype=np.float32)


class Ivf:
    """Inverted lists of float32 vectors around k-means centres; exact (flat) while too small to train."""

    def __init__(self, dimension: int, index=None):
        self.dimension = dimension
        self.index = index  # an IndexIVFFlat once trained
        self.exact = Flat(dimension) if index is None else None  # until then
        self.nprobe: int | None = None  # None: derived from nlist (see _probes)

    @classmethod
    def adopt(cls, dimension: int, index) -> "Ivf":
        import faiss

        if isinstance(index, faiss.IndexIVFFlat):
            return cls(dimension, index)
        backend = cls(dimension)
        backend.exact = Flat.adopt(dimension, index)  # saved before it had enough to train on
        return backend

    @property
    def trained(self) -> bool:
        return self.index is not None

    def __len__(self) -> int:
        return int(self.index.ntotal) if self.trained else len(self.exact)

    def describe(self) -> dict:
        if not self.trained:
            return {"structure": "IndexIDMap2(IndexFlatIP)", "exact": True,
                    "note": f"IVF untrained: exact search until the bank holds {IVF_MIN_TRAIN} voiceprints"}
        return {"structure": "IndexIVFFlat", "exact": False, "nlist": int(self.index.nlist), "nprobe": self._probes()}

    @property
    def faiss_index(self):
        return self.index if self.trained else self.exact.index

    def _probes(self) -> int:
        if self.nprobe is not None:
            return self.nprobe
        return max(IVF_MIN_PROBE, int(self.index.nlist) // IVF_PROBE_SHARE)

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._remove(ids)
        if not self.trained and len(self) + len(ids) >= IVF_MIN_TRAIN:  # enough to train on: build it now
            held_ids, held_vectors = self.exact.items()
            if len(held_ids):
                ids, vectors = np.concatenate([held_ids, ids]), np.concatenate([held_vectors, vectors])
            self._train(ids, vectors)
            return
        self.faiss_index.add_with_ids(vectors, ids)
        self._retrain_if_needed()

    def remove(self, ids: np.ndarray) -> None:
        self._remove(ids)
        self._retrain_if_needed()

    def _remove(self, ids: np.ndarray) -> None:
        self.faiss_index.remove_ids(ids)  # IVF lists forget ids for real: no tombstones needed

    def _retrain_if_needed(self) -> None:
        n = len(self)
        if not self.trained:
            return
        if n < IVF_MIN_TRAIN // 2:  # hysteresis: do not flip back and forth around the threshold
            ids, vectors = self.items()
            log.info("the IVF index shrank to %d voiceprints: exact search from now on", n)
            self.index, self.exact = None, Flat(self.dimension)
            self.exact.upsert(ids, vectors)
            return
        wanted, nlist = _nlist_for(n), int(self.index.nlist)
        if wanted >= 2 * nlist or 4 * wanted <= nlist:  # the bank grew or shrank about 4-fold
            self._train(*self.items())

    def _train(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        nlist = _nlist_for(len(ids))
        sample = vectors
        if len(vectors) > IVF_TRAIN_PER_LIST * nlist:  # a fixed seed: the same bank trains the same lists
            pick = np.random.default_rng(0).choice(len(vectors), IVF_TRAIN_PER_LIST * nlist, replace=False)
            sample = vectors[np.sort(pick)]
        log.info("training IVF: %d lists on %d of %d voiceprints", nlist, len(sample), len(ids))
        index = _centred_ivf(sample, nlist)
        index.add_with_ids(vectors, ids)
        self.index, self.exact = index, None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        if not self.trained:
            return self.exact.search(queries, k)
        scores, ids = self.index.search(queries, k, params=faiss.SearchParametersIVF(nprobe=self._probes()))
        short = np.flatnonzero((ids < 0).any(axis=1))
        if short.size:  # the probed lists held fewer than k: probe them all (exact)
            every = faiss.SearchParametersIVF(nprobe=int(self.index.nlist))
            scores[short], ids[short] = self.index.search(queries[short], k, params=every)
        return scores, ids

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        if not self.trained:
            return self.exact.items()
        lists, ids, vectors = self.index.invlists, [np.zeros(0, np.int64)], [np.zeros((0, self.dimension), np.float32)]
        for number in range(self.index.nlist):
            size = lists.list_size(number)
            if size:
                ids.append(faiss.rev_swig_ptr(lists.get_ids(number), size).copy())
                codes = faiss.rev_swig_ptr(lists.get_codes(number), size * self.index.code_size)
                vectors.append(codes.view(np.float32).reshape(size, self.dimension).copy())
        return np.concatenate(ids).astype(np.int64), np.concatenate(vectors)


def _centred_ivf(sample: np.ndarray, nlist: int):
    """An empty, trained ``IndexIVFFlat`` whose lists are spherical k-means clusters of the sample's
    directions *around its mean*: the quantizer centres a vector on the sample mean and normalizes it
    before choosing lists, while the lists keep the vectors as given (scores stay true cosines).

    Real voiceprints sit in a narrow cone (mean-vector norm ~0.8): clustered as they are, the centres
    nearest the mean direction take nearly every voiceprint, and a probe of a few lists scans most of
    the bank (bench/search.py measured 130 ms, no faster than exact, at 1M). Around the mean they
    spread over all lists."""
    import faiss

    dimension = sample.shape[1]
    mean = sample.mean(axis=0, dtype=np.float64).astype(np.float32)
    directions = sample - mean
    directions /= np.maximum(np.linalg.norm(directions, axis=1, keepdims=True), 1e-12)
    kmeans = faiss.Kmeans(dimension, nlist, spherical=True, seed=1234, niter=20)
    kmeans.train(np.ascontiguousarray(directions, dtype=np.float32))
    centring = faiss.CenteringTransform(dimension)
    centring.train(np.ascontiguousarray(sample, dtype=np.float32))  # learns the same mean
    quantizer = faiss.IndexPreTransform(faiss.IndexFlatIP(dimension))
    quantizer.prepend_transform(faiss.NormalizationTransform(dimension))
    quantizer.prepend_transform(centring)
    faiss.downcast_index(quantizer.index).add(kmeans.centroids)
    index = faiss.IndexIVFFlat(quantizer, dimension, nlist, faiss.METRIC_INNER_PRODUCT)
    index.is_trained = True
    # A serialization round trip gives one index that owns its quantizer and transforms (no Python
    # object must outlive it); empty, it costs nothing.
    return faiss.deserialize_index(faiss.serialize_index(index))  # already of its concrete class, and owning it


def _nlist_for(n: int) -> int:
    """About sqrt(n) lists, a power of two: 64 at 4k voiceprints, 256 at 100k, 1024 at 1M."""
    return 2 ** max(1, round(math.log2(math.sqrt(max(n, 1)))))


KIND_CLASSES = {"flat": Flat, "hnsw": Hnsw, "ivf": Ivf}
