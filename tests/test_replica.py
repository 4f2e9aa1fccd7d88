"""A process on a PostgreSQL read replica, with its primary named for writes (``--primary``).

The replica is played by a role of the real server whose every transaction is read-only
(``default_transaction_read_only = on``): it refuses writes exactly as a hot standby does ("cannot
execute INSERT in a read-only transaction"), so any write routed to ``--db`` fails these tests.
Both URLs name the same database, so there is no replication lag: what the primary commits, the
"replica" shows at once (the catch-up of the flat FAISS index from the change log included).
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timezone

import httpx
import numpy as np
import psycopg
import pytest
from click.testing import CliRunner

from conftest import TINY_THRESHOLD
from voicebank import VoiceBank
from voicebank.cli import main
from voicebank.errors import DatabaseError, InvalidInputError, ReplicaError, SpeakerNotFoundError
from voicebank.store.schema import OURS

pytestmark = [pytest.mark.postgres, pytest.mark.embedder("fake"), pytest.mark.usefixtures("remembered_vad")]

REFUSED = "this process reads a read replica"


def dump(url: str) -> dict[str, list[tuple]]:
    """Every row of voicebank's tables, read as the primary's user: to show a refusal changed nothing."""
    with psycopg.connect(url) as conn:
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in sorted(OURS)}


def audit_rows(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT operation, claimed, returned, accepted, client FROM audit ORDER BY id").fetchall()


@pytest.fixture
def primary(pg_url, model, voices) -> str:
    """A bank on a fresh database, made through its primary: alice, bob and carol enrolled."""
    with VoiceBank.open(pg_url, model, create=True, threshold=TINY_THRESHOLD, identify_rule="best") as bank:
        for name in ("alice", "bob", "carol"):
            bank.enroll(name, voices[name][:2])
    return pg_url


@pytest.fixture
def replica(primary) -> str:
    """The same database through a role whose every transaction is read-only, as on a hot standby.
    The role is dropped afterwards (the database by ``pg_url``)."""
    role, database = f"vb_reader_{uuid.uuid4().hex[:10]}", primary.rsplit("/", 1)[1]
    with psycopg.connect(primary, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'ALTER ROLE "{role}" SET default_transaction_read_only = on')
        conn.execute(f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"')
        conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
    yield primary.replace("://postgres@", f"://{role}@", 1)
    with psycopg.connect(primary, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        conn.execute(f'DROP OWNED BY "{role}"')
        conn.execute(f'DROP ROLE "{role}"')


def test_the_stand_in_replica_refuses_writes_as_a_hot_standby_does(replica, primary, model, voices):
    with psycopg.connect(replica) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction,
                                                         match="cannot execute INSERT in a read-only transaction"):
        conn.execute("INSERT INTO changes (seq, speaker_id, op, at) VALUES (0, 0, 'x', now())")
    # without --primary, identification (which writes an audit row) fails there, saying what to do
    with VoiceBank.open(replica, model) as bank:
        with pytest.raises(DatabaseError, match=r"is read-only \(a read replica.*--primary URL"):
            bank.identify(voices["alice"][2])
    assert audit_rows(primary) == []


def test_identify_and_verify_on_the_replica_audit_on_the_primary(replica, primary, model, voices):
    with VoiceBank.open(replica, model, primary=primary) as bank:
        assert bank.reads_replica
        assert [bank.identify(voices[n][2], client="desk").match.name for n in ("alice", "bob", "carol")] == \
            ["alice", "bob", "carol"]
        assert bank.identify(voices["stranger"][0]).match is None
        assert bank.verify("bob", voices["bob"][2]).accepted
        assert not bank.verify("bob", voices["carol"][2], client="desk").accepted
        assert [s.name for s in bank.speakers()] == ["alice", "bob", "carol"] and len(bank) == 3
        assert bank.speaker("alice").name == "alice" and bank.index.check().ok
        assert [e.operation for e in bank.audit.entries()][:2] == ["verify", "verify"]  # read back from the replica
    assert audit_rows(primary) == [("identify", None, "alice", True, "desk"), ("identify", None, "bob", True, "desk"),
                                   ("identify", None, "carol", True, "desk"), ("identify", None, None, False, None),
                                   ("verify", "bob", "bob", True, None), ("verify", "bob", None, False, "desk")]


def test_every_change_is_refused_and_changes_nothing(replica, primary, model, voices):
    before = dump(primary)
    with VoiceBank.open(replica, model, primary=primary) as bank:
        result = bank.thresholds.calibrate(purposes=("verify",), far=0.5)
        refused = {
            "enroll": lambda: bank.enroll("dave", voices["dave"][:2]),
            "enroll_many": lambda: bank.enroll_many([]),
            "add_recordings": lambda: bank.add_recordings("alice", voices["alice"][2:]),
            "remove": lambda: bank.remove("bob"),
            "reindex": lambda: bank.index.rebuild(),
            "reindex as another kind": lambda: bank.index.rebuild("hnsw"),
            "store_calibration": lambda: bank.thresholds.store_calibration(result),
            "set_threshold": lambda: bank.thresholds.set(0.5),
            "set_enrollment_checks": lambda: bank.thresholds.set_enrollment_checks(0.5),
            "set_score_normalization": lambda: bank.thresholds.set_score_normalization("asnorm"),
            "add_cohort": lambda: bank.cohort.add(voices["stranger"]),
            "clear_cohort": bank.cohort.clear,
            "create an API key": lambda: bank.api_keys.create("desk", "reader"),
            "revoke an API key": lambda: bank.api_keys.revoke("desk"),
            "purge_audit": lambda: bank.audit.purge(datetime.now(timezone.utc)),
        }
        for what, call in refused.items():
            with pytest.raises(ReplicaError, match=f"^cannot .*: {REFUSED} \\(--db postgresql\\+psycopg://vb_reader_"
                                                   r".*whose --db is the primary: voicebank --db postgresql\+psycopg"
                                                   r"://postgres@"):
                call()
            assert bank.speaker("alice") is not None, what
    with pytest.raises(ReplicaError, match=f"cannot create a bank: {REFUSED}"):
        VoiceBank.open(replica, model, primary=primary, create=True, exist_ok=False)
    assert dump(primary) == before


def test_the_replica_sees_what_the_primary_changes(replica, primary, model, voices, caplog):
    with VoiceBank.open(replica, model, primary=primary) as reader:
        assert reader.identify(voices["dave"][2]).match is None  # the index is loaded, at the bank's seq
        with VoiceBank.open(primary, model) as writer:
            writer.enroll("dave", voices["dave"][:2])
            writer.remove("bob")
        # the replica's index catches up from the change log it reads: dave in, bob out
        with caplog.at_level(logging.DEBUG, logger="voicebank.index.faiss_search"):
            assert reader.identify(voices["dave"][2]).match.name == "dave"
        assert "caught up 2 changed speakers" in caplog.text and "rebuilding" not in caplog.text
        found = reader.identify(voices["bob"][2], top_k=5)
        assert found.match is None or found.match.name != "bob"
        assert "bob" not in [c.name for c in found.candidates]
        with pytest.raises(SpeakerNotFoundError):
            reader.verify("bob", voices["bob"][2])
        report = reader.index.check()
        assert report.ok and report.speakers_in_sql == 3, report
    assert [r[2] for r in audit_rows(primary)] == [None, "dave", None]


def test_the_cli_reads_the_replica_and_refuses_changes(replica, primary, model, voices, tmp_path):
    def run(*args, env=None):
        return CliRunner().invoke(main, ["--db", replica, "--model", model, *args], env=env)

    on_replica = {"VOICEBANK_PRIMARY": primary}
    result = run("identify", str(voices["alice"][2]), "--json", env=on_replica)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["match"]["name"] == "alice"
    assert run("--primary", primary, "verify", "bob", str(voices["bob"][2])).exit_code == 0
    assert run("verify", "bob", str(voices["carol"][2]), env=on_replica).exit_code == 1
    assert run("list", "--json", env=on_replica).exit_code == 0
    assert json.loads(run("show", "alice", "--json", env=on_replica).stdout)["name"] == "alice"
    assert json.loads(run("audit", "--json", env=on_replica).stdout)[0]["operation"] == "verify"
    assert run("check", env=on_replica).exit_code == 0
    assert [r[0] for r in audit_rows(primary)] == ["identify", "verify", "verify"]
    before = dump(primary)
    for command in (["enroll", "dave", *map(str, voices["dave"][:2])], ["remove", "bob"], ["reindex"],
                    ["calibrate", "--for", "verify", "--far", "0.5", "--yes"], ["threshold", "0.5"],
                    ["init"], ["db", "upgrade"], ["apikey", "create", "desk", "--role", "reader"],
                    ["audit", "purge", "--before", "1d", "--yes"]):
        result = run(*command, env=on_replica)
        assert result.exit_code == 2, (command, result.output)
        assert result.stderr.startswith("Error: cannot ") and REFUSED in result.stderr, (command, result.stderr)
    assert dump(primary) == before


def test_the_server_on_a_replica_identifies_and_refuses_changes_with_409(replica, primary, model, voices):
    from voicebank.server import create_app, open_bank, serve_in_thread

    with VoiceBank.open(primary, model) as bank:
        keys = {name: bank.api_keys.create(name, role)[1] for name, role in (("desk", "reader"), ("ops", "admin"))}
    with open_bank(replica, model, primary=primary) as bank, serve_in_thread(create_app(bank)) as url, \
            httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/health").json()["replica"] is True

        def post(path, key, **kwargs):
            return client.post(path, headers={"Authorization": f"Bearer {keys[key]}"}, **kwargs)

        def upload(path):
            return ("file", (path.name, path.read_bytes(), "audio/wav"))

        answer = post("/identify", "desk", files=[upload(voices["carol"][2])])
        assert answer.status_code == 200 and answer.json()["match"]["name"] == "carol"
        assert post("/verify", "desk", data={"name": "alice"}, files=[upload(voices["alice"][2])]).json()["accepted"]
        enrolled = post("/speakers", "ops", data={"name": "dave"},
                        files=[("files", (p.name, p.read_bytes(), "audio/wav")) for p in voices["dave"][:2]])
        removed = client.delete("/speakers/bob", headers={"Authorization": f"Bearer {keys['ops']}"})
        for response in (enrolled, removed):
            assert response.status_code == 409 and REFUSED in response.json()["error"], response.text
    assert audit_rows(primary) == [("identify", None, "carol", True, "desk"),
                                   ("verify", "alice", "alice", True, "desk")]
    assert sorted(row[1] for row in dump(primary)["speakers"]) == ["alice", "bob", "carol"]


def test_primary_is_for_postgresql_only_and_the_same_url_is_harmless(primary, model, voices, tmp_path):
    sqlite = tmp_path / "bank.db"
    with VoiceBank.open(sqlite, model, create=True):
        pass
    with pytest.raises(InvalidInputError, match=r"^--primary names the primary of a PostgreSQL read replica, and "
                                                r"--db is sqlite .*which has no replicas"):
        VoiceBank.open(sqlite, model, primary=primary)
    with pytest.raises(InvalidInputError, match=r"^--primary must be the PostgreSQL primary .*not sqlite"):
        VoiceBank.open(primary, model, primary=sqlite)
    result = CliRunner().invoke(main, ["--db", str(sqlite), "--primary", primary, "list"])
    assert result.exit_code == 2 and result.stderr.startswith("Error: --primary names the primary of a PostgreSQL")
    with VoiceBank.open(primary, model, primary=primary.replace("postgresql://", "postgresql+psycopg://")) as bank:
        assert not bank.reads_replica
        bank.enroll("dave", voices["dave"][:2])  # one database: changes as usual
        assert bank.identify(voices["dave"][2]).match.name == "dave"


def test_a_primary_holding_another_bank_is_refused_before_any_write(replica, primary, model, voices):
    other = f"vb_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(primary, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{other}"')
    try:
        other_url = primary.rsplit("/", 1)[0] + "/" + other
        with VoiceBank.open(other_url, model, create=True, threshold=TINY_THRESHOLD, identify_rule="best") as bank:
            bank.enroll("alice", voices["alice"][:2])
        with VoiceBank.open(replica, model, primary=other_url) as bank:
            assert bank.speaker("bob").name == "bob"  # reading needs no primary
            with pytest.raises(InvalidInputError, match=r"^--primary .* holds another bank \(uid .*\) than --db .* "
                                                        "audit rows would go to the wrong bank"):
                bank.identify(voices["alice"][2])
        assert audit_rows(other_url) == [] and audit_rows(primary) == []
    finally:
        with psycopg.connect(primary, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')


def test_a_replica_keeps_its_own_index_file(replica, primary, model, voices, tmp_path):
    """The primary's processes save index files at changes a lagging replica has not replayed; a
    replica's process would take such a file for one ahead of SQL and rebuild it, so it keeps its own."""
    with VoiceBank.open(primary, model) as writer:
        writer.identify_embeddings(np.zeros((1, writer.dimension), np.float32) + 0.2)
    cache = sorted(p.name for p in (tmp_path / "index-cache").glob("*.faiss"))
    with VoiceBank.open(replica, model, primary=primary) as reader:
        assert reader.identify(voices["alice"][2]).match.name == "alice"
    mine = sorted(p.name for p in (tmp_path / "index-cache").glob("*.faiss") if p.name not in cache)
    assert len(cache) == 1 and len(mine) == 1 and "-replica-" in mine[0]
