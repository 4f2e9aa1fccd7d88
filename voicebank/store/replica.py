"""Processes that read a PostgreSQL read replica (a hot standby) and name its primary for writes.

Such a process reads everything from the replica (``--db``) and writes to the primary
(``--primary``) only the bookkeeping a read leaves behind: the audit row of each identification
and verification. Every change to the bank (speakers, voiceprints, settings, the cohort, API keys,
the schema) is refused with :class:`~voicebank.errors.ReplicaError`: a process that wrote a change
through the primary and then read its replica would not see its own change until the replica
replays it, and its FAISS index, which follows the change log it reads, would disagree with what
it had just written. Changes go through a process whose ``--db`` is the primary.
"""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ..errors import InvalidInputError, ReplicaError


def public(url: str) -> str:
    """The URL with any password hidden, for messages (the query too: it may hold ?password=)."""
    return make_url(url).set(query={}).render_as_string(hide_password=True)


def primary_url(url: str, primary: str | None) -> str | None:
    """The primary's URL when a process on ``url`` names another database for its writes, else
    None (no ``primary``, or the same URL: harmless). Both are SQLAlchemy URLs as
    :func:`~voicebank.store.engine.resolve_url` gives them. Only PostgreSQL: SQLite has no
    replicas, and a primary that is not PostgreSQL is a mistake."""
    if primary is None or primary == url:
        return None
    try:
        replica_backend, primary_backend = make_url(url).get_backend_name(), make_url(primary).get_backend_name()
    except ArgumentError as exc:
        raise InvalidInputError(f"--primary is not a database URL ({exc}): give the primary as "
                                "postgresql://user@host/dbname.") from exc
    if replica_backend != "postgresql":
        raise InvalidInputError(
            f"--primary names the primary of a PostgreSQL read replica, and --db is {replica_backend} "
            f"({public(url)}), which has no replicas: drop --primary (and VOICEBANK_PRIMARY).")
    if primary_backend != "postgresql":
        raise InvalidInputError(
            f"--primary must be the PostgreSQL primary of the replica --db {public(url)} "
            f"(postgresql://user@host/dbname), not {primary_backend} ({public(primary)}).")
    return primary


def refusal(what: str, url: str, primary: str) -> ReplicaError:
    """The error for ``what`` (a verb phrase: "enroll", "remove a speaker") asked of a process
    that reads the replica ``url`` and writes its audit rows to ``primary``."""
    return ReplicaError(
        f"cannot {what}: this process reads a read replica (--db {public(url)}) and changes nothing there. "
        f"Changes go through a process whose --db is the primary: voicebank --db {public(primary)} ... "
        "(the replica's processes see them once the replica has replayed them).")


def other_bank(url: str, primary: str, ours: str | None, theirs: str | None) -> InvalidInputError:
    """The error for a ``primary`` that holds another bank than the replica ``url`` replays."""
    found = "no voicebank" if theirs is None else f"another bank (uid {theirs})"
    return InvalidInputError(
        f"--primary {public(primary)} holds {found} than --db {public(url)} (uid {ours}): audit rows would go to "
        "the wrong bank; nothing was written. Give the primary that this replica replays.")
