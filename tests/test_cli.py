"""The `voicebank` command through click's CliRunner, against the contract in DESIGN.md: JSON
shapes, exit codes 0/1/2 and a one-line `Error: ...` on stderr, never a traceback."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from conftest import REPO, TINY_THRESHOLD
from voicebank.cli import main

# The CLI's logic does not depend on the model: the fake embedder (conftest), except where a test
# says which model the bank holds or starts another process.
pytestmark = [pytest.mark.embedder("fake"), pytest.mark.usefixtures("remembered_vad")]

THREE = ("alice", "bob", "carol")
SPEECH = r" for \d+\.\d s of speech"  # the speech a decision's threshold was read at


@pytest.fixture
def cli(tmp_path, model):
    """``cli(*args)`` runs `voicebank --db <tmp>/x.db --model <model> *args`; ``cli.db`` is the file."""
    db = tmp_path / "x.db"
    runner = CliRunner()
    source = model  # run()'s own `model` says whether to pass it

    def run(*args, model: bool = True) -> Result:
        base = ["--db", str(db)] + (["--model", source] if model else [])
        return runner.invoke(main, base + [str(a) for a in args])

    run.db = db
    return run


def ok(result: Result, code: int = 0) -> Result:
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def assert_error(result: Result, *words: str) -> str:
    """Exit code 2, nothing on stdout, exactly one line on stderr that starts with `Error: `."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture
def initialized(cli):
    ok(cli("init", "--threshold", TINY_THRESHOLD, "--identify-rule", "best"))
    return cli


@pytest.fixture
def populated(initialized, voices):
    for name in THREE:
        ok(initialized("enroll", name, *voices[name][:2], "--meta", f"team={name.upper()}"))
    return initialized


# -- init and settings -----------------------------------------------------------------------------

@pytest.mark.embedder("tiny")  # the bank records the WavLM's identity
def test_init(cli, model):
    result = ok(cli("init", "--json", "--threshold", "0.9"))
    info = json.loads(result.stdout)
    assert set(info) == {"db", "model", "model_id", "dimension", "threshold", "identify_threshold", "index",
                         "calibration", "channels"}
    assert info["identify_threshold"] == 0.98  # the margin rule's starting offset above the verify threshold
    assert info["calibration"]["identify"]["threshold"] == 0.98
    assert info["channels"]["telephone"]["verify"]["channel"] == "telephone"
    assert info["index"] == "flat"
    assert info["db"] == str(cli.db)
    assert info["model"] == str(model)
    assert info["dimension"] == 24
    assert info["threshold"] == 0.9
    assert info["model_id"].startswith("wavlm-xvector:")
    assert cli.db.exists()

    again = cli("init")
    assert_error(again, "a voicebank already exists there; nothing was changed.")


def test_init_text_and_default_threshold(cli, model):
    result = ok(cli("init"))
    thresholds = [
        f"{channel}{which:<8} threshold {t} on the {on}cosine score: not calibrated, no measured promise (run "
        "`voicebank calibrate`)" for channel in ("", "telephone ")
        for which, t, on in (("verify", "0.8600", ""), ("identify", "0.9400", "2 x best - second best "))]
    # init names every threshold it set, as `threshold` shows them (the fake model has no reference set)
    assert result.stdout.splitlines() == [f"Created a voicebank with {model} (24-dim)."] + thresholds
    assert ok(cli("threshold")).stdout.splitlines() == thresholds


def test_threshold_show_and_set(initialized):
    def shown(*args):
        data = json.loads(ok(initialized("threshold", *args, "--json")).stdout)
        assert data["threshold"] == data["calibration"]["verify"]["threshold"]
        assert data["identify_threshold"] == data["calibration"]["identify"]["threshold"]
        return data["threshold"], data["identify_threshold"], {s["method"] for s in data["calibration"].values()}

    assert shown() == (TINY_THRESHOLD, TINY_THRESHOLD, {"default"})
    assert ok(initialized("threshold", "0.75", "--channel", "both")).stdout.splitlines() == [
        f"{channel}{which:<8} threshold 0.7500 on the {on}cosine score: set by hand, no measured promise (run "
        "`voicebank calibrate`)" for channel in ("", "telephone ") for which, on in (("verify", ""), ("identify", "best "))]
    assert shown("0.5", "--for", "verify") == (0.5, 0.75, {"manual"})
    assert shown("0.6", "--for", "identify") == (0.5, 0.6, {"manual"})
    assert_error(initialized("threshold", "1.5"), "between -1 and 1")
    assert shown() == (0.5, 0.6, {"manual"})
    # each channel keeps its own: the wideband ones moved, the telephone ones did not
    telephone = json.loads(ok(initialized("threshold", "--json")).stdout)["channels"]["telephone"]
    assert (telephone["verify"]["threshold"], telephone["identify"]["threshold"]) == (0.75, 0.75)
    assert {s["channel"] for s in telephone.values()} == {"telephone"}


