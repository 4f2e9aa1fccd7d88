"""What the facade and the use cases search through: :class:`BankSearch`, one :class:`Search` per
channel, made again when the bank's index kind changes (``reindex --index``, by any process)."""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np

from ..errors import EmptyBankError
from .file import KINDS as FAISS_KINDS
from .search import Search

WIDEBAND, TELEPHONE = "wideband", "telephone"  # the channels as voicebank.channel names them
EMPTY = "the bank has no speakers yet: enroll some first (`voicebank enroll NAME FILE...`)."


def faiss_kind(kind: str) -> str:
    """The kind of the telephone voiceprints' index in a bank of ``kind``: itself, or flat for
    pgvector (whose column holds the wideband voiceprint only)."""
    return kind if kind in FAISS_KINDS else "flat"


class BankSearch:
    """Both channels' candidate search: the wideband voiceprints in the bank's kind, the telephone ones
    in a FAISS index of it (:func:`faiss_kind`). ``make(kind, channel)`` makes a search; each of
    these methods that is given the kind the bank's settings name now makes the channel's search
    again when it is another. Thread-safe."""

    def __init__(self, make: Callable[[str, str], Search], kind: str):
        self._make = make
        self._lock = threading.Lock()  # held only while a channel's search is looked up or replaced
        self._searches = {WIDEBAND: make(kind, WIDEBAND), TELEPHONE: make(faiss_kind(kind), TELEPHONE)}

    @property
    def wideband(self) -> Search:
        return self._searches[WIDEBAND]

    @property
    def telephone(self) -> Search:
        return self._searches[TELEPHONE]

    def search(self, queries: np.ndarray, k: int, kind: str | None = None,
               channel: str = WIDEBAND) -> tuple[np.ndarray, np.ndarray, int]:
        """:meth:`Search.search` among ``channel``'s voiceprints, in ``kind`` if given (the bank's
        kind as its settings name it now: another process may have switched it).
        :class:`~voicebank.errors.EmptyBankError` when ``channel`` has no voiceprints."""
        scores, ids, held = self._of(channel, kind).search(queries, k)
        if held == 0:
            raise EmptyBankError(EMPTY)
        return scores, ids, held

    def rebuild(self, channel: str = WIDEBAND) -> int:
        """Rebuild ``channel``'s search from SQL; returns the voiceprints it holds."""
        return self._of(channel).rebuild()

    def reindex(self, kind: str) -> int:
        """Rebuild both channels from SQL in ``kind``; returns the wideband voiceprints held."""
        self._of(TELEPHONE, kind).rebuild()
        return self._of(WIDEBAND, kind).rebuild()

    def contents(self, channel: str = WIDEBAND) -> tuple[np.ndarray, np.ndarray, str]:
        """:meth:`Search.contents` of ``channel``'s search."""
        return self._of(channel).contents()

    def save(self) -> None:
        for search in (self.wideband, self.telephone):
            search.save()

    def catch_up(self) -> None:
        """Both channels' searches take in SQL's changes now (:meth:`Search.catch_up`)."""
        for search in (self.wideband, self.telephone):
            search.catch_up()

    def _of(self, channel: str, kind: str | None = None) -> Search:
        wanted = None if kind is None else kind if channel == WIDEBAND else faiss_kind(kind)
        with self._lock:
            if wanted is not None and self._searches[channel].kind != wanted:
                # the search of the kind left behind is dropped unsaved: its file is of another kind now
                self._searches[channel] = self._make(wanted, channel)
            return self._searches[channel]
