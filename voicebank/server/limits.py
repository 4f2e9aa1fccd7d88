"""The request-body cap: a request body over ``max_bytes`` is answered 413 with a JSON error.

A declared ``Content-Length`` over the cap is refused before any of the body is read; a body
without one (chunked) or with a false one is counted as it streams in and refused as soon as it
passes the cap. Either way the endpoint never runs, so nothing is stored. (The cap on a
recording's duration is the bank's own ``AudioLimits.max_seconds``: an ``AudioError``, 422.)
"""

from __future__ import annotations

from typing import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InvalidInputError
from .errors import error_response

MB = 1024 * 1024
MAX_UPLOAD_MB = 1024.0 * 1024  # a TiB: more is a typo (and 1e308 MB has no number of bytes: it is infinite)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when the body passes the cap. An ``HTTPException``, so that the
    framework's body parsing passes it on (rather than turning it into a 400) and it becomes a 413."""

    def __init__(self, max_bytes: int):
        super().__init__(413, too_large(max_bytes))


def max_bytes(max_upload_mb: float) -> int:
    """The body cap in bytes, or an InvalidInputError for a limit that is not a size."""
    if not 0 < max_upload_mb <= MAX_UPLOAD_MB:  # NaN too
        raise InvalidInputError(f"--max-upload-mb is more than 0 and at most {MAX_UPLOAD_MB:.0f} (a TiB), "
                                f"not {max_upload_mb:g}.")
    return int(max_upload_mb * MB)


def too_large(max_bytes: int) -> str:
    return f"the request body is larger than the server's limit of {max_bytes / MB:g} MB (--max-upload-mb)."


class BodyLimitMiddleware:
    """Pure ASGI middleware capping HTTP request bodies at ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is None:
            await error_response(400, "the Content-Length header is not a whole number.")(scope, receive, send)
            return
        if declared > self.max_bytes:
            await error_response(413, too_large(self.max_bytes))(scope, receive, send)
            return
        received = 0

        def count(body: bytes, last: bool) -> None:
            nonlocal received
            received += len(body)
            if received > self.max_bytes:
                raise BodyTooLarge(self.max_bytes)

        await reading_body(self.app, scope, receive, send, count)


async def reading_body(app: ASGIApp, scope: Scope, receive: Receive, send: Send,
                       read: Callable[[bytes, bool], None]) -> None:
    """Run ``app`` with each chunk of the request body shown to ``read`` (the chunk, is it the
    last) on its way in. An ``HTTPException`` that ``read`` raises comes out of ``receive``, outside
    the framework's handlers: it is answered here, with its status and detail, unless the
    response has begun."""
    started = False

    async def reading_receive() -> Message:
        message = await receive()
        if message["type"] == "http.request":
            read(message.get("body", b""), not message.get("more_body", False))
        return message

    async def watching_send(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, reading_receive, watching_send)
    except HTTPException as exc:
        if started:
            raise
        await error_response(exc.status_code, str(exc.detail))(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    """The declared body length; 0 when there is none, None when it is not a number."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return 0
