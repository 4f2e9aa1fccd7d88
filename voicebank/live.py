"""Live decisions: who is speaking, or is this the person claimed, while they are still speaking.

A :class:`Session` takes PCM chunks as they arrive (:meth:`Session.feed`) and keeps only the
speech (``live_speech.Ear``). Once ``FIRST_SPEECH`` seconds of speech are in, and then after every
``UPDATE_SPEECH`` seconds more, it embeds the latest ``PIECE_SECONDS`` of speech (a *piece*); the
speech decided on (the *window*) is the L2-normalized mean of the pieces' embeddings, as a long
recording's is the mean of its windows' (``embedding.base.embed_recordings``). The window's
embedding is then decided by the bank's own code and operating points, exactly as a whole
recording's: ``identification.score_claim`` for a claimed name, ``identify_embeddings`` otherwise.
No threshold of its own decides who is let in.

A change of speaker: the *recent* speech (the last ``RECENT_PIECES`` pieces: the latest piece, the
last 2 s) is scored (cosine) against the *earlier* speech of the window (the pieces that share no
sample with it); a change is reported when that score stays below the bank's enrollment
consistency threshold (the cosine below which a recording is refused as "not the same voice as the
others", ``voicebank checks``) plus ``CHANGE_OFFSET`` for ``CHANGE_CONFIRM`` updates in a row, or
below it plus ``CHANGE_AT_ONCE`` at a single update. The recent speech is all of a new voice 2 s
of its speech after it starts, so a change is reported 2 to 4 s into it. The window then restarts
from the newest piece, so the next decision is on the new voice alone.

Memory per session is bounded whatever the call's length: the last ``PIECE_SECONDS`` of speech
(128 KB at 16 kHz), at most ``MAX_PIECES`` embeddings, and less than a frame of audio waiting.
``python bench/stream.py`` measures the delays and the change rule on real speech.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import channel as channel_mod
from . import identification, validate
from . import settings as settings_mod
from .errors import EmptyBankError, InvalidInputError, SpeakerNotFoundError
from .live_speech import Ear
from .results import Identification, Verification
from .services import Services
from .vad import SAMPLE_RATE

log = logging.getLogger(__name__)

FIRST_SPEECH = 2.0  # seconds of speech before the first decision (the issue asks for at most 3)
UPDATE_SPEECH = 1.0  # seconds of new speech between decisions
PIECE_SECONDS = 2.0  # speech embedded per update: resemblyzer's partials are 1.6 s; shorter ones score poorly
MAX_PIECES = 30  # the window holds the latest 30 pieces (31 s of speech), as a long recording's window
# The recent speech is the latest piece alone (2 s): with the last 2 pieces (3 s) a new voice filled
# it only 3 s in, and the confirming update came 4 s or more into it for many changes. Below the
# consistency threshold (0.65 on a new resemblyzer bank) + 0.025 twice in a row, or below it - 0.05
# once: of the rules checked every second, the most changes within 4 s that split no one-person call
# of the half of the people it was chosen on (docs/live.md, "The change-of-speaker rule"), re-measured
# by `python bench/stream_rules.py --speechocean --rotations 4` (replayed on traces of real sessions)
# and `python bench/stream.py --speechocean --quality-only` (live sessions).
RECENT_PIECES = 1
MIN_EARLIER_PIECES = 2  # a change needs at least 3 s of earlier speech to differ from
GAP_PIECES = round(PIECE_SECONDS / UPDATE_SPEECH) - 1  # pieces overlapping both recent and earlier speech
CHANGE_OFFSET = 0.025  # added to the consistency threshold
CHANGE_CONFIRM = 2  # updates in a row below it
CHANGE_AT_ONCE: float | None = -0.05  # below the consistency threshold + this, one update suffices (None: never)
LISTENING_EVERY = 1.0  # seconds of audio between "listening" updates before the first decision

LISTENING, DECISION, CHANGE, FINAL = "listening", "decision", "change", "final"


@dataclass(frozen=True)
class Update:
    """What a session says: ``event`` is ``listening`` (not enough speech yet), ``decision``,
    ``change`` (of speaker) or ``final`` (on close). ``at``: seconds of audio received;
    ``speech``: seconds of speech in the window decided on (since the start or the last change);
    ``heard``: seconds of speech in all. ``result``: the :class:`Verification` or
    :class:`Identification` of the window (None before the first decision); ``change_score`` and
    ``change_threshold``: the recent speech's cosine against the earlier speech of the window and
    the rule's threshold (on a ``change``, and on each decision once the window is long enough)."""

    event: str
    at: float
    speech: float
    heard: float
    result: Verification | Identification | None = None
    change_score: float | None = None
    change_threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.event, "at": round(self.at, 3), "speech": round(self.speech, 3),
                               "heard": round(self.heard, 3)}
        if self.result is not None:
            out.update(self.result.to_dict())
        if self.change_score is not None:
            out["change_score"], out["change_threshold"] = round(self.change_score, 6), self.change_threshold
        return out


