"""The HTTP API: a thin FastAPI layer over one open :class:`~voicebank.VoiceBank`.

Every endpoint but ``/health`` takes an API key (``Authorization: Bearer ...``); readers may
identify, verify, list and show, only admins enroll, add and remove. Bodies are the CLI's ``--json``
shapes; errors are ``{"error": message}`` (see ``errors.py`` for the statuses). Facade calls run on
worker threads, so the event loop, and ``/health`` with it, stays free while the model works.
OpenAPI at ``/openapi.json``, interactive docs at ``/docs``, the operator's console at ``/`` (``pages.py``;
its own endpoints in ``console_api.py``).
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import Annotated, Any, AsyncIterator

import anyio
from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, UploadFile

from .. import __version__, validate
from ..apikeys import ADMIN, READER, ApiKey
from ..errors import InvalidInputError
from . import console_api, errors, pages
from . import live as live_route
from .auth import ApiKeyMiddleware, require
from .calls import recording, run
from .forms import FormCheckMiddleware
from .head import HeadAsGetMiddleware
from .limits import BodyLimitMiddleware, max_bytes
from .schemas import ERRORS, HealthOut, IdentificationOut, RemovedOut, SpeakerOut, VerificationOut

DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_WORKERS = 16

Reader = Annotated[ApiKey, Depends(require(READER))]
Admin = Annotated[ApiKey, Depends(require(ADMIN))]
Name = Annotated[str, Form(description="The speaker's name (1 to 200 characters).")]
Strict = Annotated[bool, Form(description="Refuse, rather than warn, when the voice already matches another speaker.")]
AllowInconsistent = Annotated[bool, Form(description="Store a recording even if it does not sound like the others.")]

DESCRIPTION = """Speaker enrollment, 1:N identification and 1:1 verification.

Send an API key from `voicebank apikey create NAME --role reader|admin` as `Authorization: Bearer <key>`.
Reader keys identify, verify, list and show; admin keys also enroll, add recordings, remove, check
takes before enrolling, read the audit trail and dry-run a calibration. The operator's console is at `/`.
Decisions are audited under the key's name. Errors are `{"error": message}`: 401 no or bad key,
403 reader key, 404 no such speaker, 409 name or recording taken (or an empty bank, or a change sent
to a server that reads a read replica), 413 body over the limit, 422 unusable audio or invalid input,
503 model or database unavailable (or a read replica too far behind its primary to decide: retry)."""

router = APIRouter(responses=ERRORS)


def create_app(bank: Any, *, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, workers: int = DEFAULT_WORKERS,
               live: live_route.LiveLimits | None = None) -> FastAPI:
    """The API over ``bank`` (an open VoiceBank, which the caller closes). Request bodies are
    capped at ``max_upload_mb``; at most ``workers`` requests use the bank at once (the rest wait
    without holding a thread). Recordings' duration cap is the bank's ``limits.max_seconds``.
    ``live``: the ``/live`` sessions' limits (default ``LiveLimits.from_env()``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.limiter = anyio.CapacityLimiter(workers)
        yield

    # /docs is served by pages.py from bundled Swagger UI files (no CDN); /redoc (a CDN page) is off
    app = FastAPI(title="voicebank", version=__version__, lifespan=lifespan, description=DESCRIPTION,
                  docs_url=None, redoc_url=None)
    app.state.bank, app.state.in_flight, app.state.limiter = bank, 0, None
    app.state.live = live if live is not None else live_route.LiveLimits.from_env()
    errors.install(app)
    app.include_router(router)
    app.include_router(console_api.router)
    app.include_router(live_route.router)
    pages.install(app)
    app.add_middleware(FormCheckMiddleware)  # inside the body cap: it reads what the cap lets through
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_bytes(max_upload_mb))
    public = ("/health", app.openapi_url, *pages.PUBLIC_PATHS)
    app.add_middleware(ApiKeyMiddleware, keys=bank.api_keys, public_paths=public, public_prefixes=pages.PUBLIC_PREFIXES)
    app.add_middleware(pages.SecurityHeadersMiddleware)
    app.add_middleware(HeadAsGetMiddleware)
    return app


