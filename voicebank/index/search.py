"""What the facade needs from candidate search, whatever holds the vectors: :class:`Search`.

:class:`FaissSearch` provides it with the per-process FAISS index kept in step with SQL
(``cache.py``); a searcher inside the database (pgvector) provides the same five methods.
Either way the search only proposes candidates: exact cosines against SQL decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from ..errors import EmptyBankError
from .cache import IndexCache
from .choose import IndexChoice

EMPTY = "the bank has no speakers yet: enroll some first (`voicebank enroll NAME FILE...`)."


class Search(Protocol):
    """Candidate search over the bank's voiceprints, keyed by SQL speaker ids. Thread-safe."""

    def search(self, queries: np.ndarray, k: int, kind: str | None = None,
               channel: str = "wideband") -> tuple[np.ndarray, np.ndarray, int]:
        """The top ``k`` of each of the (n, dimension) float32 ``queries``, caught up with SQL first:
        (n, k) float32 cosines and (n, k) int64 speaker ids (-1 where fewer exist), and how many
        voiceprints were searched (the N of 1:N). ``kind``: the index kind the bank's settings name
        now (another process may have switched it); a searcher with no kinds ignores it.
        ``channel``: whose voiceprints, the wideband ones or the telephone ones (voicebank.channel).
        :class:`~voicebank.errors.EmptyBankError` when there are none."""
        ...

    def rebuild(self, channel: str = "wideband") -> int:
        """Rebuild from SQL (a searcher that disagrees with SQL); returns the voiceprints held."""
        ...

    def reindex(self, kind: str) -> int:
        """Rebuild from SQL as ``kind`` and keep it; returns the voiceprints held."""
        ...

    def contents(self) -> tuple[np.ndarray, np.ndarray, str]:
        """(ids (n,), vectors (n, dimension)) as found (for ``check``), and a word on its state; the
        vectors' dtype is the precision held (float32; float16 for pgvector's ``halfvec``)."""
        ...

    def save(self) -> None:
        """Persist what is worth keeping (a no-op where SQL holds everything)."""
        ...


class FaissSearch:
    """:class:`Search` over an :class:`IndexCache` (a FAISS index per process, file-backed), or an
    :class:`~voicebank.index.choose.IndexChoice` that is one, or pgvector, by the bank's kind."""

    def __init__(self, cache: IndexCache | IndexChoice):
        self.cache = cache

    def search(self, queries: np.ndarray, k: int, kind: str | None = None,
               channel: str = "wideband") -> tuple[np.ndarray, np.ndarray, int]:
        with self.cache.lock:
            if kind is not None:
                self.cache.use_kind(kind)
            index = self.cache.current()
            if len(index) == 0:
                raise EmptyBankError(EMPTY)
            scores, ids = index.search(queries, k)
            return scores, ids, len(index)

    def rebuild(self, channel: str = "wideband") -> int:
        with self.cache.lock:
            return len(self.cache.rebuild())

    def reindex(self, kind: str) -> int:
        with self.cache.lock:
            self.cache.use_kind(kind)
            return len(self.cache.rebuild())

    def contents(self) -> tuple[np.ndarray, np.ndarray, str]:
        with self.cache.lock:
            self.cache.forget()  # re-read the file, so the report says what was on disk
            ids, vectors = self.cache.current().items()
            return ids, vectors, self.cache.file_status

    def save(self) -> None:
        self.cache.save()


class ChannelSearch:
    """:class:`Search` over both channels' voiceprints: the bank's index (any kind) for the wideband
    ones, and a FAISS index of the telephone ones (the bank's FAISS kind; flat when the bank's kind
    is pgvector, whose column holds the wideband voiceprint), each kept in step with SQL alike."""

    def __init__(self, wideband: Search, telephone: Search):
        self.wideband, self.telephone = wideband, telephone

    def search(self, queries: np.ndarray, k: int, kind: str | None = None,
               channel: str = "wideband") -> tuple[np.ndarray, np.ndarray, int]:
        if channel == "telephone":
            return self.telephone.search(queries, k, faiss_kind(kind))
        return self.wideband.search(queries, k, kind)

    def rebuild(self, channel: str = "wideband") -> int:
        return (self.telephone if channel == "telephone" else self.wideband).rebuild()

    def reindex(self, kind: str) -> int:
        self.telephone.reindex(faiss_kind(kind))
        return self.wideband.reindex(kind)

    def contents(self, channel: str = "wideband") -> tuple[np.ndarray, np.ndarray, str]:
        return (self.telephone if channel == "telephone" else self.wideband).contents()

    def save(self) -> None:
        self.wideband.save()
        self.telephone.save()


def faiss_kind(kind: str | None) -> str | None:
    """The FAISS kind that stands in for ``kind`` where a FAISS index is needed: itself, or flat for pgvector."""
    from .file import KINDS

    return kind if kind is None or kind in KINDS else "flat"


@dataclass(frozen=True)
class Comparison:
    """What a search holds against SQL's voiceprints (``check``)."""

    status: str  # the searcher's word on its state, as found
    in_sql: int  # voiceprints in SQL
    held: int  # voiceprints it holds
    missing: list[str]  # names of speakers in SQL it does not hold
    extra: list[int]  # ids it holds that SQL does not
    wrong: list[str]  # names of speakers whose vector differs from SQL's

    def to_dict(self) -> dict:
        """As ``check --json`` names them."""
        return {"index_file": self.status, "speakers_in_sql": self.in_sql, "speakers_in_index": self.held,
                "missing_from_index": self.missing, "not_in_sql": self.extra, "wrong_vectors": self.wrong}


def compare(contents: Callable[[], tuple[np.ndarray, np.ndarray, str]],
            read_voiceprints: Callable[[], Sequence[tuple[int, str, np.ndarray]]]) -> Comparison:
    """Compare what a search holds, as found (``contents``: a search's ``contents``), with SQL's
    voiceprints ((id, name, vector) each, read after the search's contents)."""
    ids, vectors, status = contents()
    voiceprints = read_voiceprints()
    held = {int(i): v for i, v in zip(ids, vectors)}
    # a searcher holding lower precision (pgvector's halfvec: float16) holds each value rounded to it
    rounding = float(np.finfo(vectors.dtype).eps) if vectors.dtype.kind == "f" and vectors.dtype.itemsize < 4 else 0.0
    missing = [name for speaker_id, name, _ in voiceprints if speaker_id not in held]
    wrong = [name for speaker_id, name, vector in voiceprints
             if speaker_id in held and not np.allclose(held[speaker_id], vector, rtol=rounding, atol=1e-5)]
    extra = sorted(set(held) - {speaker_id for speaker_id, _, _ in voiceprints})
    return Comparison(status, len(voiceprints), len(held), missing, extra, wrong)
