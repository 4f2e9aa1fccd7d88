"""The JSON shapes of the API, for the OpenAPI document. They mirror ``results.py``'s ``to_dict``
(the CLI's ``--json``); the tests check that every endpoint returns exactly those."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorOut(BaseModel):
    error: str = Field(description="What went wrong and what to do next (the CLI's `Error:` message).")


class CandidateOut(BaseModel):
    name: str
    score: float = Field(description="Cosine similarity in [-1, 1] (or the bank's AS-norm score).")


class CalibrationOut(BaseModel):
    method: str = Field(description="How the threshold was set: far (a target rate), eer, manual or default.")
    score: str = Field(description="The score the threshold applies to: cosine or asnorm.")
    target: float | None = Field(description="The unknown-person false-alarm rate it was calibrated for.")
    rule: str = Field(description="What the threshold applies to: best or margin.")
    gallery_at_calibration: int | None = Field(description="Speakers enrolled when it was calibrated.")
    gallery: int = Field(description="Speakers enrolled now.")
    expected_rate: float | None = Field(description="The false-alarm rate expected with today's speakers.")
    outgrown: bool = Field(description="True when the bank has grown past its calibration: calibrate again.")


class DecisionOut(BaseModel):
    rule: str = Field(description="best (the best score) or margin (2 x best - second best score).")
    score: float | None = Field(description="What was compared with the threshold (null with no candidates).")


class IdentificationOut(BaseModel):
    match: CandidateOut | None = Field(description="The best candidate if it clears the threshold, else null.")
    candidates: list[CandidateOut]
    threshold: float = Field(description="The bank's identification (1:N) threshold.")
    threshold_kind: str = Field(description="Always `identify`: the identification operating point.")
    decision: DecisionOut
    calibration: CalibrationOut


class VerificationOut(BaseModel):
    name: str
    score: float
    threshold: float = Field(description="The bank's verification (1:1) threshold.")
    accepted: bool
    threshold_kind: str = Field(description="Always `verify`: the verification operating point.")


class RecordingOut(BaseModel):
    label: str
    sha256: str
    duration_s: float
    speech_s: float
    created_at: str


class SpeakerOut(BaseModel):
    name: str
    metadata: dict[str, Any]
    recordings: list[RecordingOut]
    speech_s: float
    created_at: str
    updated_at: str
    warnings: list[str]


class RemovedOut(BaseModel):
    name: str
    removed: bool


class HealthOut(BaseModel):
    status: str
    version: str
    model_id: str
    in_flight: int = Field(description="Requests using the bank right now.")


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": text}
    for status, text in {
        401: "Missing, unknown or revoked API key.",
        403: "A reader key where an admin key is needed.",
        404: "No such speaker.",
        409: "Name taken, recording already enrolled, voice matches another speaker (strict), or empty bank.",
        413: "The request body is over the server's limit.",
        422: "Unreadable or unusable audio, a recording over the duration limit, or an invalid field.",
    }.items()
}