# -- enroll, identify, verify -----------------------------------------------------------------------

def test_enroll_with_metadata_and_several_files(initialized, voices):
    result = ok(initialized("enroll", "alice", *voices["alice"][:2], "--meta", "employee_id=42",
                            "--meta", "formula=a=b"))
    assert result.stdout.startswith("Enrolled alice from 2 recordings (")
    assert result.stdout.endswith(" s of speech).\n")

    shown = json.loads(ok(initialized("show", "alice", "--json")).stdout)
    assert shown["name"] == "alice"
    assert shown["metadata"] == {"employee_id": "42", "formula": "a=b"}
    assert [r["label"] for r in shown["recordings"]] == [str(p) for p in voices["alice"][:2]]

    as_json = json.loads(ok(initialized("enroll", "bob", *voices["bob"], "--json")).stdout)
    assert as_json["name"] == "bob" and len(as_json["recordings"]) == 3 and as_json["metadata"] == {}


def test_identify_text_and_exit_codes(populated, voices):
    for name in THREE:
        result = ok(populated("identify", voices[name][2]), 0)
        lines = result.stdout.splitlines()
        # the number decided on, named, against the threshold: here the best cosine, the first candidate's
        assert re.fullmatch(rf"match: {name} \(best score {lines[1].split()[2]} >= threshold 0\.9996{SPEECH}\)", lines[0])
        assert lines[1].split()[:2] == ["1.", name]
        assert len(lines) == 4

    unknown = ok(populated("identify", voices["stranger"][2]), 1)
    lines = unknown.stdout.splitlines()
    assert re.fullmatch(rf"match: unknown \(best score {lines[1].split()[2]} < threshold 0\.9996{SPEECH}\)", lines[0])
    assert sorted(line.split()[1] for line in lines[1:]) == sorted(THREE)


def check_identify_json(data: dict) -> None:
    assert set(data) == {"match", "candidates", "threshold", "threshold_kind", "decision", "calibration", "channel",
                         "speech_seconds"}
    assert data["threshold_kind"] == "identify" and data["calibration"]["method"] in ("default", "manual", "far")
    assert data["decision"]["rule"] == "best"  # the tiny banks' rule; new banks decide by the margin rule
    assert data["decision"]["kind"] == "cosine"  # what the threshold applied to: the best cosine
    # the synthetic voices are wideband recordings, measured so, and decided in that channel
    assert data["channel"]["decided"] == data["calibration"]["channel"] == "wideband"
    assert data["channel"]["heard"]["channel"] == "wideband" and data["channel"]["heard"]["bandwidth_hz"] > 4000
    assert data["decision"]["score"] == (data["candidates"][0]["score"] if data["candidates"] else None)
    assert type(data["threshold"]) is float
    assert isinstance(data["candidates"], list)
    for candidate in data["candidates"]:
        assert set(candidate) == {"name", "score"}
        assert type(candidate["name"]) is str and type(candidate["score"]) is float
    if data["match"] is not None:
        assert set(data["match"]) == {"name", "score"}
        assert type(data["match"]["name"]) is str and type(data["match"]["score"]) is float


