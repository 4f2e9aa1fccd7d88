"""Schema migrations: from code (voicebank.store.schema), from the plain `alembic` command, the checks on
open, and a built wheel that carries its migrations and can create its own database."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, text

from conftest import REPO, TINY_THRESHOLD
from voicebank import VoiceBank
from voicebank.errors import BankNotFoundError, DuplicateSpeakerError, SchemaError
from voicebank.store import Base, make_engine, resolve_url, schema

TABLES = set(Base.metadata.tables)  # what the ORM maps; the migrations must create exactly these


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(resolve_url(tmp_path / "schema.db"))
    yield engine
    engine.dispose()


def tables(engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def previous(revision: str) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(schema.migrations_dir())).get_revision(revision).down_revision


def test_the_orm_knows_every_table():
    assert {"bank", "speakers", "utterances", "changes", "audit", "cohort"} <= TABLES


def test_upgrade_downgrade_upgrade(engine):
    head = schema.head()
    assert schema.current(engine) is None
    schema.upgrade(engine)
    assert schema.current(engine) == head
    assert tables(engine) == TABLES | {"alembic_version"}
    # The migrations and the ORM describe the same schema (columns, types, indexes, constraints).
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    schema.check(engine, "test")  # at head: no complaint

    schema.downgrade(engine, "base")
    assert schema.current(engine) is None
    assert tables(engine) - {"alembic_version"} == set()

    schema.upgrade(engine)
    assert schema.current(engine) == head
    assert tables(engine) == TABLES | {"alembic_version"}


def test_upgrade_one_step_at_a_time(engine):
    """Every revision upgrades from its predecessor and downgrades back to it."""
    chain = [schema.head()]
    while (down := previous(chain[-1])) is not None:
        chain.append(down)
    chain.reverse()
    assert chain[0] == "0001"
    for revision in chain:
        schema.upgrade(engine, revision)
        assert schema.current(engine) == revision
    for revision in reversed(chain[:-1]):
        schema.downgrade(engine, revision)
        assert schema.current(engine) == revision
    schema.upgrade(engine)
    assert schema.current(engine) == schema.head()


def test_plain_alembic_command_from_the_repository(tmp_path):
    db = tmp_path / "plain.db"
    default_db_existed = (REPO / "voicebank.db").exists()
    proc = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", "alembic.ini", "-x", f"db={db}", "upgrade", "head"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "VOICEBANK_DB"},
    )
    assert proc.returncode == 0, proc.stderr
    if not default_db_existed:  # -x db= was honoured: the default ./voicebank.db was not made
        assert not (REPO / "voicebank.db").exists()
    engine = make_engine(resolve_url(db))
    try:
        assert schema.current(engine) == schema.head()
        assert tables(engine) == TABLES | {"alembic_version"}
    finally:
        engine.dispose()

    proc = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", "alembic.ini", "-x", f"db={db}", "current"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{schema.head()} (head)" in proc.stdout


@pytest.mark.slow
def test_a_bank_on_a_schema_made_by_plain_alembic_opens(tmp_path, tiny_model, voices):
    db = tmp_path / "plain.db"
    subprocess.run([sys.executable, "-m", "alembic", "-c", "alembic.ini", "-x", f"db={db}", "upgrade", "head"],
                   cwd=REPO, check=True, capture_output=True, timeout=120)
    with pytest.raises(BankNotFoundError, match="voicebank init"):
        VoiceBank.open(db, str(tiny_model))
    with VoiceBank.open(db, str(tiny_model), create=True, threshold=TINY_THRESHOLD, identify_rule="best") as bank:
        bank.enroll("alice", voices["alice"][:2])
        assert bank.identify(voices["alice"][2]).match.name == "alice"


def _stamp(db: Path, revision: str) -> None:
    engine = make_engine(resolve_url(db))
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :rev"), {"rev": revision})
    finally:
        engine.dispose()


@pytest.fixture
def made_bank(tmp_path, tiny_model, voices) -> Path:
    db = tmp_path / "bank.db"
    with VoiceBank.open(db, str(tiny_model), create=True, threshold=TINY_THRESHOLD, identify_rule="best") as bank:
        bank.enroll("alice", voices["alice"][:2])
    return db


def test_a_database_from_a_newer_voicebank_is_refused(made_bank, tiny_model):
    _stamp(made_bank, "9999_from_the_future")
    with pytest.raises(SchemaError) as info:
        VoiceBank.open(made_bank, str(tiny_model))
    message = str(info.value)
    assert "9999_from_the_future" in message and schema.head() in message
    assert "written by a newer voicebank; upgrade voicebank." in message

    from voicebank.cli import main

    result = CliRunner().invoke(main, ["--db", str(made_bank), "list"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"Error: {message}"]


def test_db_upgrade_of_a_database_from_a_newer_voicebank_is_a_clear_error(made_bank):
    """`voicebank db upgrade` cannot downgrade voicebank's knowledge: exit 2 and one line, no traceback."""
    _stamp(made_bank, "9999_from_the_future")
    from voicebank.cli import main

    result = CliRunner().invoke(main, ["--db", str(made_bank), "db", "upgrade"])
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "9999_from_the_future" in lines[0] and "upgrade voicebank" in lines[0]


