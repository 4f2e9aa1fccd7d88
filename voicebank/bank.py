"""The VoiceBank facade: the one object a backend embeds, and the one module that knows every layer.

Data flows one way: recording -> audio -> embedding -> SQL (source of truth) -> search -> decision.
The facade only wires. SQL is in ``store/repository*.py``; each use case (``enrollment``,
``identification``, ``precheck``, ``scan``, ``evaluation``, ``trials``) is a function whose first
argument is the :class:`~voicebank.services.Services` the facade wires once (``settings`` takes its
rows alone, ``Services.repository``).
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import Any, Iterable, Sequence

import numpy as np

from . import audit as audit_mod
from . import calibration, enrollment, evaluation, identification, opening, pipeline, settings, validate
from . import trials as trial_lists
from . import scan as scanning
from .audio import AudioLimits, Recording
from .channel import TELEPHONE, WIDEBAND
from .embedding import Embedder
from .embedding.base import DEFAULT_WINDOW_SECONDS
from .encoding import Encoder, OnError, Progress
from .errors import VoiceBankError
from .index.search import compare
from .index.switch import BankSearch
from .policy import default_threshold
from .results import CheckReport, Enrollment, EnrollmentOutcome, Identification, Speaker, Verification
from .services import Services
from .store import BankRow, Store
from .store.repository import Repository
from .store.repository_records import AuditLog

log = logging.getLogger(__name__)


class VoiceBank:
    """Enrolled speakers in SQL, searchable through an index. Thread-safe; use as a context manager.
    Open with :meth:`open`. A recording is a path, bytes, a binary file object or ``(samples, rate)``."""

    def __init__(self, store: Store, bank: BankRow, embedder: Embedder, search: BankSearch, limits: AudioLimits,
                 window_seconds: float):
        self._store, self._search, self._repository = store, search, Repository(store)
        self.model_id, self.model_source, self.dimension = bank.model_id, bank.model_source, bank.dimension
        self._encoder = Encoder(embedder, bank.model_id, bank.model_source, bank.dimension, limits, window_seconds)
        self._services = Services(self._repository, self._search, self._encoder, AuditLog(store))

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, db: str | os.PathLike | None = None, model: str | Embedder | None = None, *, create: bool = False,
             threshold: float | None = None, identify_rule: str = "margin", index: str = "flat",
             device: str | None = None, index_path: str | os.PathLike | None = None,
             limits: AudioLimits = AudioLimits(), window_seconds: float = DEFAULT_WINDOW_SECONDS,
             exist_ok: bool = True, primary: str | os.PathLike | None = None,
             max_lag: float | None = None) -> "VoiceBank":
        """Open the bank in ``db`` (a SQLAlchemy URL or a SQLite file path; default ``VOICEBANK_DB``
        or ./voicebank.db).

        ``model``: a hub id, a local model directory, ``"resemblyzer"`` or an :class:`Embedder`;
        default ``VOICEBANK_MODEL``, else the model the bank was created with. With ``create=True``
        a missing bank is created (schema migrated to the newest revision, ``threshold`` or the
        model's default stored for both decisions, ``identify_rule`` what identification decides
        on: ``margin`` or ``best``, ``index`` the FAISS index kind: flat, hnsw or ivf), and with
        ``exist_ok=False`` too, an existing bank is an error (``voicebank init``). The model is
        loaded only when something must be embedded.

        ``primary``: ``db`` is a PostgreSQL read replica (hot standby) and this is its primary's
        URL (``VOICEBANK_PRIMARY`` on the CLI). The bank then reads ``db``, writes each decision's
        audit row to ``primary``, and refuses every change with :class:`~voicebank.errors.ReplicaError` (a change
        made through the primary would not be seen by this process until the replica replays it):
        changes go through a bank opened on the primary. The same URL as ``db`` is ignored; SQLite
        is refused.

        ``max_lag`` (seconds, default 5; ``--max-lag``): with ``primary``, each decision (identify,
        verify, a scan's windows) first waits until the replica has replayed every change the
        primary had acknowledged when the decision was asked for (a removal, a threshold), at most
        this long, then raises :class:`~voicebank.errors.StaleReplicaError` instead of deciding on
        stale rows.
        """
        parts = opening.open_parts(db, model, device, create, exist_ok, threshold, identify_rule, index, index_path,
                                   primary, max_lag)
        return cls(*parts, limits, window_seconds)

    def close(self) -> None:
        """Save the index cache if it changed, release the database connections, and stop the
        embedding worker threads (they start again if another bank needs them)."""
        self._search.save()
        self._store.dispose()
        pipeline.shutdown()

    def __enter__(self) -> "VoiceBank":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def reads_replica(self) -> bool:
        """True when this bank reads a read replica (opened with ``primary``): it identifies,
        verifies and reads, and refuses every change."""
        return self._store.primary is not None

    def refuse_changes(self, what: str) -> None:
        """Raise :class:`~voicebank.errors.ReplicaError` now if this bank reads a replica (``what``: a verb phrase
        for the message, e.g. "store thresholds"): to refuse before a long job rather than after it."""
        self._store.refuse_changes(what)

    @property
    def limits(self) -> AudioLimits:
        """What a recording must be to be used (:class:`~voicebank.audio.AudioLimits`)."""
        return self._encoder.limits

    @limits.setter
    def limits(self, value: AudioLimits) -> None:
        self._encoder.limits = value

    @property
    def window_seconds(self) -> float:
        """Long recordings are embedded in windows of this many seconds (bounded memory)."""
        return self._encoder.window_seconds

    @window_seconds.setter
    def window_seconds(self, value: float) -> None:
        self._encoder.window_seconds = value

    # -- settings ------------------------------------------------------------------------------
    @property
    def threshold(self) -> float:
        """The verification (1:1) threshold on the bank's score, as stored."""
        return self._repository.settings().threshold

    @property
    def identify_threshold(self) -> float:
        """The identification (1:N open set) threshold, as stored."""
        return self._repository.settings().identify_threshold

    @property
    def identify_rule(self) -> str:
        """What that threshold applies to: ``best`` score, or ``margin`` (:func:`calibration.decide`)."""
        return self._repository.settings().identify_rule

    @property
    def score_kind(self) -> str:
        """``cosine`` or ``asnorm``: what scores and the thresholds mean in this bank."""
        return self._repository.settings().score

    @property
    def index_kind(self) -> str:
        return self._repository.settings().index_kind

    def operating_points(self, channel: str = WIDEBAND) -> dict[str, calibration.OperatingPoint]:
        """The two thresholds of ``channel`` and what each means: ``{"verify": ..., "identify": ...}``."""
        return settings.operating_points(self._repository.settings(), channel)

    def set_threshold(self, value: float, purpose: str | None = None, channel: str | None = WIDEBAND) -> None:
        """Set a threshold by hand: ``purpose`` ``"verify"``, ``"identify"``, or None for both; in
        ``channel`` (``wideband`` or ``telephone``; None: both)."""
        settings.set_threshold(self._repository, value, purpose, channel)

    def set_operating_point(self, point: calibration.OperatingPoint) -> None:
        """Store a calibrated threshold with what it means (see :mod:`voicebank.calibration`)."""
        settings.set_operating_point(self._repository, point)

    @property
    def enrollment_checks(self) -> tuple[float, float]:
        """The (consistency, duplicate voice) cosine thresholds of the enrollment checks, set when
        the bank was made (fixed offsets from its starting threshold; ``policy.CHECK_OFFSETS``)."""
        return self._services.checks()

    def set_enrollment_checks(self, consistency: float | None = None, duplicate: float | None = None,
                              *, reset: bool = False) -> tuple[float, float]:
        """Set the enrollment checks' cosine thresholds (None keeps one as it is; ``reset`` goes
        back to the model's defaults). Returns them as :attr:`enrollment_checks` does."""
        settings.set_checks(self._repository, consistency, duplicate, reset)
        return self.enrollment_checks

    def set_score_normalization(self, kind: str, top_n: int = 100, threshold: float | None = None) -> float:
        """Switch the score to ``cosine`` or ``asnorm`` (top-``top_n`` cohort). The old threshold
        means nothing on the new score, so it is replaced by ``threshold`` or that score's
        starting default; calibrate afterwards. Returns the new threshold."""
        return settings.set_score(self._repository, kind, top_n, threshold, default_threshold(self._encoder.embedder))

    def calibrate(self, trials: str | os.PathLike | None = None, *, root: str | os.PathLike | None = None,
                  far: float | None = 0.01, unknown_rate: float = 0.01,
                  purposes: tuple[str, ...] = (calibration.VERIFY, calibration.IDENTIFY), rule: str | None = None,
                  progress: Progress | None = None) -> evaluation.Calibration:
        """Measure the thresholds for ``purposes`` on the bank's own recordings, or on the trial
        list ``trials`` (verification only); nothing is stored (see :meth:`store_calibration`)."""
        return evaluation.calibrate_bank(self._services, trials, root=root, far=far, unknown_rate=unknown_rate,
                                         purposes=purposes, rule=rule, progress=progress)

    def store_calibration(self, result: evaluation.Calibration) -> None:
        """Store the thresholds :meth:`calibrate` chose, in every channel it measured."""
        for measured in result.every_channel():
            for point in measured.chosen.values():
                self.set_operating_point(point)

    # -- enrollment ----------------------------------------------------------------------------
    def enroll(self, name: str, recordings: Sequence[Recording], metadata: dict[str, Any] | None = None,
               progress: Progress | None = None, *, allow_inconsistent: bool = False, strict: bool = False) -> Speaker:
        """Enroll a new speaker from one or more recordings.

        Every recording is checked and embedded before anything is written; on any error nothing is
        stored. Refused: a taken ``name`` (:class:`DuplicateSpeakerError`), less speech in all than
        ``limits.min_enroll_speech_seconds``, and a recording that does not sound like the others
        (:class:`InconsistentRecordingError`, unless ``allow_inconsistent``). A voice that already
        matches another speaker is a warning in ``Speaker.warnings``, or with ``strict`` a
        :class:`DuplicateVoiceError`.
        """
        self.refuse_changes("enroll")  # before embedding anything
        speaker = enrollment.enroll(self._services, name, recordings, metadata, progress, allow_inconsistent, strict)
        self._recalibrate()
        return speaker

    def enroll_many(self, speakers: Iterable[Enrollment], progress: Progress | None = None, *,
                    allow_inconsistent: bool = False, strict: bool = False) -> list[EnrollmentOutcome]:
        """Enroll many speakers, each as :meth:`enroll` would, their recordings batched across
        speakers; each is stored as soon as it is embedded. One that fails a check, or is already
        enrolled, does not stop the others: each gets an :class:`EnrollmentOutcome`, in order."""
        self.refuse_changes("enroll")  # once, rather than once per speaker in its outcome
        outcomes = enrollment.enroll_many(self._services, list(speakers), progress, allow_inconsistent, strict)
        self._recalibrate()
        return outcomes

    def add_recordings(self, name: str, recordings: Sequence[Recording], progress: Progress | None = None,
                       *, allow_inconsistent: bool = False, strict: bool = False) -> Speaker:
        """Add recordings to an enrolled speaker and recompute the voiceprint from all of them.
        The same checks as :meth:`enroll` apply to the speaker's recordings taken together."""
        self.refuse_changes("add recordings")
        speaker = enrollment.add_recordings(self._services, name, recordings, progress, allow_inconsistent, strict)
        self._recalibrate()
        return speaker

    def remove(self, name: str) -> None:
        """Remove a speaker: its voiceprint and every utterance embedding, from SQL and the index."""
        self._repository.remove_speaker(validate.name(name))
        log.info("removed %s", name)
        self._recalibrate()

    def _recalibrate(self) -> None:
        """Measure the automatic operating points again after a change (``evaluation.auto_calibration``).
        A point set meanwhile by hand or by ``calibrate`` (another process, another thread) is kept;
        a failure here never undoes the change that called it: it is logged."""
        if len(self) > evaluation.AUTO_MAX_SPEAKERS:
            return
        try:
            for point in evaluation.auto_calibration(self._services):
                settings.set_automatic_point(self._repository, point)
        except VoiceBankError as exc:
            log.warning("automatic calibration skipped: %s", exc)

    # -- the audit trail and the cohort --------------------------------------------------------
    def audit(self, speaker: str | None = None, since: datetime | None = None, until: datetime | None = None,
              limit: int | None = None, *, operation: str | None = None, client: str | None = None,
              offset: int = 0) -> list[audit_mod.AuditEntry]:
        """Identification and verification decisions, newest first (``speaker``: claimed or returned;
        ``operation``: identify or verify; ``client``: who asked), a page at a time with ``offset``."""
        return audit_mod.entries(self._store, speaker, since, until, limit, operation=operation, client=client,
                                 offset=offset)

    def purge_audit(self, before: datetime) -> int:
        """Delete decisions older than ``before``; returns how many were deleted."""
        return audit_mod.purge(self._store, before)

    def add_cohort(self, recordings: Sequence[Recording], progress: Progress | None = None,
                   on_error: OnError | None = None) -> int:
        """Add recordings of people who are NOT enrolled to the AS-norm cohort (those already in it
        are skipped); returns its size. An unusable one raises, or is reported to ``on_error``."""
        self.refuse_changes("change the cohort")
        size = enrollment.add_cohort(self._services, recordings, progress, on_error)
        self._recalibrate()
        return size

    def cohort_size(self) -> int:
        return self._repository.cohort_size()

    def reference_set(self):  # -> voicebank.reference.Reference | None
        """The reference set of strangers shipped for this bank's model, or None (:mod:`voicebank.reference`)."""
        from . import reference

        return reference.for_model(self.model_id)

    def clear_cohort(self) -> None:
        self._repository.clear_cohort()
        self._recalibrate()

    # -- reading -------------------------------------------------------------------------------
    def speakers(self) -> list[Speaker]:
        """Every enrolled speaker, by name."""
        return [enrollment.to_speaker(row) for row in self._repository.speakers()]

    def speaker(self, name: str) -> Speaker:
        return enrollment.to_speaker(self._repository.speaker(validate.name(name)))

    def __len__(self) -> int:
        return self._repository.count()

    def voiceprint(self, name: str, channel: str = WIDEBAND) -> tuple[int, np.ndarray | None]:
        """(speaker id, (dimension,) voiceprint in ``channel``) of an enrolled speaker; the voiceprint
        is None where the speaker has none in that channel (see ``Repository.voiceprints``)."""
        return self._repository.voiceprint(validate.name(name), validate.channel(channel))

    # -- decisions -----------------------------------------------------------------------------
    def identify(self, recording: Recording, top_k: int = 5, client: str | None = None) -> Identification:
        """Who is speaking? The ``top_k`` closest voiceprints, and a match only if the best score
        clears the threshold (open set: an unknown voice gets ``match=None``). Audited."""
        return identification.identify(self._services, recording, top_k, client)

    def identify_many(self, recordings: Iterable[Recording], top_k: int = 5, client: str | None = None,
                      progress: Progress | None = None) -> list[Identification | VoiceBankError]:
        """:meth:`identify` for many recordings (decoded ahead and batched), in order; an unusable
        one's error is returned in its place (as ``gather(..., return_exceptions=True)``). Audited."""
        return identification.identify_many(self._services, recordings, top_k, client, progress)

    def identify_embeddings(self, embeddings: np.ndarray, top_k: int = 5, channel: str = WIDEBAND,
                            purpose: str = calibration.IDENTIFY) -> list[Identification]:
        """:meth:`identify` for precomputed (n, dimension) embeddings of this bank's model in
        ``channel`` (as :meth:`embed` gives them, or through the telephone channel:
        ``voicebank.encoding.in_channel``), e.g. the windows of a long recording (``purpose``
        ``"scan"``: with the operating point of scan's windows, where one was measured). Not audited."""
        return identification.identify_embeddings(self._services, embeddings, top_k, channel, purpose)

    def scan(self, recording: Recording, window: float = scanning.DEFAULT_WINDOW, hop: float | None = None,
             top_k: int = 1, progress: Progress | None = None, *, min_pause: float = scanning.MIN_PAUSE,
             min_speech: float = scanning.MIN_SPEECH, max_seconds: float = scanning.MAX_SECONDS,
             purpose: str = calibration.SCAN) -> scanning.Timeline:
        """Who speaks when in a long recording: a timeline of enrolled speakers and unknown voices,
        window by window, silence left out; each segment audited (:func:`voicebank.scan.timeline`)."""
        return scanning.timeline(self._services, recording, window, hop, top_k, progress, min_pause=min_pause,
                                 min_speech=min_speech, max_seconds=max_seconds, purpose=purpose)

    def verify(self, name: str, recording: Recording, client: str | None = None) -> Verification:
        """Is this ``name``? The recording scored against that speaker's voiceprint. Audited."""
        return identification.verify(self._services, name, recording, client)

    def score_trial_file(self, path: str | os.PathLike, root: str | os.PathLike | None = None,
                         progress: Progress | None = None) -> trial_lists.Scores:
        """Score the trial list at ``path`` (relative paths from ``root``, default its folder) with
        the bank's model and score, as ``voicebank eval`` does (:mod:`voicebank.trials`)."""
        return trial_lists.score_file(self._services, path, root, progress)

    def scorer(self, settings: BankRow | None = None, channel: str = WIDEBAND):  # -> voicebank.norm.Normalizer
        """The bank's score function in ``channel`` (cosine, or AS-norm against the cohort or the
        enrolled speakers)."""
        return identification.scorer(self._services, settings or self._repository.settings(), channel)

    # -- embeddings ----------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        """The model's input rate in Hz (what :meth:`embed_samples` expects)."""
        return self._encoder.sample_rate

    def embed(self, recording: Recording) -> np.ndarray:
        """The (dimension,) float32 L2-normalized embedding of one recording, with this bank's model."""
        return self._encoder.embed([self._encoder.load(recording)])[0]

    def embed_many(self, recordings: Iterable[Recording], progress: Progress | None = None,
                   on_error: OnError | None = None) -> np.ndarray:
        """(n, dimension) embeddings, as :meth:`embed` gives them, decoded ahead of the model and
        batched. An unusable recording raises, or is reported to ``on_error`` and its row is NaN."""
        return self._encoder.embed_many(recordings, progress, on_error)

    def embed_samples(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """(n, dimension) embeddings of mono float32 waveforms already at :attr:`sample_rate`,
        without the recording checks of :meth:`embed` (the caller has done its own)."""
        return self._encoder.embed_samples(waveforms)

    @property
    def api_keys(self):  # -> voicebank.apikeys.ApiKeys
        """The HTTP API keys stored in this bank's database."""
        from .apikeys import ApiKeys

        return ApiKeys(self._store)

    # -- the index -----------------------------------------------------------------------------
    def check(self) -> CheckReport:
        """Compare the index (as found on disk, then caught up) with SQL, voiceprint by voiceprint."""
        found = compare(self._search.contents, self._repository.all_voiceprints)
        telephone = compare(lambda: self._search.contents(TELEPHONE), lambda: self._repository.all_voiceprints(TELEPHONE))
        lacking = {channel: self.lacking(channel) for channel in (TELEPHONE, WIDEBAND)}
        return CheckReport(found.in_sql, found.held, found.status, found.missing, found.extra, found.wrong,
                           self.calibration_status(found.in_sql), lacking,
                           self.calibration_status(found.in_sql, TELEPHONE), telephone.to_dict(),
                           self._repository.shared_recordings())

    def lacking(self, channel: str) -> int:
        """How many speakers have no voiceprint in ``channel`` (``telephone``: enrolled before voicebank
        measured channels; ``wideband``: enrolled over the telephone only), counted up to 1,000."""
        return self._repository.lacking(channel)

    def calibration_status(self, gallery: int | None = None, channel: str = WIDEBAND) -> dict[str, dict[str, Any]]:
        """Each threshold of ``channel`` with what it promises with ``gallery`` speakers (default:
        as many as are enrolled), and for identification whether the bank has outgrown its calibration."""
        gallery = len(self) if gallery is None else gallery
        return {which: {"threshold": point.threshold, **point.status(gallery)}
                for which, point in self.operating_points(channel).items()}

    def reindex(self, kind: str | None = None) -> int:
        """Rebuild the index from SQL and save it, as ``kind`` (flat, hnsw, ivf, or pgvector on
        PostgreSQL) if given, which every process then uses; returns the number of voiceprints indexed.
        Refused when this bank reads a replica (its index follows what the replica replays)."""
        self.refuse_changes("reindex")
        if kind is not None:
            settings.set_index_kind(self._repository, kind, self.dimension, opening.public(self._store.url))
        return self._search.reindex(self._repository.settings().index_kind)

    def save_index(self) -> None:
        """Write the index cache file now (it is also written on :meth:`close`)."""
        self._search.save()

    # -- for the console and any client: checking takes without storing them ------------------
    def check_recordings(self, recordings: Sequence[Recording], name: str | None = None):  # -> precheck.EnrollmentCheck
        """Check takes as :meth:`enroll` (or with ``name``, :meth:`add_recordings`) would, storing
        nothing: each take's speech and problems, and the speech in all against what is needed."""
        from . import precheck

        return precheck.check(self._services, recordings, None if name is None else validate.name(name))