def test_identify_json(populated, voices):
    data = json.loads(ok(populated("identify", voices["bob"][2], "--json"), 0).stdout)
    check_identify_json(data)
    assert data["match"]["name"] == "bob"
    assert data["candidates"][0] == data["match"]
    assert sorted(c["name"] for c in data["candidates"]) == sorted(THREE)
    assert data["threshold"] == TINY_THRESHOLD

    data = json.loads(ok(populated("identify", voices["stranger"][2], "--json"), 1).stdout)
    check_identify_json(data)
    assert data["match"] is None
    assert len(data["candidates"]) == 3

    data = json.loads(ok(populated("identify", voices["carol"][2], "--json", "--top-k", "2"), 0).stdout)
    check_identify_json(data)
    assert len(data["candidates"]) == 2 and data["match"]["name"] == "carol"
    assert_error(populated("identify", voices["carol"][2], "--top-k", "0"), "top-k is a whole number from 1 to 1000")


def test_identify_several_files_one_line_each(populated, voices, corrupt):
    files = [voices["alice"][2], voices["stranger"][2], voices["bob"][2]]
    lines = ok(populated("identify", *files), 1).stdout.splitlines()  # one unknown: exit code 1
    assert lines[0].startswith(f"{files[0]}: alice (best score ") and re.search(rf" >= threshold 0\.9996{SPEECH}\)$", lines[0])
    assert lines[1].startswith(f"{files[1]}: unknown (best score ") and re.search(rf" < threshold 0\.9996{SPEECH}\)$", lines[1])
    assert lines[2].startswith(f"{files[2]}: bob (best score ")
    assert len(lines) == 3

    both = [voices["carol"][2], voices["bob"][2]]
    rows = [json.loads(line) for line in ok(populated("identify", *both, "--json", "-k", "2"), 0).stdout.splitlines()]
    assert [r.pop("file") for r in rows] == [str(f) for f in both]
    for row in rows:
        check_identify_json(row)
        assert len(row["candidates"]) == 2
    assert [r["match"]["name"] for r in rows] == ["carol", "bob"]

    # an unusable file is reported in its place; the others are still identified; exit code 2
    result = populated("identify", voices["alice"][2], corrupt, "--json")
    assert result.exit_code == 2 and "Traceback" not in result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows[0]["match"]["name"] == "alice"
    assert rows[1] == {"file": str(corrupt), "error": rows[1]["error"]}
    assert "not a readable audio file" in rows[1]["error"]
    assert result.stderr == "Error: 1 of 2 recordings could not be used (see above); the others were identified.\n"
    text = populated("identify", voices["alice"][2], corrupt)
    assert text.stdout.splitlines()[1].startswith(f"{corrupt}: error: not a readable audio file")


def test_verify(populated, voices):
    result = ok(populated("verify", "alice", voices["alice"][2]), 0)
    assert result.stdout.startswith("accepted: alice (score ")
    assert re.search(rf" >= threshold 0\.9996{SPEECH}\)\n$", result.stdout)
    rejected = ok(populated("verify", "alice", voices["carol"][2]), 1)
    assert rejected.stdout.startswith("rejected: alice (score ") and re.search(rf" < threshold 0\.9996{SPEECH}\)\n$",
                                                                              rejected.stdout)

    for probe, code, accepted in ((voices["bob"][2], 0, True), (voices["stranger"][2], 1, False)):
        data = json.loads(ok(populated("verify", "bob", probe, "--json"), code).stdout)
        assert set(data) == {"name", "score", "threshold", "accepted", "threshold_kind", "channel", "speech_seconds"}
        assert 1.0 < data["speech_seconds"] <= 2.5  # the speech the threshold was read at (2.5 s takes)
        assert data["channel"]["decided"] == data["channel"]["heard"]["channel"] == "wideband"
        assert data["name"] == "bob" and data["accepted"] is accepted
        assert type(data["score"]) is float and data["threshold"] == TINY_THRESHOLD
        assert (data["score"] >= TINY_THRESHOLD) is accepted


# -- list, show, remove, reindex, check --------------------------------------------------------------

def test_list(cli, populated, voices):
    text = ok(populated("list")).stdout.splitlines()
    assert [line.split()[0] for line in text] == list(THREE)
    assert all(" 2 recordings " in line and line.endswith(" s speech") for line in text)
    data = json.loads(ok(populated("list", "--json")).stdout)
    assert [s["name"] for s in data] == list(THREE)
    assert data[0]["metadata"] == {"team": "ALICE"}
    assert all(len(s["recordings"]) == 2 for s in data)


def test_list_an_empty_bank(initialized):
    assert ok(initialized("list")).stdout == "No speakers enrolled.\n"
    assert json.loads(ok(initialized("list", "--json")).stdout) == []


