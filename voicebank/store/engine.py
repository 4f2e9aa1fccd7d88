"""SQL storage, the source of truth: engines and transaction scopes (the tables are in ``models.py``).

The schema itself is created and changed only by the Alembic migrations (see ``schema.py``).
Every change to voiceprints happens inside :meth:`Store.change`, which takes the next value of
the bank's change sequence in the same transaction; taking it locks the bank row, so writers
commit in sequence order and a reader that has seen sequence N has seen every change up to N.
A store may read a PostgreSQL read replica and write its bookkeeping to the primary; it then
refuses changes (``replica.py`` says why), and catches up with the primary before a decision
(``lag.py``).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import Connection, Engine, create_engine, delete, event, select, text
from sqlalchemy.orm import Session

from . import lag, replica
from .models import DEFAULT_DB, BankRow, ChangeRow


def resolve_url(db: str | os.PathLike | None) -> str:
    """A SQLAlchemy URL from a URL or a file path (``None``: ``VOICEBANK_DB`` or ./voicebank.db).

    ``postgresql://`` and ``postgres://`` mean the psycopg 3 driver.
    """
    db = str(db) if db is not None else os.environ.get("VOICEBANK_DB") or DEFAULT_DB
    if "://" not in db:
        return f"sqlite:///{Path(db).expanduser().resolve()}"
    for prefix in ("postgresql://", "postgres://"):
        if db.startswith(prefix):
            return "postgresql+psycopg://" + db[len(prefix) :]
    scheme = db.split("://", 1)[0]
    if scheme.split("+")[0] not in ("sqlite", "postgresql"):
        from ..errors import InvalidInputError

        raise InvalidInputError(f"{scheme}:// is not a database voicebank uses: give a file path (SQLite), "
                                "sqlite:///PATH, or postgresql://user@host/dbname.")
    return db


def database_error(exc: Exception, url: str) -> Exception:
    """A SQLAlchemy connection or I/O error as a :class:`~voicebank.errors.DatabaseError` whose
    message says what to do; any other error as it is."""
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.engine import make_url

    from ..errors import DatabaseError

    if not isinstance(exc, DBAPIError) or not exc.connection_invalidated and exc.orig is None:
        return exc
    text = str(exc.orig or exc).lower()
    file = sqlite_path(url)
    where = str(file) if file is not None else make_url(url).set(query={}).render_as_string(hide_password=True)
    if "file is not a database" in text:
        message = (f"{where} is not a SQLite database (an audio file, or another program's file?): point --db at a "
                   "voicebank database, or at a new file name to create one.")
    elif ("read-only" in text or "readonly" in text) and file is None:  # PostgreSQL: a hot standby, or a read-only role
        message = (f"{where} is read-only (a read replica, or a read-only user?): voicebank writes an audit row "
                   "even to identify. Name the primary for those writes with --primary URL (VOICEBANK_PRIMARY), or "
                   "point --db at the primary.")
    elif "readonly database" in text or "read-only" in text:
        message = (f"{where} is read-only: voicebank writes to its database even to identify (the audit trail) and "
                   "beside it (-wal, -shm files). Give this user write access to the file and its folder.")
    elif "unable to open database file" in text:
        message = (f"{where} is a folder: give the path of a database file." if file is not None and _is_dir(file) else
                   f"cannot open {where}: check that its folder exists and this user may write there (SQLite "
                   "writes -wal and -shm files beside the database, even to read).")
    elif "malformed" in text and file is not None:
        message = (f"{where} is damaged (SQLite: database disk image is malformed): restore it from a backup; "
                   f"`sqlite3 {where} .recover` may save what is left of it into a new file.")
    elif "disk is full" in text or "no space" in text or ("disk i/o error" in text and _full(file)):
        message = f"the disk holding {where} is full: free space, then try again; nothing was written."
    elif "disk i/o error" in text:
        message = (f"a disk I/O error on {where} (a failing disk, or its -wal and -shm files removed or unwritable "
                   "while in use): check the disk and those files, then try again; nothing was written.")
    elif isinstance(exc, DBAPIError) and file is None:
        message = f"cannot use the database {where}: {str(exc.orig or exc).strip().splitlines()[0]}"
        if exc.connection_invalidated or any(words in text for words in UNREACHABLE):
            message = message.rstrip(".") + (
                ". The server is down or cannot be reached (a primary being failed over?): voicebank reconnects "
                "by itself once this URL answers again; or restart it with --db naming the promoted primary. A "
                "change whose request failed with this error may or may not have been committed: look (voicebank "
                "show NAME) before repeating it.")
    else:
        return exc
    return DatabaseError(message)


# libpq's words for a server that is gone, going, or not yet back (lower case)
UNREACHABLE = ("connection refused", "could not connect", "connection is bad", "connection is lost",
               "connection is closed", "server closed the connection", "terminating connection",
               "the database system is", "no such file or directory", "timeout expired", "timed out",
               "could not translate host name", "consuming input failed", "could not receive data")


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name the system cannot look up (over 255 bytes): no folder either
        return False


def _full(file: Path | None) -> bool:
    """Is the disk holding this SQLite file (nearly) full? SQLite says only "disk I/O error" when it
    cannot create its -wal or -shm file there."""
    if file is None:
        return False
    try:
        return shutil.disk_usage(file.parent if file.parent.is_dir() else Path.cwd()).free < FULL_BYTES
    except OSError:
        return False


FULL_BYTES = 1 << 20  # less than this free, and SQLite cannot grow its -wal by one checkpoint's worth


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for other databases and in-memory SQLite."""
    if not url.startswith("sqlite") or url.rstrip("/").endswith(":memory:") or url in ("sqlite://", "sqlite:///"):
        return None
    return Path(url.split(":///", 1)[1].split("?", 1)[0])  # a query (?timeout=...) is not part of the path


