"""HEAD wherever GET is: answered as GET, without the body (RFC 9110 9.3.2).

FastAPI's GET routes answer HEAD with 405, so a monitor or a link checker that sends HEAD to
``/health`` or ``/speakers`` sees an error where the resource is fine.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGetMiddleware:
    """Pure ASGI middleware: a HEAD request goes on as GET, and the response keeps its status and
    headers (Content-Length included, as GET would send) but none of its body."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, without_body)