def test_show(populated, voices):
    lines = ok(populated("show", "carol")).stdout.splitlines()
    assert lines[0] == "name: carol"
    assert lines[1].startswith("enrolled: ")
    assert lines[2] == 'metadata: {"team": "CAROL"}'
    assert lines[3] == "recordings:"
    assert len(lines) == 6
    assert lines[4].strip().startswith(str(voices["carol"][0]) + "  2.5 s (")
    data = json.loads(ok(populated("show", "carol", "--json")).stdout)
    assert data["name"] == "carol" and data["metadata"] == {"team": "CAROL"}
    assert [len(r["sha256"]) for r in data["recordings"]] == [64, 64]
    assert [r["duration_s"] for r in data["recordings"]] == [2.5, 2.5]


def test_remove(populated, voices):
    assert ok(populated("remove", "bob")).stdout == "Removed bob.\n"
    assert [s["name"] for s in json.loads(ok(populated("list", "--json")).stdout)] == ["alice", "carol"]
    data = json.loads(ok(populated("identify", voices["bob"][2], "--json"), 1).stdout)
    assert data["match"] is None and "bob" not in [c["name"] for c in data["candidates"]]
    assert_error(populated("verify", "bob", voices["bob"][2]), "no speaker named 'bob'")


def test_reindex_and_check(populated, voices):
    ok(populated("identify", voices["alice"][2]))
    result = ok(populated("check"), 0)
    assert result.stdout.splitlines() == [
        "index file: ok", "speakers: 3 in SQL, 3 in the index", "OK: the index agrees with SQL.",
        "telephone index: 3 voiceprints, OK.",
        *(f"{channel}{which:<8} threshold 0.9996 on the {on}cosine score: not calibrated, no measured promise (run "
          "`voicebank calibrate`)" for channel in ("", "telephone ") for which, on in (("verify", ""), ("identify", "best ")))]
    assert ok(populated("reindex")).stdout == "Indexed 3 voiceprints (flat).\n"
    assert ok(populated("reindex", "--index", "ivf")).stdout == "Indexed 3 voiceprints (ivf).\n"
    assert ok(populated("check")).exit_code == 0
    report = json.loads(ok(populated("check", "--json"), 0).stdout)
    calibration = report.pop("calibration")
    channels = report.pop("channels")
    assert report.pop("shared_recordings") == []  # no recording enrolled for two speakers
    assert channels["lacking"] == {"telephone": 0, "wideband": 0}  # every speaker has both voiceprints
    assert channels["telephone"]["verify"]["channel"] == "telephone"
    assert channels["telephone_index"]["speakers_in_index"] == 3 and channels["telephone_index"]["wrong_vectors"] == []
    assert report == {"ok": True, "speakers_in_sql": 3, "speakers_in_index": 3, "index_file": "ok",
                      "missing_from_index": [], "not_in_sql": [], "wrong_vectors": []}
    assert calibration["identify"]["gallery"] == 3 and calibration["identify"]["outgrown"] is False
    assert calibration["verify"]["threshold"] == TINY_THRESHOLD and calibration["verify"]["method"] == "default"
    # A damaged index file: check rebuilds it and still exits 0; reindex repairs it too.
    Path(str(populated.db) + ".faiss").write_bytes(b"garbage" * 50)
    report = json.loads(ok(populated("check", "--json"), 0).stdout)
    assert report["ok"] is True and report["index_file"].startswith("damaged or foreign, rebuilt")
    ok(populated("remove", "alice"))
    assert ok(populated("reindex")).stdout == "Indexed 2 voiceprints (ivf).\n"
    assert json.loads(ok(populated("check", "--json")).stdout)["index_file"] == "ok"


def test_add(populated, voices):
    assert ok(populated("add", "alice", voices["alice"][2])).stdout == "alice now has 3 recordings.\n"
    assert len(json.loads(ok(populated("show", "alice", "--json")).stdout)["recordings"]) == 3


def test_add_an_already_enrolled_recording(populated, voices):
    assert_error(populated("add", "alice", voices["alice"][0]), "already enrolled for alice", "nothing was added")


# -- db ----------------------------------------------------------------------------------------------

