"""Decisions: who is speaking (1:N open set) and is this that person (1:1), each audited.

The search proposes candidates; their scores are exact cosines against the voiceprints in SQL
(rescored here), then normalized as the bank's score says. Each decision first waits for a read
replica to replay what its primary has acknowledged (``Store.catch_up``), so a removed person is
never let in. Like every use case, each function takes what it uses as its first argument
(:class:`~voicebank.services.Services`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from . import calibration, norm, scoring, settings as settings_mod, validate
from . import channel as channel_mod
from .audio import Audio, Recording
from .encoding import Progress, to_embed
from .errors import InvalidInputError, VoiceBankError
from .results import Candidate, Identification, Verification
from .services import Services
from .store import BankRow

log = logging.getLogger(__name__)


def scorer(services: Services, settings: BankRow, channel: str = channel_mod.WIDEBAND) -> norm.Normalizer:
    """The bank's score function in ``channel``: cosine, or AS-norm against the cohort (or, with no
    cohort, the other enrolled speakers found through the search, scored in that channel)."""
    if settings.score == norm.COSINE:
        return norm.Normalizer(norm.COSINE, 0)
    cohort = services.repository.cohort_embeddings(services.encoder.dimension, channel)

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return services.search.search(queries, k, settings.index_kind, channel)[:2]

    return norm.Normalizer(norm.ASNORM, settings.cohort_top_n, cohort if len(cohort) else None, search)


def decision_channel(services: Services, heard: str) -> tuple[str, str | None]:
    """The channel to decide a probe heard through ``heard`` in, across the whole bank, and a note
    for the answer when it is not the channel heard (:func:`voicebank.channel.decision_channel`)."""
    return channel_mod.decision_channel(heard, services.repository.lacking)


def identify(services: Services, recording: Recording, top_k: int, client: str | None) -> Identification:
    services.repository.store.catch_up()
    top_k = validate.top_k(top_k)
    audio = _load(services, recording, "identify", None, client)
    settings = services.repository.settings()
    channel, note = decision_channel(services, _heard(audio))
    embedding = services.encoder.embed_in([audio], channel)[0]
    return _audited(services, audio, embedding, top_k, settings, _Heard(audio.channel, channel, note), client)


def identify_many(services: Services, recordings: Iterable[Recording], top_k: int, client: str | None,
                  progress: Progress | None) -> list[Identification | VoiceBankError]:
    services.repository.store.catch_up()
    top_k = validate.top_k(top_k)
    recordings = list(recordings)
    settings = services.repository.settings()
    decide_in = {heard: decision_channel(services, heard) for heard in channel_mod.CHANNELS}  # once, not per file
    out: list[Identification | VoiceBankError] = []
    views = lambda audio: [to_embed(audio, decide_in[_heard(audio)][0])]  # noqa: E731
    with services.encoder.stream(recordings, views) as stream:
        for item in stream:
            if item.error is not None:
                _refused(services, "identify", None, item.error, client)
                out.append(item.error)
            else:
                channel, note = decide_in[_heard(item.audio)]
                out.append(_audited(services, item.audio, item.embedding, top_k, settings,
                                    _Heard(item.audio.channel, channel, note), client))
            if progress:
                progress(item.index + 1, len(recordings), item.audio.label if item.audio else "")
    return out


def identify_embeddings(services: Services, embeddings: np.ndarray, top_k: int,
                        channel: str = channel_mod.WIDEBAND, purpose: str = calibration.IDENTIFY,
                        seconds: float | None = None) -> list[Identification]:
    """Identify embeddings made elsewhere (or scan's windows: ``purpose`` scan). ``seconds``: the
    speech behind each, which picks the threshold (``OperatingPoint.at``); None (not known) takes
    the highest it reads, which keeps its promise at any length."""
    services.repository.store.catch_up()
    top_k = validate.top_k(top_k)
    embeddings = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
    dimension = services.encoder.dimension
    if embeddings.ndim != 2 or embeddings.shape[1] != dimension or not np.all(np.isfinite(embeddings)):
        raise InvalidInputError(f"embeddings must be finite numbers shaped (n, {dimension}) for this bank's "
                                f"model, not {embeddings.shape}.")
    if channel not in channel_mod.CHANNELS:
        raise InvalidInputError(f"a channel is {' or '.join(channel_mod.CHANNELS)}, not {channel!r}.")
    if purpose not in (calibration.IDENTIFY, calibration.SCAN):
        raise InvalidInputError(f"embeddings are identified with the identify or scan operating point, not {purpose!r}.")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float, np.number))
                                or not np.isfinite(seconds) or seconds < 0):
        raise InvalidInputError(f"seconds is the speech behind each embedding: a number of 0 or more, or None when "
                                f"not known, not {seconds!r}.")
    settings = services.repository.settings()
    heard = _Heard(None, channel, None)  # once, not per window
    return [_identify(services, e, top_k, settings, heard, purpose, seconds) for e in embeddings]


def verify(services: Services, name: str, recording: Recording, client: str | None) -> Verification:
    services.repository.store.catch_up()
    name = validate.name(name)
    services.repository.voiceprint(name)  # an unknown name is refused before any decoding
    audio = _load(services, recording, "verify", name, client)
    claimed = claim(services, name, _heard(audio))
    embedding = services.encoder.embed_in([audio], claimed.channel)[0]
    score, threshold, accepted, kind = score_claim(services, claimed, embedding, audio.speech_seconds)
    _audit(services, "verify", name, name if accepted else None, score, threshold, kind, accepted,
           audio.sha256, client, claimed.channel)
    return Verification(name, score, threshold, accepted, _Heard(audio.channel, claimed.channel, claimed.note).to_dict(),
                        audio.speech_seconds)


@dataclass(frozen=True)
class Claim:
    """What a verification of ``name`` compares with: the speaker's id, the ``channel`` to decide
    in (and a ``note`` when it is not the one heard), and the voiceprint in that channel."""

    name: str
    speaker_id: int
    channel: str
    note: str | None
    voiceprint: np.ndarray


def claim(services: Services, name: str, heard: str) -> Claim:
    """The claim of ``name`` (validated) for a probe heard through ``heard``; an unknown name raises."""
    name = validate.name(name)
    speaker_id, _ = services.repository.voiceprint(name)
    prints = {c: services.repository.voiceprint(name, c)[1] for c in channel_mod.CHANNELS}
    channel, note = channel_mod.decision_channel(heard, lambda c: int(prints[c] is None))
    return Claim(name, speaker_id, channel, note, prints[channel])


def score_claim(services: Services, claimed: Claim, embedding: np.ndarray,
                seconds: float | None) -> tuple[float, float, bool, str]:
    """(score, threshold, accepted, score kind) of a probe's ``embedding`` (in the claim's channel)
    against the claimed voiceprint, with the bank's verification score and operating point, its
    threshold read at the ``seconds`` of speech behind the probe (``OperatingPoint.at``)."""
    settings = services.repository.settings()
    threshold = settings_mod.operating_points(settings, claimed.channel)[calibration.VERIFY].at(seconds)
    ids = [claimed.speaker_id]
    score = float(scorer(services, settings, claimed.channel).score(embedding, claimed.voiceprint, ids, ids)[0])
    return score, threshold, scoring.accept(score, threshold), settings.score


@dataclass(frozen=True)
class _Heard:
    """The channel a probe came through (as measured; None for embeddings given directly), the one
    it was decided in, and why they differ."""

    reading: channel_mod.Reading | None
    decided: str
    note: str | None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"decided": self.decided}
        if self.reading is not None:
            out["heard"] = self.reading.to_dict()
        if self.note:
            out["note"] = self.note
        return out


def _heard(audio: Audio) -> str:
    return channel_mod.TELEPHONE if audio.telephone else channel_mod.WIDEBAND


def _load(services: Services, recording: Recording, operation: str, claimed: str | None, client: str | None) -> Audio:
    """The probe, decoded and checked; one that cannot be decided on is refused with its error,
    and the refusal is audited."""
    try:
        return services.encoder.load(recording)
    except VoiceBankError as exc:
        _refused(services, operation, claimed, exc, client)
        raise


def _refused(services: Services, operation: str, claimed: str | None, error: VoiceBankError, client: str | None) -> None:
    settings = services.repository.settings()
    point = settings_mod.operating_points(settings)[operation]
    services.audit.add(operation=operation, claimed=claimed, returned=None, score=None, threshold=point.threshold,
                       score_kind=settings.score, accepted=False, model_id=services.encoder.model_id,
                       recording_sha256=getattr(error, "sha256", None) or "", client=client,
                       detail=("refused: " + str(error)).encode("utf-8", "backslashreplace").decode("utf-8")[:255])


def _audited(services: Services, audio: Audio, embedding: np.ndarray, top_k: int, settings: BankRow,
             heard: _Heard, client: str | None) -> Identification:
    # the audited score is what met the threshold
    result = _identify(services, embedding, top_k, settings, heard, seconds=audio.speech_seconds)
    _audit(services, "identify", None, result.match.name if result.match else None, result.decision,
           result.threshold, decision_kind(settings.score, result.rule), result.match is not None, audio.sha256,
           client, heard.decided)
    return result


def operating_point(settings: BankRow, channel: str, purpose: str) -> calibration.OperatingPoint:
    """The operating point a decision of ``purpose`` uses in ``channel``: scan's windows their own
    where it was measured, else identification's."""
    points = settings_mod.operating_points(settings, channel)
    return points.get(purpose) or points[calibration.IDENTIFY]


