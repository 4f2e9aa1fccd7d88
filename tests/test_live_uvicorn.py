"""``/live`` through a real ``voicebank serve`` (uvicorn, in another process) rather than starlette's
TestClient: what a socket on the network sees of a session, of ``--live-sessions``, and of a
missing key. The client is websocket-client (``import websocket``), a plain RFC 6455 client."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
from conftest import SR, serving, synth_voice

pytest.importorskip("uvicorn", reason="the server extra (uvicorn) is not installed")
pytest.importorskip("resemblyzer", reason="the server runs in another process: it needs a real model (resemblyzer)")
websocket = pytest.importorskip("websocket", reason="websocket-client is not installed (pip install websocket-client)")

THRESHOLD = 0.82  # resemblyzer, as in test_console.py


@pytest.fixture(scope="module")
def served(tmp_path_factory, voices):
    """`voicebank serve --live-sessions 1` on a free port over a resemblyzer bank holding alice; its URL and a reader key."""
    from voicebank import VoiceBank

    db = tmp_path_factory.mktemp("live-bank") / "bank.db"
    with VoiceBank.open(db, "resemblyzer", create=True, threshold=THRESHOLD, identify_rule="best") as bank:
        bank.enroll("alice", voices["alice"][:2])
        key = bank.api_keys.create("desk", "reader")[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBANK_")}
    with serving(["--db", str(db), "serve", "--host", "127.0.0.1", "--port", "0", "--live-sessions", "1",
                  "--live-idle-seconds", "30", "--live-max-seconds", "60"], env) as url:
        yield url.replace("http://", "ws://") + "/live", key


def until_closed(ws) -> tuple[list[dict], int]:
    """Every JSON text frame until the server's close frame, and the close code."""
    frames = []
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return frames, struct.unpack("!H", data[:2])[0]
        if opcode == websocket.ABNF.OPCODE_TEXT:
            frames.append(json.loads(data))


def test_a_session_decides_and_a_second_beyond_live_sessions_is_refused_with_503(served):
    url, key = served
    auth = [f"Authorization: Bearer {key}"]
    ws = websocket.create_connection(f"{url}?name=alice&rate={SR}", header=auth, timeout=120)
    try:
        assert json.loads(ws.recv()) == {"event": "ready", "name": "alice", "rate": SR}
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:  # --live-sessions 1: this one is open
            websocket.create_connection(f"{url}?name=alice", header=auth, timeout=30)
        assert refused.value.status_code == 503
        assert "1 live sessions open" in json.loads(refused.value.resp_body)["error"]
        samples = np.round(synth_voice(120.0, seconds=4.0, seed=11) * 32767).astype("<i2").tobytes()
        for at in range(0, len(samples), SR // 2):  # quarter-second frames (2 bytes a sample)
            ws.send_binary(samples[at: at + SR // 2])
        ws.send("end")
        frames, code = until_closed(ws)
    finally:
        ws.close()
    assert code == 1000
    final = frames[-1]  # alice's own voice (another take), so accepted: 0.89 against 0.82 when written
    assert (final["event"], final["name"], final["accepted"]) == ("final", "alice", True), frames
    ws = websocket.create_connection(f"{url}?name=alice", header=auth, timeout=30)  # the slot is free again
    try:
        assert json.loads(ws.recv())["event"] == "ready"
    finally:
        ws.close()


def test_no_key_in_the_header_and_a_first_message_that_is_none_is_a_401_frame_and_close_1008(served):
    url, _ = served
    ws = websocket.create_connection(url, timeout=30)
    try:
        ws.send_binary(b"\0\0" * 1600)  # audio before any key
        frames, code = until_closed(ws)
    finally:
        ws.close()
    assert code == 1008
    assert len(frames) == 1 and frames[0]["status"] == 401 and "no API key" in frames[0]["error"]


def test_a_bad_key_in_the_header_is_refused_with_401_at_the_handshake(served):
    url, _ = served
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(url, header=["Authorization: Bearer vb_nonsense"], timeout=30)
    assert refused.value.status_code == 401