def test_db_upgrade_and_current(cli, voices):
    from voicebank.store import schema

    head = schema.head()
    assert ok(cli("db", "upgrade")).stdout == f"Schema at {head} (was empty).\n"
    assert ok(cli("db", "current")).stdout == f"database: {head}\nnewest:   {head}\n"
    assert ok(cli("db", "upgrade")).stdout == f"Schema at {head} (was {head}).\n"
    # A schema without a bank row is not a bank yet; init makes it one.
    assert_error(cli("list"), "voicebank init")
    ok(cli("init", "--threshold", TINY_THRESHOLD, "--identify-rule", "best"))
    ok(cli("enroll", "alice", *voices["alice"][:2]))
    assert ok(cli("db", "upgrade")).stdout == f"Schema at {head} (was {head}).\n"
    assert [s["name"] for s in json.loads(ok(cli("list", "--json")).stdout)] == ["alice"]


def test_commands_work_without_model_option_once_initialized(populated, voices):
    """The bank remembers its model: --model is not needed after init."""
    assert json.loads(ok(populated("identify", voices["alice"][2], "--json", model=False)).stdout)["match"]["name"] == "alice"


# -- errors: exit 2, one line `Error: ...`, no traceback ---------------------------------------------

def test_missing_file(populated, tmp_path):
    missing = tmp_path / "nope.wav"
    assert_error(populated("identify", missing), str(missing), "no such file")
    assert_error(populated("verify", "alice", missing), str(missing), "no such file")


def test_missing_file_in_enroll_and_add(populated, voices, tmp_path):
    missing = tmp_path / "nope.wav"
    assert_error(populated("add", "alice", voices["alice"][2], missing), str(missing), "no such file")
    assert_error(populated("enroll", "dave", voices["dave"][0], missing), str(missing), "no such file")
    assert_error(populated("show", "dave"), "no speaker named 'dave'")


def test_corrupt_audio(populated, corrupt):
    assert_error(populated("identify", corrupt), str(corrupt), "not a readable audio file")
    assert_error(populated("verify", "alice", corrupt), str(corrupt), "not a readable audio file")


def test_corrupt_audio_in_enroll(populated, voices, corrupt):
    assert_error(populated("enroll", "dave", voices["dave"][0], corrupt), str(corrupt), "not a readable audio file")
    assert_error(populated("show", "dave"), "no speaker named 'dave'")


def test_unknown_speaker(populated, voices):
    assert_error(populated("verify", "zed", voices["alice"][2]), "no speaker named 'zed' is enrolled")
    assert_error(populated("show", "zed"), "no speaker named 'zed' is enrolled")
    assert_error(populated("remove", "zed"), "no speaker named 'zed' is enrolled")


def test_unknown_speaker_in_add(populated, voices):
    assert_error(populated("add", "zed", voices["alice"][2]), "no speaker named 'zed' is enrolled")


def test_duplicate_name(populated, voices):
    assert_error(populated("enroll", "alice", voices["dave"][0]), "'alice' is already enrolled")
    assert len(json.loads(ok(populated("show", "alice", "--json")).stdout)["recordings"]) == 2


@pytest.mark.parametrize(
    "args",
    [("list",), ("show", "alice"), ("remove", "alice"), ("reindex",), ("check",), ("threshold",),
     ("threshold", "0.5"), ("identify", "FILE"), ("verify", "alice", "FILE")],
)
def test_no_bank_yet(cli, voices, args):
    args = [str(voices["alice"][2]) if a == "FILE" else a for a in args]
    assert_error(cli(*args), "voicebank init")
    assert not cli.db.exists()


def test_no_bank_yet_enroll(cli, voices):
    assert_error(cli("enroll", "alice", voices["alice"][0]), "voicebank init")
    assert not cli.db.exists()


@pytest.mark.parametrize("meta", ["employee_id", "=42"])
def test_bad_meta(initialized, voices, meta):
    assert_error(initialized("enroll", "alice", voices["alice"][0], "--meta", meta), meta)
    assert json.loads(ok(initialized("list", "--json")).stdout) == []


def test_invalid_name(initialized, voices):
    assert_error(initialized("enroll", "x" * 300, voices["alice"][0]), "at most 200 characters")


# -- values past what the machine holds: one error, never a traceback ---------------------------------

