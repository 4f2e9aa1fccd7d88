"""Who spoke when: a long recording scanned window by window against the bank.

What is not speech is found first, by silero-vad in 32 ms frames (the detector
:func:`voicebank.audio.speech_seconds` counts speech with), and left out: the recording splits
into *speech regions* at every pause of at least ``min_pause``. Windows of one length step
through each region (a region shorter than a window is one window) so that no window mixes
voices across a pause. Windows are embedded in batches of bounded size (equal lengths batch
without padding) and identified open-set, so a voice below the threshold is ``unknown``.
Neighbouring windows of a region with the same answer merge into a :class:`Segment`; between
two overlapping windows with different answers the boundary is the middle of their overlap, and
a segment that reaches a pause ends where the speech does.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from . import audio as audio_mod
from . import identification
from .audio import AudioLimits, Recording
from .calibration import SCAN
from .channel import TELEPHONE, WIDEBAND
from .encoding import Progress, in_channel
from .errors import EmptyBankError, InvalidInputError
from .services import Services
from .vad import FRAME_SECONDS

log = logging.getLogger(__name__)

# 3 s windows: long enough for the model to tell voices apart, short enough to place a change of
# speaker within a second or so; stretches of speech are split at pauses of 0.5 s, so a window does
# not straddle two turns across a silence (`python bench/meetings.py` measures what scan names).
DEFAULT_WINDOW = 3.0  # seconds
DEFAULT_HOP_FRACTION = 0.5  # of the window, when no hop is given
MIN_PAUSE = 0.5  # seconds of silence that end a speech region
MIN_SPEECH = 0.5  # seconds: a shorter speech region (a click, a breath) is skipped
MAX_SECONDS = 4 * 3600.0  # longest recording accepted (about 230 MB of samples per hour at 16 kHz)
MIN_WINDOW, MAX_WINDOW = 0.5, 30.0
BATCH_SECONDS = 128.0  # audio embedded per call: bounds memory whatever the recording's length



class Timeline(list):
    """What :func:`timeline` returns: its segments, in time order (a list of :class:`Segment`), with the
    ``channel`` the recording was decided in and the ``threshold`` its windows were decided with."""

    def __init__(self, segments=(), channel: str = WIDEBAND, threshold: float | None = None):
        super().__init__(segments)
        self.channel, self.threshold = channel, threshold


@dataclass(frozen=True)
class Segment:
    """One turn of the timeline: ``start`` and ``end`` in seconds from the start of the recording.

    ``name`` is the enrolled speaker, or None when no one cleared the threshold (unknown).
    ``score`` is the mean, over the segment's ``windows``, of each window's best score (the
    bank's score, cosine in [-1, 1] unless AS-norm is on); for an unknown segment it says how
    close the nearest enrolled voice came.
    """

    start: float
    end: float
    name: str | None
    score: float
    windows: int

    @property
    def duration(self) -> float:
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "speaker": self.name,
                "score": round(self.score, 6), "windows": self.windows}


@dataclass(frozen=True)
class Window:
    """One identified window: samples [start, end) of speech region ``region``."""

    region: int
    start: int
    end: int
    name: str | None
    score: float


def timeline(
    services: Services,
    recording: Recording,
    window: float = DEFAULT_WINDOW,
    hop: float | None = None,
    top_k: int = 1,
    progress: Progress | None = None,
    *,
    min_pause: float = MIN_PAUSE,
    min_speech: float = MIN_SPEECH,
    max_seconds: float = MAX_SECONDS,
    purpose: str = SCAN,
) -> Timeline:
    """The timeline of who speaks when in ``recording``, in time order; silence is left out.

    ``window`` and ``hop`` are in seconds (``hop`` defaults to half the window). Pauses of at
    least ``min_pause`` seconds split the speech; stretches of speech shorter than ``min_speech``
    seconds are skipped. ``top_k`` candidates are searched per window (it matters only under
    AS-norm). ``progress(done, total, label)`` is called as windows are embedded. Each segment is
    audited (operation ``scan``). Returns [] when the recording holds no speech. Windows are decided
    with the bank's operating point for scan's windows (measured on strangers' windows of the
    default length; ``purpose="identify"``: with the one for whole recordings instead).
    """
    window, hop = _check(window, hop, min_pause, min_speech)
    if services.repository.count() == 0:
        raise EmptyBankError("the bank has no speakers yet: enroll some first (`voicebank enroll NAME FILE...`).")
    encoder = services.encoder
    limits = AudioLimits(min_seconds=encoder.limits.min_seconds, min_speech_seconds=0.0, max_seconds=max_seconds,
                         min_bandwidth_hz=encoder.limits.min_bandwidth_hz)
    audio = audio_mod.load(recording, encoder.sample_rate, limits)
    # the whole recording is decided in one channel (a meeting's line does not change window by window)
    channel, note = identification.decision_channel(services, TELEPHONE if audio.telephone else WIDEBAND)
    if note:
        log.info("%s: %s", audio.label, note)
    samples, rate = in_channel(audio, channel), audio.sample_rate
    voiced = audio.speech_frames if audio.speech_frames is not None else audio_mod.voiced_frames(samples, rate)
    regions = speech_regions(voiced, len(samples), rate, round(min_pause * rate), round(min_speech * rate))
    size, step = round(window * rate), round(hop * rate)
    spans = [(k, a + s, a + s + min(size, b - a)) for k, (a, b) in enumerate(regions)
             for s in window_starts(b - a, size, step)]
    log.info("scanning %s: %.1f s, %d speech regions, %d windows",
             audio.label, audio.duration, len(regions), len(spans))
    windows: list[Window] = []
    # scan's own point where it was measured (on windows of this length), else identification's, read there
    threshold = identification.operating_point(services.repository.settings(), channel, purpose).at(window)
    if progress:
        progress(0, len(spans), audio.label)
    for batch in _batches(spans, round(BATCH_SECONDS * rate)):
        embeddings = encoder.embed_samples([samples[s:e] for _, s, e in batch])
        for (k, s, e), found in zip(batch, identification.identify_embeddings(services, embeddings, top_k, channel,
                                                                              purpose, window)):
            best = found.candidates[0].score if found.candidates else float("nan")
            windows.append(Window(k, s, e, found.match.name if found.match else None, best))
        if progress:
            progress(len(windows), len(spans), audio.label)
    segments = merge(windows, rate)
    log.info("%s: %d segments", audio.label, len(segments))
    identification.record_scan(services, audio.sha256, channel, segments, None, threshold)
    return Timeline(segments, channel, threshold)


def merge(windows: Sequence[Window], rate: int) -> list[Segment]:
    """Runs of consecutive windows of one region with the same answer, as segments."""
    segments: list[Segment] = []
    run: list[Window] = []
    for k, w in enumerate(windows):
        run.append(w)
        following = windows[k + 1] if k + 1 < len(windows) else None
        if following is not None and following.region == w.region:
            if following.name == w.name:
                continue
            end = (following.start + w.end) / 2  # the middle of their overlap
        else:
            end = w.end  # the end of the region's speech
        before = windows[k - len(run)] if k >= len(run) else None
        start = (run[0].start + before.end) / 2 if before is not None and before.region == w.region else run[0].start
        segments.append(Segment(start / rate, end / rate, w.name, float(np.mean([r.score for r in run])), len(run)))
        run = []
    return segments


def window_starts(length: int, size: int, step: int) -> list[int]:
    """Start samples of windows of ``size`` every ``step`` covering ``length`` samples; a last
    window is aligned to the end so the tail is covered without padding. One window at 0 when
    ``length <= size``."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, step))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


def speech_regions(voiced: np.ndarray, length: int, rate: int, min_pause: int, min_speech: int) -> list[tuple[int, int]]:
    """Sample ranges [start, end) of speech in ``length`` samples at ``rate``, from one decision
    per ``FRAME_SECONDS`` frame (:func:`voicebank.audio.voiced_frames`): runs of speech frames
    joined across pauses shorter than ``min_pause`` samples, dropping those shorter than
    ``min_speech`` samples."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], voiced.astype(np.int8), [0]])))
    regions: list[list[int]] = []
    for first, stop in zip(edges[::2], edges[1::2]):  # frames [first, stop) are speech
        start = round(int(first) * FRAME_SECONDS * rate)
        end = length if stop == len(voiced) else min(length, round(int(stop) * FRAME_SECONDS * rate))
        if regions and start - regions[-1][1] < min_pause:
            regions[-1][1] = end
        else:
            regions.append([start, end])
    return [(start, end) for start, end in regions if end - start >= min_speech]


def rttm(segments: Iterable[Segment], file_id: str) -> str:
    """The timeline as RTTM lines (what diarization scorers read); unknown voices are ``unknown``.
    Whitespace in names, which RTTM cannot hold, becomes ``_``."""
    file_id = _rttm_field(file_id)
    return "".join(
        f"SPEAKER {file_id} 1 {s.start:.3f} {s.duration:.3f} <NA> <NA> {_rttm_field(s.name or 'unknown')} <NA> <NA>\n"
        for s in segments
    )


def file_id(recording: Recording) -> str:
    """The RTTM file id of a recording: its file name without the extension."""
    if isinstance(recording, (str, os.PathLike)):
        return Path(recording).stem or "recording"
    return "recording"


def _rttm_field(text: str) -> str:
    return "_".join(text.split()) or "_"


def _batches(spans: Sequence[tuple[int, int, int]], max_samples: int) -> Iterable[list[tuple[int, int, int]]]:
    batch: list[tuple[int, int, int]] = []
    held = 0
    for span in spans:
        if batch and held + span[2] - span[1] > max_samples:
            yield batch
            batch, held = [], 0
        batch.append(span)
        held += span[2] - span[1]
    if batch:
        yield batch


def _check(window: float, hop: float | None, min_pause: float, min_speech: float) -> tuple[float, float]:
    if not isinstance(window, (int, float)) or not MIN_WINDOW <= window <= MAX_WINDOW:
        raise InvalidInputError(f"the window is {MIN_WINDOW:g} to {MAX_WINDOW:g} seconds, not {window!r}.")
    hop = window * DEFAULT_HOP_FRACTION if hop is None else hop
    if not isinstance(hop, (int, float)) or not 0.05 <= hop <= window:
        raise InvalidInputError(f"the hop is 0.05 s up to the window ({window:g} s), not {hop!r}.")
    if not 0.05 <= min_pause <= 60.0:
        raise InvalidInputError(f"min_pause is 0.05 to 60 seconds, not {min_pause!r}.")
    if not 0.0 <= min_speech <= 60.0:
        raise InvalidInputError(f"min_speech is 0 to 60 seconds, not {min_speech!r}.")
    return float(window), float(hop)
