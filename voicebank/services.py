"""What every use case receives: the collaborators the facade wires once and hands down.

Each use case (``enrollment``, ``identification``, ``precheck``, ``scan``, ``evaluation``,
``trials``) is a set of functions whose first argument is a :class:`Services` (``settings``, which
reads and edits one row, takes ``Services.repository``); the facade (``bank.py``) makes the one
instance.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import settings
from .encoding import Encoder
from .index.switch import BankSearch
from .policy import default_threshold
from .store.repository import Repository
from .store.repository_records import AuditLog


@dataclass(frozen=True)
class Services:
    """The rows (SQL, the truth), the candidate search of both channels, the model over recordings
    (with the bank's model id, dimension and audio limits), and the audit trail."""

    repository: Repository
    search: BankSearch
    encoder: Encoder
    audit: AuditLog

    def checks(self) -> tuple[float, float]:
        """The enrollment checks' (consistency, duplicate voice) cosine thresholds."""
        return settings.checks(self.repository.settings(), default_threshold(self.encoder.embedder))
