"""Preparing and checking an enrollment before anything is written (used by ``VoiceBank``).

Every recording is decoded, checked and embedded first; then the speaker's recordings as a whole
must hold enough speech, sound like one another, and (a warning, or an error in strict mode) not
already be identified as another enrolled speaker.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np

from . import norm, scoring
from .audio import Recording
from .embedding import default_threshold
from .errors import (
    DuplicateRecordingError,
    DuplicateVoiceError,
    InconsistentRecordingError,
    InvalidInputError,
    NotEnoughSpeechError,
)
from .store import UtteranceRow
from .vectors import voiceprint

if TYPE_CHECKING:
    from .bank import VoiceBank

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (done, total, label of the recording just done)


def prepare(bank: "VoiceBank", recordings: Sequence[Recording], progress: Progress | None) -> list[UtteranceRow]:
    """Decode, check and embed every recording; refuse the same recording given twice."""
    if isinstance(recordings, (str, bytes, os.PathLike, tuple)) or not isinstance(recordings, Iterable):
        raise InvalidInputError("recordings must be a list of recordings (paths, bytes, file objects or arrays).")
    recordings = list(recordings)
    if not recordings:
        raise InvalidInputError("give at least one recording.")
    rows: list[UtteranceRow] = []
    seen: dict[str, str] = {}
    for done, recording in enumerate(recordings, start=1):
        audio = bank._load(recording)
        if audio.sha256 in seen:
            raise DuplicateRecordingError(f"{audio.label} is the same recording as {seen[audio.sha256]}; give each once.")
        seen[audio.sha256] = audio.label
        embedding = bank._embed([audio])[0]
        rows.append(UtteranceRow(embedding=embedding.tobytes(), sha256=audio.sha256, label=audio.label[-1024:],
                                 duration_s=audio.duration, speech_s=audio.speech_seconds))
        if progress:
            progress(done, len(recordings), audio.label)
    return rows


def check(bank: "VoiceBank", name: str, utterances: Sequence[UtteranceRow], speaker_id: int | None,
          allow_inconsistent: bool, strict: bool) -> list[str]:
    """Refuse too little speech and inconsistent recordings; warn of (or refuse) a voice that
    already matches another speaker. Returns the warnings.

    Both voice checks use the cosine score: against the bank's threshold when the bank scores
    by cosine, else against the model's default cosine threshold (AS-norm needs a cohort that
    a first enrollment may not have)."""
    speech = sum(u.speech_s for u in utterances)
    if speech < bank.limits.min_enroll_speech_seconds:
        raise NotEnoughSpeechError(
            f"{name}: the recordings hold {speech:.1f} s of speech in all; enrollment needs at least "
            f"{bank.limits.min_enroll_speech_seconds:g} s. Add more recordings."
        )
    settings = bank._settings()
    threshold = settings.threshold if settings.score == norm.COSINE else default_threshold(bank._embedder)
    vectors = np.stack([np.frombuffer(u.embedding, dtype=np.float32) for u in utterances])
    if len(vectors) >= 2 and not allow_inconsistent:
        scores = scoring.leave_one_out(vectors)
        worst = int(np.argmin(scores))
        if not scoring.accept(scores[worst], threshold):
            raise InconsistentRecordingError(
                f"{utterances[worst].label} does not sound like the other recordings of {name} (cosine "
                f"{scores[worst]:.3f} against them, threshold {threshold:.3f}). Check that it is the same "
                "person and a clean recording, or enroll anyway with --allow-inconsistent."
            )
    if bank._is_empty():
        return []
    # Would these recordings be identified as someone else? The nearest other voiceprint,
    # scored like a probe: the mean of the recordings' own cosines with it. (Voiceprint against
    # voiceprint would overstate it: averages of several recordings are closer to each other.)
    _, ids = bank._search(voiceprint(vectors)[None, :], 2)
    nearest = [int(i) for i in ids[0] if i >= 0 and i != speaker_id][:1]
    if not nearest:
        return []
    other, other_print = bank._rows_by_id(np.array(nearest))[nearest[0]]
    score = float(np.mean(vectors @ other_print))
    if not scoring.accept(score, threshold):
        return []
    message = f"the voice of {name} already matches {other} (cosine {score:.3f}): the same person enrolled twice?"
    if strict:
        raise DuplicateVoiceError(message + " Refused (strict).")
    log.warning("%s", message)
    return [message]
