"""Broken environments and user mistakes around the database and the command line: each one is a
single `Error: ...` line and exit code 2 (a clear error from the library, 503/409 over HTTP),
and nothing is created or changed (hardening 5)."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy.exc import OperationalError

from conftest import TINY_THRESHOLD
from voicebank import VoiceBank
from voicebank.cli import main
from voicebank.errors import DatabaseError, InvalidInputError, NotEnoughDataError
from voicebank.store import database_error

# Broken environments are the bank's and the CLI's business: the fake embedder (conftest), except
# where a test is about the WavLM backend's own setting.
pytestmark = [pytest.mark.embedder("fake"), pytest.mark.usefixtures("remembered_vad")]


def refused(result, *words: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, repr(result.exception))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def made(tmp_path, model, voices):
    db = tmp_path / "bank.db"
    with VoiceBank.open(db, str(model), create=True, threshold=TINY_THRESHOLD, identify_rule="best") as bank:
        bank.enroll("alice", voices["alice"][:2])
    return db


@pytest.mark.parametrize("target, words", [
    ("audio", ("is not a SQLite database (an audio file",)),
    ("folder", ("is a folder: give the path of a voicebank database file",)),
    ("scheme", ("foo:// is not a database voicebank uses",)),
    ("unreachable", ("cannot use the database postgresql+psycopg://nobody@127.0.0.1:1/x",)),
])
def test_a_db_that_is_not_a_database_is_one_clear_line(tmp_path, voices, target, words):
    db = {"audio": voices["alice"][0], "folder": tmp_path, "scheme": "foo://bar",
          "unreachable": "postgresql://nobody@127.0.0.1:1/x"}[target]
    before = sorted(p.name for p in tmp_path.iterdir())
    for command in (("list",), ("identify", voices["alice"][2])):
        refused(run("--db", db, *command), *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_db_current_on_a_missing_file_creates_nothing(tmp_path):
    refused(run("--db", tmp_path / "missing.db", "db", "current"), "no database at", "voicebank init")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, words", [
    (("audit", "--since", "99999999999d"), ("reaches back before the year 1",)),
    (("audit", "--since", "²d"), ("is neither an ISO date/time",)),
    (("audit", "purge", "--before", "999999999d", "--yes"), ("reaches back before the year 1",)),
])
def test_ages_out_of_range_are_refused(made, args, words):
    refused(run("--db", made, *args), *words)


def test_an_rttm_path_that_cannot_be_written_is_refused_before_the_scan(made, voices, tmp_path):
    refused(run("--db", made, "scan", voices["alice"][2], "--rttm", tmp_path / "no" / "x.rttm"), "does not exist")
    folder = run("--db", made, "scan", voices["alice"][2], "--rttm", tmp_path)  # click's own check
    assert folder.exit_code == 2 and "is a directory" in folder.stderr and "Traceback" not in folder.output


@pytest.mark.embedder("tiny")  # VOICEBANK_PRECISION is the WavLM backend's setting
def test_a_bad_precision_setting_is_one_line(made, monkeypatch):
    monkeypatch.setenv("VOICEBANK_PRECISION", "fp16")
    refused(run("--db", made, "list"), "precision 'fp16'", "auto, bf16, fp32")


@pytest.mark.parametrize("message, words", [
    ("attempt to write a readonly database", ("is read-only", "write access")),
    ("unable to open database file", ("cannot open", "-wal and -shm")),
    ("database or disk is full", ("is full",)),
])
def test_sqlite_failures_become_messages_that_say_what_to_do(tmp_path, message, words):
    """Root ignores file permissions, so the driver's errors are made here; that the store raises
    them through database_error is checked with a real one below."""
    error = database_error(OperationalError("INSERT ...", {}, sqlite3.OperationalError(message)),
                           f"sqlite:///{tmp_path / 'b.db'}")
    assert isinstance(error, DatabaseError)
    for word in words:
        assert word in str(error)


@pytest.mark.parametrize("free, words", [(0, ("disk holding", "is full")), (10 << 30, ("disk I/O error", "-wal and -shm"))])
def test_a_disk_io_error_says_whether_the_disk_is_full(tmp_path, monkeypatch, free, words):
    """SQLite opening a bank on a full disk says only "disk I/O error" (it cannot create its -wal or
    -shm file there): the free space tells a full disk from a failing one."""
    from collections import namedtuple

    from voicebank.store import engine

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(engine.shutil, "disk_usage", lambda path: usage(free + 1, 1, free))
    error = database_error(OperationalError("PRAGMA journal_mode=WAL", {}, sqlite3.OperationalError("disk I/O error")),
                           f"sqlite:///{tmp_path / 'b.db'}")
    assert isinstance(error, DatabaseError) and all(word in str(error) for word in words), str(error)


def test_a_bank_on_a_disk_that_filled_up_is_one_line_for_every_command(made, tmp_path):
    """A real full disk: a 4 MB tmpfs, which needs root and a kernel that lets this process mount."""
    import shutil
    import subprocess

    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root, or not allowed)")
    try:
        db = mount / "bank.db"
        shutil.copy(made, db)
        with open(mount / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        for command in (["list"], ["reindex"], ["apikey", "create", "k", "--role", "admin"], ["check"]):
            refused(run("--db", str(db), *command), "is full")
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_read_only_connection_reports_read_only(made, voices):
    from voicebank.store import Store

    store = Store(f"sqlite:///file:{made}?mode=ro&uri=true")
    with pytest.raises(DatabaseError, match="is read-only"), store.write() as session:
        from sqlalchemy import text

        session.execute(text("UPDATE bank SET threshold = 0.5"))
    store.dispose()


def test_wrong_embeddings_and_thin_cohorts_are_clear_errors(made, voices):
    with VoiceBank.open(made) as bank:
        with pytest.raises(InvalidInputError, match=r"shaped \(n, 24\)"):
            bank.identify_embeddings(np.zeros((2, 7), dtype=np.float32))
        with pytest.raises(InvalidInputError, match="finite"):
            bank.identify_embeddings(np.full((1, 24), np.nan, dtype=np.float32))
        bank.thresholds.set_score_normalization("asnorm", top_n=2)
        with pytest.raises(NotEnoughDataError, match="AS-norm needs a cohort"):  # 409 over HTTP
            bank.identify(voices["alice"][2])


def test_a_folder_where_the_index_file_goes_costs_the_cache_not_the_answer(made, voices, caplog):
    index = made.with_name(made.name + ".faiss")
    for leftover in (index, index.with_name(index.name + ".json")):
        leftover.unlink(missing_ok=True)
    index.mkdir()
    with caplog.at_level("WARNING"):
        result = run("--db", made, "identify", voices["alice"][2], "--json")
    assert result.exit_code == 0 and '"name": "alice"' in result.stdout
    assert "cannot write the index cache file" in caplog.text and "keeping the index in memory" in caplog.text
    with VoiceBank.open(made) as bank:
        report = bank.index.check()
    assert report.ok and "cannot be written" in report.index_file


def test_a_bank_without_its_schema_revision_and_a_foreign_sqlite_file_are_refused(made, tmp_path, model):
    import sqlite3

    with sqlite3.connect(made) as conn:
        conn.execute("DROP TABLE alembic_version")
    for command in (("list",), ("db", "upgrade")):
        refused(run("--db", made, *command), "has voicebank's tables but no schema revision", "Restore it from a backup")
    foreign = tmp_path / "notes.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (x)")
    refused(run("--db", foreign, "--model", model, "init"), "already holds tables of another program (notes)")
    with sqlite3.connect(foreign) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["notes"]