def usage_error(result: Result, *words: str) -> str:
    """click's refusal of an option's value: exit code 2, its `Error: ...` line last on stderr."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and result.stdout == ""
    last = result.stderr.splitlines()[-1]
    assert last.startswith("Error: "), result.stderr
    for word in words:
        assert word in last, (word, last)
    return last


@pytest.mark.parametrize("limit", ["1e30", str(10**30), str(2**63)])
def test_an_audit_limit_past_the_largest_sql_integer_is_refused(initialized, limit):
    usage_error(initialized("audit", "--limit", limit), "Invalid value for '--limit'")
    assert ok(initialized("audit", "--limit", 2**63 - 1)).stdout == "No decisions recorded.\n"


@pytest.mark.parametrize("option, value, words", [
    ("--max-upload-mb", "1e308", ["Error: --max-upload-mb is more than 0 and at most 1048576 (a TiB), not 1e+308."]),
    ("--max-upload-mb", "inf", ["at most 1048576 (a TiB), not inf."]),
    ("--max-upload-mb", "nan", ["at most 1048576 (a TiB), not nan."]),
    ("--max-seconds", "1e308", ["Invalid value for '--max-seconds'", "0<x<=86400"]),
    ("--max-seconds", "nan", ["Invalid value for '--max-seconds'", "nan is not a number."]),
    ("--live-sessions", "0", ["Invalid value for '--live-sessions'", "x>=1"]),
    ("--live-sessions", "two", ["Invalid value for '--live-sessions'", "'two' is not a valid integer"]),
    ("--live-max-seconds", "1e308", ["Invalid value for '--live-max-seconds'", "0<x<=86400"]),
    ("--live-max-seconds", "nan", ["Invalid value for '--live-max-seconds'", "nan is not a number."]),
    ("--live-idle-seconds", "0", ["Invalid value for '--live-idle-seconds'", "0<x<=86400"]),
    ("--live-idle-seconds", "inf", ["Invalid value for '--live-idle-seconds'", "0<x<=86400"]),
])
def test_serve_refuses_limits_that_are_no_size(initialized, monkeypatch, option, value, words):
    import voicebank.server

    def never(*_args, **_kwargs):
        raise AssertionError("the server started")

    monkeypatch.setattr(voicebank.server, "serve", never)
    result = initialized("serve", option, value)
    if option == "--max-upload-mb":
        assert_error(result, *words)
    else:
        usage_error(result, *words)


def test_serve_live_limits_come_from_the_options_over_the_environment(initialized, monkeypatch):
    import voicebank.server
    from voicebank.server.live import LiveLimits

    served = []
    monkeypatch.setattr(voicebank.server, "serve", lambda app, *_args: served.append(app.state.live))
    monkeypatch.setenv("VOICEBANK_LIVE_SESSIONS", "3")
    monkeypatch.setenv("VOICEBANK_LIVE_IDLE_SECONDS", "7")
    ok(initialized("serve", "--live-sessions", "2", "--live-max-seconds", "60"))
    assert served == [LiveLimits(sessions=2, max_seconds=60.0, idle_seconds=7.0)]
    monkeypatch.setenv("VOICEBANK_LIVE_SESSIONS", "0")
    usage_error(initialized("serve"), "Invalid value for '--live-sessions' (env var: 'VOICEBANK_LIVE_SESSIONS')", "x>=1")
    monkeypatch.delenv("VOICEBANK_LIVE_SESSIONS")
    monkeypatch.delenv("VOICEBANK_LIVE_IDLE_SECONDS")
    ok(initialized("serve"))
    assert served[-1] == LiveLimits()


def test_serve_on_a_port_in_use_or_a_host_not_this_machines_is_one_error_line(initialized, monkeypatch):
    """uvicorn said so in log lines after its startup (ERROR: [Errno 98] ... address already in use)
    and exited with 3: not the one `Error:` line and exit code 2 of every other refusal."""
    import socket

    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *_args, **_kwargs: pytest.fail("uvicorn was started"))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert_error(initialized("serve", "--port", str(port)),
                     f"cannot listen on 127.0.0.1:{port} (Address already in use)", "choose another --port")
    assert_error(initialized("serve", "--host", "999.1.1.1"), "cannot listen on 999.1.1.1:8000", "--host")


def test_serve_help_gives_the_live_limits_defaults(cli):
    from voicebank.server.live import LiveLimits

    text = " ".join(ok(cli("serve", "--help", model=False)).stdout.split("Options:")[1].split())
    defaults = LiveLimits()
    for option, value in (("--live-sessions", defaults.sessions), ("--live-max-seconds", defaults.max_seconds),
                          ("--live-idle-seconds", defaults.idle_seconds)):
        assert f"{option} " in text and f"[default: {value:g}]" in text.split(option, 1)[1].split("--", 1)[0]


@pytest.mark.embedder("tiny")
def test_device_cuda_on_a_machine_without_cuda_is_one_error_line(cli, monkeypatch):
    """As on a machine without a GPU, whatever this one has: torch's own refusal differs by build
    (an AssertionError, a driver error, nothing until the first tensor), so voicebank asks first."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    expected = ("Error: the model was asked to run on 'cuda' (--device or VOICEBANK_DEVICE), but this machine has no "
                "CUDA GPU that torch can use: use --device cpu or auto.")
    assert assert_error(cli("--device", "cuda", "init")) == expected
    if importlib.util.find_spec("resemblyzer") is not None:  # the other backend (an extra)
        assert assert_error(cli("--device", "cuda", "--model", "resemblyzer", "init", model=False)) == expected


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("args", [("audit",), ("audit", "--json"), ("list",), ("--help",)])
def test_output_that_cannot_be_written_is_one_error_line(initialized, args):
    """`voicebank audit > /dev/full`: every write fails with ENOSPC, as on a full disk."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBANK_")}
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "voicebank", "--db", str(initialized.db), *args], stdout=full,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.stderr == ("Error: cannot write the output (No space left on device): free space where it goes, or "
                           "send it elsewhere.\n")
    assert proc.returncode == 2


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("as_json", [(), ("--json",)])
def test_a_key_that_cannot_be_shown_is_not_kept(initialized, as_json):
    """`voicebank apikey create k --role reader > /dev/full`: nobody saw the key, so it must not
    sit in the bank valid and unknown; the name stays free for the next try."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBANK_")}
    create = [sys.executable, "-m", "voicebank", "--db", str(initialized.db), "apikey", "create", "k", "--role", "reader"]
    with open("/dev/full", "w") as full:
        proc = subprocess.run([*create, *as_json], stdout=full, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                              timeout=120)
    assert proc.stderr == ("Error: cannot write the new key (No space left on device), so it was not kept: send the "
                           "output somewhere it can be written, and create 'k' again.\n")
    assert proc.returncode == 2
    again = subprocess.run([*create, *as_json], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert again.returncode == 0 and "vb_" in again.stdout, again.stderr
    closed = subprocess.run(["bash", "-c", 'exec "$@" >&-', "-", *create[:-3], "k2", "--role", "reader", *as_json],
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO, timeout=120)  # stdout closed
    assert (closed.returncode, "so it was not kept" in closed.stderr, "Traceback" in closed.stderr) == (2, True, False)


# -- help ----------------------------------------------------------------------------------------------

def _walk(command: click.Command, path: tuple[str, ...] = ()):
    yield path
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from _walk(sub, path + (name,))


ALL_COMMANDS = list(_walk(main))


def test_the_contract_commands_exist():
    names = {path[0] for path in ALL_COMMANDS if path}
    assert {"init", "enroll", "add", "identify", "verify", "list", "show", "remove", "reindex", "check",
            "threshold", "db"} <= names
    assert {("db", "upgrade"), ("db", "current")} <= set(ALL_COMMANDS)


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "voicebank")
def test_help(path):
    runner = CliRunner()
    for flag in ("--help", "-h"):
        result = runner.invoke(main, [*path, flag])
        assert result.exit_code == 0, result.output
        assert "Example" in result.stdout
        assert result.stdout.startswith("Usage: ")
        assert result.stderr == ""



