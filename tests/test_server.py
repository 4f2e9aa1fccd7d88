"""The HTTP API, served by a real uvicorn on 127.0.0.1 (a free port) and spoken to with httpx: every
endpoint, API-key authentication and roles, oversized and malformed uploads, nothing half-enrolled,
concurrent identification (batched, with the right answers) and a /health that stays fast."""

from __future__ import annotations

import io
import os
import re
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from conftest import SR, TINY_THRESHOLD, model_of, serving, synth_voice, table_dump
from voicebank import VoiceBank
from voicebank.cli import main
from voicebank.embedding import load_embedder
from voicebank.errors import EmptyBankError
from voicebank.server import create_app, open_bank, serve_in_thread
from voicebank.server.errors import status_for

# The server's logic does not depend on the model: the fake embedder (conftest), except where a
# test starts another process.
pytestmark = [pytest.mark.embedder("fake"), pytest.mark.usefixtures("remembered_vad")]

THREE = ("alice", "bob", "carol")
MAX_SECONDS = 10.0


class Gate:
    """An embedder passing calls to ``inner``, that waits while ``open`` is clear; records batch sizes."""

    def __init__(self, inner):
        self.inner, self.source = inner, inner.source
        self.open = threading.Event()
        self.open.set()
        self.calls: list[int] = []

    model_id = property(lambda self: self.inner.model_id)
    sample_rate = property(lambda self: self.inner.sample_rate)
    dimension = property(lambda self: self.inner.dimension)

    def embed(self, waveforms):
        assert self.open.wait(timeout=60), "the test never opened the gate"
        self.calls.append(len(waveforms))
        return self.inner.embed(waveforms)


@pytest.fixture(scope="module")
def server(request, tmp_path_factory, voices):
    """alice, bob and carol enrolled from recordings [0, 1]; keys ops (admin), frontdesk (reader),
    old (revoked); served with a 1 MB body cap and a 10 s recording cap."""
    db = tmp_path_factory.mktemp("served") / "bank.db"
    model = model_of(request)
    with VoiceBank.open(db, str(model), create=True, threshold=TINY_THRESHOLD, identify_rule="best") as bank:
        for name in THREE:
            bank.enroll(name, voices[name][:2], metadata={"team": name.upper()})
        keys = {name: bank.api_keys.create(name, role)[1]
                for name, role in (("ops", "admin"), ("frontdesk", "reader"), ("old", "reader"))}
        bank.api_keys.revoke("old")
    gate = Gate(load_embedder(str(model)))
    with open_bank(db, gate, max_seconds=MAX_SECONDS) as bank:
        with serve_in_thread(create_app(bank, max_upload_mb=1, workers=32)) as url:
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
            with httpx.Client(base_url=url, timeout=60) as client:
                yield SimpleNamespace(url=url, db=db, bank=bank, gate=gate, keys=keys, client=client)


def auth(server, key: str = "frontdesk") -> dict[str, str]:
    return {"Authorization": f"Bearer {server.keys[key]}"}


def upload(path: Path, field: str = "file") -> tuple[str, tuple[str, bytes, str]]:
    return field, (path.name, path.read_bytes(), "audio/wav")


def wav_bytes(samples: np.ndarray) -> bytes:
    out = io.BytesIO()
    sf.write(out, samples, SR, format="WAV")
    return out.getvalue()


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and "Traceback" not in body["error"]
    return body["error"]


def identify(server, path: Path, key: str = "frontdesk", **data) -> httpx.Response:
    return server.client.post("/identify", files=[upload(path)], data=data, headers=auth(server, key))


def last_audit(db: Path) -> dict:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return dict(con.execute("select * from audit order by id desc limit 1").fetchone())
    finally:
        con.close()


# -- the service ---------------------------------------------------------------------------------

def test_health_needs_no_key(server):
    response = server.client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": "0.1.0", "model_id": server.bank.model_id, "in_flight": 0,
                               "replica": False}


