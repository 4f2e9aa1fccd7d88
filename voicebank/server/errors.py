"""Every error leaves the server as ``{"error": message}`` with a fitting status, never a traceback.

voicebank's own errors keep the message the CLI prints after ``Error:``. The mapping:

=====================================================  ======
SpeakerNotFoundError                                   404
DuplicateSpeakerError, DuplicateRecordingError,        409
DuplicateVoiceError
EmptyBankError (identify on a bank with no speakers:   409
the request is fine, the bank's state is not),
NotEnoughDataError (calibration data too thin),
ReplicaError (a change asked of a server that reads
a read replica: send it to one on the primary)
AudioError (unreadable, too long, too little speech),  422
InconsistentRecordingError, InvalidInputError,
malformed form fields
ModelError (the model cannot be loaded)                503
DatabaseGoneError (SQLite file deleted or replaced),   503
DatabaseError (read-only, unreachable, disk full),
StaleReplicaError (the replica this server reads has
not replayed the primary's latest changes in time)
any other VoiceBankError (server set-up)               500
anything unexpected                                    500, logged with its traceback
=====================================================  ======
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import (
    AudioError,
    BankNotFoundError,
    DatabaseError,
    DatabaseGoneError,
    DuplicateRecordingError,
    DuplicateSpeakerError,
    DuplicateVoiceError,
    EmptyBankError,
    InconsistentRecordingError,
    InvalidInputError,
    ModelError,
    ModelMismatchError,
    NotEnoughDataError,
    ReplicaError,
    SchemaError,
    SpeakerNotFoundError,
    StaleReplicaError,
    VoiceBankError,
)

log = logging.getLogger(__name__)

STATUS: tuple[tuple[type[VoiceBankError], int], ...] = (
    (SpeakerNotFoundError, 404),
    (DuplicateSpeakerError, 409),
    (DuplicateRecordingError, 409),
    (DuplicateVoiceError, 409),
    (EmptyBankError, 409),
    (NotEnoughDataError, 409),
    (ReplicaError, 409),
    (AudioError, 422),
    (InconsistentRecordingError, 422),
    (InvalidInputError, 422),
    (ModelError, 503),
    (DatabaseGoneError, 503),
    (DatabaseError, 503),
    (StaleReplicaError, 503),
    (ModelMismatchError, 500),
    (SchemaError, 500),
    (BankNotFoundError, 500),
)


def status_for(exc: VoiceBankError) -> int:
    return next((status for kind, status in STATUS if isinstance(exc, kind)), 500)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the ``{"error": message}`` shape."""

    @app.exception_handler(VoiceBankError)
    async def voicebank_error(_request: Request, exc: VoiceBankError) -> JSONResponse:
        status = status_for(exc)
        if status >= 500:
            log.error("%s: %s", type(exc).__name__, exc)
        return error_response(status, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, _not_a_form(request, exc.errors())
                              or "; ".join(_describe(e) for e in exc.errors()) or "invalid request.")

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return error_response(500, "internal server error; the server log has the details.")


def _not_a_form(request: Request, problems: Any) -> str:
    """For an upload sent as something other than a form (raw audio, JSON, no Content-Type): the
    framework only sees that the file part is missing, which is not what went wrong."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    parts = [e["loc"][-1] for e in problems if e.get("type") == "missing" and tuple(e.get("loc", ()))[:1] == ("body",)]
    part = next((p for p in parts if p in ("file", "files")), None)
    if part is None or kind == "multipart/form-data":
        return ""
    sent = f"not {kind}" if kind else "not a body without a Content-Type"
    return f"send multipart/form-data with a `{part}` part holding the recording, {sent}."


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "header"))
    message = str(error.get("msg", "invalid value"))
    return f"{where}: {message}" if where else message