class Session:
    """One live stream (``bank.listen``): feed it chunks, read its updates, close it. One caller
    at a time (a call's chunks come in order); sessions are independent of each other."""

    def __init__(self, services: Services, name: str | None, sample_rate: int, client: str | None, top_k: int = 5):
        services.repository.store.catch_up()
        self._services, self._client, self._top_k = services, client, validate.top_k(top_k)
        self.name = None if name is None else validate.name(name)
        if self.name is not None:
            services.repository.voiceprint(self.name)  # an unknown name is refused before any audio
        elif services.repository.count() == 0:
            raise EmptyBankError("the bank has no speakers yet: enroll some first (`voicebank enroll NAME FILE...`).")
        self._ear = Ear(sample_rate)
        self._rate = services.encoder.sample_rate
        self._tail = np.zeros(0, dtype=np.float32)  # the latest PIECE_SECONDS of speech, at the detector's rate
        self._fresh = 0  # samples of speech since the last piece
        self._pieces: deque[tuple[np.ndarray, float]] = deque(maxlen=MAX_PIECES)  # (embedding, new speech in s)
        self._channel: str | None = None
        self._claim: identification.Claim | None = None
        self._below, self._changes, self._listened = 0, 0, 0
        self._last: Update | None = None
        self._heard = channel_mod.WIDEBAND
        self._removed = False  # the claimed person was removed during the session
        self.closed = False

    @property
    def changes(self) -> int:
        """Changes of speaker reported so far."""
        return self._changes

    @property
    def heard(self) -> float:
        """Seconds of speech heard so far."""
        return self._ear.speech

    @property
    def speech_started(self) -> float | None:
        """Seconds into the stream at which speech was first heard (None: not yet)."""
        return self._ear.started

    def feed(self, chunk: object) -> list[Update]:
        """Take one chunk (float32 in [-1, 1] or int16, mono, at the session's rate; or bytes of
        little-endian 16-bit PCM) and return the updates it led to, in order (often none)."""
        if self.closed:
            raise InvalidInputError("this live session is closed; open another with bank.listen().")
        return self._take(self._ear.hear(chunk))

    def close(self) -> Update:
        """End the stream: the final decision (on the speech since the last change), audited as
        one ``verify`` or ``identify`` row. Without ``FIRST_SPEECH`` seconds of speech the final
        update has no result and the row says so. Closing twice returns the same update."""
        if self.closed:
            return self._final
        try:
            self._take(self._ear.hear(np.zeros(0, np.float32), last=True))
            if self._fresh >= round(UPDATE_SPEECH * SAMPLE_RATE) // 2 and self._pieces:
                self._piece()  # the last half second or more of speech counts
        except SpeakerNotFoundError:
            self._removed = True
        self.closed = True
        self._final = Update(FINAL, self._ear.seconds, self._window_seconds(), self._ear.speech,
                             self._last.result if self._last is not None and not self._removed else None)
        self._audit(self._final)
        return self._final

    # -- the steps -----------------------------------------------------------------------------
    def _take(self, speech: np.ndarray) -> list[Update]:
        out: list[Update] = []
        while len(speech):
            boundary = round((UPDATE_SPEECH if self._pieces else FIRST_SPEECH) * SAMPLE_RATE)
            step = min(len(speech), boundary - self._fresh)
            self._tail = np.concatenate([self._tail, speech[:step]])[-round(PIECE_SECONDS * SAMPLE_RATE):]
            self._fresh, speech = self._fresh + step, speech[step:]
            if self._fresh >= boundary:
                out += self._piece()
        if not self._pieces and self._ear.received - self._listened >= LISTENING_EVERY * self._ear.sample_rate:
            self._listened = self._ear.received
            out.append(Update(LISTENING, self._ear.seconds, self._ear.speech, self._ear.speech))
        return out

    def _piece(self) -> list[Update]:
        samples = self._tail if self._rate == SAMPLE_RATE else _resample(self._tail, SAMPLE_RATE, self._rate)
        if self._channel is None:
            self._choose_channel(samples)
        if self._channel == channel_mod.TELEPHONE:
            samples = channel_mod.telephone(samples, self._rate)
        fresh, self._fresh = self._fresh / SAMPLE_RATE, 0
        self._pieces.append((self._services.encoder.embed_samples([samples])[0], fresh))
        out, drift = self._change()
        self._last = Update(DECISION, self._ear.seconds, self._window_seconds(), self._ear.speech,
                            self._decide(_mean(e for e, _ in self._pieces)), *drift)
        return out + [self._last]

    def _choose_channel(self, samples: np.ndarray) -> None:
        """The channel is measured once, on the first piece: a call's line does not change."""
        heard = self._heard = channel_mod.measure(samples, self._rate).channel
        if self.name is not None:
            self._claim = identification.claim(self._services, self.name, heard)
            self._channel = self._claim.channel
        else:
            self._channel = identification.decision_channel(self._services, heard)[0]

    def _change(self) -> tuple[list[Update], tuple[float | None, float | None]]:
        """A change of speaker, if the rule finds one (the window then restarts), and the recent
        speech's score against the earlier and its threshold (Nones before there is enough speech)."""
        earlier = len(self._pieces) - RECENT_PIECES - GAP_PIECES
        if earlier < MIN_EARLIER_PIECES:
            return [], (None, None)
        pieces = [e for e, _ in self._pieces]
        score = float(np.dot(_mean(pieces[-RECENT_PIECES:]), _mean(pieces[:earlier])))
        consistency = self._services.checks()[0]
        threshold = consistency + CHANGE_OFFSET
        self._below = self._below + 1 if score < threshold else 0
        far = CHANGE_AT_ONCE is not None and score < consistency + CHANGE_AT_ONCE
        if self._below < CHANGE_CONFIRM and not far:
            return [], (score, threshold)
        self._below, self._changes = 0, self._changes + 1
        self._pieces = deque([(pieces[-1], PIECE_SECONDS)], maxlen=MAX_PIECES)
        log.info("live: a change of speaker at %.1f s (%.3f below %.3f)", self._ear.seconds, score, threshold)
        return [Update(CHANGE, self._ear.seconds, self._window_seconds(), self._ear.speech, None, score,
                       threshold)], (None, None)

    def _decide(self, embedding: np.ndarray) -> Verification | Identification:
        if self._claim is not None:
            self._services.repository.store.catch_up()
            # read again at every decision: a person removed during the call is not accepted for the
            # rest of it (SpeakerNotFoundError ends the session, refused)
            try:
                self._claim = identification.claim(self._services, self._claim.name, self._heard)
            except SpeakerNotFoundError:
                self._removed = True
                raise
            score, threshold, accepted, _ = identification.score_claim(self._services, self._claim, embedding,
                                                                       self._window_seconds())
            return Verification(self.name, score, threshold, accepted, {"decided": self._channel}, self._window_seconds())
        return identification.identify_embeddings(self._services, embedding[None, :], self._top_k, self._channel,
                                                  seconds=self._window_seconds())[0]

    def _window_seconds(self) -> float:
        """Seconds of speech the window's pieces cover: the first one's whole, the others' new speech."""
        return 0.0 if not self._pieces else PIECE_SECONDS + sum(fresh for _, fresh in list(self._pieces)[1:])

    def _audit(self, final: Update) -> None:
        services, operation = self._services, "verify" if self.name is not None else "identify"
        detail = (f"live: {final.speech:.1f} s of speech decided on, {final.heard:.1f} s heard in {final.at:.1f} s, "
                  f"{self._changes} change(s) of speaker")
        fields = {"operation": operation, "claimed": self.name, "model_id": services.encoder.model_id,
                  "recording_sha256": self._ear.sha256, "client": self._client, "channel": self._channel}
        result = final.result
        if isinstance(result, Verification):
            services.audit.add(**fields, returned=self.name if result.accepted else None, score=result.score,
                               threshold=result.threshold, score_kind=services.repository.settings().score,
                               accepted=result.accepted, detail=detail)
        elif isinstance(result, Identification):
            services.audit.add(**fields, returned=result.match.name if result.match else None, score=result.decision,
                               threshold=result.threshold, score_kind=result.decision_kind,
                               accepted=result.match is not None, detail=detail)
        else:
            settings = services.repository.settings()
            point = settings_mod.operating_points(settings)[operation]
            why = (f"{self.name} was removed during the session" if self._removed else
                   f"less than {FIRST_SPEECH:g} s of speech ({final.heard:.1f} s in {final.at:.1f} s)")
            services.audit.add(**fields, returned=None, score=None, threshold=point.threshold,
                               score_kind=settings.score, accepted=False, detail=f"refused: {why}")


def _mean(embeddings: Any) -> np.ndarray:
    total = np.sum(np.asarray(list(embeddings), dtype=np.float64), axis=0)
    return (total / (np.linalg.norm(total) or 1.0)).astype(np.float32)


def _resample(samples: np.ndarray, rate: int, to_rate: int) -> np.ndarray:
    from .decode import resample

    return resample(samples, rate, to_rate)

