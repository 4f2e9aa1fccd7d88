"""Endpoints the console needs, open to any client with the same keys, roles, limits and errors:
checking takes before enrolling them, the audit trail, and the thresholds with a calibration
dry-run. Each is one facade call (for calibration, the same ``bank.thresholds.calibrate`` as
``voicebank calibrate``); nothing here decides anything."""

from __future__ import annotations

import base64
import logging
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile

from ..apikeys import ADMIN, READER, ApiKey
from ..errors import InvalidInputError
from ..store import as_utc
from .auth import require
from .calls import recording, run
from .schemas import ERRORS, AuditPageOut, KeyOut, CalibrationDryRunOut, EnrollmentCheckOut, ThresholdsOut

log = logging.getLogger(__name__)
router = APIRouter(responses=ERRORS)
Reader = Annotated[ApiKey, Depends(require(READER))]
Admin = Annotated[ApiKey, Depends(require(ADMIN))]
MAX_AUDIT_PAGE = 1000
MAX_OFFSET = 2**63 - 1  # SQLite's and PostgreSQL's largest integer: OFFSET takes no more


@router.get("/me", response_model=KeyOut, tags=["service"])
async def me(key: Reader) -> dict[str, Any]:
    """The caller's API key: its name and role (what a client may show and offer)."""
    return {"name": key.name, "role": key.role}


@router.post("/check", response_model=EnrollmentCheckOut, tags=["speakers"])
async def check_recordings(
        request: Request, key: Admin,
        files: Annotated[list[UploadFile], File(description="One or more takes (wav, flac, ogg, mp3, ...).")],
        name: Annotated[str | None, Form(description="An enrolled speaker: check the takes as more recordings "
                                                      "of them (as `POST /speakers/{name}/recordings` would).")] = None,
) -> dict[str, Any]:
    """Check takes as enrollment would, storing nothing (admin): each take's speech seconds and
    problems (unreadable, too short, no speech, given twice, already enrolled, not like the
    others), the speech of all usable takes against what enrollment needs, and whether the voice
    already matches an enrolled speaker. Admin only: that last answer identifies a voice."""
    recordings = [await recording(f) for f in files]
    result = await run(request, request.app.state.bank.check_recordings, recordings, name or None)
    log.debug("%s checked %d recording(s)%s", key.name, len(recordings), f" for {name}" if name else "")
    return result.to_dict()


@router.get("/audit", response_model=AuditPageOut, tags=["decisions"])
async def audit_trail(
        request: Request, key: Admin,
        speaker: Annotated[str | None, Query(description="The name claimed or returned.")] = None,
        since: Annotated[datetime | None, Query(description="From this moment on (ISO 8601; no offset: UTC).")] = None,
        until: Annotated[datetime | None, Query(description="Before this moment (ISO 8601; no offset: UTC).")] = None,
        operation: Annotated[Literal["identify", "verify", "scan"] | None,
                             Query(description="identify, verify or scan.")] = None,
        client: Annotated[str | None, Query(description="The API key's name that asked.")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_PAGE, description="Entries per page.")] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Entries to skip (the newest first).")] = 0,
) -> dict[str, Any]:
    """The identification and verification decisions, newest first, a page at a time (admin)."""
    since, until = _in_utc("since", since), _in_utc("until", until)
    if since is not None and until is not None and since >= until:
        raise InvalidInputError("since must be before until.")
    entries = await run(request, request.app.state.bank.audit.entries, speaker or None, since, until,
                        limit + 1, operation=operation, client=client or None, offset=offset)  # one more: a next page?
    more = len(entries) > limit
    return {"entries": [e.to_dict() for e in entries[:limit]], "limit": limit, "offset": offset,
            "next_offset": offset + limit if more else None}


def _in_utc(field: str, moment: datetime | None) -> datetime | None:
    """``moment`` in UTC (no offset: UTC). The store compares in UTC, and a moment at the edge of
    the calendar (0001-01-01 at +01:00) has no UTC time within the years 1 to 9999."""
    try:
        return None if moment is None else as_utc(moment)
    except OverflowError:
        raise InvalidInputError(f"{field} {moment.isoformat()} falls outside the years 1 to 9999 in UTC: "
                                "give a moment within them.") from None


@router.get("/calibration", response_model=ThresholdsOut, tags=["calibration"])
async def thresholds(request: Request, key: Reader) -> dict[str, Any]:
    """The stored thresholds, what each promises with today's speakers (as `voicebank threshold
    --json`), and how each was set."""
    bank = request.app.state.bank
    status = await run(request, bank.thresholds.status)
    points = await run(request, bank.thresholds.operating_points)
    telephone_status = await run(request, bank.thresholds.status, None, "telephone")
    telephone = await run(request, bank.thresholds.operating_points, "telephone")
    return {"status": status, "points": {k: p.to_dict(with_model=False) for k, p in points.items()},
            "channels": {"telephone": {"status": telephone_status,
                                       "points": {k: p.to_dict(with_model=False) for k, p in telephone.items()}}}}


@router.post("/calibration/dry-run", response_model=CalibrationDryRunOut, tags=["calibration"])
async def calibration_dry_run(
        request: Request, key: Admin,
        far: Annotated[float, Form(ge=0.0001, le=0.5, description="Verification: false accepts per claim.")] = 0.01,
        unknown_rate: Annotated[float, Form(ge=0.0001, le=0.5, description="Identification: how often a person who "
                                                                          "is not enrolled may be matched.")] = 0.01,
        eer: Annotated[bool, Form(description="Verification at the equal-error rate instead of far.")] = False,
        purpose: Annotated[Literal["both", "verify", "identify"], Form(description="Which threshold.")] = "both",
        rule: Annotated[Literal["best", "margin"] | None, Form(description="Identification rule; default the bank's.")] = None,
) -> dict[str, Any]:
    """What `voicebank calibrate` (without --yes) measures on the bank's own recordings: the
    thresholds it would choose and their rates, the stored ones' rates, and the DET curve (and the
    open-set identification view) as PNG data URLs. Stores nothing (admin)."""
    purposes = ("verify", "identify") if purpose == "both" else (purpose,)
    return await run(request, _dry_run, request.app.state.bank, None if eer else far, unknown_rate, purposes, rule)


def _dry_run(bank: Any, far: float | None, unknown_rate: float, purposes: tuple[str, ...], rule: str | None) -> dict[str, Any]:
    from ..evaluation import plot_calibration

    result = bank.thresholds.calibrate(far=far, unknown_rate=unknown_rate, purposes=purposes, rule=rule)
    plots: dict[str, str] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="voicebank-det-") as folder:
            written = plot_calibration(result, Path(folder) / "det.png")
            for name, path in zip(("det", "identify"), written):
                plots[name] = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    except ImportError:  # matplotlib is not a server dependency
        log.warning("calibration plots need matplotlib (pip install matplotlib); the dry-run has none")
    return {**result.to_dict(), "dry_run": True, "plots": plots}
