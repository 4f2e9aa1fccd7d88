"""Running facade calls off the event loop, and uploads as recordings (shared by every route module)."""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import anyio.to_thread
from fastapi import Request, UploadFile

from .. import validate

T = TypeVar("T")


async def run(request: Request, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)`` on a worker thread, counted in ``/health``'s ``in_flight``."""
    state = request.app.state
    state.in_flight += 1
    try:
        return await anyio.to_thread.run_sync(functools.partial(call, *args, **kwargs), limiter=state.limiter)
    finally:
        state.in_flight -= 1


class Upload:
    """An upload as a recording (a binary file object to the bank) whose label, in messages, is its
    file name, as on the CLI. Its bytes stay where the form parser spooled them (in memory up to
    1 MB, on disk past it) until the recording is decoded, and are read then: an enrollment of many
    takes holds one take's bytes at a time, not the upload's (784 MB of takes in one request took a
    server from 371 MB to 1.3 GB when each was read into memory first)."""

    def __init__(self, upload: UploadFile):
        name = validate.printable(upload.filename or "upload")  # a label in messages and in the bank
        self.name = name if len(name) <= 255 else name[:120] + "..." + name[-120:]
        self._file = upload.file

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)


async def recording(upload: UploadFile) -> Upload:
    """An upload as a recording (:class:`Upload`)."""
    return Upload(upload)
