"""SQL storage, the source of truth: the tables (``models``), engines and transaction scopes
(``engine``), and the schema migrations run from code (``schema``)."""

from .engine import (DEFAULT_DB, KEEP_CHANGES, PRUNE_CHANGES_EVERY, Store, database_error, make_engine, record,
                     resolve_url, sqlite_path)
from .models import (NAMING, ApiKeyRow, AuditRow, BankRow, Base, ChangeRow, CohortRow, SpeakerRow, UtteranceRow, as_utc,
                     utcnow)

__all__ = ["DEFAULT_DB", "KEEP_CHANGES", "NAMING", "PRUNE_CHANGES_EVERY", "ApiKeyRow", "AuditRow", "BankRow", "Base",
           "ChangeRow", "CohortRow", "SpeakerRow", "Store", "UtteranceRow", "as_utc", "database_error", "make_engine",
           "record", "resolve_url", "sqlite_path", "utcnow"]
