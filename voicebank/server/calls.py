"""Running facade calls off the event loop, and uploads as recordings (shared by every route module)."""

from __future__ import annotations

import functools
import io
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


async def recording(upload: UploadFile) -> io.BytesIO:
    """An upload as a recording whose label (in messages) is its file name, as on the CLI."""
    data = io.BytesIO(await upload.read())
    name = validate.printable(upload.filename or "upload")  # a label in messages and in the bank
    data.name = name if len(name) <= 255 else name[:120] + "..." + name[-120:]
    return data
