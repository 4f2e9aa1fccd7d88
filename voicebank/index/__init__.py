"""Candidate search keyed by SQL speaker ids. It proposes; exact scores against SQL decide.

``kinds``: one small class per FAISS structure; ``file``: the index with its sidecar, saved and loaded
atomically; ``cache``: the per-process index kept in step with SQL's change log. ``pgvector``: the
kind whose index lives in PostgreSQL instead; ``choose``: the search for whichever kind a bank uses.

``KINDS`` are the FAISS kinds (a :class:`SpeakerIndex` file); ``BANK_KINDS`` adds ``pgvector``.
"""

from .file import KINDS, IndexFileError, IndexInfo, SpeakerIndex

BANK_KINDS = (*KINDS, "pgvector")

__all__ = ["BANK_KINDS", "KINDS", "IndexFileError", "IndexInfo", "SpeakerIndex"]
