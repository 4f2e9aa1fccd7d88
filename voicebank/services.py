"""The collaborators the facade wires once and hands to the use cases below it."""

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
    """What enrollment and identification receive: it provides ``enrollment.Services`` and
    ``identification.Services``, the Protocols that say what each of them uses."""

    repository: Repository
    search: BankSearch
    encoder: Encoder
    audit: AuditLog

    def checks(self) -> tuple[float, float]:
        return settings.checks(self.repository.settings(), default_threshold(self.encoder.embedder))