def test_openapi_and_docs(server):
    spec = server.client.get("/openapi.json").json()
    assert {"/health", "/speakers", "/speakers/{name}", "/speakers/{name}/recordings", "/identify", "/verify"} <= set(spec["paths"])
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert spec["paths"]["/identify"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "multipart/form-data" in spec["paths"]["/speakers"]["post"]["requestBody"]["content"]
    docs = server.client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


# -- authentication ------------------------------------------------------------------------------

ENDPOINTS = [
    ("GET", "/speakers"), ("GET", "/speakers/alice"), ("POST", "/speakers"), ("POST", "/speakers/alice/recordings"),
    ("DELETE", "/speakers/alice"), ("POST", "/identify"), ("POST", "/verify"),
]


@pytest.mark.parametrize("method, path", ENDPOINTS)
@pytest.mark.parametrize("header, message", [
    (None, "missing API key"),
    ("Bearer vb_nottherightkeyatallnotatall", "invalid or revoked API key"),
    ("Bearer", "missing API key"),
    ("Basic b3BzOm9wcw==", "missing API key"),
    ("revoked", "invalid or revoked API key"),
])
def test_missing_or_wrong_key_is_401(server, method, path, header, message):
    if header == "revoked":
        header = f"Bearer {server.keys['old']}"
    before = table_dump(server.db)
    response = server.client.request(method, path, headers={"Authorization": header} if header else {})
    assert error_of(response, 401).startswith(message)
    assert response.headers["www-authenticate"] == "Bearer"
    assert table_dump(server.db) == before


CHANGES = [("POST", "/speakers"), ("POST", "/speakers/alice/recordings"), ("DELETE", "/speakers/alice")]


@pytest.mark.parametrize("method, path", CHANGES)
def test_a_reader_cannot_change_the_bank(server, voices, method, path):
    before = table_dump(server.db)
    files = [upload(voices["dave"][0], "files"), upload(voices["dave"][1], "files")] if method == "POST" else None
    data = {"name": "dave"} if path == "/speakers" else None
    response = server.client.request(method, path, files=files, data=data, headers=auth(server))
    assert error_of(response, 403) == "the API key 'frontdesk' is a reader key; this needs an admin key."
    assert table_dump(server.db) == before


# -- reading -------------------------------------------------------------------------------------

def test_list_and_show(server):
    listed = server.client.get("/speakers", headers=auth(server))
    assert listed.status_code == 200
    assert listed.json() == [s.to_dict() for s in server.bank.speakers()]
    assert [s["name"] for s in listed.json()][:3] == list(THREE)
    shown = server.client.get("/speakers/alice", headers=auth(server))
    assert shown.status_code == 200 and shown.json() == server.bank.speaker("alice").to_dict()
    assert shown.json()["metadata"] == {"team": "ALICE"}


def test_show_an_unknown_speaker_is_404(server):
    message = error_of(server.client.get("/speakers/nobody", headers=auth(server)), 404)
    assert message == "no speaker named 'nobody' is enrolled (`voicebank list` shows who is)."


# -- decisions -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [*THREE, "stranger"])
def test_identify(server, voices, name):
    response = identify(server, voices[name][2])
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"match", "candidates", "threshold", "threshold_kind", "decision", "calibration", "channel",
                         "speech_seconds"}
    assert body["threshold"] == TINY_THRESHOLD and body["threshold_kind"] == "identify"
    assert body["channel"]["decided"] == body["channel"]["heard"]["channel"] == "wideband"
    assert (body["match"] or {}).get("name") == (None if name == "stranger" else name)
    expected = server.bank.identify(voices[name][2]).to_dict()  # the CLI's --json shape and values
    assert body["match"] == expected["match"]
    assert [c["name"] for c in body["candidates"]] == [c["name"] for c in expected["candidates"]]
    assert np.allclose([c["score"] for c in body["candidates"]], [c["score"] for c in expected["candidates"]], atol=1e-5)


def test_identify_top_k(server, voices):
    assert len(identify(server, voices["alice"][2], top_k="2").json()["candidates"]) == 2


def test_verify(server, voices):
    files = [upload(voices["alice"][2])]
    accepted = server.client.post("/verify", data={"name": "alice"}, files=files, headers=auth(server))
    assert accepted.status_code == 200
    assert set(accepted.json()) == {"name", "score", "threshold", "accepted", "threshold_kind", "channel",
                                    "speech_seconds"}
    assert accepted.json()["channel"]["decided"] == "wideband"
    assert accepted.json()["accepted"] is True and accepted.json()["name"] == "alice"
    rejected = server.client.post("/verify", data={"name": "alice"}, files=[upload(voices["bob"][2])], headers=auth(server))
    assert rejected.status_code == 200 and rejected.json()["accepted"] is False
    unknown = server.client.post("/verify", data={"name": "nobody"}, files=files, headers=auth(server))
    assert error_of(unknown, 404).startswith("no speaker named 'nobody'")


@pytest.mark.parametrize("key", ["frontdesk", "ops"])
def test_the_audit_trail_names_the_key(server, voices, key):
    identify(server, voices["bob"][2], key=key)
    row = last_audit(server.db)
    assert (row["operation"], row["returned"], row["client"]) == ("identify", "bob", key)
    server.client.post("/verify", data={"name": "carol"}, files=[upload(voices["carol"][2])], headers=auth(server, key))
    row = last_audit(server.db)
    assert (row["operation"], row["claimed"], row["accepted"], row["client"]) == ("verify", "carol", 1, key)


# -- changing the bank ---------------------------------------------------------------------------

def test_enroll_add_and_remove(server, voices):
    admin = auth(server, "ops")
    created = server.client.post("/speakers", data={"name": "dave", "metadata": '{"team": "D", "level": 2}'},
                                 files=[upload(p, "files") for p in voices["dave"][:2]], headers=admin)
    assert created.status_code == 201, created.text
    assert created.json() == server.bank.speaker("dave").to_dict()
    assert created.json()["metadata"] == {"team": "D", "level": 2}
    assert [r["label"] for r in created.json()["recordings"]] == ["dave0.wav", "dave1.wav"]

    again = server.client.post("/speakers", data={"name": "dave"}, files=[upload(voices["dave"][2], "files")], headers=admin)
    assert "already enrolled" in error_of(again, 409)

    added = server.client.post("/speakers/dave/recordings", files=[upload(voices["dave"][2], "files")], headers=admin)
    assert added.status_code == 200 and len(added.json()["recordings"]) == 3
    twice = server.client.post("/speakers/dave/recordings", files=[upload(voices["dave"][2], "files")], headers=admin)
    assert "is already enrolled for dave" in error_of(twice, 409)
    assert identify(server, voices["dave"][2]).json()["match"]["name"] == "dave"

    removed = server.client.delete("/speakers/dave", headers=admin)
    assert removed.status_code == 200 and removed.json() == {"name": "dave", "removed": True}
    assert error_of(server.client.get("/speakers/dave", headers=admin), 404)
    assert error_of(server.client.delete("/speakers/dave", headers=admin), 404)
    assert error_of(server.client.post("/speakers/dave/recordings", files=[upload(voices["dave"][0], "files")], headers=admin), 404)


def test_names_with_slashes_and_unicode_work_in_paths(server, voices):
    admin = auth(server, "ops")
    name = "Zoë/ops team"
    files = [upload(p, "files") for p in voices["dave"][:2]]
    created = server.client.post("/speakers", data={"name": name}, files=files, headers=admin)
    assert created.status_code == 201, created.text
    try:
        for path in (f"/speakers/{name}", "/speakers/Zo%C3%AB%2Fops%20team"):
            assert server.client.get(path, headers=admin).json()["name"] == name
    finally:
        assert server.client.delete(f"/speakers/{name}", headers=admin).status_code == 200