def record_scan(services: Services, sha256: str, channel: str, segments: Iterable[Any], client: str | None,
                threshold: float) -> None:
    """One audit row per segment of a scan (``voicebank.scan.Segment``): who it named, or no one,
    between which seconds (``detail``), with the segment's score, the mean of its windows' best
    cosines (the windows were each decided on their own statistic against ``threshold``)."""
    for s in segments:
        services.audit.add(operation="scan", claimed=None, returned=s.name, score=s.score, threshold=threshold,
                           score_kind=f"mean best {services.repository.settings().score}", accepted=s.name is not None,
                           model_id=services.encoder.model_id, recording_sha256=sha256, client=client,
                           channel=channel, detail=f"{s.start:.2f}-{s.end:.2f} s")


def decision_kind(score: str, rule: str) -> str:
    """What an identification's decision score is: the bank's score (cosine or asnorm) under the
    best-score rule, ``margin`` (2 x best - second best cosine) or ``asnorm margin`` under the margin rule."""
    if rule != calibration.MARGIN:
        return score
    return "margin" if score == norm.COSINE else f"{score} margin"


def _identify(services: Services, embedding: np.ndarray, top_k: int, settings: BankRow,
              heard: _Heard, purpose: str = calibration.IDENTIFY, seconds: float | None = None) -> Identification:
    channel = heard.decided
    point = operating_point(settings, channel, purpose)
    ranked, found, gallery = _candidates(services, embedding, max(top_k, 2), settings, channel)  # margin needs two
    if settings.score == norm.ASNORM and ranked:
        kept = [i for _, i in ranked]
        vectors = np.stack([found[i][1] for i in kept])
        normed = scorer(services, settings, channel).score(np.repeat(embedding[None, :], len(kept), 0), vectors,
                                                          kept, kept)
        ranked = sorted(zip(normed.tolist(), kept), key=lambda pair: -pair[0])
    candidates = [Candidate(found[i][0], s) for s, i in ranked]
    threshold, rule = point.at(seconds), settings.identify_rule
    decision = (calibration.decide(candidates[0].score, candidates[1].score if len(candidates) > 1 else None, rule)
                if candidates else None)
    match = candidates[0] if decision is not None and scoring.accept(decision, threshold) else None
    return Identification(match, candidates[:top_k], threshold, point.status(gallery), rule, decision,
                          decision_kind(settings.score, rule), heard.to_dict(), seconds)


