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
from typing import Any, Iterable, Sequence

import numpy as np

from . import calibration, enrollment, identification, opening, pipeline, thresholds, validate
from . import scan as scanning, trials as trial_lists
from .audio import AudioLimits, Recording
from .audit import Audit
from .bulk import BulkImport
from .channel import WIDEBAND
from .cohort import Cohort
from .embedding import Embedder
from .embedding.base import DEFAULT_WINDOW_SECONDS
from .encoding import Encoder, OnError, Progress
from .errors import VoiceBankError
from .index.switch import BankSearch
from .index_upkeep import IndexUpkeep
from .results import Enrollment, EnrollmentOutcome, Identification, Speaker, Verification
from .services import Services
from .store import BankRow, Store
from .store.repository import Repository
from .store.repository_records import AuditLog
from .thresholds import Thresholds

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
        """True when this bank reads a replica (opened with ``primary``): it decides, and refuses changes."""
        return self._store.primary is not None

    def refuse_changes(self, what: str) -> None:
        """Raise :class:`~voicebank.errors.ReplicaError` now if this bank reads a replica (``what``, e.g.
        "store thresholds", in the message): to refuse before a long job rather than after it."""
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
    def thresholds(self) -> Thresholds:
        """Read, set and measure the thresholds (:class:`~voicebank.thresholds.Thresholds`): ``verify``,
        ``identify``, ``operating_points``, ``set``, ``calibrate``, ``store_calibration``, ``status``,
        the enrollment checks, the score normalization and the reference set of strangers."""
        return Thresholds(self._services)

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
        thresholds.recalibrate(self._services)  # logs, never raises: the change stands
        return speaker

    def enroll_many(self, speakers: Iterable[Enrollment], progress: Progress | None = None, *,
                    allow_inconsistent: bool = False, strict: bool = False) -> list[EnrollmentOutcome]:
        """Enroll many speakers, each as :meth:`enroll` would, their recordings batched across
        speakers; each is stored as soon as it is embedded. One that fails a check, or is already
        enrolled, does not stop the others: each gets an :class:`EnrollmentOutcome`, in order."""
        self.refuse_changes("enroll")  # once, rather than once per speaker in its outcome
        outcomes = enrollment.enroll_many(self._services, list(speakers), progress, allow_inconsistent, strict)
        thresholds.recalibrate(self._services)
        return outcomes

    def add_recordings(self, name: str, recordings: Sequence[Recording], progress: Progress | None = None,
                       *, allow_inconsistent: bool = False, strict: bool = False) -> Speaker:
        """Add recordings to an enrolled speaker and recompute the voiceprint from all of them.
        The same checks as :meth:`enroll` apply to the speaker's recordings taken together."""
        self.refuse_changes("add recordings")
        speaker = enrollment.add_recordings(self._services, name, recordings, progress, allow_inconsistent, strict)
        thresholds.recalibrate(self._services)
        return speaker

    def remove(self, name: str) -> None:
        """Remove a speaker: its voiceprint and every utterance embedding, from SQL and the index."""
        self._repository.remove_speaker(validate.name(name))
        log.info("removed %s", name)
        thresholds.recalibrate(self._services)

    @property
    def bulk(self) -> BulkImport:
        """Enroll many people from embeddings made elsewhere (:class:`~voicebank.bulk.BulkImport`)."""
        return BulkImport(self._services)

    # -- the audit trail, the cohort and the index ---------------------------------------------
    @property
    def audit(self) -> Audit:
        """The decisions made (:class:`~voicebank.audit.Audit`): ``entries`` and ``purge``."""
        return Audit(self._store)

    @property
    def cohort(self) -> Cohort:
        """The AS-norm cohort of people not enrolled (:class:`~voicebank.cohort.Cohort`): add, size, clear."""
        return Cohort(self._services)

    @property
    def index(self) -> IndexUpkeep:
        """The index, checked against SQL, rebuilt from it (:class:`~voicebank.index_upkeep.IndexUpkeep`)."""
        return IndexUpkeep(self._services)

    def listen(self, name: str | None = None, sample_rate: int = 16_000, client: str | None = None, top_k: int = 5):
        """A live session (:class:`voicebank.live.Session`): ``feed`` it PCM as someone speaks, read decisions."""
        from .live import Session

        return Session(self._services, name, sample_rate, client, top_k)

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
                            purpose: str = calibration.IDENTIFY, seconds: float | None = None) -> list[Identification]:
        """:meth:`identify` for (n, dimension) embeddings of this bank's model in ``channel`` (as
        :meth:`embed` gives them, or through the telephone line: ``encoding.in_channel``), e.g. a long
        recording's windows (``purpose`` ``"scan"``: scan's operating point). ``seconds``: the speech
        behind each, which picks the threshold (None: the longest probes'). Not audited."""
        return identification.identify_embeddings(self._services, embeddings, top_k, channel, purpose, seconds)

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

    # -- for the console and any client: checking takes without storing them ------------------
    def check_recordings(self, recordings: Sequence[Recording], name: str | None = None):  # -> precheck.EnrollmentCheck
        """Check takes as :meth:`enroll` (or with ``name``, :meth:`add_recordings`) would, storing
        nothing: each take's speech and problems, and the speech in all against what is needed."""
        from . import precheck

        return precheck.check(self._services, recordings, None if name is None else validate.name(name))