def parse_metadata(text: str | None) -> dict[str, Any] | None:
    if text is None or not text.strip():
        return None
    if len(text.encode()) > validate.MAX_METADATA_BYTES:  # before parsing: the limit is on the JSON text
        raise InvalidInputError(f"metadata is at most {validate.MAX_METADATA_BYTES // 1024} KiB as JSON.")
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise InvalidInputError(f"metadata gives the key {twice[0]!r} more than once; give each key once.")
        return dict(pairs)

    try:
        value = json.loads(text, object_pairs_hook=unique)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"metadata must be a JSON object, e.g. {{\"team\": \"A\"}}: {exc.msg}.") from exc
    except ValueError as exc:  # an integer of thousands of digits (Python's int_max_str_digits)
        raise InvalidInputError("metadata numbers must have at most 4300 digits.") from exc
    except RecursionError as exc:
        raise InvalidInputError(f"metadata is nested more than {validate.MAX_METADATA_DEPTH} levels deep.") from exc
    if not isinstance(value, dict):
        raise InvalidInputError(f"metadata must be a JSON object, e.g. {{\"team\": \"A\"}}, not {type(value).__name__}.")
    return value


# -- endpoints ---------------------------------------------------------------------------------
@router.get("/health", response_model=HealthOut, tags=["service"])
async def health(request: Request) -> dict[str, Any]:
    """Is the server up? No key needed; answers at once, also while the model is busy."""
    bank = request.app.state.bank
    return {"status": "ok", "version": __version__, "model_id": bank.model_id, "in_flight": request.app.state.in_flight,
            "replica": bank.reads_replica}


@router.get("/speakers", response_model=list[SpeakerOut], tags=["speakers"])
async def list_speakers(request: Request, key: Reader) -> list[dict[str, Any]]:
    """Every enrolled speaker, by name (as `voicebank list --json`)."""
    return [s.to_dict() for s in await run(request, request.app.state.bank.speakers)]


@router.post("/speakers", status_code=201, response_model=SpeakerOut, tags=["speakers"])
async def enroll(request: Request, key: Admin, name: Name,
                 files: Annotated[list[UploadFile], File(description="Recordings (wav, flac, ogg, mp3, ...).")],
                 metadata: Annotated[str | None, Form(description='A JSON object, e.g. {"team": "A"}.')] = None,
                 allow_inconsistent: AllowInconsistent = False, strict: Strict = False) -> dict[str, Any]:
    """Enroll a new speaker (admin). Every recording is checked before anything is stored."""
    meta = parse_metadata(metadata)
    recordings = [await recording(f) for f in files]
    speaker = await run(request, request.app.state.bank.enroll, name, recordings, metadata=meta,
                        allow_inconsistent=allow_inconsistent, strict=strict)
    return speaker.to_dict()


@router.post("/speakers/{name:path}/recordings", response_model=SpeakerOut, tags=["speakers"])
async def add_recordings(request: Request, key: Admin, name: str,
                         files: Annotated[list[UploadFile], File(description="More recordings of the speaker.")],
                         allow_inconsistent: AllowInconsistent = False, strict: Strict = False) -> dict[str, Any]:
    """Add recordings to an enrolled speaker (admin); the voiceprint is recomputed from all."""
    recordings = [await recording(f) for f in files]
    speaker = await run(request, request.app.state.bank.add_recordings, name, recordings,
                        allow_inconsistent=allow_inconsistent, strict=strict)
    return speaker.to_dict()


@router.get("/speakers/{name:path}", response_model=SpeakerOut, tags=["speakers"])
async def show_speaker(request: Request, key: Reader, name: str) -> dict[str, Any]:
    """One speaker: metadata and recordings (as `voicebank show NAME --json`)."""
    return (await run(request, request.app.state.bank.speaker, name)).to_dict()


@router.delete("/speakers/{name:path}", response_model=RemovedOut, tags=["speakers"])
async def remove_speaker(request: Request, key: Admin, name: str) -> dict[str, Any]:
    """Remove a speaker and every embedding of their voice (admin)."""
    await run(request, request.app.state.bank.remove, name)
    return {"name": name, "removed": True}


@router.post("/identify", response_model=IdentificationOut, tags=["decisions"])
async def identify(request: Request, key: Reader, file: Annotated[UploadFile, File(description="The recording.")],
                   top_k: Annotated[int, Form(description="How many candidates to list (1-1000).")] = 5) -> dict[str, Any]:
    """Who is speaking? A match only when the best score clears the threshold. Audited under the key's name."""
    result = await run(request, request.app.state.bank.identify, await recording(file), top_k, client=key.name)
    return result.to_dict()


@router.post("/verify", response_model=VerificationOut, tags=["decisions"])
async def verify(request: Request, key: Reader, name: Name,
                 file: Annotated[UploadFile, File(description="The recording.")]) -> dict[str, Any]:
    """Is the speaker in the recording NAME? Audited under the key's name."""
    result = await run(request, request.app.state.bank.verify, name, await recording(file), client=key.name)
    return result.to_dict()
