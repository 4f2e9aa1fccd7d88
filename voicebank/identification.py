"""Decisions: who is speaking (1:N open set) and is this that person (1:1), each audited.

The search proposes candidates; their scores are exact cosines against the voiceprints in SQL
(rescored here), then normalized as the bank's score says. Like every use case, each function
takes what it uses as its first argument (:class:`Services`).
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Protocol

import numpy as np

from . import calibration, norm, scoring, settings as settings_mod, validate
from .audio import Audio, Recording
from .calibration import OperatingPoint
from .encoding import Encoder
from .errors import InvalidInputError, VoiceBankError
from .index.search import Search
from .results import Candidate, Identification, Verification
from .store import BankRow
from .store.repository import Repository
from .store.repository_records import AuditLog

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (done, total, label of the recording just done)


class Services(Protocol):
    """What decisions use: the rows, the candidate search, the model over recordings, the audit trail."""

    @property
    def repository(self) -> Repository: ...
    @property
    def search(self) -> Search: ...
    @property
    def encoder(self) -> Encoder: ...
    @property
    def audit(self) -> AuditLog: ...


def scorer(services: Services, settings: BankRow) -> norm.Normalizer:
    """The bank's score function: cosine, or AS-norm against the cohort (or, with no cohort, the
    other enrolled speakers found through the search)."""
    if settings.score == norm.COSINE:
        return norm.Normalizer(norm.COSINE, 0)
    cohort = services.repository.cohort_embeddings(services.encoder.dimension)
    return norm.Normalizer(norm.ASNORM, settings.cohort_top_n, cohort if len(cohort) else None,
                           lambda queries, k: services.search.search(queries, k)[:2])


def identify(services: Services, recording: Recording, top_k: int, client: str | None) -> Identification:
    top_k = validate.top_k(top_k)
    audio = services.encoder.load(recording)
    settings = services.repository.settings()
    point = settings_mod.operating_points(settings)[calibration.IDENTIFY]
    return _audited(services, audio, services.encoder.embed([audio])[0], top_k, settings, point, client)


def identify_many(services: Services, recordings: Iterable[Recording], top_k: int, client: str | None,
                  progress: Progress | None) -> list[Identification | VoiceBankError]:
    top_k = validate.top_k(top_k)
    recordings = list(recordings)
    settings = services.repository.settings()
    point = settings_mod.operating_points(settings)[calibration.IDENTIFY]
    out: list[Identification | VoiceBankError] = []
    with services.encoder.stream(recordings) as stream:
        for item in stream:
            out.append(item.error if item.error is not None
                       else _audited(services, item.audio, item.embedding, top_k, settings, point, client))
            if progress:
                progress(item.index + 1, len(recordings), item.audio.label if item.audio else "")
    return out


def identify_embeddings(services: Services, embeddings: np.ndarray, top_k: int) -> list[Identification]:
    top_k = validate.top_k(top_k)
    embeddings = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
    dimension = services.encoder.dimension
    if embeddings.ndim != 2 or embeddings.shape[1] != dimension or not np.all(np.isfinite(embeddings)):
        raise InvalidInputError(f"embeddings must be finite numbers shaped (n, {dimension}) for this bank's "
                                f"model, not {embeddings.shape}.")
    settings = services.repository.settings()
    point = settings_mod.operating_points(settings)[calibration.IDENTIFY]  # once, not per window
    return [_identify(services, e, top_k, settings, point) for e in embeddings]


def verify(services: Services, name: str, recording: Recording, client: str | None) -> Verification:
    name = validate.name(name)
    speaker_id, stored = services.repository.voiceprint(name)
    audio = services.encoder.load(recording)
    embedding = services.encoder.embed([audio])[0]
    settings = services.repository.settings()
    score = float(scorer(services, settings).score(embedding, stored, [speaker_id], [speaker_id])[0])
    accepted = scoring.accept(score, settings.threshold)
    _audit(services, "verify", name, name if accepted else None, score, settings.threshold, settings, accepted,
           audio.sha256, client)
    return Verification(name, score, settings.threshold, accepted)


def _audited(services: Services, audio: Audio, embedding: np.ndarray, top_k: int, settings: BankRow,
             point: OperatingPoint, client: str | None) -> Identification:
    result = _identify(services, embedding, top_k, settings, point)  # the audited score is what met the threshold
    _audit(services, "identify", None, result.match.name if result.match else None, result.decision,
           result.threshold, settings, result.match is not None, audio.sha256, client)
    return result


def _identify(services: Services, embedding: np.ndarray, top_k: int, settings: BankRow,
              point: OperatingPoint) -> Identification:
    ranked, found, gallery = _candidates(services, embedding, max(top_k, 2), settings)  # the margin rule needs two
    if settings.score == norm.ASNORM and ranked:
        kept = [i for _, i in ranked]
        vectors = np.stack([found[i][1] for i in kept])
        normed = scorer(services, settings).score(np.repeat(embedding[None, :], len(kept), 0), vectors, kept, kept)
        ranked = sorted(zip(normed.tolist(), kept), key=lambda pair: -pair[0])
    candidates = [Candidate(found[i][0], s) for s, i in ranked]
    threshold, rule = settings.identify_threshold, settings.identify_rule
    decision = (calibration.decide(candidates[0].score, candidates[1].score if len(candidates) > 1 else None, rule)
                if candidates else None)
    match = candidates[0] if decision is not None and scoring.accept(decision, threshold) else None
    return Identification(match, candidates[:top_k], threshold, point.status(gallery), rule, decision)


def _candidates(services: Services, embedding: np.ndarray, top_k: int, settings: BankRow
                ) -> tuple[list[tuple[float, int]], dict[int, tuple[str, np.ndarray]], int]:
    """The search's top-k candidates, rescored as exact cosines against their voiceprints in SQL,
    best first, and how many voiceprints were searched (the N of 1:N). The search only proposes:
    a stale or tampered index (a candidate whose score or existence disagrees with SQL) is logged,
    rebuilt from SQL and searched again."""
    for attempt in (1, 2):
        scores, ids, gallery = services.search.search(embedding[None, :], top_k, settings.index_kind)
        proposed = [(float(s), int(i)) for s, i in zip(scores[0], ids[0]) if i >= 0]
        found = services.repository.voiceprints([i for _, i in proposed])
        exact = {i: float(np.dot(embedding.astype(np.float64), vector)) for i, (_, vector) in found.items()}
        # float32 search against float64 rescoring differ by ~1e-6; another voice's vector by far more
        wrong = [i for s, i in proposed if i not in exact or abs(s - exact[i]) > 1e-4]
        if not wrong or attempt == 2:
            break
        log.warning("the index disagreed with SQL on %d of %d candidates (stale or damaged index file); "
                    "rebuilding it from SQL", len(wrong), len(proposed))
        services.search.rebuild()
    ranked = sorted(((exact[i], i) for _, i in proposed if i in exact), key=lambda pair: -pair[0])
    return ranked, found, gallery


def _audit(services: Services, operation: str, claimed: str | None, returned: str | None, score: float | None,
           threshold: float, settings: BankRow, accepted: bool, sha256: str, client: str | None) -> None:
    services.audit.add(operation=operation, claimed=claimed, returned=returned, score=score, threshold=threshold,
                       score_kind=settings.score, accepted=accepted, model_id=services.encoder.model_id,
                       recording_sha256=sha256, client=client)
