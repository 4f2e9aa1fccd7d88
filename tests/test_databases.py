"""The product path end to end on SQLite AND PostgreSQL: migrations, enrollment, identification,
verification, removal, the index cache, the audit trail and the CLI, against the real servers."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, select

from conftest import TINY_THRESHOLD
from voicebank import VoiceBank
from voicebank.cli import main
from voicebank.errors import DuplicateRecordingError, DuplicateSpeakerError, SchemaError, SpeakerNotFoundError
from voicebank.store import make_engine, resolve_url, schema
from voicebank.store.repository import Repository


def test_enroll_identify_verify_remove_and_audit(db_url, tiny_model, voices):
    with VoiceBank.open(db_url, str(tiny_model), create=True, threshold=TINY_THRESHOLD, identify_rule="best") as bank:
        for name in ("alice", "bob", "carol"):
            bank.enroll(name, voices[name][:2], metadata={"team": name.upper(), "ünïcode": "✓"})
        with pytest.raises(DuplicateSpeakerError):
            bank.enroll("alice", voices["dave"][:2])
        for name in ("alice", "bob", "carol"):
            assert bank.identify(voices[name][2], client="test").match.name == name
        assert bank.identify(voices["stranger"][0]).match is None
        assert bank.verify("bob", voices["bob"][2]).accepted
        assert not bank.verify("bob", voices["carol"][2]).accepted
        bank.remove("carol")
        with pytest.raises(SpeakerNotFoundError):
            bank.verify("carol", voices["carol"][2])
        assert bank.identify(voices["carol"][2]).match is None
        assert bank.index.check().ok
        assert bank.speaker("alice").metadata == {"team": "ALICE", "ünïcode": "✓"}
        entries = bank.audit.entries()
        assert [e.operation for e in entries][:3] == ["identify", "verify", "verify"]
        assert len(bank.audit.entries(speaker="bob")) == 3  # identified as bob once, claimed as bob twice
        assert entries[-1].client == "test" and entries[-1].model_id == bank.model_id
        assert bank.audit.purge(datetime.now(timezone.utc) + timedelta(seconds=1)) == len(entries)
        assert bank.audit.entries() == []


def test_one_recording_one_person_is_kept_by_the_write_and_by_the_database(db_url, tiny_model, voices, monkeypatch):
    """Two processes enrolling one file under two names at once both pass the check made before the
    write; the write's own check refuses the second, and the database refuses a row that slips past."""
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.orm import Session

    from voicebank.store import UtteranceRow

    with VoiceBank.open(db_url, str(tiny_model), create=True, threshold=TINY_THRESHOLD) as bank:
        bank.enroll("alice", voices["alice"][:2])
        bank.enroll("bob", voices["bob"][:2])
        with monkeypatch.context() as m:
            m.setattr(Repository, "owners", lambda self, sha256s, other_than: {})  # the other has not written yet
            with pytest.raises(DuplicateRecordingError, match="already enrolled for alice.*Nothing was stored for mallory"):
                bank.enroll("mallory", [voices["alice"][2], voices["alice"][0]], allow_inconsistent=True)
            with pytest.raises(DuplicateRecordingError, match="already enrolled for alice"):
                bank.add_recordings("bob", [voices["alice"][1]], allow_inconsistent=True)
        assert [s.name for s in bank.speakers()] == ["alice", "bob"] and len(bank.speaker("bob").recordings) == 2
        assert bank.index.check().shared_recordings == []
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            taken = session.execute(select(UtteranceRow).limit(1)).scalar_one()
            other = 2 if taken.speaker_id == 1 else 1
            session.add(UtteranceRow(speaker_id=other, embedding=taken.embedding, sha256=taken.sha256, label="again",
                                     duration_s=1.0, speech_s=1.0))
            with pytest.raises(IntegrityError, match="sha256"):
                session.flush()
    finally:
        engine.dispose()


def test_the_same_audio_in_another_file_is_the_same_recording(db_url, tiny_model, voices, tmp_path):
    """alice's recording saved again as FLAC, or with bytes appended after its end, hashes as another
    file but sounds the same: it cannot be enrolled for mallory, or added to bob; and the database
    itself refuses a second row with the same content."""
    import soundfile as sf
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.orm import Session

    from voicebank.store import UtteranceRow

    samples, rate = sf.read(voices["alice"][0], dtype="int16")
    flac = tmp_path / "again.flac"
    sf.write(flac, samples, rate, subtype="PCM_16")
    padded = voices["alice"][0].read_bytes() + b"\x00" * 7
    with VoiceBank.open(db_url, str(tiny_model), create=True, threshold=TINY_THRESHOLD) as bank:
        bank.enroll("alice", voices["alice"][:2])
        bank.enroll("bob", voices["bob"][:2])
        for again in (flac, padded):
            with pytest.raises(DuplicateRecordingError, match="already enrolled for alice"):
                bank.enroll("mallory", [again, voices["dave"][0]], allow_inconsistent=True)
            with pytest.raises(DuplicateRecordingError, match="already enrolled for alice"):
                bank.add_recordings("bob", [again], allow_inconsistent=True)
        with pytest.raises(DuplicateRecordingError, match="is already enrolled for alice"):
            bank.add_recordings("alice", [flac])  # her own recording, again: named as hers
        assert [s.name for s in bank.speakers()] == ["alice", "bob"] and len(bank.speaker("bob").recordings) == 2
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            taken = session.execute(select(UtteranceRow).limit(1)).scalar_one()
            assert taken.content_sha256 is not None and taken.content_sha256 != taken.sha256
            other = 2 if taken.speaker_id == 1 else 1
            session.add(UtteranceRow(speaker_id=other, embedding=taken.embedding, sha256="0" * 64, label="again",
                                     content_sha256=taken.content_sha256, duration_s=1.0, speech_s=1.0))
            with pytest.raises(IntegrityError, match="content_sha256"):
                session.flush()
    finally:
        engine.dispose()