@pytest.mark.parametrize("value", ["-1", "nan", "soon"])
def test_max_lag_is_seconds_of_zero_or_more(value, tmp_path):
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "bank.db"), "--max-lag", value, "list"])
    assert result.exit_code == 2 and "--max-lag" in result.stderr, result.output

def test_a_path_longer_than_the_system_takes_is_one_error_line(tmp_path, model):
    """A name over 255 bytes makes ``Path.exists`` and ``is_dir`` raise (ENAMETOOLONG), which were
    asked outside every translation: tracebacks from --db, --model and `db current`."""
    long = tmp_path / ("n" * 300)
    cases = [(["--db", f"{long}.db", "list"], f"Error: cannot use the database file {long}.db: File name too long. "),
             (["--db", f"sqlite:///{long}.db", "--model", model, "init"], "Error: cannot use the database file "),
             (["--db", f"sqlite:///{long}.db", "db", "upgrade"], f"Error: cannot open {long}.db: "),
             (["--db", f"{long}.db", "db", "current"], f"Error: no database at {long}.db: "),
             (["--db", str(tmp_path / "bank.db"), "--model", str(long), "init"],
              f"Error: the model directory {long} cannot be read (File name too long). ")]
    for args, expected in cases:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and result.stderr.startswith(expected), (args, result.output, result.exception)
        assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_db_upgrade_on_a_database_that_is_down_says_so(tmp_path):
    """`db upgrade` and `db current` work on a bare engine, whose errors went out untranslated."""
    for command in ("upgrade", "current"):
        result = CliRunner().invoke(main, ["--db", "postgresql://nobody@127.0.0.1:1/voices", "db", command])
        assert result.exit_code == 2, (result.output, result.exception)
        assert result.stderr.startswith("Error: cannot use the database postgresql+psycopg://nobody@127.0.0.1:1/voices: "
                                        "connection failed"), result.stderr


