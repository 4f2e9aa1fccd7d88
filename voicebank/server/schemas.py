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


class LengthOut(BaseModel):
    seconds: float = Field(description="The median speech of the probes it was measured on.")
    threshold: float = Field(description="The threshold for probes with that much speech.")
    counted: int = Field(description="False alarms counted on its trials.")
    trials: int = Field(description="Its trials.")


class CalibrationOut(BaseModel):
    method: str = Field(description="How the threshold was set: far (a target rate), eer, auto (measured on the "
                                    "reference set and the bank, again after each change), manual or default.")
    score: str = Field(description="The score the threshold applies to: cosine or asnorm.")
    target: float | None = Field(description="The unknown-person false-alarm rate it was calibrated for.")
    channel: str = Field(description="The channel its trials came through: wideband or telephone.")
    trials: int | None = Field(None, description="Unknown-person trials behind the promise.")
    counted: int | None = Field(None, description="False alarms counted on those trials at the threshold.")
    upper: float | None = Field(None, description="95% upper confidence bound of the counted rate.")
    sources: dict[str, float] | None = Field(None, description="Where the trials came from: own, cohort and "
                                             "reference (counts), and shift.")
    rule: str = Field(description="What the threshold applies to: best or margin.")
    gallery_at_calibration: int | None = Field(description="Speakers enrolled when it was calibrated.")
    gallery: int = Field(description="Speakers enrolled now.")
    expected_rate: float | None = Field(description="The false-alarm rate expected with today's speakers.")
    outgrown: bool = Field(description="True when the bank has grown past its calibration: calibrate again.")
    lengths: list[LengthOut] | None = Field(None, description="The threshold by the speech in a probe (probes of "
                                            "1, 2 and 3 recordings); a decision reads it at its recording's speech.")


class DecisionOut(BaseModel):
    rule: str = Field(description="best (the best score) or margin (2 x best - second best score).")
    kind: str = Field(description="What ``score`` is: cosine or asnorm (rule best), margin or asnorm margin.")
    score: float | None = Field(description="What was compared with the threshold (null with no candidates).")


class HeardOut(BaseModel):
    channel: str = Field(description="wideband or telephone, measured from the recording's speech.")
    high_band_db: float | None = Field(description="Speech energy above 4.6 kHz against the telephone band, dB.")
    bandwidth_hz: float = Field(description="The highest frequency the speech reaches (within 40 dB).")


class ChannelOut(BaseModel):
    decided: str = Field(description="The channel the decision was taken in: its voiceprints and thresholds.")
    heard: HeardOut | None = Field(None, description="The channel the recording came through, as measured.")
    note: str | None = Field(None, description="Why the two differ, when they do.")


class IdentificationOut(BaseModel):
    match: CandidateOut | None = Field(description="The best candidate if it clears the threshold, else null.")
    candidates: list[CandidateOut]
    threshold: float = Field(description="The bank's identification (1:N) threshold, read at the speech in the "
                                         "recording (`speech_seconds`): longer probes get a higher one.")
    threshold_kind: str = Field(description="Always `identify`: the identification operating point.")
    decision: DecisionOut
    calibration: CalibrationOut
    channel: ChannelOut
    speech_seconds: float | None = Field(None, description="Seconds of speech in the recording, which the threshold "
                                                       "was read at.")


class VerificationOut(BaseModel):
    name: str
    score: float
    threshold: float = Field(description="The bank's verification (1:1) threshold, read at the speech in the "
                                         "recording (`speech_seconds`): longer probes get a higher one.")
    accepted: bool
    threshold_kind: str = Field(description="Always `verify`: the verification operating point.")
    channel: ChannelOut
    speech_seconds: float | None = Field(None, description="Seconds of speech in the recording, which the threshold "
                                                       "was read at.")


class RecordingOut(BaseModel):
    label: str
    sha256: str | None = Field(description="null for an embedding imported without its recording.")
    duration_s: float | None = Field(description="Seconds of audio; null for an imported embedding.")
    speech_s: float | None = Field(description="Seconds of speech; null for an imported embedding.")
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
    replica: bool = Field(False, description="The server reads a read replica: it identifies, verifies and reads; "
                                             "changes are refused (409) and go to a server on the primary.")


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": text}
    for status, text in {
        401: "Missing, unknown or revoked API key.",
        403: "A reader key where an admin key is needed.",
        404: "No such speaker.",
        409: "Name taken, recording already enrolled, voice matches another speaker (strict), or empty bank.",
        413: "The request body is over the server's limit.",
        422: "Unreadable or unusable audio, a recording over the duration limit, or an invalid field.",
        503: "The model or the database is unavailable, or the read replica this server reads has not replayed the "
             "primary's latest changes within --max-lag (nothing was decided: retry).",
    }.items()
}