def test_cli_on_both_databases(db_url, tiny_model, voices):
    def run(*args):
        return CliRunner().invoke(main, ["--db", db_url, "--model", str(tiny_model), *args])

    assert run("init", "--threshold", str(TINY_THRESHOLD), "--identify-rule", "best").exit_code == 0
    assert run("enroll", "alice", *map(str, voices["alice"][:2])).exit_code == 0
    result = run("identify", str(voices["alice"][2]), "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["match"]["name"] == "alice"
    assert run("verify", "alice", str(voices["bob"][2])).exit_code == 1
    assert run("check").exit_code == 0
    assert json.loads(run("audit", "--json").stdout)[0]["operation"] == "verify"


def test_migrations_round_trip_and_an_older_schema_is_refused(db_url, tiny_model, voices):
    with VoiceBank.open(db_url, str(tiny_model), create=True, threshold=TINY_THRESHOLD, identify_rule="best") as bank:
        bank.enroll("alice", voices["alice"][:2])
    engine = make_engine(resolve_url(db_url))
    try:
        revisions = [r for r in ("0001", "0002") if r != schema.head()]
        schema.downgrade(engine, revisions[-1])  # one revision back: the data survives
        with pytest.raises(SchemaError, match="db upgrade"):
            VoiceBank.open(db_url)
        schema.upgrade(engine)
        with VoiceBank.open(db_url) as bank:
            assert [s.name for s in bank.speakers()] == ["alice"]
        schema.downgrade(engine, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        schema.upgrade(engine)
        assert schema.current(engine) == schema.head()
    finally:
        engine.dispose()


def test_the_change_log_is_pruned_and_an_index_older_than_it_is_rebuilt(db_url, tiny_model, voices, monkeypatch,
                                                                         caplog):
    from voicebank.store import engine as store
    from voicebank.errors import EmptyBankError

    monkeypatch.setattr(store, "KEEP_CHANGES", 2)
    monkeypatch.setattr(store, "PRUNE_CHANGES_EVERY", 2)
    log_rows = store.Store(resolve_url(db_url))

    def kept() -> list[int]:
        with log_rows.read() as session:
            return sorted(session.scalars(select(store.ChangeRow.seq)))

    with VoiceBank.open(db_url, str(tiny_model), create=True, threshold=TINY_THRESHOLD, identify_rule="best") as a, \
            VoiceBank.open(db_url, str(tiny_model)) as b:
        with pytest.raises(EmptyBankError):
            b.identify(voices["alice"][2])  # b's index is now loaded, at seq 0
        for name in ("alice", "bob", "carol", "dave"):
            a.enroll(name, voices[name][:2])  # seq 1..4; pruned at 2 and 4
        a.remove("bob")  # seq 5
        assert kept() == [3, 4, 5]  # seq 1 and 2 (alice's and bob's enrollments) are gone
        with caplog.at_level("INFO", logger="voicebank.index.faiss_search"):
            assert b.identify(voices["alice"][2]).match.name == "alice"  # needs the pruned seq 1
        assert "older than the change log kept" in caplog.text
        assert "restored backup" not in caplog.text
        assert b.index.check().ok and b.index.check().speakers_in_index == 3
        assert b.identify(voices["bob"][2]).match is None
        with VoiceBank.open(db_url, str(tiny_model)) as c:  # reads the index file b wrote at seq 0
            report = c.index.check()
            assert report.ok and report.speakers_in_index == 3
            assert report.index_file == "older than the change log kept (from seq 3) (seq 0, SQL 5): rebuilt"
    log_rows.dispose()


def test_a_bank_whose_model_cannot_load_is_not_created(db_url, tmp_path):
    from voicebank.errors import ModelError
    from voicebank.store import sqlite_path

    with pytest.raises(ModelError, match="the model directory ./nowhere does not exist"):
        VoiceBank.open(db_url, "./nowhere", create=True)
    db_file = sqlite_path(resolve_url(db_url))
    if db_file is not None:
        assert not db_file.exists() and list(db_file.parent.iterdir()) == []
    else:
        engine = make_engine(resolve_url(db_url))
        try:
            assert inspect(engine).get_table_names() == []
        finally:
            engine.dispose()
