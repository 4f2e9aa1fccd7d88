"""``/live``: a WebSocket that decides while a caller speaks (``bank.listen`` over the network).

Connect to ``/live?name=NAME&rate=HZ`` (``name`` left out: who is speaking?; ``rate`` 8000 to
48000, default 16000) with ``Authorization: Bearer <key>``, or, from a browser, which cannot set a
header there, send the key as the first message, ``{"key": "<key>"}`` (``live_key.py``; a reader key
suffices; never a key in the URL, where proxies log it). Send binary frames of 16-bit little-endian mono PCM, of any size up
to a second; receive each update as a JSON text frame (``voicebank.live.Update.to_dict``: the
``event`` is ``listening``, ``decision``, ``change`` or ``final``). Send the text frame ``end``
(or close) to finish: the final decision comes back, is audited under the key's name, and the
server closes with 1000.

Refused before any audio: no or a bad key 401, an unknown name 404, bad parameters 422, too many
live sessions 503; at the handshake (HTTP, ``{"error": message}``) where the key came in the header,
else as the frame ``{"error": message, "status": status}`` and close 1008. During a session, an
``{"error": message}`` frame then a close with a reason: 1003 a text frame other than ``end``;
1007 a frame that is not 16-bit PCM; 1009 a frame over a second of audio; 1008 no audio for
``idle_seconds``, more than ``max_seconds`` of audio, or the claimed person removed during the
session (the final decision is sent first, audited).
The limits (:class:`LiveLimits`) are ``create_app``'s ``live`` (``voicebank serve --live-*``), else
the ``VOICEBANK_LIVE_*`` environment variables where set.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Mapping

import anyio
import anyio.to_thread
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ..errors import InvalidInputError, SpeakerNotFoundError, VoiceBankError
from .errors import status_for
from .live_key import caller, close_reason, refuse

log = logging.getLogger(__name__)
router = APIRouter()

END = "end"  # the text frame that ends a session


MAX_SECONDS = 24 * 3600.0  # as `voicebank serve --live-*-seconds`: beyond it, seconds times a rate is infinite


@dataclass
class LiveLimits:
    """What one server allows its live sessions (``app.state.live``): how many at once, how long
    (seconds of audio), and how long without a frame."""

    sessions: int = 8  # `python bench/stream.py` measures how many two cores hold in real time
    max_seconds: float = 3600.0
    idle_seconds: float = 10.0
    open: int = 0  # sessions open now
    waiting: int = 0  # sockets accepted without a header, not yet past their first message

    # sockets that may wait for their first-message key at once, per session allowed: each holds
    # a socket for up to idle_seconds before anyone knows who is calling, so there are never more
    # than a few times as many as the sessions they could become
    WAITING_PER_SESSION = 4

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "LiveLimits":
        """The defaults, or ``VOICEBANK_LIVE_SESSIONS``, ``VOICEBANK_LIVE_MAX_SECONDS`` and
        ``VOICEBANK_LIVE_IDLE_SECONDS`` where set (for ``voicebank serve``)."""
        limits = cls()
        for field, kind in (("sessions", int), ("max_seconds", float), ("idle_seconds", float)):
            name = f"VOICEBANK_LIVE_{field.upper()}"
            if env.get(name, "").strip():
                try:
                    value = kind(env[name])
                except ValueError:
                    value = 0
                if not 0 < value < float("inf") or (kind is float and value > MAX_SECONDS):
                    raise InvalidInputError(f"{name} is a number above 0 ({kind.__name__})"
                                            f"{f', at most {MAX_SECONDS:g}' if kind is float else ''}, not {env[name]!r}.")
                setattr(limits, field, value)
        return limits


@router.websocket("/live")
async def live(websocket: WebSocket, name: str | None = None, rate: int = 16_000) -> None:
    """Decide while a caller speaks: binary PCM frames in, JSON updates out (see the module's docstring)."""
    app = websocket.app
    limits: LiveLimits = app.state.live
    headerless = not websocket.headers.getlist("authorization")
    if headerless and limits.waiting >= limits.sessions * LiveLimits.WAITING_PER_SESSION:
        await refuse(websocket, 503, f"{limits.waiting} connections are already waiting to send their key, this "
                                     "server's limit; try again shortly (or send the key in the Authorization header).")
        return
    limits.waiting += headerless
    try:
        key = await caller(websocket, limits.idle_seconds)
    finally:
        limits.waiting -= headerless
    if key is None:
        return
    if limits.open >= limits.sessions:
        await refuse(websocket, 503, f"the server has {limits.sessions} live sessions open, its limit; try again "
                                    "later (or raise app.state.live.sessions).")
        return
    limits.open += 1
    try:
        try:
            session = await anyio.to_thread.run_sync(functools.partial(app.state.bank.listen, name, rate,
                                                                       client=key.name))
        except VoiceBankError as exc:
            await refuse(websocket, status_for(exc), str(exc))
            return
        if websocket.application_state == WebSocketState.CONNECTING:  # the key came in the header
            await websocket.accept()
        await websocket.send_text(json.dumps({"event": "ready", "name": session.name, "rate": rate}))
        await _serve(websocket, session, limits, rate, app.state.limiter)
    finally:
        limits.open -= 1


async def _serve(websocket: WebSocket, session: Any, limits: LiveLimits, rate: int, limiter: Any) -> None:
    async def feed(data: bytes) -> list:
        return await anyio.to_thread.run_sync(session.feed, data, limiter=limiter)

    received, reason = 0, None
    try:
        while reason is None:
            message = None
            with anyio.move_on_after(limits.idle_seconds):
                message = await websocket.receive()
            if message is None:
                reason = (1008, f"no audio for {limits.idle_seconds:g} s; the session is closed.")
            elif message["type"] == "websocket.disconnect":
                await anyio.to_thread.run_sync(session.close)  # audited; no one is left to tell
                return
            elif message.get("text") is not None:
                if message["text"].strip() != END:
                    reason = (1003, f"send audio as binary frames of 16-bit PCM, and the text frame {END!r} to finish.")
                break
            else:
                data = message.get("bytes") or b""
                if len(data) > 2 * rate:
                    reason = (1009, (f"a frame holds at most one second of audio ({2 * rate} bytes at {rate} Hz), "
                                     f"not {len(data)} bytes."))
                    break
                received += len(data) // 2
                try:
                    updates = await feed(data)
                except VoiceBankError as exc:  # not PCM (1007), the claimed person removed (1008), the bank failed (1011)
                    reason = (1007 if isinstance(exc, InvalidInputError) else
                              1008 if isinstance(exc, SpeakerNotFoundError) else 1011, str(exc))
                    break
                for update in updates:
                    await websocket.send_text(json.dumps(update.to_dict()))
                if received > limits.max_seconds * rate:
                    reason = (1008, f"a live session is at most {limits.max_seconds:g} s of audio; open another.")
        final = await anyio.to_thread.run_sync(session.close)
        try:
            if reason is not None:
                await websocket.send_text(json.dumps({"error": reason[1]}))
            await websocket.send_text(json.dumps(final.to_dict()))
            await websocket.close(code=1000 if reason is None else reason[0], reason=close_reason((reason or (0, ""))[1]))
        except WebSocketDisconnect:  # the caller left as the session ended (its idle time ran out): no one to tell
            log.info("a /live caller left before its session's last message")
    finally:
        if not session.closed:  # the caller went away mid-send, or the server is stopping
            await anyio.to_thread.run_sync(session.close)
