"""``/live``: the WebSocket over ``bank.listen``, through starlette's TestClient, on the tone bank of
test_live.py (tones as voices, a fake detector): the frames sent back are the library's updates,
and every refusal has its status or close code and a reason."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_live import ALICE, tone, tone_bank  # noqa: F401  (tone_bank: the fixture the tests use)


@pytest.fixture
def live_server(tone_bank):
    from fastapi.testclient import TestClient

    from voicebank.server import create_app

    key = tone_bank.api_keys.create("desk", "reader")[1]
    app = create_app(tone_bank)
    with TestClient(app) as client:
        yield client, app, {"Authorization": f"Bearer {key}"}


def pcm(samples: np.ndarray) -> bytes:
    return np.round(samples * 32767).astype("<i2").tobytes()


def until_closed(ws) -> tuple[list[dict], int, str]:
    """Every JSON frame the server sends until it closes, and its close code and reason."""
    from starlette.websockets import WebSocketDisconnect

    frames = []
    try:
        while True:
            frames.append(json.loads(ws.receive_text()))
    except WebSocketDisconnect as closed:
        return frames, closed.code, closed.reason


def test_a_live_session_over_the_websocket_decides_as_the_library_does(live_server, tone_bank):
    client, _, auth = live_server
    with client.websocket_connect("/live?name=alice&rate=8000", headers=auth) as ws:
        assert json.loads(ws.receive_text()) == {"event": "ready", "name": "alice", "rate": 8000}
        samples = pcm(tone(ALICE, 3.5, 8000))
        for at in range(0, len(samples), 3200):
            ws.send_bytes(samples[at: at + 3200])
        ws.send_text("end")
        frames, code, _ = until_closed(ws)
    assert code == 1000
    session = tone_bank.listen("alice", 8000)
    expected = [u.to_dict() for at in range(0, len(samples), 3200) for u in session.feed(samples[at: at + 3200])]
    assert frames == expected + [session.close().to_dict()]
    assert frames[-1]["event"] == "final" and frames[-1]["accepted"] is True
    rows = tone_bank.audit.entries(client="desk")
    assert len(rows) == 1 and rows[0].claimed == "alice" and rows[0].accepted


@pytest.mark.parametrize("headers, path, status, message", [
    ({"Authorization": "Basic abc"}, "/live", 401, "missing API key"),
    ({"Authorization": "Bearer vbk_nonsense"}, "/live", 401, "API key"),
    (None, "/live?name=nobody", 404, "no speaker named 'nobody'"),
    (None, "/live?rate=7999", 422, "8000 to 48000"),
])
def test_a_session_that_cannot_start_is_refused_at_the_handshake(live_server, headers, path, status, message):
    from starlette.testclient import WebSocketDenialResponse

    client, _, auth = live_server
    with pytest.raises(WebSocketDenialResponse) as refused, \
            client.websocket_connect(path, headers=auth if headers is None else headers):
        pass
    assert refused.value.status_code == status and message in refused.value.json()["error"]


def test_a_key_in_the_url_is_not_taken(live_server):
    client, _, auth = live_server
    with client.websocket_connect("/live?key=" + auth["Authorization"].split()[1]) as ws:
        ws.send_bytes(pcm(tone(ALICE, 0.5)))
        frames, code, _ = until_closed(ws)
    assert code == 1008 and frames == [{"error": no_key(), "status": 401}]


def no_key() -> str:
    from voicebank.server.live_key import NO_KEY

    return NO_KEY


def first_message(auth: dict) -> str:
    """The key as a browser sends it: the session's first message, not a header."""
    return json.dumps({"key": auth["Authorization"].split()[1]})


def test_a_browser_sends_the_key_as_the_first_message_and_is_served_as_with_the_header(live_server, tone_bank):
    client, app, auth = live_server
    samples = pcm(tone(ALICE, 3.5, 8000))
    with client.websocket_connect("/live?name=alice&rate=8000") as ws:
        ws.send_text(first_message(auth))
        assert json.loads(ws.receive_text()) == {"event": "ready", "name": "alice", "rate": 8000}
        for at in range(0, len(samples), 3200):
            ws.send_bytes(samples[at: at + 3200])
        ws.send_text("end")
        frames, code, _ = until_closed(ws)
    assert code == 1000 and frames[-1]["event"] == "final" and frames[-1]["accepted"] is True
    assert any(f["event"] == "decision" for f in frames) and app.state.live.open == 0
    rows = tone_bank.audit.entries(client="desk")
    assert len(rows) == 1 and rows[0].claimed == "alice"


@pytest.mark.parametrize("send, message", [
    (lambda ws, auth: None, "no key within 0.3 s. "),
    (lambda ws, auth: ws.send_bytes(pcm(tone(ALICE, 0.5))), None),  # None: the message that says how to send one
    (lambda ws, auth: ws.send_text("end"), None),
    (lambda ws, auth: ws.send_text(auth["Authorization"]), None),  # the header's text is not the message
    (lambda ws, auth: ws.send_text('{"key": 12}'), None),
    (lambda ws, auth: ws.send_text('{"key": "vbk_nonsense"}'), "invalid or revoked API key"),
    (lambda ws, auth: ws.send_text('{"key": {"key": "vbk_x"}}'), None),
    (lambda ws, auth: ws.send_text("[" * 100_000), None),  # json.loads raises RecursionError, not ValueError
    (lambda ws, auth: ws.send_text('{"a": ' * 100_000), None),
    (lambda ws, auth: ws.send_text('{"key": "' + "x" * (4 << 20) + '"}'), None),  # not parsed: longer than a key
    (lambda ws, auth: ws.send_text(" " * (4 << 20)), None),
])
def test_a_first_message_that_is_not_a_valid_key_is_refused_before_any_audio(live_server, tone_bank, send, message):
    client, app, auth = live_server
    app.state.live.idle_seconds = 0.3
    message = message or no_key()
    with client.websocket_connect("/live?name=alice") as ws:
        send(ws, auth)
        frames, code, reason = until_closed(ws)
    assert code == 1008 and len(frames) == 1 and frames[0]["status"] == 401 and message in frames[0]["error"]
    assert reason and frames[0]["error"].startswith(reason)
    assert tone_bank.audit.entries() == [] and app.state.live.open == 0