def _candidates(services: Services, embedding: np.ndarray, top_k: int, settings: BankRow, channel: str
                ) -> tuple[list[tuple[float, int]], dict[int, tuple[str, np.ndarray]], int]:
    """The search's top-k candidates among ``channel``'s voiceprints, rescored as exact cosines
    against their voiceprints in SQL, best first, and how many voiceprints were searched (the N of
    1:N). The search only proposes: a stale or tampered index (a candidate whose score or existence
    disagrees with SQL) is logged, rebuilt from SQL and searched again. A pgvector column holds
    every speaker, those enrolled over the telephone only too: in wideband they are passed over."""
    lacking = services.repository.lacking(channel) if channel == channel_mod.WIDEBAND else 0
    for attempt in (1, 2):
        scores, ids, gallery = services.search.search(embedding[None, :], top_k + lacking, settings.index_kind, channel)
        proposed = [(float(s), int(i)) for s, i in zip(scores[0], ids[0]) if i >= 0]
        found = services.repository.voiceprints([i for _, i in proposed], channel)
        exact = {i: float(np.dot(embedding.astype(np.float64), vector)) for i, (_, vector) in found.items()}
        absent = [i for _, i in proposed if i not in exact]
        if absent and lacking:  # in SQL, with no voiceprint in this channel: expected, not stale
            absent = [i for i in absent if i not in services.repository.voiceprints(absent, channel_mod.TELEPHONE)]
        # float32 search against float64 rescoring differ by ~1e-6; another voice's vector by far more
        wrong = absent + [i for s, i in proposed if i in exact and abs(s - exact[i]) > 1e-4]
        if not wrong or attempt == 2:
            break
        log.warning("the %s index disagreed with SQL on %d of %d candidates (stale or damaged index file); "
                    "rebuilding it from SQL", channel, len(wrong), len(proposed))
        services.search.rebuild(channel)
    ranked = sorted(((exact[i], i) for _, i in proposed if i in exact), key=lambda pair: -pair[0])[:top_k]
    return ranked, found, gallery - lacking


def _audit(services: Services, operation: str, claimed: str | None, returned: str | None, score: float | None,
           threshold: float, score_kind: str, accepted: bool, sha256: str, client: str | None,
           channel: str) -> None:
    services.audit.add(operation=operation, claimed=claimed, returned=returned, score=score, threshold=threshold,
                       score_kind=score_kind, accepted=accepted, model_id=services.encoder.model_id,
                       recording_sha256=sha256, client=client, channel=channel)