# -- bad uploads ---------------------------------------------------------------------------------

def cli_error(tmp_path, monkeypatch, server, model, filename: str, data: bytes) -> str:
    """What `voicebank identify FILENAME` prints for the same bytes, after `Error: `."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / filename).write_bytes(data)
    result = CliRunner().invoke(main, ["--db", str(server.db), "--model", str(model), "identify", filename])
    assert result.exit_code == 2, result.output
    return result.stderr.strip().removeprefix("Error: ")


@pytest.mark.parametrize("filename, data", [
    ("junk.wav", b"this is not audio at all" * 50),
    ("empty.wav", b""),
    ("silent.wav", wav_bytes(np.zeros(SR * 2, dtype=np.float32))),
    ("short.wav", wav_bytes(synth_voice(200.0, seconds=0.3))),
])
def test_unusable_audio_gives_422_with_the_cli_message(server, tmp_path, monkeypatch, model, filename, data):
    before = table_dump(server.db)
    response = server.client.post("/identify", files={"file": (filename, data, "audio/wav")}, headers=auth(server))
    message = error_of(response, 422)
    assert message.startswith(f"{filename}: ")
    after = table_dump(server.db)
    # nothing stored but the audit row of the refusal, which says why (with the key's name)
    earlier = before.pop("audit")
    refused = [row for row in after.pop("audit") if row not in earlier]
    assert after == before and len(refused) == 1
    assert f"refused: {message}"[:255] in refused[0] and "frontdesk" in refused[0]
    assert message == cli_error(tmp_path, monkeypatch, server, model, filename, data)


def test_a_recording_over_the_duration_cap_is_422(server):
    data = wav_bytes(synth_voice(150.0, seconds=MAX_SECONDS + 2))
    assert len(data) < 1024 * 1024  # under the body cap: this is the duration cap speaking
    message = error_of(server.client.post("/identify", files={"file": ("long.wav", data)}, headers=auth(server)), 422)
    assert message == (f"long.wav: the recording is 12 s long, longer than the maximum of {MAX_SECONDS:g} s. "
                       "Cut it into shorter recordings.")


def test_nothing_is_half_enrolled(server, voices):
    before = table_dump(server.db)
    files = [upload(voices["dave"][0], "files"), ("files", ("bad.wav", b"garbage" * 100, "audio/wav"))]
    response = server.client.post("/speakers", data={"name": "erin"}, files=files, headers=auth(server, "ops"))
    assert error_of(response, 422).startswith("bad.wav: ")
    added = server.client.post("/speakers/alice/recordings", files=files, headers=auth(server, "ops"))
    assert error_of(added, 422).startswith("bad.wav: ")
    assert table_dump(server.db) == before
    assert error_of(server.client.get("/speakers/erin", headers=auth(server)), 404)


def big_enrollment(server) -> httpx.Request:
    noise = np.random.default_rng(0).standard_normal(SR * 40).astype(np.float32) * 0.1  # 1.3 MB as WAV
    return server.client.build_request("POST", "/speakers", data={"name": "erin"}, headers=auth(server, "ops"),
                                       files=[("files", ("big.wav", wav_bytes(noise), "audio/wav"))])


def test_an_oversized_body_is_413(server):
    before = table_dump(server.db)
    request = big_enrollment(server)
    assert int(request.headers["content-length"]) > 1024 * 1024
    message = error_of(server.client.send(request), 413)
    assert message == "the request body is larger than the server's limit of 1 MB (--max-upload-mb)."
    assert table_dump(server.db) == before


def test_an_oversized_streamed_body_is_413(server):
    before = table_dump(server.db)
    request = big_enrollment(server)
    body = request.read()

    def chunks():
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
    response = server.client.post("/speakers", content=chunks(), headers=headers)
    assert "content-length" not in response.request.headers
    assert error_of(response, 413).startswith("the request body is larger than the server's limit")
    assert table_dump(server.db) == before


@pytest.mark.parametrize("path, data, files, message", [
    ("/identify", {}, None, "send multipart/form-data with a `file` part holding the recording, not a body without"),
    ("/identify", {"top_k": "0"}, "alice", "top-k is a whole number from 1 to 1000, not 0."),
    ("/identify", {"top_k": "many"}, "alice", "top_k: "),
    ("/verify", {}, "alice", "name: Field required"),
    ("/speakers", {"name": "erin"}, None, "send multipart/form-data with a `files` part holding the recording, not "
                                          "application/x-www-form-urlencoded."),
    ("/speakers", {}, "alice", "name: Field required"),
    ("/speakers", {"name": "erin", "metadata": "{not json"}, "alice", "metadata must be a JSON object"),
    ("/speakers", {"name": "erin", "metadata": "[1, 2]"}, "alice", 'metadata must be a JSON object, e.g. {"team": "A"}, not list.'),
    ("/speakers", {"name": "x" * 300}, "alice", "a speaker name is at most 200 characters; this one has 300."),
])
def test_malformed_requests_are_422(server, voices, path, data, files, message):
    before = table_dump(server.db)
    field = "files" if path == "/speakers" else "file"
    files = [upload(voices[files][2], field)] if files else None
    response = server.client.post(path, data=data, files=files, headers=auth(server, "ops"))
    assert message in error_of(response, 422)
    assert table_dump(server.db) == before


@pytest.mark.parametrize("content_type, body", [("application/json", b'{"file": "alice.wav"}'),
                                                ("audio/flac", b"fLaC\0\0\0\x22"), (None, b"RIFF....WAVE")])
def test_an_upload_that_is_not_a_form_is_422_saying_to_send_one(server, content_type, body):
    headers = {**auth(server), **({"Content-Type": content_type} if content_type else {})}
    response = server.client.post("/identify", content=body, headers=headers)
    sent = content_type or "a body without a Content-Type"
    assert error_of(response, 422) == f"send multipart/form-data with a `file` part holding the recording, not {sent}."


def form(*parts: tuple[str, bytes, str | None], end: bool = True) -> tuple[bytes, dict[str, str]]:
    """A multipart body by hand, for what clients would not send: (field, bytes, file name or None)."""
    body = b""
    for field, data, filename in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--XyZ\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return body + (b"--XyZ--\r\n" if end else b""), {"Content-Type": "multipart/form-data; boundary=XyZ"}


def test_a_form_cut_short_twice_named_or_not_utf8_is_422_saying_which(server, voices):
    audio = voices["alice"][2].read_bytes()
    admin = auth(server, "ops")
    cases = [
        ("/identify", [("file", audio, "a.wav")], False, "the form data is incomplete"),
        ("/verify", [("name", b"bob", None), ("name", b"alice", None), ("file", audio, "a.wav")], True,
         "the form gives name 2 times: give name once."),
        ("/speakers", [("name", b"erin", None), ("name", b"fay", None), ("files", audio, "a.wav")], True,
         "the form gives name 2 times: give name once."),
        ("/verify", [("name", b"\xff\xfe", None), ("file", audio, "a.wav")], True,
         "the name is not valid UTF-8: send the form's text fields as UTF-8."),
        ("/identify", [("file", voices["bob"][2].read_bytes(), "b.wav"), ("file", audio, "a.wav")], True,
         "the form gives file 2 times: give file once."),  # which would be decided on?
    ]
    before = table_dump(server.db)
    for path, parts, end, message in cases:
        body, headers = form(*parts, end=end)
        assert message in error_of(server.client.post(path, content=body, headers={**headers, **admin}), 422), path
    assert table_dump(server.db) == before
    body, headers = form(("name", "alice".encode(), None), ("file", audio, "a.wav"))  # the same form, whole: fine
    assert server.client.post("/verify", content=body, headers={**headers, **admin}).status_code == 200
    body, headers = form(("name", "Zoë".encode(), None), ("file", audio, "a.wav"))
    assert "no speaker named 'Zoë'" in error_of(server.client.post("/verify", content=body, headers={**headers, **admin}), 404)


def test_a_multipart_boundary_longer_than_the_parser_takes_is_400_not_500(server, voices):
    """python-multipart refuses a boundary of more than 256 characters when its parser is built,
    which the form check did outside every handler: a 500."""
    boundary = "x" * 300
    body = f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n".encode()
    body += voices["alice"][2].read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    headers = {**auth(server), "Content-Type": f"multipart/form-data; boundary={boundary}"}
    response = server.client.post("/identify", content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"].startswith("the form's multipart boundary cannot be used (Boundary length 300 "
                                               "exceeds maximum of 256): send a boundary of at most 70 characters")


def test_the_browser_s_icon_needs_no_key_and_logs_no_refusal(server, caplog):
    """Every page load asks for /favicon.ico without a key: a 401 there logged a refused-key warning
    and showed a red error in the browser's console on every visit."""
    with caplog.at_level("WARNING"):
        got = server.client.get("/favicon.ico")
    assert got.status_code == 200 and got.headers["content-type"] == "image/png" and got.content[:4] == b"\x89PNG"
    assert "refused" not in caplog.text