class RecordingCheckOut(BaseModel):
    label: str
    duration_s: float | None = Field(description="Seconds of audio; null when it could not be decoded.")
    speech_s: float | None = Field(description="Seconds heard as speech (silero-vad); null when not decoded.")
    consistency: float | None = Field(description="Cosine against the voiceprint of the other takes; null alone.")
    usable: bool = Field(description="True when the take has no problem.")
    problems: list[str] = Field(description="What is wrong with the take, as enrollment would say it.")


class EnrollmentCheckOut(BaseModel):
    speaker: str | None = Field(description="The enrolled speaker the takes were checked against, if any.")
    recordings: list[RecordingCheckOut]
    speech_s: float = Field(description="Speech in the usable takes (and the speaker's stored recordings).")
    needed_s: float = Field(description="Speech that enrollment needs in all.")
    ready: bool = Field(description="True when enrolling these takes now would succeed (not strict).")
    duplicate_of: str | None = Field(description="An enrolled speaker whose voice these takes already match.")
    problems: list[str] = Field(description="About the takes as a whole, what stops enrollment (too little speech "
                                            "in all; a stored recording unlike the takes), as enrollment would say it.")
    warnings: list[str] = Field(description="About the takes as a whole: the voice already enrolled (enrollment "
                                            "warns; strict refuses).")


class AuditEntryOut(BaseModel):
    at: str
    operation: str = Field(description="identify, verify, or scan (a row per segment of a scan).")
    claimed: str | None = Field(description="verify: the name claimed.")
    returned: str | None = Field(description="The speaker accepted, or null.")
    score: float | None
    threshold: float
    score_kind: str
    accepted: bool
    model_id: str
    recording_sha256: str
    client: str | None = Field(description="The API key's name that asked.")
    channel: str | None = Field(None, description="The channel decided in.")
    detail: str | None = Field(None, description="Why the recording was refused (nothing was decided); for a scan "
                                                "segment, its span in the recording.")


class AuditPageOut(BaseModel):
    entries: list[AuditEntryOut] = Field(description="Newest first.")
    limit: int
    offset: int
    next_offset: int | None = Field(description="The offset of the next page; null on the last.")


class OperatingPointOut(BaseModel):
    purpose: str
    threshold: float
    kind: str
    method: str
    target: float | None
    rate: float | None
    counted: int | None
    trials: int | None
    miss: float | None
    hit: float | None
    wrong: float | None
    genuine: int | None
    gallery: int | None
    rule: str | None
    channel: str = Field(description="The channel its trials came through.")
    upper: float | None = Field(None, description="95% upper confidence bound of the counted rate.")
    asked: float | None = Field(None, description="The rate asked for, when the trials supported only `target`.")
    sources: dict[str, float] | None = Field(None, description="Where the unknown-person trials came from: own, "
                                             "cohort and reference (counts), and shift (the reference's level shift).")
    lengths: list[LengthOut] | None = Field(None, description="The threshold by the speech in a probe.")


class ThresholdsOut(BaseModel):
    status: dict[str, dict[str, Any]] = Field(description="Per purpose: the threshold and what it promises now "
                                                          "(wideband).")
    points: dict[str, OperatingPointOut] = Field(description="Per purpose: how the threshold was set (wideband).")
    channels: dict[str, dict[str, Any]] = Field(description="The same for the telephone channel: "
                                                            "{\"telephone\": {\"status\", \"points\"}}.")


class CalibrationDryRunOut(BaseModel):
    source: str
    channel: str = Field(description="wideband; the telephone channel's figures are under `channels`.")
    score: str
    gallery: int
    trials: dict[str, int] = Field(description="genuine, impostor and unknown-person trials measured.")
    chosen: dict[str, OperatingPointOut] = Field(description="The thresholds calibration would store.")
    stored: dict[str, OperatingPointOut] = Field(description="The stored thresholds' rates on the same trials.")
    growth: list[dict[str, float]] = Field(description="Identification false alarms as the bank grows.")
    channels: dict[str, Any] | None = Field(None, description="The same, measured in the telephone channel.")
    skipped: dict[str, str] | None = Field(None, description="A channel that could not be calibrated, and why.")
    plots: dict[str, str] = Field(description="det (and identify): PNG images as data: URLs; empty without matplotlib.")
    dry_run: bool = Field(description="Always true: nothing was stored (`voicebank calibrate --yes` stores).")


class KeyOut(BaseModel):
    name: str = Field(description="The API key's name (decisions are audited under it).")
    role: str = Field(description="reader or admin.")
