"""A replica's process decides only on what its primary had acknowledged when the decision began.

Before each decision (identify, verify, a scan's windows), :func:`wait` reads the primary's WAL
position (``pg_current_wal_lsn()``: every commit it has acknowledged is written up to there) and
waits, at most ``max_lag`` seconds, until the hot standby has replayed up to it
(``pg_last_wal_replay_lsn()``). Every read of the decision starts after that, so a removal, a
revoked key or a raised threshold acknowledged before the request began is in what it reads. A
standby still behind after ``max_lag`` is refused with :class:`~voicebank.errors.StaleReplicaError`:
answering from it could let in a person the primary has removed.

``pg_current_wal_lsn()``, not ``pg_current_wal_insert_lsn()``: on an idle primary the insert
position sits past the next page's header, which a standby never reports as replayed.
"""

from __future__ import annotations

import math
import time
from contextlib import AbstractContextManager
from typing import Callable

from sqlalchemy import Connection, text

from ..errors import DatabaseError, InvalidInputError, StaleReplicaError
from .replica import public

DEFAULT_MAX_LAG = 5.0  # seconds; docs/deployment.md ("Read replicas") says why
POLL_FIRST, POLL_MOST = 0.002, 0.05  # seconds between looks at the replay position: doubling, capped


def max_lag(value: float | None) -> float:
    """``value`` (seconds; None: the default) checked: a finite number >= 0."""
    value = DEFAULT_MAX_LAG if value is None else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidInputError(f"max_lag is the seconds a replica may take to catch up with its primary before a "
                                f"decision is refused: a number >= 0, not {value!r}.")
    return float(value)


Connect = Callable[[], AbstractContextManager[Connection]]


def wait(replica: Connect, primary: Connect, url: str, primary_url: str, limit: float) -> None:
    """Return once the replica ``url`` has replayed what ``primary_url`` had written when this was
    called; :class:`StaleReplicaError` past ``limit`` seconds, or when ``url`` does not replay it.
    ``replica`` and ``primary`` give a connection to each outside any transaction: a snapshot held
    on a standby while waiting could hold back the very replay being waited for (a recovery conflict)."""
    deadline = time.monotonic() + limit
    with primary() as conn:
        recovering, target, *theirs = conn.execute(text(
            "SELECT pg_is_in_recovery(), CASE WHEN NOT pg_is_in_recovery() THEN pg_current_wal_lsn() END, "
            f"{SERVER} FROM pg_control_system()")).one()
    if recovering:
        raise DatabaseError(f"--primary {public(primary_url)} is itself a standby (in recovery), not the primary: "
                            "give the primary's URL as --primary (VOICEBANK_PRIMARY).")
    pause = POLL_FIRST
    with replica() as conn:
        while True:
            recovering, behind, paused, *ours = conn.execute(text(
                "SELECT pg_is_in_recovery(), pg_wal_lsn_diff(CAST(:target AS pg_lsn), pg_last_wal_replay_lsn()), "
                f"CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END, {SERVER} "
                "FROM pg_control_system()"), {"target": target}).one()
            if not recovering and ours == theirs:
                return  # --db is the primary itself (a read-only role on it, say): nothing to replay
            if not recovering or ours[0] != theirs[0]:
                raise StaleReplicaError(not_replaying(url, primary_url, recovering))
            if behind <= 0:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise StaleReplicaError(lagging(url, primary_url, int(behind), limit, bool(paused)))
            time.sleep(min(pause, left))
            pause = min(2 * pause, POLL_MOST)


# Which server answered: its cluster (a standby made by pg_basebackup has its primary's) and when
# its postmaster started (a standby promoted from that cluster never shares it with the primary).
SERVER = "system_identifier, pg_postmaster_start_time()"


def not_replaying(url: str, primary_url: str, recovering: bool) -> str:
    """The message of a ``url`` that does not replay ``primary_url``'s changes."""
    what = ("a standby of another cluster than" if recovering else
            "not a hot standby (it is not in recovery), nor the same server as")
    return (f"--db {public(url)} is {what} the primary --primary {public(primary_url)}: it does not replay that "
            "primary's changes, so a person removed there could be let in here; nothing was decided. Point --db at "
            "a hot standby of that primary, or --primary at the primary this standby replays.")


def lagging(url: str, primary_url: str, behind: int, limit: float, paused: bool) -> str:
    """The message of a replica still ``behind`` bytes of WAL after ``limit`` seconds."""
    why = (" Its replay is paused: resume it on the standby with SELECT pg_wal_replay_resume()." if paused else
           " Check its replication (pg_stat_wal_receiver on the standby, pg_stat_replication on the primary).")
    return (f"the read replica --db {public(url)} is {_size(behind)} of WAL behind its primary --primary "
            f"{public(primary_url)} and did not catch up within --max-lag {limit:g} s: nothing was decided, because "
            f"a person removed on the primary could still be let in here. Retry shortly, or send the request to a "
            f"server on a replica that keeps up (or on the primary).{why}")


def _size(n: int) -> str:
    for unit, scale in (("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