@pytest.mark.parametrize("path", ["/", "/docs", "/health", "/speakers", "/speakers/alice", "/me", "/audit",
                                  "/calibration", "/openapi.json"])
def test_head_answers_as_get_without_a_body(server, path):
    got = server.client.get(path, headers=auth(server, "ops"))
    head = server.client.head(path, headers=auth(server, "ops"))
    assert (head.status_code, head.headers.get("content-type")) == (got.status_code, got.headers.get("content-type"))
    assert got.status_code == 200 and got.content and head.content == b""
    assert server.client.head(path).status_code == server.client.get(path).status_code  # the key is still needed


def test_unknown_paths_are_404_json(server):
    assert error_of(server.client.get("/nothing", headers=auth(server)), 404) == "Not Found"


def test_an_unexpected_error_is_500_without_a_traceback(server, monkeypatch):
    def broken():
        raise RuntimeError("database on fire")

    monkeypatch.setattr(server.bank, "speakers", broken)
    message = error_of(server.client.get("/speakers", headers=auth(server)), 500)
    assert message == "internal server error; the server log has the details."


def test_a_replica_too_far_behind_its_primary_is_503():  # tests/test_replication.py: through a real standby
    from voicebank.errors import StaleReplicaError

    assert status_for(StaleReplicaError("behind")) == 503


def test_empty_bank_is_409(tmp_path, model, voices):
    assert status_for(EmptyBankError("x")) == 409
    db = tmp_path / "empty.db"
    with VoiceBank.open(db, str(model), create=True, threshold=TINY_THRESHOLD, identify_rule="best") as bank:
        _, key = bank.api_keys.create("r", "reader")
    with open_bank(db) as bank, serve_in_thread(create_app(bank)) as url:
        response = httpx.post(f"{url}/identify", files=[upload(voices["alice"][2])],
                              headers={"Authorization": f"Bearer {key}"}, timeout=60)
    assert error_of(response, 409).startswith("the bank has no speakers yet")


# -- concurrency ---------------------------------------------------------------------------------

