"""Candidate search keyed by SQL speaker ids. It proposes; exact scores against SQL decide.

``search``: :class:`~.search.Search`, the seam every index kind provides; ``faiss_search``: the
FAISS kinds, an index per process kept in step with SQL's change log, over ``file`` (the index with
its sidecar, saved and loaded atomically) and ``kinds`` (one small class per FAISS structure);
``pgvector``: the kind whose index lives in PostgreSQL; ``factory``: the one place a search is made;
``switch``: both channels' searches of a bank, made again when its kind changes.

``KINDS`` are the FAISS kinds (a :class:`SpeakerIndex` file); ``BANK_KINDS`` adds ``pgvector``.
"""

from .file import KINDS, IndexFileError, IndexInfo, SpeakerIndex

BANK_KINDS = (*KINDS, "pgvector")

__all__ = ["BANK_KINDS", "KINDS", "IndexFileError", "IndexInfo", "SpeakerIndex"]
