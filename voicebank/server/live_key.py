"""Who is calling ``/live``: the API key from the ``Authorization: Bearer`` header, or from the
session's first message, ``{"key": "<key>"}`` (a browser cannot set a header on a WebSocket);
never from the URL, where proxies log it.

With an Authorization header the key is checked at the handshake, and a refusal is an HTTP answer
before the socket opens. With none, the socket is accepted and its first frame must be that text
frame, within ``wait`` seconds; anything else is refused with ``{"error": message, "status": 401}``
and close 1008. Either way no audio is read, and no speaker looked up, before the key is known.
"""

from __future__ import annotations

import json
import logging

import anyio
import anyio.to_thread
from fastapi import WebSocket
from starlette.responses import JSONResponse
from starlette.websockets import WebSocketState

from ..apikeys import ApiKey, InvalidApiKeyError
from ..errors import VoiceBankError
from .auth import MISSING
from .errors import status_for

log = logging.getLogger(__name__)

MAX_KEY_MESSAGE = 1024  # characters: a key is about 50; a longer first message is refused unparsed
NO_KEY = ('no API key: send it in the `Authorization: Bearer <key>` header, or as the first message, the text '
          'frame {"key": "<key>"} (never in the URL); create one with `voicebank apikey create`.')


async def caller(websocket: WebSocket, wait: float) -> ApiKey | None:
    """The caller's key, or None once refused (or gone): from its one Authorization header, else
    from its first message, awaited for at most ``wait`` seconds."""
    found = websocket.headers.getlist("authorization")
    if found:
        scheme, _, token = (found[0] if len(found) == 1 else "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            await refuse(websocket, 401, MISSING)
            return None
        return await _checked(websocket, token.strip())
    await websocket.accept()
    message = None
    with anyio.move_on_after(wait):
        message = await websocket.receive()
    if message is not None and message["type"] == "websocket.disconnect":
        return None
    token = _key_in(message.get("text")) if message is not None else None
    if token is None:
        await refuse(websocket, 401, NO_KEY if message is not None else f"no key within {wait:g} s. {NO_KEY}")
        return None
    return await _checked(websocket, token)


def _key_in(text: str | None) -> str | None:
    """The key in a first message ``{"key": "..."}``, or None when it is not one (or is longer than
    any such message: it is not parsed)."""
    if text is None or len(text) > MAX_KEY_MESSAGE:
        return None
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):  # "[[[[...": deeper than the parser recurses
        return None
    key = body.get("key") if isinstance(body, dict) else None
    return key.strip() if isinstance(key, str) and key.strip() else None


async def _checked(websocket: WebSocket, token: str) -> ApiKey | None:
    try:
        return await anyio.to_thread.run_sync(websocket.app.state.bank.api_keys.authenticate, token)
    except InvalidApiKeyError as exc:
        await refuse(websocket, 401, str(exc))
    except VoiceBankError as exc:  # the key could not be looked up (database down: 503)
        await refuse(websocket, status_for(exc), str(exc))
    return None


async def refuse(websocket: WebSocket, status: int, message: str) -> None:
    """Refuse the session: at the handshake with an HTTP answer where the server can send one
    (uvicorn does); on an open socket (or without that extension) ``{"error", "status"}`` and
    close 1008."""
    log.warning("refused a live session from %s: %s", websocket.client, message)
    if websocket.application_state == WebSocketState.CONNECTING:
        try:
            await websocket.send_denial_response(JSONResponse(
                {"error": message}, status_code=status, headers={"WWW-Authenticate": "Bearer"} if status == 401 else None))
            return
        except RuntimeError:  # no denial-response extension
            await websocket.accept()
    await websocket.send_text(json.dumps({"error": message, "status": status}))
    await websocket.close(code=1008, reason=close_reason(message))


def close_reason(message: str) -> str:
    """``message`` cut to what a close frame holds (123 bytes of UTF-8), whole characters only."""
    return message.encode("utf-8")[:120].decode("utf-8", "ignore")
