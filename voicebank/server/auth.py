"""Who is calling: ``Authorization: Bearer <API key>`` on every endpoint but the public ones.

The key is checked by :class:`ApiKeyMiddleware` before any of the request body is read, so an
unauthenticated client cannot make the server parse an upload: missing, unknown or revoked key,
401. The endpoint's dependency (:func:`require`) then checks the role: a reader key on an endpoint
that changes the bank, 403.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable, Iterable

import anyio.to_thread
from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from ..apikeys import ADMIN, ApiKey, ApiKeys, InvalidApiKeyError
from ..errors import VoiceBankError
from .errors import error_response, status_for

log = logging.getLogger(__name__)

STATE_KEY = "api_key"
CHALLENGE = {"WWW-Authenticate": "Bearer"}
MISSING = "missing API key: send `Authorization: Bearer <key>` (create a key with `voicebank apikey create`)."

# Declared so that the OpenAPI document (and /docs' "Authorize" button) knows about the header;
# the middleware does the checking.
bearer = HTTPBearer(auto_error=False, description="An API key from `voicebank apikey create`.")


class ApiKeyMiddleware:
    """Pure ASGI middleware: resolve the bearer key to an :class:`ApiKey` into the request state."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, public_paths: Iterable[str], public_prefixes: Iterable[str] = ()):
        self.app = app
        self.keys = keys
        self.public = frozenset(p for p in public_paths if p)
        self.prefixes = tuple(p for p in public_prefixes if p)  # static files: the console's and /docs'

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = _route_path(scope) if scope["type"] == "http" else ""
        if scope["type"] != "http" or path in self.public or (
                self.prefixes and path.startswith(self.prefixes) and ".." not in path):
            await self.app(scope, receive, send)
            return
        token = _bearer_token(scope)
        if not token:
            _refused(scope, "no API key")
            await error_response(401, MISSING, CHALLENGE)(scope, receive, send)
            return
        try:
            key = await anyio.to_thread.run_sync(self.keys.authenticate, token)
        except InvalidApiKeyError as exc:
            _refused(scope, "an invalid or revoked API key")
            await error_response(401, str(exc), CHALLENGE)(scope, receive, send)
            return
        except VoiceBankError as exc:  # the key could not be looked up (database down: 503), outside the handlers
            log.error("%s: %s", type(exc).__name__, exc)
            await error_response(status_for(exc), str(exc))(scope, receive, send)
            return
        scope.setdefault("state", {})[STATE_KEY] = key
        await self.app(scope, receive, send)


def require(role: str) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency giving the caller's key, refusing (403) a reader key where ``role`` is admin."""

    async def caller(request: Request, _credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> ApiKey:
        key = request.scope.get("state", {}).get(STATE_KEY)
        if not isinstance(key, ApiKey):  # the middleware is not installed: fail closed
            raise HTTPException(401, MISSING, headers=CHALLENGE)
        if role == ADMIN and not key.is_admin:
            raise HTTPException(403, f"the API key {key.name!r} is a {key.role} key; this needs an admin key.")
        return key

    return caller


def _refused(scope: Scope, why: str) -> None:
    """Log a refused request at WARNING (an operator sees key guessing at the default level), with
    the client's address and the path, never the key nor the query string (where a key may be)."""
    client = scope.get("client") or ("?", 0)
    log.warning("refused %s %s from %s:%s: %s", scope.get("method", "?"), _route_path(scope), client[0], client[1], why)


def _route_path(scope: Scope) -> str:
    """The path without the ``root_path`` a proxy mounts the app under."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def _bearer_token(scope: Scope) -> str | None:
    """The bearer key, or None when there is none, or more than one Authorization header (which
    one a proxy or a client library honours differs: refuse the ambiguity)."""
    found = [value for name, value in scope.get("headers", ()) if name == b"authorization"]
    if len(found) != 1:
        return None
    scheme, _, token = found[0].decode("latin-1").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
