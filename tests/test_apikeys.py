"""API keys: created once and shown once, stored only as a SHA-256 hash, revocable; and the
`voicebank apikey` commands over them."""

from __future__ import annotations

import hashlib
import json

import pytest
from click.testing import CliRunner

from conftest import table_dump
from voicebank.apikeys import (
    ApiKeyError,
    ApiKeyNotFoundError,
    DuplicateApiKeyError,
    InvalidApiKeyError,
)
from voicebank.cli import main
from voicebank.errors import InvalidInputError

pytestmark = pytest.mark.embedder("fake")  # keys need no model: these tests run without torch


@pytest.fixture
def keys(bank):
    return bank.api_keys


def test_create_returns_the_key_once_and_stores_only_its_hash(keys, db_path):
    record, key = keys.create("frontdesk", "reader")
    assert key.startswith("vb_") and len(key) == 3 + 43
    assert (record.name, record.role, record.prefix, record.revoked_at) == ("frontdesk", "reader", key[:12], None)
    rows = table_dump(db_path)["api_keys"]
    assert len(rows) == 1
    assert hashlib.sha256(key.encode()).hexdigest() in rows[0]
    assert key not in repr(table_dump(db_path))  # the key itself is nowhere in the database
    assert key not in repr(keys.list())


def test_keys_are_random(keys):
    made = {keys.create(f"k{i}", "reader")[1] for i in range(5)}
    assert len(made) == 5 and len({k[:12] for k in made}) == 5


def test_authenticate(keys):
    _, reader = keys.create("frontdesk", "reader")
    _, admin = keys.create("ops", "admin")
    assert keys.authenticate(reader).name == "frontdesk" and not keys.authenticate(reader).is_admin
    assert keys.authenticate(admin).is_admin


@pytest.mark.parametrize("wrong", ["", "vb_", "not-a-key", "Bearer x", "vb_" + "A" * 43, None, "vb_\udcff" * 5])
def test_authenticate_refuses_unknown_keys(keys, wrong):
    keys.create("frontdesk", "reader")
    with pytest.raises(InvalidApiKeyError, match="invalid or revoked API key"):
        keys.authenticate(wrong)


def test_a_key_with_the_right_prefix_but_the_wrong_rest_is_refused(keys):
    _, key = keys.create("frontdesk", "reader")
    forged = key[:12] + ("A" if key[12] != "A" else "B") + key[13:]
    with pytest.raises(InvalidApiKeyError):
        keys.authenticate(forged)


def test_revoke(keys):
    _, key = keys.create("frontdesk", "reader")
    revoked = keys.revoke("frontdesk")
    assert revoked.revoked_at is not None and not revoked.active
    with pytest.raises(InvalidApiKeyError):
        keys.authenticate(key)
    with pytest.raises(ApiKeyError, match="already revoked"):
        keys.revoke("frontdesk")
    with pytest.raises(ApiKeyNotFoundError, match="no API key named 'nobody'"):
        keys.revoke("nobody")
    [listed] = keys.list()
    assert listed.name == "frontdesk" and listed.revoked_at is not None


def test_names_are_unique_even_after_revocation(keys):
    keys.create("frontdesk", "reader")
    with pytest.raises(DuplicateApiKeyError, match="already exists"):
        keys.create("frontdesk", "admin")
    keys.revoke("frontdesk")
    with pytest.raises(DuplicateApiKeyError, match="revoked keys stay taken"):
        keys.create("frontdesk", "reader")


@pytest.mark.parametrize("name, role, message", [
    ("x", "root", "role is one of admin, reader"),
    ("", "reader", "must not be empty"),
    ("x" * 300, "reader", "at most 200 characters"),
])
def test_invalid_input(keys, name, role, message):
    with pytest.raises(InvalidInputError, match=message):
        keys.create(name, role)
    assert keys.list() == []


def test_list_is_sorted_and_shows_no_secrets(keys):
    keys.create("b", "admin")
    keys.create("a", "reader")
    listed = keys.list()
    assert [k.name for k in listed] == ["a", "b"]
    assert set(listed[0].to_dict()) == {"name", "role", "prefix", "created_at", "revoked_at"}


# -- the CLI -------------------------------------------------------------------------------------

@pytest.fixture
def cli(bank, db_path):
    runner = CliRunner()
    return lambda *args: runner.invoke(main, ["--db", str(db_path), *args])


def test_cli_create_prints_only_the_key_on_stdout(cli, bank):
    result = cli("apikey", "create", "ops", "--role", "admin")
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert result.stdout == key + "\n" and key.startswith("vb_")
    assert "shown only this once" in result.stderr
    assert bank.api_keys.authenticate(key).role == "admin"


def test_cli_create_json(cli, bank):
    result = cli("apikey", "create", "frontdesk", "--role", "reader", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == {"name", "role", "prefix", "created_at", "revoked_at", "key"}
    assert (out["name"], out["role"], out["revoked_at"]) == ("frontdesk", "reader", None)
    assert bank.api_keys.authenticate(out["key"]).name == "frontdesk"


def test_cli_list_and_revoke(cli):
    assert cli("apikey", "list").stdout == "No API keys.\n"
    key = cli("apikey", "create", "ops", "--role", "admin").stdout.strip()
    cli("apikey", "create", "frontdesk", "--role", "reader")
    listed = cli("apikey", "list")
    assert listed.exit_code == 0 and key not in listed.stdout
    lines = listed.stdout.splitlines()
    assert lines[0].startswith("frontdesk ") and " reader " in lines[0]
    assert lines[1].startswith("ops ") and f"{key[:12]}..." in lines[1]
    revoked = cli("apikey", "revoke", "ops")
    assert (revoked.exit_code, revoked.stdout) == (0, "Revoked ops.\n")
    as_json = json.loads(cli("apikey", "list", "--json").stdout)
    assert [(k["name"], k["revoked_at"] is not None) for k in as_json] == [("frontdesk", False), ("ops", True)]
    assert "REVOKED" in cli("apikey", "list").stdout.splitlines()[1]


@pytest.mark.parametrize("args, message", [
    (("apikey", "revoke", "nobody"), "Error: no API key named 'nobody'"),
    (("apikey", "create", "x", "--role", "root"), "Invalid value for '--role'"),
    (("apikey", "create", "x"), "Missing option '--role'"),
])
def test_cli_errors(cli, args, message):
    result = cli(*args)
    assert result.exit_code == 2 and result.stdout == ""
    assert message in result.stderr and "Traceback" not in result.output


def test_cli_duplicate_name(cli):
    cli("apikey", "create", "ops", "--role", "admin")
    result = cli("apikey", "create", "ops", "--role", "reader")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: an API key named 'ops' already exists")


def test_cli_without_a_bank(tmp_path):
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "none.db"), "apikey", "list"])
    assert result.exit_code == 2 and result.stderr.startswith("Error: no voicebank at ")


@pytest.mark.parametrize("path", [("apikey",), ("apikey", "create"), ("apikey", "list"), ("apikey", "revoke"), ("serve",)])
def test_help_has_an_example(path):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0 and "Example" in result.stdout