def test_a_database_at_an_older_revision_asks_for_db_upgrade(made_bank, tiny_model, voices):
    """A real older schema: the bank is migrated down one revision (its rows survive), then opened."""
    head = schema.head()
    older = previous(head)
    assert older is not None, "needs at least two revisions"
    engine = make_engine(resolve_url(made_bank))
    try:
        schema.downgrade(engine, older)
        assert schema.current(engine) == older
    finally:
        engine.dispose()

    with pytest.raises(SchemaError) as info:
        VoiceBank.open(made_bank, str(tiny_model))
    message = str(info.value)
    assert f"at revision {older}, older than this voicebank's {head}" in message
    assert f"`voicebank --db {resolve_url(made_bank)} db upgrade`" in message
    assert "back it up" in message

    from voicebank.cli import main

    runner = CliRunner()
    refused = runner.invoke(main, ["--db", str(made_bank), "list"])
    assert refused.exit_code == 2 and refused.stderr.splitlines() == [f"Error: {message}"]

    upgraded = runner.invoke(main, ["--db", str(made_bank), "db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.stdout == f"Schema at {head} (was {older}).\n"
    with VoiceBank.open(made_bank, str(tiny_model)) as bank:
        assert [s.name for s in bank.speakers()] == ["alice"]
        assert bank.thresholds.verify == pytest.approx(TINY_THRESHOLD)
        # 0004 split the threshold in two: both operating points start from the old value
        assert bank.thresholds.identify == pytest.approx(TINY_THRESHOLD)
        assert {p.method for p in bank.thresholds.operating_points().values()} == {"default"}
        assert bank.thresholds.identify_rule == "best"  # what its threshold was set for; new banks decide by the margin
        with pytest.raises(DuplicateSpeakerError, match="looks like the enrolled 'alice'"):  # skeletons backfilled
            bank.enroll("\u0430lice", voices["bob"][:2])
        assert bank.identify(voices["alice"][2]).match.name == "alice"


def test_an_empty_database_is_not_a_bank(engine, tiny_model):
    with pytest.raises(BankNotFoundError, match="voicebank init"):
        schema.check(engine, "somewhere")


# -- the wheel ---------------------------------------------------------------------------------------

IGNORE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "*.db", "*.db-*",
                                "*.faiss", "*.faiss.*", ".pytest_cache", "results", ".device")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a snapshot of the working tree (so the build leaves nothing in the repo)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=IGNORE)
    out = root / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheels = list(out.glob("voicebank-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.mark.slow
def test_the_wheel_carries_the_migrations(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    for required in ("voicebank/migrations/__init__.py", "voicebank/migrations/env.py",
                     "voicebank/migrations/script.py.mako", "voicebank/migrations/versions/0001_initial.py",
                     "voicebank/py.typed"):
        assert required in names, required
    # Every migration and every module of the source tree is shipped.
    for path in (REPO / "migrations" / "versions").glob("*.py"):
        assert f"voicebank/migrations/versions/{path.name}" in names, path.name
    for path in (REPO / "voicebank").rglob("*.py"):
        assert f"voicebank/{path.relative_to(REPO / 'voicebank').as_posix()}" in names, path
    assert "voicebank = voicebank.cli:main" in entry_points
    assert not any(n.startswith(("tests/", "migrations/")) for n in names)


@pytest.mark.slow
def test_the_installed_wheel_migrates_its_own_database(wheel, tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    db = outside / "fresh.db"
    script = r"""
import json, sys
import voicebank
from voicebank.store import make_engine, resolve_url, schema
from sqlalchemy import inspect
engine = make_engine(resolve_url(sys.argv[1]))
before = schema.current(engine)
schema.upgrade(engine)
print(json.dumps({
    "file": voicebank.__file__, "migrations": str(schema.migrations_dir()), "before": before,
    "current": schema.current(engine), "head": schema.head(), "tables": sorted(inspect(engine).get_table_names()),
}))
engine.dispose()
from voicebank.cli import main
main(["--db", sys.argv[1], "db", "current"], standalone_mode=False)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBANK_") and k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    proc = subprocess.run([sys.executable, "-c", script, str(db)], cwd=outside, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    info = json.loads(lines[0])
    assert Path(info["file"]).resolve().is_relative_to(site.resolve()), info["file"]
    assert Path(info["migrations"]).resolve().is_relative_to(site.resolve()), info["migrations"]
    assert info["before"] is None
    assert info["current"] == info["head"] == schema.head()
    assert set(info["tables"]) == TABLES | {"alembic_version"}
    assert lines[1:] == [f"database: {schema.head()}", f"newest:   {schema.head()}"]


def test_the_shipped_revisions_are_read_as_alembic_reads_them():
    """schema.head() and the known revisions come from the scripts' revision lines (fast), and must
    agree with alembic's own reading of the same scripts."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(schema.migrations_dir()))
    assert schema.head() == scripts.get_current_head()
    assert schema._chain() == {rev.revision: rev.down_revision for rev in scripts.walk_revisions()}


def test_a_bank_with_one_recording_under_two_speakers_migrates_and_keeps_them(made_bank, tiny_model, voices, caplog):
    """Before 0007 two processes could enroll one file under two names at once: such a bank keeps
    both rows (nothing is deleted), opens, and `check` names the recording."""
    import logging

    from sqlalchemy.orm import Session

    from voicebank.store import SpeakerRow

    engine = make_engine(resolve_url(made_bank))
    try:
        schema.downgrade(engine, "0006")
        with Session(engine) as session, session.begin():
            taken = session.execute(text("SELECT speaker_id, sha256, embedding FROM utterances LIMIT 1")).one()
            alice = session.get(SpeakerRow, taken.speaker_id)
            twin = SpeakerRow(name="alice2", skeleton="alice2", meta={}, voiceprint=alice.voiceprint)
            session.add(twin)
            session.flush()
            # the table as revision 0006 has it (the model's has columns of later revisions)
            session.execute(text("INSERT INTO utterances (speaker_id, embedding, sha256, label, duration_s, speech_s, "
                                 "created_at) VALUES (:s, :e, :h, 'copy', 1.0, 1.0, CURRENT_TIMESTAMP)"),
                            {"s": twin.id, "e": taken.embedding, "h": taken.sha256})
        with caplog.at_level(logging.WARNING, logger="voicebank.migrations"):
            schema.upgrade(engine)
        assert "1 recording(s) are enrolled under two speakers" in caplog.text
        assert schema.current(engine) == schema.head()
    finally:
        engine.dispose()
    with VoiceBank.open(made_bank, str(tiny_model)) as bank:
        shared = bank.index.check().shared_recordings
        assert len(shared) == 1 and sorted(shared[0][1]) == ["alice", "alice2"]
    from voicebank.cli import main

    out = CliRunner().invoke(main, ["--db", str(made_bank), "--model", str(tiny_model), "check"])
    assert "recording enrolled for 2 speakers" in out.stdout and "voicebank remove NAME" in out.stdout