def make_engine(url: str) -> Engine:
    """An engine; for SQLite: WAL, a 30 s busy timeout, foreign keys, and BEGIN IMMEDIATE for writers."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        if sqlite_path(url) is not None:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # a power cut loses no committed enrollment
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A writer takes the write lock up front: two writers that both start as readers and
        # then upgrade would fail with SQLITE_BUSY instead of waiting.
        write = conn.get_execution_options().get("voicebank_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


# The change log needs to reach back only as far as an index may catch up from; an index older
# than the oldest change kept is rebuilt from SQL instead (cache.py). Every PRUNE_CHANGES_EVERY
# changes, the rows of changes more than KEEP_CHANGES back are deleted, so the log stays small
# however many enrollments a bank sees.
KEEP_CHANGES = 50_000
PRUNE_CHANGES_EVERY = 1_000


class Store:
    """Transaction scopes over one database. Safe to share between threads.

    ``primary``: this process reads a PostgreSQL read replica (``url``) and names its primary
    (:func:`replica.primary_url`): :meth:`read` goes to the replica, :meth:`write` (bookkeeping:
    audit rows) to the primary, and :meth:`edit` and :meth:`change` are refused with
    :class:`~voicebank.errors.ReplicaError`, for the reason ``replica.py`` gives. :meth:`catch_up`
    waits up to ``max_lag`` seconds (None: ``lag.DEFAULT_MAX_LAG``) for the replica to replay what
    the primary has acknowledged.
    """

    def __init__(self, url: str, primary: str | None = None, max_lag: float | None = None):
        self.url, self.primary, self.max_lag = url, primary, lag.max_lag(max_lag)
        self.engine = make_engine(url)
        self._primary_engine = make_engine(primary) if primary is not None else self.engine
        self._writer = self._primary_engine.execution_options(voicebank_write=True)
        self._file = sqlite_path(url)
        self._identity: tuple[int, int] | None = None  # (device, inode) of the SQLite file first seen
        self._used = False  # a transaction has run: SQLite has the -shm mapped into this process
        self._primary_checked = primary is None

    def _check_file(self) -> None:
        """Refuse to write when the SQLite file is no longer the one this process opened (deleted,
        or replaced by another file): the write would go to a file nobody will open again, and be
        acknowledged and lost."""
        if self._file is None:
            return
        try:
            found = os.stat(self._file)
        except FileNotFoundError:
            found = None
        identity = None if found is None else (found.st_dev, found.st_ino)
        if self._identity is None:
            self._identity = identity
        elif identity != self._identity:
            from ..errors import DatabaseGoneError

            what = "deleted" if identity is None else "replaced by another file"
            raise DatabaseGoneError(
                f"the database file {self._file} was {what} after this process opened it; nothing was written. "
                "Restore it, then restart voicebank (or point --db at the right file)."
            )
        self._check_companions()
        lost = _deleted_while_open(os.path.realpath(self._file))
        if lost:
            from ..errors import DatabaseGoneError

            raise DatabaseGoneError(
                f"the database's {lost} file was deleted while this process had it open: what is written now "
                "would be acknowledged and lost. Nothing was written. Restart voicebank (committed changes are in "
                f"{self._file} and its write-ahead log; stop every process before copying or deleting those files)."
            )

    def _check_companions(self) -> None:
        """Refuse to read or write when SQLite's -wal or -shm file was cut short by another program
        while in use (:func:`_cut_short`): writes would be acknowledged into a log nobody can replay,
        and a -shm cut under its memory map kills the process (SIGBUS) on the next access."""
        cut = _cut_short(self._file, self._used) if self._file is not None else None
        if cut:  # once more: another process may have restarted the log between the two files' reads
            cut = _cut_short(self._file, self._used)
        wait = 0.01
        while cut and cut.startswith("-shm") and wait < SHM_SETTLE_SECONDS:
            # a process that opens the bank while no other holds it (a CLI command beside a server
            # between requests) cuts the -shm to 3 bytes, replays the -wal, then grows it again
            time.sleep(wait)
            wait *= 2
            cut = _cut_short(self._file, self._used)
        if cut:
            from ..errors import DatabaseGoneError

            raise DatabaseGoneError(
                f"the database's {cut} while in use (another program truncated or rewrote it): changes written since "
                f"the last checkpoint may be lost, and nothing more can be written safely. Nothing was read or written. "
                f"Stop every voicebank process, then run `voicebank check` on {self._file} (restore it from a backup "
                "if it says the database is damaged)."
            )

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read transaction (on the replica, when this process reads one)."""
        if self._identity is None:
            self._check_file()  # remember which file this process opened
        else:
            self._check_companions()
        with self._translated(), Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session
        self._used = True

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction for bookkeeping that reading leaves behind (audit rows): on the primary
        when this process reads a replica. Changes to the bank go through :meth:`edit` or :meth:`change`."""
        if not self._primary_checked:
            self._check_primary()
        with self._writing() as session:
            yield session

    @contextmanager
    def edit(self, what: str = "change the bank") -> Iterator[Session]:
        """A write transaction that changes the bank (settings, cohort, API keys, audit retention;
        voiceprints through :meth:`change`). Refused in a process that reads a replica: ``what``
        (a verb phrase) says what was refused."""
        self.refuse_changes(what)
        with self._writing() as session:
            yield session

    def catch_up(self) -> None:
        """Before a decision: wait until the replica this process reads has replayed every change
        the primary had acknowledged by now, or raise :class:`~voicebank.errors.StaleReplicaError`
        after ``max_lag`` seconds (``lag.py``). Nothing to wait for without a replica."""
        if self.primary is None:
            return
        if not self._primary_checked:
            self._check_primary()  # a primary holding another bank: its position means nothing here
        lag.wait(lambda: self._autocommit(self.engine, self.url),
                 lambda: self._autocommit(self._primary_engine, self.primary), self.url, self.primary, self.max_lag)

    @contextmanager
    def _autocommit(self, engine: Engine, url: str) -> Iterator[Connection]:
        with self._translated(url), engine.connect() as conn:
            yield conn.execution_options(isolation_level="AUTOCOMMIT")

    def refuse_changes(self, what: str) -> None:
        """Raise :class:`~voicebank.errors.ReplicaError` if this process reads a replica."""
        if self.primary is not None:
            raise replica.refusal(what, self.url, self.primary)

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        with self._translated(self.primary or self.url), Session(self._writer, expire_on_commit=False) as session, \
                session.begin():
            self._check_file()  # under the write lock: no one swaps the file between check and commit
            yield session
        self._used = True

    def _check_primary(self) -> None:
        """Before the first write to the primary: is it the bank this replica replays? Audit rows
        written to another bank would be lost to this one."""
        with self.read() as session:
            ours = session.execute(select(BankRow.uid).where(BankRow.id == 1)).scalar()
        with self._translated(self.primary), Session(self._primary_engine) as session, session.begin():
            theirs = session.execute(select(BankRow.uid).where(BankRow.id == 1)).scalar()
        if ours != theirs:
            raise replica.other_bank(self.url, self.primary, ours, theirs)
        self._primary_checked = True

    @contextmanager
    def _translated(self, url: str | None = None) -> Iterator[None]:
        """Database I/O and connection failures (on ``url``, default this store's) as errors that
        say what to do (:func:`database_error`)."""
        from sqlalchemy.exc import DBAPIError

        try:
            yield
        except DBAPIError as exc:
            translated = database_error(exc, url or self.url)
            if translated is exc:
                raise
            raise translated from exc

    @contextmanager
    def change(self, what: str = "change voiceprints") -> Iterator[tuple[Session, int]]:
        """A write transaction that changes voiceprints, with its sequence number; refused, as
        :meth:`edit` is, in a process that reads a replica.

        Record every touched speaker with :func:`record`.
        """
        with self.edit(what) as session:
            seq = int(session.execute(
                text("UPDATE bank SET change_seq = change_seq + 1 WHERE id = 1 RETURNING change_seq")
            ).scalar_one())
            yield session, seq
            if seq % PRUNE_CHANGES_EVERY == 0:
                session.execute(delete(ChangeRow).where(ChangeRow.seq <= seq - KEEP_CHANGES))

    def dispose(self) -> None:
        self.engine.dispose()
        self._primary_engine.dispose()


def record(session: Session, seq: int, speaker_id: int, op: str) -> None:
    """Note in the change log that ``speaker_id`` was upserted or deleted in transaction ``seq``."""
    session.add(ChangeRow(seq=seq, speaker_id=speaker_id, op=op))


# SQLite's shared-memory wal-index (-shm) grows in pages of this size, and its header says how many
# frames of the -wal file are committed (https://sqlite.org/walformat.html).
SHM_PAGE = 32768
SHM_SETTLE_SECONDS = 1.3  # how long a -shm may stay cut to 3 bytes while another process rebuilds it
_WAL_HEADER, _FRAME_HEADER = 32, 24
_WAL_MAGIC = (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83")  # big-endian, with either checksum byte order


def _cut_short(database: Path, mapped: bool = False) -> str | None:
    """Which of SQLite's companion files of ``database`` another program cut short or overwrote
    while in use, as a phrase ("-wal file was cut to ..."), else None. The -shm file's header (two
    copies, equal unless a writer is mid-update) holds the count of committed frames, the page size
    and the -wal's salt; writers append frames to the -wal before they count them, so a -wal
    shorter than its counted frames was truncated, and one whose header or last committed frame
    lacks that salt was overwritten. A -shm smaller than one page was cut under the processes that
    map it: beside a non-empty -wal, or when this process (``mapped``) has it mapped already."""
    try:
        with open(f"{database}-shm", "rb") as shm:
            header, shm_size = shm.read(96), os.fstat(shm.fileno()).st_size
        with open(f"{database}-wal", "rb") as wal:
            wal_size = os.fstat(wal.fileno()).st_size
            wal_header = wal.read(_WAL_HEADER)
            if shm_size < SHM_PAGE:
                return f"-shm file was cut to {shm_size} bytes" if wal_size > 0 or mapped else None
            if len(header) < 96 or header[:48] != header[48:96] or header[12] == 0:  # mid-update, or not yet built
                return None
            page = int.from_bytes(header[14:16], sys.byteorder)
            page = 65536 if page == 1 else page
            frames, salt = int.from_bytes(header[16:20], sys.byteorder), header[32:40]
            needed = _WAL_HEADER + frames * (_FRAME_HEADER + page) if frames else 0
            if wal_size < needed:
                return f"-wal file was cut to {wal_size} bytes (it holds {frames} committed pages: {needed} bytes)"
            if frames:
                wal.seek(needed - page - _FRAME_HEADER)
                last = wal.read(_FRAME_HEADER)
                if wal_header[:4] not in _WAL_MAGIC or wal_header[16:24] != salt or last[8:16] != salt:
                    return "-wal file was overwritten (its committed pages are not the ones SQLite wrote)"
    except OSError:  # no -shm or -wal: no one is using the log (a deleted one is found by /proc)
        return None
    return None


def _deleted_while_open(database: Path | str) -> str | None:
    """Which of SQLite's companion files (``-wal``, ``-shm``) of ``database`` this process holds open
    although it was deleted (Linux: ``/proc/self/fd``; elsewhere None). SQLite keeps writing to the
    open, nameless file; nobody else sees it, and the writes vanish with the process."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        return None
    wanted = {f"{database}-{kind} (deleted)": f"-{kind}" for kind in ("wal", "shm")}
    try:
        names = os.listdir(fds)
    except OSError:
        return None
    for name in names:
        try:
            target = os.readlink(fds / name)
        except OSError:  # closed meanwhile
            continue
        if target in wanted:
            return wanted[target]
    return None