def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_20_concurrent_identify_requests_are_batched_and_right(server, voices):
    names = [*THREE, "stranger"] * 5
    keys = ["frontdesk", "ops"] * 10
    server.gate.open.clear()  # hold the model so that all 20 requests are waiting for it together
    server.gate.calls.clear()
    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            futures = [pool.submit(identify, server, voices[n][2], k) for n, k in zip(names, keys)]
            wait_for(lambda: server.client.get("/health").json()["in_flight"] == 20)
            time.sleep(0.5)  # the requests have decoded their audio and queued for the model
            server.gate.open.set()
            responses = [f.result(timeout=120) for f in futures]
    finally:
        server.gate.open.set()
    assert [r.status_code for r in responses] == [200] * 20
    assert [(r.json()["match"] or {}).get("name") for r in responses] == [None if n == "stranger" else n for n in names]
    alone = {n: identify(server, voices[n][2]).json() for n in set(names)}
    for name, response in zip(names, responses):
        got = [c["score"] for c in response.json()["candidates"]]
        assert np.allclose(got, [c["score"] for c in alone[name]["candidates"]], atol=1e-5)
    assert sum(server.gate.calls[:-4]) == 20 and len(server.gate.calls) - 4 <= 3, server.gate.calls  # batched


class Doubler:
    """A fake embedder: each row is (mean, length) of its waveform; waveforms holding NaN fail."""

    source, model_id, sample_rate, dimension = "fake", "fake:1", SR, 2

    def __init__(self):
        self.calls: list[int] = []

    def embed(self, waveforms):
        self.calls.append(len(waveforms))
        if any(np.isnan(w).any() for w in waveforms):
            raise ValueError("NaN in a waveform")
        return np.array([[float(np.mean(w)), float(len(w))] for w in waveforms], dtype=np.float32).reshape(-1, 2)


def test_batching_embedder_keeps_each_callers_answer_and_error():
    from voicebank.server.batching import BatchingEmbedder

    inner = Doubler()
    embedder = BatchingEmbedder(inner, max_batch=8)
    inputs = [[np.full(10 + i, float(i))] * (1 + i % 3) for i in range(24)]
    inputs[5] = [np.full(4, np.nan)]
    try:
        with ThreadPoolExecutor(max_workers=24) as pool:
            futures = [pool.submit(embedder.embed, waves) for waves in inputs]
            outcomes = [f.exception(timeout=30) or f.result() for f in futures]
    finally:
        embedder.close()
    for i, (waves, outcome) in enumerate(zip(inputs, outcomes)):
        if i == 5:
            assert isinstance(outcome, ValueError)
        else:
            assert outcome.tolist() == [[float(i), float(10 + i)]] * len(waves)
    assert embedder.dimension == 2 and embedder.model_id == "fake:1" and embedder.source == "fake"
    assert embedder.embed([]).shape == (0, 2)


def test_health_stays_fast_while_the_model_is_busy(server, voices):
    server.gate.open.clear()
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(identify, server, voices["alice"][2]) for _ in range(4)]
            wait_for(lambda: server.client.get("/health").json()["in_flight"] == 4)
            for _ in range(5):
                started = time.perf_counter()
                health = server.client.get("/health")
                assert health.status_code == 200 and health.json()["in_flight"] == 4
                assert time.perf_counter() - started < 0.5
            assert not any(f.done() for f in futures)
            server.gate.open.set()
            assert all(f.result(timeout=60).json()["match"]["name"] == "alice" for f in futures)
    finally:
        server.gate.open.set()


# -- `voicebank serve` ---------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.embedder("tiny")  # the server runs in another process
def test_voicebank_serve(tmp_path, model, voices):
    db = tmp_path / "cli.db"
    with VoiceBank.open(db, str(model), create=True, threshold=TINY_THRESHOLD, identify_rule="best") as bank:
        bank.enroll("alice", voices["alice"][:2])
    runner = CliRunner()
    key = runner.invoke(main, ["--db", str(db), "apikey", "create", "ci", "--role", "reader"]).stdout.strip()
    args = ["--db", str(db), "--model", str(model), "serve", "--host", "127.0.0.1", "--port", "0",
            "--max-upload-mb", "2", "--max-seconds", "5"]
    with serving(args, dict(os.environ), timeout=120) as url:  # and it exits with 0 on SIGINT
        assert httpx.get(f"{url}/health", timeout=30).json()["status"] == "ok"
        headers = {"Authorization": f"Bearer {key}"}
        response = httpx.post(f"{url}/identify", files=[upload(voices["alice"][2])], headers=headers, timeout=60)
        assert response.json()["match"]["name"] == "alice"
        long = wav_bytes(synth_voice(150.0, seconds=6))
        response = httpx.post(f"{url}/identify", files={"file": ("l.wav", long)}, headers=headers, timeout=60)
        assert "maximum of 5 s" in error_of(response, 422)
    assert last_audit(db)["client"] == "ci"


def test_serve_without_a_bank_is_an_error(tmp_path):
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "none.db"), "serve", "--port", "0"])
    assert result.exit_code == 2 and result.stderr.startswith("Error: no voicebank at ")


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_database_file_deleted_or_replaced_under_the_server_is_503_not_a_lost_write(tmp_path, model, voices, how):
    db = tmp_path / "bank.db"
    with VoiceBank.open(db, str(model), create=True, threshold=TINY_THRESHOLD, identify_rule="best") as bank:
        bank.enroll("alice", voices["alice"][:2])
        key = bank.api_keys.create("ops", "admin")[1]
    with open_bank(db, Gate(load_embedder(str(model))), max_seconds=MAX_SECONDS) as bank:
        with serve_in_thread(create_app(bank, max_upload_mb=1, workers=2)) as url, \
                httpx.Client(base_url=url, timeout=60) as client:
            headers = {"Authorization": f"Bearer {key}"}
            assert client.get("/speakers", headers=headers).status_code == 200
            for leftover in (db, db.with_name("bank.db-wal"), db.with_name("bank.db-shm")):
                leftover.unlink(missing_ok=True)
            if how == "replaced":
                db.write_bytes(b"")  # another file at the same path
            created = client.post("/speakers", data={"name": "bob"}, headers=headers,
                                  files=[upload(p, "files") for p in voices["bob"][:2]])
            message = error_of(created, 503)
            assert f"the database file {db} was {'deleted' if how == 'deleted' else 'replaced by another file'}" in message
            assert "nothing was written" in message


