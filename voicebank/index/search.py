"""The seam of candidate search: :class:`Search`, which every index kind provides, and :func:`compare`,
through which ``check`` reads one.

A search holds one channel's voiceprints (wideband or telephone), keyed by SQL speaker ids, in one
index kind: a FAISS index kept in step with SQL (flat, hnsw, ivf: ``faiss_search.py``) or
PostgreSQL itself (pgvector: ``pgvector.py``). ``factory.py`` makes the one a kind names;
``switch.py`` holds one per channel for the facade and makes another when the bank's kind changes.
Whichever kind, a search only proposes candidates: exact cosines against SQL decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np


class Search(Protocol):
    """Candidate search over one channel's voiceprints as SQL holds them. Thread-safe."""

    @property
    def kind(self) -> str:
        """The index kind: flat, hnsw, ivf or pgvector."""
        ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, int]:
        """The top ``k`` of each of the (n, dimension) float32 ``queries`` among the voiceprints SQL
        holds as the search begins (whichever process committed them), best first: (n, min(k, held))
        float32 cosines and (n, min(k, held)) int64 speaker ids, and ``held``, how many voiceprints
        were searched (the N of 1:N; 0 for none, with (n, 0) arrays). The approximate kinds may miss
        a neighbour now and then; no kind returns a removed voiceprint or a replaced one's old vector."""
        ...

    def rebuild(self) -> int:
        """Rebuild from SQL (a search found to disagree with it); returns the voiceprints held."""
        ...

    def contents(self) -> tuple[np.ndarray, np.ndarray, str]:
        """For ``check``: (ids (n,) int64, vectors (n, dimension)) as held, read again from where the
        kind keeps them (its file, its column) and caught up with SQL, and a word on what was found
        there. The vectors' dtype is the precision held (float32; float16 for pgvector's ``halfvec``)."""
        ...

    def save(self) -> None:
        """Persist what is worth keeping (a no-op where SQL holds everything)."""
        ...

    def catch_up(self) -> None:
        """Take in SQL's changes now rather than at the next search (after a large import, so the
        next process finds a saved index that is up to date); a no-op where SQL is the index."""
        ...


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