# -- no torch for the light commands -----------------------------------------------------------------

LIGHT = r"""
import sys
from voicebank.cli import main
code = 0
try:
    main(sys.argv[1:], prog_name="voicebank", standalone_mode=False)
except SystemExit as exc:
    code = exc.code
print("EXIT", code)
print("HEAVY", sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""


def _light(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBANK_")}
    proc = subprocess.run([sys.executable, "-c", LIGHT, *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
@pytest.mark.embedder("tiny")  # other processes load the model
def test_light_commands_do_not_import_torch(populated, model, voices):
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, voicebank.cli; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"

    out = _light("--help")
    assert "Example" in out and "EXIT 0" in out and "HEAVY []" in out, out

    db = ["--db", str(populated.db), "--model", str(model)]
    out = _light(*db, "list")
    assert out.splitlines()[0].startswith("alice ")
    assert "EXIT 0" in out and "HEAVY []" in out, out

    out = _light(*db, "show", "bob")
    assert out.startswith("name: bob\n")
    assert "EXIT 0" in out and "HEAVY []" in out, out

    # The probe can tell: identify needs the model, so it does import torch.
    out = _light(*db, "identify", str(voices["bob"][2]))
    assert out.startswith("match: bob ")
    assert "EXIT 0" in out and "HEAVY ['torch', 'transformers']" in out, out


def test_calibration_text_counts_one_speaker_in_the_singular():
    from voicebank.cli.admin import calibration_text

    status = {"identify": {"threshold": 0.78, "method": "auto", "score": "cosine", "target": 0.01, "rule": "margin",
                           "gallery_at_calibration": 1, "gallery": 0, "expected_rate": 0.0, "outgrown": False}}
    text = calibration_text(status)
    assert "with 1 speaker;" in text and "with 1 speakers" not in text and "with 0 now: 0.00% expected" in text


_FREED = """
import ctypes, sys
import numpy as np
sys.path.insert(0, {root!r})
if {fixed}:
    from voicebank.cli.serve import return_large_blocks
    assert return_large_blocks()

def rss():
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) * 1024

big = np.ones(12 << 20, np.uint8); del big  # glibc then serves blocks of up to 12 MB from its heap
before = rss()
block = np.ones(6 << 20, np.uint8); del block
print(rss() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator only")
def test_serve_gives_large_freed_blocks_back_to_the_system():
    kept = lambda fixed: int(subprocess.run([sys.executable, "-c", _FREED.format(root=str(REPO), fixed=fixed)],  # noqa: E731
                                            env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")},
                                            check=True, capture_output=True, text=True).stdout)
    if kept(False) < 4 << 20:
        pytest.skip("this C library gives freed blocks back by itself")
    assert kept(True) < 1 << 20