def test_stalled_clients_are_disconnected_and_refusals_are_logged_without_the_key(tmp_path, model, voices, caplog):
    """A client that connects and sends nothing, stops mid-header or mid-body is cut off after the
    read timeout; a request with a wrong key is logged at WARNING with the client's address, and
    neither the key nor a query string reaches the log."""
    import logging
    import socket
    import time

    from voicebank.server.runner import NoQueryStrings

    db = tmp_path / "bank.db"
    with VoiceBank.open(db, str(model), create=True, threshold=TINY_THRESHOLD, identify_rule="best") as bank:
        bank.enroll("alice", voices["alice"][:2])
    secret = "vb_not-a-real-key-but-secret"
    with open_bank(db, Gate(load_embedder(str(model))), max_seconds=MAX_SECONDS) as bank, \
            serve_in_thread(create_app(bank), read_timeout=1.0) as url, caplog.at_level(logging.INFO):
        host, port = url.removeprefix("http://").split(":")
        stalls = [b"", b"POST /identify HTTP/1.1\r\nHost: x\r\nAuthor",
                  b"POST /identify HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nAuthorization: Bearer x\r\n\r\nab"]
        for partial in stalls:
            with socket.create_connection((host, int(port)), timeout=10) as conn:
                conn.sendall(partial)
                start = time.monotonic()
                data = conn.recv(65536)
                while data:  # a response (e.g. 401 before the body) may come first; then the close
                    data = conn.recv(65536)
                assert time.monotonic() - start < 8, partial
        # a head sent a byte at a time, each within the timeout: the deadline is the whole head's
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            start, closed = time.monotonic(), False
            for byte in b"GET /speakers HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40:
                try:
                    conn.sendall(bytes([byte]))
                except OSError:  # reset by the server
                    closed = True
                    break
                time.sleep(0.25)
                if time.monotonic() - start > 6:
                    break
            if not closed:
                conn.settimeout(5)
                try:
                    closed = conn.recv(65536) == b""
                except OSError:
                    closed = True
            assert closed and time.monotonic() - start < 6, "a dripped head kept the connection open"
        with httpx.Client(base_url=url) as client:
            refused = client.get(f"/speakers?key={secret}", headers={"Authorization": f"Bearer {secret}"})
        assert refused.status_code == 401
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(m.startswith("refused GET /speakers from 127.0.0.1:") and "invalid or revoked" in m for m in warnings)
    assert any("no complete request within 1 s" in m for m in warnings)
    server_side = [r for r in caplog.records if r.name.startswith(("voicebank", "uvicorn"))]  # not httpx's own
    assert server_side and not [r.getMessage() for r in server_side if secret in r.getMessage()]
    line = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                             ("127.0.0.1:5", "GET", f"/speakers?key={secret}", "1.1", 401), None)
    NoQueryStrings().filter(line)
    assert secret not in line.getMessage() and "/speakers" in line.getMessage()


def test_a_body_dripped_a_byte_at_a_time_is_cut_off(tmp_path, model, voices, caplog):
    """Each byte of the body comes within the pause allowed, so only the body's own deadline (1 s
    more per MIN_BODY_RATE bytes) ends it: an authorised upload at 5 bytes a second cannot hold a
    connection for ever."""
    import logging
    import socket
    import time

    db = tmp_path / "bank.db"
    with VoiceBank.open(db, str(model), create=True, threshold=TINY_THRESHOLD, identify_rule="best") as bank:
        bank.enroll("alice", voices["alice"][:2])
        key = bank.api_keys.create("ops", "admin")[1]
    with open_bank(db, Gate(load_embedder(str(model))), max_seconds=MAX_SECONDS) as bank, \
            serve_in_thread(create_app(bank), read_timeout=1.0) as url, caplog.at_level(logging.INFO):
        host, port = url.removeprefix("http://").split(":")
        head = (f"POST /identify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: 100000\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\n\r\n").encode()
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(head)
            start, closed = time.monotonic(), False
            while time.monotonic() - start < 6:
                try:
                    conn.sendall(b"a")
                except OSError:  # reset by the server
                    closed = True
                    break
                time.sleep(0.2)
            assert closed and time.monotonic() - start < 6, "a dripped body kept the connection open"
    assert any("no complete request within 1 s" in r.getMessage() for r in caplog.records)


def test_a_database_down_while_the_key_is_looked_up_is_503_saying_so(server, monkeypatch):
    """The key is looked up before any route (in the middleware, outside the error handlers): the
    database failing there is the documented 503 with its message, not a 500."""
    from voicebank.apikeys import ApiKeys
    from voicebank.errors import DatabaseError

    def down(self, token):
        raise DatabaseError("cannot use the database postgresql://db.example/voices: connection refused; is it up?")

    monkeypatch.setattr(ApiKeys, "authenticate", down)
    for path in ("/speakers", "/audit"):
        answer = server.client.get(path, headers=auth(server, "ops"))
        assert "connection refused; is it up?" in error_of(answer, 503)
    monkeypatch.undo()
    assert server.client.get("/speakers", headers=auth(server, "ops")).status_code == 200


def test_ambiguous_requests_are_refused_not_guessed(server, voices):
    """Duplicated metadata keys, or two Authorization headers (proxies and clients disagree on
    which one counts): refused, not resolved by whichever comes last or first."""
    admin = auth(server, "ops")
    twice = server.client.post("/speakers", data={"name": "erin", "metadata": '{"a": 1, "a": 2}'},
                                files=[upload(voices["dave"][0], "files")], headers=admin)
    assert "gives the key 'a' more than once" in error_of(twice, 422)
    headers = [("Authorization", f"Bearer {server.keys['ops']}"), ("Authorization", "Bearer wrong")]
    assert error_of(server.client.get("/speakers", headers=headers), 401)


