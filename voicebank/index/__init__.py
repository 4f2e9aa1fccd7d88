"""Candidate search keyed by SQL speaker ids. It proposes; exact scores against SQL decide.

``kinds``: one small class per FAISS structure; ``file``: the index with its sidecar, saved and loaded
atomically; ``cache``: the per-process index kept in step with SQL's change log.
"""

from .file import KINDS, IndexFileError, IndexInfo, SpeakerIndex

__all__ = ["KINDS", "IndexFileError", "IndexInfo", "SpeakerIndex"]