@pytest.mark.parametrize("path, status, message", [
    ("/live?name=nobody", 404, "no speaker named 'nobody'"),
    ("/live?rate=7999", 422, "8000 to 48000"),
])
def test_after_a_first_message_key_a_session_that_cannot_start_is_refused_in_a_frame(live_server, path, status, message):
    client, app, auth = live_server
    with client.websocket_connect(path) as ws:
        ws.send_text(first_message(auth))
        frames, code, _ = until_closed(ws)
    assert code == 1008 and frames[0]["status"] == status and message in frames[0]["error"]
    assert app.state.live.open == 0


def test_a_refusal_s_close_reason_fits_a_close_frame_whatever_the_characters():
    from voicebank.server.live_key import close_reason

    cut = close_reason("no speaker named '" + "Zoë" * 60 + "'")
    assert len(cut.encode("utf-8")) <= 123 and cut.startswith("no speaker named 'Zoë")


def test_sessions_beyond_the_servers_limit_are_refused_until_one_ends(live_server):
    from starlette.testclient import WebSocketDenialResponse

    client, app, auth = live_server
    app.state.live.sessions = 1
    with client.websocket_connect("/live", headers=auth) as first:
        first.receive_text()
        with pytest.raises(WebSocketDenialResponse) as refused, client.websocket_connect("/live", headers=auth):
            pass
        assert refused.value.status_code == 503 and "1 live sessions open" in refused.value.json()["error"]
        first.send_text("end")
        until_closed(first)
    with client.websocket_connect("/live", headers=auth) as again:
        assert json.loads(again.receive_text())["event"] == "ready"


def test_sockets_waiting_for_their_first_message_key_are_bounded(live_server):
    """Before its first message nobody knows who is calling: only a few such sockets per session
    the server allows may wait at once; a caller with the key in its header still gets in."""
    from contextlib import ExitStack

    from starlette.testclient import WebSocketDenialResponse

    from voicebank.server.live import LiveLimits

    client, app, auth = live_server
    app.state.live.sessions = 1
    with ExitStack() as waiting:
        for _ in range(LiveLimits.WAITING_PER_SESSION):
            waiting.enter_context(client.websocket_connect("/live"))
        with pytest.raises(WebSocketDenialResponse) as refused, client.websocket_connect("/live"):
            pass
        assert refused.value.status_code == 503 and "waiting to send their key" in refused.value.json()["error"]
        with client.websocket_connect("/live", headers=auth) as served:
            assert json.loads(served.receive_text())["event"] == "ready"
            served.send_text("end")
            until_closed(served)
    assert app.state.live.waiting == 0


@pytest.mark.parametrize("send, code, message", [
    (lambda ws: ws.send_bytes(b"\x00\x01\x02"), 1007, "whole samples of 2 bytes"),
    (lambda ws: ws.send_text("hello"), 1003, "binary frames of 16-bit PCM"),
    (lambda ws: ws.send_bytes(bytes(2 * 16000 + 2)), 1009, "at most one second of audio"),
    (lambda ws: None, 1008, "no audio for 0.3 s"),
    (lambda ws: [ws.send_bytes(pcm(tone(ALICE, 1.0))) for _ in range(3)], 1008, "at most 2 s of audio"),
])
def test_a_bad_frame_or_a_limit_ends_the_session_with_a_reason_and_the_final_decision(live_server, tone_bank,
                                                                                       send, code, message):
    client, app, auth = live_server
    app.state.live.idle_seconds, app.state.live.max_seconds = 0.3, 2.0
    with client.websocket_connect("/live?name=alice", headers=auth) as ws:
        ws.receive_text()
        send(ws)
        frames, closed, reason = until_closed(ws)
    assert closed == code and message in reason
    assert message in frames[-2]["error"] and frames[-1]["event"] == "final"
    assert len(tone_bank.audit.entries(client="desk")) == 1


def test_the_limits_can_be_set_from_the_environment_and_nonsense_is_refused():
    from voicebank.errors import InvalidInputError
    from voicebank.server.live import LiveLimits

    limits = LiveLimits.from_env({"VOICEBANK_LIVE_SESSIONS": "2", "VOICEBANK_LIVE_IDLE_SECONDS": "2.5"})
    assert (limits.sessions, limits.idle_seconds, limits.max_seconds) == (2, 2.5, LiveLimits().max_seconds)
    for value in ("0", "-1", "many", "inf", "1.5"):
        with pytest.raises(InvalidInputError, match="VOICEBANK_LIVE_SESSIONS is a number above 0"):
            LiveLimits.from_env({"VOICEBANK_LIVE_SESSIONS": value})
    for value in ("0", "nan", "inf", "1e308", "86401"):  # 1e308 s times a rate is infinite: no limit at all
        with pytest.raises(InvalidInputError, match="VOICEBANK_LIVE_MAX_SECONDS is a number above 0 .float., at most"):
            LiveLimits.from_env({"VOICEBANK_LIVE_MAX_SECONDS": value})
