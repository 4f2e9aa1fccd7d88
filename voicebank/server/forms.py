"""Checks on a multipart form as it streams in, for what the framework's parser lets pass.

Starlette's parser takes a body cut off before its closing boundary as if it were whole (the part
being sent is dropped: "file: Field required", although a file was sent), keeps the last of two
``name`` fields, and decodes a field that is not UTF-8 as Latin-1 (``\\xff\\xfe`` becomes a name
nobody has: 404). Here the same bytes go through python-multipart's streaming parser on their way
to the framework, and the last chunk is held back until the form is known to be whole and plain.
"""

from __future__ import annotations

import codecs
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_response
from .limits import reading_body


# File parts that name one recording (identify's and verify's ``file``): given twice, which one was
# decided on would be the framework's choice. ``files`` (enrollment) may repeat.
SINGLE_FILES = (b"file",)


class FormProblem(HTTPException):
    """Raised from ``receive``: an ``HTTPException``, which the framework's body parsing passes on."""

    def __init__(self, message: str):
        super().__init__(422, message)


class FormCheckMiddleware:
    """Pure ASGI middleware: a multipart body must end with its closing boundary, give each text
    field once and in UTF-8; otherwise 422 with what is wrong. File parts are not looked into."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        boundary = _boundary(scope) if scope["type"] == "http" else None
        if boundary is None:
            await self.app(scope, receive, send)
            return
        try:
            form = _Form(boundary)
        except FormParserError as exc:  # a boundary over RFC 2046's 70 characters (the parser takes 256): a 500 before
            await error_response(400, f"the form's multipart boundary cannot be used ({exc}): send a boundary of at "
                                      "most 70 characters, as RFC 2046 asks.")(scope, receive, send)
            return

        def check(body: bytes, last: bool) -> None:
            form.feed(body)
            if last:
                form.finish()

        await reading_body(self.app, scope, receive, send, check)


def _boundary(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            kind, options = parse_options_header(value)
            return options.get(b"boundary") if kind == b"multipart/form-data" else None
    return None


class _Form:
    """What the checks need of a form: its text fields' names, whether their bytes are UTF-8, and
    whether the closing boundary came. A form the parser itself cannot read is left to the framework."""

    def __init__(self, boundary: bytes):
        self.fields: list[str] = []
        self.not_utf8: str | None = None
        self.ended = self.broken = False
        self._header, self._value, self._disposition = b"", b"", b""
        self._decoder: Any = None
        self._name: str | None = None
        self._parser = MultipartParser(boundary, {
            "on_header_field": self._on_header_field, "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end, "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data, "on_part_end": self._on_part_end, "on_end": self._on_end})

    def feed(self, chunk: bytes) -> None:
        if chunk and not self.broken and not self.ended:
            try:
                self._parser.write(chunk)
            except Exception:  # noqa: BLE001 - a malformed form is the framework's to refuse, in its words
                self.broken = True

    def finish(self) -> None:
        if self.broken:
            return
        if not self.ended:
            raise FormProblem("the form data is incomplete: the body ends before the form's closing boundary. "
                              "Send the whole form (multipart/form-data, ending with --BOUNDARY--).")
        twice = next((name for name in self.fields if self.fields.count(name) > 1), None)
        if twice is not None:
            raise FormProblem(f"the form gives {twice} {self.fields.count(twice)} times: give {twice} once.")
        if self.not_utf8 is not None:
            raise FormProblem(f"the {self.not_utf8} is not valid UTF-8: send the form's text fields as UTF-8.")

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        if self._header.strip().lower() == b"content-disposition":
            self._disposition = self._value
        self._header, self._value = b"", b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._disposition, self._decoder, self._name = b"", None, None
        if b"name" in options and b"filename" in options and options[b"name"] in SINGLE_FILES:
            self.fields.append(options[b"name"].decode("utf-8", "replace"))  # one recording per decision
        if b"filename" in options or b"name" not in options:  # a file, or a part no field can come from
            return
        self._name = options[b"name"].decode("utf-8", "replace")
        self.fields.append(self._name)
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._decoder is not None:
            self._check(data[start:end], final=False)

    def _on_part_end(self) -> None:
        if self._decoder is not None:
            self._check(b"", final=True)

    def _on_end(self) -> None:
        self.ended = True

    def _check(self, data: bytes, final: bool) -> None:
        try:
            self._decoder.decode(data, final)
        except UnicodeDecodeError:
            self._decoder = None
            self.not_utf8 = self.not_utf8 or self._name
