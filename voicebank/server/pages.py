"""The pages a browser loads: the operator's console at ``/`` and the API docs at ``/docs``.

Both are static files shipped in the package and served from this server only: the console from
``console/`` (plain HTML, CSS and JavaScript, no build step), Swagger UI 5 (which reads FastAPI's
OpenAPI 3.1) from the files the ``fastapi-offline`` package bundles. No page needs anything from another origin, and the
Content-Security-Policy says so to the browser: a page that tried would be refused. The files
need no key (they hold nothing secret); every call they make to the API sends one.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONSOLE = Path(__file__).with_name("console")
PUBLIC_PATHS = ("/", "/docs", "/favicon.ico")  # browsers ask for the icon without a key
PUBLIC_PREFIXES = ("/console/", "/docs-assets/")

# Same origin only. The console sets no inline script or style (element.style through the DOM is
# not inline CSS to CSP); Swagger UI injects styles of its own, so /docs allows inline styles.
# data: images: the DET curve arrives as a data: URL, and Swagger UI draws icons that way.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
DOCS_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
           (b"permissions-policy", b"microphone=(self), camera=(), geolocation=()")]

DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>voicebank API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="docs-assets/swagger-ui.css">
<link rel="icon" type="image/png" href="docs-assets/favicon.png"></head>
<body data-openapi="openapi.json"><div id="swagger-ui"></div>
<script src="docs-assets/swagger-ui-bundle.js"></script>
<script src="console/docs.js"></script></body></html>
"""


class SecurityHeadersMiddleware:
    """Pure ASGI middleware: the Content-Security-Policy and its companions on every response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = (DOCS_CSP if scope["path"].rstrip("/").endswith(("/docs",)) else CSP).encode()

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"content-security-policy", policy), *HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def swagger_assets() -> Path:
    """Swagger UI's files (swagger-ui-bundle.js, swagger-ui.css, favicon.png), as the
    fastapi-offline package (a `server` extra) ships them; only its files are used."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).with_name("static")


def install(app: FastAPI) -> None:
    """Serve the console at ``/`` (its files under ``/console/``) and the docs at ``/docs``."""
    app.mount("/console", StaticFiles(directory=CONSOLE), name="console")
    app.mount("/docs-assets", StaticFiles(directory=swagger_assets()), name="docs-assets")

    @app.get("/", include_in_schema=False)
    async def console() -> FileResponse:
        return FileResponse(CONSOLE / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:  # asked for by every page load: without it, a 401 and a warning each time
        return FileResponse(swagger_assets() / "favicon.png", media_type="image/png",
                            headers={"Cache-Control": "max-age=86400"})

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(DOCS_HTML)