# -- the console's endpoints (issue 14): check, audit, thresholds, calibration dry-run ------------

def test_check_reports_each_take_and_stores_nothing(server, voices, tmp_path):
    quiet = tmp_path / "room.wav"  # a room with nobody speaking: faint noise, not silence
    quiet.write_bytes(wav_bytes(0.002 * np.random.default_rng(3).standard_normal(SR * 2).astype(np.float32)))
    before = table_dump(server.db)
    files = [upload(voices["dave"][0], "files"), upload(voices["dave"][1], "files"), upload(quiet, "files")]
    response = server.client.post("/check", files=files, headers=auth(server, "ops"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert table_dump(server.db) == before
    assert [r["label"] for r in body["recordings"]] == ["dave0.wav", "dave1.wav", "room.wav"]
    dave = body["recordings"][:2]
    assert all(r["usable"] and r["problems"] == [] and r["speech_s"] > 1.5 for r in dave)
    assert all(r["consistency"] > 0.999 for r in dave)  # alike: the same voice
    room = body["recordings"][2]
    assert not room["usable"] and "no speech detected" in room["problems"][0] and room["speech_s"] is None
    assert body["speech_s"] == pytest.approx(sum(r["speech_s"] for r in dave), abs=1e-3)
    assert body["needed_s"] == server.bank.limits.min_enroll_speech_seconds
    assert body["ready"] is False and body["duplicate_of"] is None and body["warnings"] == []


@pytest.fixture
def tiny_checks(server):
    """The enrollment checks at the random model's scale (as tests/test_quality.py sets them)."""
    server.bank.thresholds.set_enrollment_checks(TINY_THRESHOLD, TINY_THRESHOLD)
    yield
    server.bank.thresholds.set_enrollment_checks(reset=True)


def test_check_finds_the_voice_already_enrolled_and_a_take_already_stored(server, voices, tiny_checks):
    files = [upload(voices["alice"][2], "files"), upload(voices["bob"][0], "files")]
    body = server.client.post("/check", files=files, headers=auth(server, "ops")).json()
    assert body["recordings"][0]["usable"]
    assert body["recordings"][1]["problems"] == [
        "bob0.wav is already enrolled for bob (the same recording: the same file, or the same audio in another one); a recording belongs to one person."]
    assert body["duplicate_of"] == "alice" and "already matches alice" in body["warnings"][0]
    # against a named speaker: the take is alice's third, consistent with her stored two
    named = server.client.post("/check", files=[upload(voices["alice"][2], "files")], data={"name": "alice"},
                               headers=auth(server, "ops")).json()
    assert named["speaker"] == "alice" and named["recordings"][0]["consistency"] > 0.999
    assert named["duplicate_of"] is None and named["ready"] is True
    stored = sum(r.speech_s for r in server.bank.speaker("alice").recordings)
    assert named["speech_s"] == pytest.approx(stored + named["recordings"][0]["speech_s"], abs=1e-3)
    other = server.client.post("/check", files=[upload(voices["bob"][2], "files")], data={"name": "alice"},
                               headers=auth(server, "ops")).json()
    assert "does not sound like the other recordings" in other["recordings"][0]["problems"][0]


def test_check_is_admin_only_and_names_an_unknown_speaker(server, voices):
    files = [upload(voices["dave"][0], "files")]
    assert "needs an admin key" in error_of(server.client.post("/check", files=files, headers=auth(server)), 403)
    assert error_of(server.client.post("/check", files=files, data={"name": "nobody"}, headers=auth(server, "ops")),
                    404).startswith("no speaker named 'nobody'")
    assert error_of(server.client.post("/check", headers=auth(server, "ops")), 422).startswith(
        "send multipart/form-data with a `files` part")


def test_audit_trail_filters_and_pages(server, voices):
    assert server.client.post("/verify", files=[upload(voices["carol"][2])], data={"name": "carol"},
                              headers=auth(server, "ops")).json()["accepted"]
    assert identify(server, voices["carol"][2], key="ops").json()["match"]["name"] == "carol"
    page = server.client.get("/audit", params={"speaker": "carol", "client": "ops", "limit": 1},
                             headers=auth(server, "ops"))
    assert page.status_code == 200, page.text
    body = page.json()
    assert body["limit"] == 1 and body["offset"] == 0 and body["next_offset"] == 1
    newest = body["entries"][0]
    assert (newest["operation"], newest["returned"], newest["client"], newest["accepted"]) == ("identify", "carol", "ops", True)
    second = server.client.get("/audit", params={"speaker": "carol", "client": "ops", "limit": 1, "offset": 1},
                               headers=auth(server, "ops")).json()["entries"][0]
    assert (second["operation"], second["claimed"]) == ("verify", "carol") and second["at"] <= newest["at"]
    verifies = server.client.get("/audit", params={"operation": "verify", "limit": 1000}, headers=auth(server, "ops")).json()
    assert verifies["entries"] and {e["operation"] for e in verifies["entries"]} == {"verify"}
    assert verifies["next_offset"] is None
    ats = [e["at"] for e in verifies["entries"]]
    assert ats == sorted(ats, reverse=True)
    future = server.client.get("/audit", params={"since": "2999-01-01T00:00:00"}, headers=auth(server, "ops")).json()
    assert future["entries"] == []
    mixed = server.client.get("/audit", params={"since": "2000-01-01T00:00:00+02:00", "until": "2999-01-01T00:00:00",
                                                "speaker": "carol", "client": "ops"}, headers=auth(server, "ops"))
    assert [e["at"] for e in mixed.json()["entries"]][:2] == [newest["at"], second["at"]]
    assert "needs an admin key" in error_of(server.client.get("/audit", headers=auth(server)), 403)
    assert error_of(server.client.get("/audit", params={"operation": "enroll"}, headers=auth(server, "ops")),
                    422).startswith("operation:")
    assert error_of(server.client.get("/audit", params={"since": "2030-01-01", "until": "2020-01-01"},
                                      headers=auth(server, "ops")), 422) == "since must be before until."


@pytest.mark.parametrize("params, message", [
    ({"offset": 2**63}, "offset: Input should be less than or equal to 9223372036854775807"),
    ({"offset": 10**30}, "offset: Input should be less than or equal to 9223372036854775807"),
    ({"since": "0001-01-01T00:00:00+01:00"},
     "since 0001-01-01T00:00:00+01:00 falls outside the years 1 to 9999 in UTC: give a moment within them."),
    ({"until": "9999-12-31T23:59:59-01:00"},
     "until 9999-12-31T23:59:59-01:00 falls outside the years 1 to 9999 in UTC: give a moment within them."),
    ({"since": "0001-01-01", "until": "0001-01-01T00:30:00+01:00"},
     "until 0001-01-01T00:30:00+01:00 falls outside the years 1 to 9999 in UTC: give a moment within them."),
], ids=["offset-2^63", "offset-10^30", "since-year-1", "until-year-9999", "until-before-year-1"])
def test_audit_bounds_past_what_the_database_holds_are_422(server, params, message):
    """An offset past SQL's largest integer, or a moment with no UTC time in the years 1 to 9999,
    is the caller's mistake (422), not the server's (500)."""
    response = server.client.get("/audit", params=params, headers=auth(server, "ops"))
    assert error_of(response, 422) == message
    # the edges themselves are fine
    edge = server.client.get("/audit", params={"offset": 2**63 - 1, "since": "0001-01-01T00:00:00-01:00",
                                               "until": "9999-12-31T23:59:59+01:00"}, headers=auth(server, "ops"))
    assert edge.status_code == 200 and edge.json()["entries"] == [], edge.text


@pytest.mark.parametrize("key, role", [("ops", "admin"), ("frontdesk", "reader")])
def test_me_names_the_key_and_its_role(server, key, role):
    assert server.client.get("/me", headers=auth(server, key)).json() == {"name": key, "role": role}


def test_thresholds_say_what_they_promise(server):
    body = server.client.get("/calibration", headers=auth(server)).json()
    assert body["status"] == server.bank.thresholds.status()
    assert body["points"]["verify"]["threshold"] == TINY_THRESHOLD and body["points"]["identify"]["purpose"] == "identify"


def test_calibration_dry_run_measures_and_stores_nothing(server):
    before = table_dump(server.db)
    response = server.client.post("/calibration/dry-run", data={"far": "0.5", "unknown_rate": "0.5"},
                                  headers=auth(server, "ops"))
    assert table_dump(server.db) == before
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dry_run"] is True and body["source"] == "bank" and set(body["chosen"]) == {"verify", "identify"}
    assert body["trials"]["genuine"] > 0 and body["stored"]["verify"]["threshold"] == TINY_THRESHOLD
    assert body["chosen"]["verify"]["target"] == 0.5 and body["chosen"]["verify"]["method"] == "far"
    assert set(body["plots"]) == {"det", "identify"}
    assert all(p.startswith("data:image/png;base64,iVBOR") for p in body["plots"].values())  # PNG signatures
    # a rate the trials cannot support: calibrated at the rate they can, with what was asked beside it
    thin = server.client.post("/calibration/dry-run", data={"far": "0.0001"}, headers=auth(server, "ops"))
    assert thin.status_code == 200, thin.text
    verify = thin.json()["chosen"]["verify"]
    assert verify["asked"] == 0.0001 and verify["target"] == pytest.approx(2 / body["trials"]["impostor"])
    assert verify["upper"] > 0
    assert error_of(server.client.post("/calibration/dry-run", data={"far": "2"}, headers=auth(server, "ops")),
                    422).startswith("far:")
    assert "needs an admin key" in error_of(server.client.post("/calibration/dry-run", headers=auth(server)), 403)


def test_console_and_docs_are_served_from_this_origin_only(server):
    page = server.client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    docs = server.client.get("/docs")
    assert docs.status_code == 200 and "default-src 'self'" in docs.headers["content-security-policy"]
    for html in (page.text, docs.text):
        refs = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert refs, "the page loads nothing?"
        for ref in refs:
            assert "//" not in ref and not ref.startswith("/"), f"{ref} is not a same-origin relative URL"
            asset = server.client.get("/" + ref)  # the pages sit at the root
            assert asset.status_code == 200 and len(asset.content) > 100, ref
        assert "<script>" not in html  # no inline script: the CSP would refuse it
    assert server.client.get("/console/../speakers").status_code in (401, 404)  # no way round the key


def test_an_upload_is_read_when_its_recording_is_decoded_not_before():
    """An enrollment's takes stay where the form parser spooled them (on disk past 1 MB): each is
    read as the pipeline decodes it. Read into memory first, 784 MB of takes in one request took a
    server from 371 MB to 1.3 GB."""
    import asyncio
    import tempfile

    from starlette.datastructures import UploadFile

    from voicebank.audio import describe
    from voicebank.server.calls import recording

    spooled = tempfile.SpooledTemporaryFile(max_size=1 << 20)
    spooled.write(b"RIFF" + bytes(3 << 20))  # 3 MB: on disk
    spooled.seek(0)
    upload = UploadFile(spooled, filename="take\x07.wav")
    given = asyncio.run(recording(upload))
    assert spooled.tell() == 0 and spooled._rolled  # nothing read yet, and not in memory
    assert describe(given) == "take\\x07.wav"  # its label, printable
    assert given.read(4) == b"RIFF" and len(given.read()) == 3 << 20
