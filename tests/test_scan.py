"""scan: who spoke when in a long recording.

Fast tests use a fake embedder that hears only pitch: a steady tone is a "voice", and each octave
above 100 Hz is a different person, so the expected timeline is known to the sample. silero-vad
rightly hears no speech in a tone, so these tests also stand a fake in for the detector
(:func:`loud_frames`, through the ``tones_are_speech`` fixture): what they test is how scan
windows and merges the speech it is told about, not how speech is detected (test_vad.py). The
last test scans real speech (LibriSpeech, resemblyzer backend) with the real detector and is
skipped where that data or package is missing.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from voicebank import VoiceBank, audio, vad
from voicebank import scan as scanning
from voicebank.audio import AudioLimits
from voicebank.errors import AudioError, EmptyBankError, InvalidInputError
from voicebank.scan import Segment

from conftest import SPEECH, SR

ALICE, BOB, STRANGER = 400.0, 800.0, 1600.0  # Hz; the stranger is never enrolled


class ToneEmbedder:
    """The one-hot vector of a waveform's dominant octave (100-200 Hz is dimension 0, ...).

    Records the length of every waveform it is given, and how much of each was near-silent."""

    source = "fake-tones"
    model_id = "fake-tones:1"
    sample_rate = SR
    dimension = 8

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.quiet_fractions: list[float] = []

    def embed(self, waveforms):
        self.calls.append([len(w) for w in waveforms])
        out = np.zeros((len(waveforms), self.dimension), dtype=np.float32)
        for i, wave in enumerate(waveforms):
            spectrum = np.abs(np.fft.rfft(wave))
            hz = (1 + int(np.argmax(spectrum[1:]))) * SR / len(wave)
            out[i, int(np.clip(round(np.log2(hz / 100)), 0, self.dimension - 1))] = 1.0
            frames = wave[: len(wave) // 160 * 160].reshape(-1, 160)
            self.quiet_fractions.append(float(np.mean(np.sqrt(np.mean(frames**2, axis=1)) < 1e-3)))
        return out


def tone(hz: float, seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SR), dtype=np.float32)


def timeline(segments: list[Segment]) -> list[tuple[float, float, str | None]]:
    return [(round(s.start, 2), round(s.end, 2), s.name) for s in segments]


def loud_frames(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """The fake speech detector: in silero-vad's frames (``vad.FRAME_SECONDS``, the last one
    padded), a frame is "speech" when it is louder than -50 dBFS."""
    frame = round(vad.FRAME_SECONDS * sample_rate)
    whole = len(samples) // frame
    power = np.mean(np.square(samples[: whole * frame].reshape(whole, frame), dtype=np.float64), axis=1)
    if len(samples) > whole * frame:
        power = np.append(power, np.sum(np.square(samples[whole * frame :], dtype=np.float64)) / frame)
    return power > 10 ** (-50 / 10)


@pytest.fixture
def tones_are_speech(monkeypatch):
    """Stand :func:`loud_frames` in for silero-vad, which hears no speech in a tone."""
    monkeypatch.setattr(vad, "speech_frames", loud_frames)


@pytest.fixture
def fake() -> ToneEmbedder:
    return ToneEmbedder()


@pytest.fixture
def tone_bank(tmp_path, fake, tones_are_speech):
    limits = AudioLimits(min_enroll_speech_seconds=1.0, min_bandwidth_hz=0.0)  # a tone is one frequency
    with VoiceBank.open(tmp_path / "tones.db", fake, create=True, threshold=0.5, limits=limits) as bank:
        bank.enroll("alice", [(tone(ALICE, 2.0), SR)])
        bank.enroll("bob", [(tone(BOB, 2.0), SR)])
        fake.calls.clear()
        fake.quiet_fractions.clear()
        yield bank


# -- the timeline ---------------------------------------------------------------------------------
def test_neighbouring_windows_with_one_answer_merge_and_the_boundary_is_the_middle_of_the_overlap(tone_bank):
    # 2 s windows every 1 s. The window [5, 7] holds 1.5 s of alice, [6, 8] 1.5 s of bob, so
    # the boundary is the middle of their overlap [6, 7]: 6.5 s, exactly where the voices change.
    segments = tone_bank.scan((np.concatenate([tone(ALICE, 6.5), tone(BOB, 5.5)]), SR), window=2.0, hop=1.0)
    assert timeline(segments) == [(0.0, 6.5, "alice"), (6.5, 12.0, "bob")]
    assert [s.windows for s in segments] == [6, 5]
    assert [s.score for s in segments] == pytest.approx([1.0, 1.0])


@pytest.mark.parametrize("change", [6.0, 6.2, 6.5, 6.8, 7.0])
def test_a_boundary_lands_within_half_a_hop_of_the_change(tone_bank, change):
    segments = tone_bank.scan((np.concatenate([tone(ALICE, change), tone(BOB, 12 - change)]), SR), window=2.0, hop=1.0)
    assert [s.name for s in segments] == ["alice", "bob"]
    assert segments[0].end == segments[1].start
    assert abs(segments[0].end - change) <= 0.5 + 1e-9


def test_a_voice_below_the_threshold_is_unknown_with_its_best_score(tone_bank):
    segments = tone_bank.scan((np.concatenate([tone(ALICE, 4.5), tone(STRANGER, 5.0), tone(ALICE, 2.5)]), SR),
                    window=2.0, hop=1.0)
    assert timeline(segments) == [(0.0, 4.5, "alice"), (4.5, 9.5, None), (9.5, 12.0, "alice")]
    assert segments[1].score == pytest.approx(0.0)  # the stranger's octave is orthogonal to both voices


def test_silence_is_skipped_and_segment_edges_next_to_it_are_the_speech_edges(tone_bank, fake):
    recording = np.concatenate([silence(1.0), tone(ALICE, 3.0), silence(3.0), tone(BOB, 3.0), silence(1.0)])
    segments = tone_bank.scan((recording, SR), window=2.0, hop=1.0)
    assert [s.name for s in segments] == ["alice", "bob"]
    assert [segments[0].start, segments[0].end, segments[1].start, segments[1].end] == pytest.approx(
        [1.0, 4.0, 7.0, 10.0], abs=0.03)
    assert max(fake.quiet_fractions) <= 0.5  # no mostly-silent window reached the model
    assert sum(len(c) for c in fake.calls) < len(scanning.window_starts(len(recording), 2 * SR, SR))


def test_no_window_spans_a_pause(tone_bank, fake):
    # Without the pause, the window [1.5, 4.5] would hold both voices.
    segments = tone_bank.scan((np.concatenate([tone(ALICE, 3.0), silence(1.0), tone(BOB, 3.0)]), SR), window=3.0)
    assert [s.name for s in segments] == ["alice", "bob"]
    assert max(fake.quiet_fractions) < 0.05
    assert [s.start for s in segments] == pytest.approx([0.0, 3.985], abs=0.02)
    assert [s.end for s in segments] == pytest.approx([3.015, 7.0], abs=0.02)


def test_a_short_pause_does_not_split_a_voice(tone_bank):
    segments = tone_bank.scan((np.concatenate([tone(ALICE, 3.0), silence(0.3), tone(ALICE, 3.0)]), SR), window=2.0)
    assert timeline(segments) == [(0.0, 6.3, "alice")]


def test_a_click_too_short_to_identify_is_skipped(tone_bank, fake):
    recording = np.concatenate([tone(ALICE, 3.0), silence(2.0), tone(BOB, 0.3), silence(2.0)])
    assert [s.name for s in tone_bank.scan((recording, SR), window=2.0)] == ["alice"]
    assert all(length >= SR // 2 for call in fake.calls for length in call)


def test_a_pause_inside_one_voice_splits_it_into_two_segments(tone_bank):
    segments = tone_bank.scan((np.concatenate([tone(ALICE, 4.0), silence(2.5), tone(ALICE, 4.0)]), SR), window=2.0, hop=1.0)
    assert [s.name for s in segments] == ["alice", "alice"]
    assert segments[0].end == pytest.approx(4.0, abs=0.03)
    assert segments[1].start == pytest.approx(6.5, abs=0.03)


def test_a_recording_shorter_than_one_window_is_one_window(tone_bank, fake):
    segments = tone_bank.scan((tone(BOB, 1.2), SR), window=2.0)
    assert timeline(segments) == [(0.0, 1.2, "bob")]
    assert segments[0].windows == 1
    assert fake.calls == [[round(1.2 * SR)]]


def test_the_tail_is_covered_by_a_window_aligned_to_the_end():
    assert scanning.window_starts(10, 4, 2) == [0, 2, 4, 6]
    assert scanning.window_starts(11, 4, 2) == [0, 2, 4, 6, 7]
    assert scanning.window_starts(3, 4, 2) == [0]


def test_faint_noise_without_speech_gives_an_empty_timeline(tone_bank, fake):
    noise = 10 ** (-62 / 20) * np.random.default_rng(0).standard_normal(5 * SR)
    assert tone_bank.scan((noise.astype(np.float32), SR)) == []
    assert fake.calls == []


@pytest.mark.parametrize(("samples", "message"), [
    (np.zeros(0, dtype=np.float32), "the recording is empty"),
    (silence(5.0), "the recording is silent"),
])
def test_an_empty_or_silent_recording_is_a_clear_error(tone_bank, samples, message):
    with pytest.raises(AudioError, match=message):
        tone_bank.scan((samples, SR))


# -- bounded work -------------------------------------------------------------------------------
def test_windows_are_embedded_in_bounded_batches_of_equal_length_and_batching_changes_nothing(tone_bank, fake, monkeypatch):
    recording = (np.concatenate([tone(ALICE, 7.3), tone(STRANGER, 6.0), tone(BOB, 6.7)]), SR)
    whole = tone_bank.scan(recording, window=2.0, hop=1.0)
    fake.calls.clear()
    monkeypatch.setattr(scanning, "BATCH_SECONDS", 6.0)
    seen = []
    batched = tone_bank.scan(recording, window=2.0, hop=1.0, progress=lambda done, total, label: seen.append((done, total)))
    assert batched == whole
    assert len(fake.calls) == 7 and all(len(c) <= 3 and set(c) == {2 * SR} for c in fake.calls)
    assert seen[0] == (0, 19) and seen[-1] == (19, 19)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_recordings_beyond_the_banks_30_minute_limit_are_scanned(tone_bank):
    # 31 minutes, nearly all of it silence (skipped cheaply): the scan's own 4-hour limit applies.
    recording = np.zeros(31 * 60 * SR, dtype=np.float32)
    recording[-3 * SR:] = tone(ALICE, 3.0)
    [segment] = tone_bank.scan((recording, SR), window=2.0, hop=1.0)
    assert (segment.start, segment.end, segment.name) == (pytest.approx(1857.0, abs=0.03), 1860.0, "alice")


def test_a_recording_beyond_the_limit_is_refused_with_a_clear_error(tone_bank):
    with pytest.raises(AudioError, match=r"longer than the maximum of 5 s\. Cut it into shorter recordings"):
        tone_bank.scan((tone(ALICE, 6.0), SR), max_seconds=5.0)
    assert scanning.MAX_SECONDS == 4 * 3600


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"window": 0.1}, "the window is 0.5 to 30 seconds"),
    ({"window": 2.0, "hop": 3.0}, r"the hop is 0.05 s up to the window \(2 s\)"),
    ({"min_pause": 0.0}, "min_pause is 0.05 to 60 seconds"),
    ({"min_speech": -1.0}, "min_speech is 0 to 60 seconds"),
])
def test_bad_settings_are_refused(tone_bank, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        tone_bank.scan((tone(ALICE, 3.0), SR), **kwargs)


def test_an_empty_bank_is_refused_before_anything_is_decoded(tmp_path, fake):
    with VoiceBank.open(tmp_path / "empty.db", fake, create=True, threshold=0.5) as bank:
        with pytest.raises(EmptyBankError, match="enroll some first"):
            bank.scan(tmp_path / "does-not-exist.wav")


# -- output formats ------------------------------------------------------------------------------
def test_rttm_lines():
    segments = [Segment(0.5, 4.25, "alice", 0.9, 3), Segment(4.25, 6.0, None, 0.4, 2), Segment(7.0, 8.0, "Mary Ann", 0.8, 1)]
    assert scanning.rttm(segments, "my meeting") == (
        "SPEAKER my_meeting 1 0.500 3.750 <NA> <NA> alice <NA> <NA>\n"
        "SPEAKER my_meeting 1 4.250 1.750 <NA> <NA> unknown <NA> <NA>\n"
        "SPEAKER my_meeting 1 7.000 1.000 <NA> <NA> Mary_Ann <NA> <NA>\n"
    )
    assert scanning.file_id("/data/calls/monday.flac") == "monday"
    assert scanning.file_id((np.zeros(3), SR)) == "recording"


@pytest.fixture
def cli(tmp_path, tone_bank, fake, monkeypatch):
    """Run the CLI against the tone bank (the fake embedder cannot be named on the command line)."""
    import soundfile as sf

    from voicebank.cli import base, main

    tones = AudioLimits(min_bandwidth_hz=0.0)
    monkeypatch.setattr(base.Context, "open",
                        lambda self, **kw: VoiceBank.open(tmp_path / "tones.db", fake, limits=tones, **kw))
    path = tmp_path / "talk.wav"
    sf.write(path, np.concatenate([tone(ALICE, 6.5), tone(STRANGER, 5.5)]), SR)
    return lambda *args: CliRunner().invoke(main, ["scan", str(path), *args]), path


def test_cli_prints_the_timeline(cli):
    invoke, _ = cli
    result = invoke()  # 3 s windows every 1.5 s: the voices change inside the overlap [6, 7.5]
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "    start       end  speaker                          score\n"
        "     0.00      6.75  alice                           1.0000\n"
        "     6.75     12.00  unknown                         0.0000\n"
    )


def test_cli_json_and_rttm_agree(cli, tmp_path, tone_bank):
    invoke, path = cli
    rttm_path = tmp_path / "out" / "talk.rttm"
    rttm_path.parent.mkdir()
    result = invoke("--json", "--rttm", str(rttm_path), "--window", "2")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # the identification threshold each window is decided with (0.5 + 0.08 under the margin rule)
    assert (data["recording"], data["window"], data["hop"], data["threshold"]) == (
        str(path), 2.0, 1.0, tone_bank.thresholds.identify)
    assert [(s["speaker"], s["windows"]) for s in data["segments"]] == [("alice", 6), (None, 5)]
    assert data["segments"][0]["end"] == data["segments"][1]["start"] == 6.5
    rows = [line.split() for line in rttm_path.read_text().splitlines()]
    assert [r[0:3] + r[5:7] + r[8:] for r in rows] == [["SPEAKER", "talk", "1", "<NA>", "<NA>", "<NA>", "<NA>"]] * 2
    assert [(float(r[3]), float(r[3]) + float(r[4]), r[7]) for r in rows] == [
        pytest.approx((s["start"], s["end"], s["speaker"] or "unknown"), abs=1e-3) for s in data["segments"]]
    printed = invoke("--rttm", "-", "--window", "2")
    assert printed.exit_code == 0 and printed.stdout == rttm_path.read_text()


def test_cli_errors(cli, tmp_path):
    invoke, _ = cli
    both = invoke("--json", "--rttm", "-")
    assert (both.exit_code, both.stdout) == (2, "")
    assert both.stderr == "Error: --json and --rttm - would both print to stdout: give --rttm a file name instead.\n"
    bad_hop = invoke("--window", "2", "--hop", "3")
    assert bad_hop.exit_code == 2 and bad_hop.stderr == "Error: the hop is 0.05 s up to the window (2 s), not 3.0.\n"
    from voicebank.cli import main

    missing = CliRunner().invoke(main, ["scan", str(tmp_path / "nope.wav")])
    assert missing.exit_code == 2 and "nope.wav: no such file" in missing.stderr


def test_an_rttm_file_that_cannot_be_written_is_refused_before_the_scan(cli, tmp_path, fake):
    """--rttm /sys/x.rttm or a name over 255 bytes: the scan ran, then writing the timeline raised
    an OSError traceback (PermissionError, ENAMETOOLONG from the check itself)."""
    invoke, _ = cli
    fake.calls.clear()
    for target, why in ((tmp_path / ("x" * 300 + ".rttm"), "File name too long"),
                        ("/proc/x.rttm", "No such file or directory")):
        result = invoke("--rttm", str(target))
        assert (result.exit_code, result.stdout) == (2, ""), result.output
        assert result.stderr == f"Error: --rttm {target}: cannot write there ({why}); choose a folder this user may " \
                                "write to.\n"
    assert not fake.calls and not list(tmp_path.glob(".voicebank-probe-*"))  # refused before any audio was embedded


def test_an_rttm_fifo_is_written_into_not_replaced_by_a_file(cli, tmp_path):
    """A pipe given to --rttm (to stream the timeline on) was replaced by a regular file: click's
    atomic write renames a new file over it, as it would over /dev/stdout when run as root."""
    import os
    import threading

    invoke, _ = cli
    fifo = tmp_path / "timeline"
    os.mkfifo(fifo)
    read: list[str] = []
    reader = threading.Thread(target=lambda: read.append(fifo.read_text()))
    reader.start()
    result = invoke("--rttm", str(fifo))
    reader.join(10)
    assert result.exit_code == 0, result.output
    assert fifo.is_fifo() and read and read[0].startswith("SPEAKER talk 1 ")


def test_cli_help_has_an_example_and_the_librarys_default_window():
    from voicebank.cli import main

    help_text = " ".join(CliRunner().invoke(main, ["scan", "--help"]).output.split())
    assert "Example:" in help_text and "voicebank scan meeting.wav --rttm" in help_text
    assert f"(default: {scanning.DEFAULT_WINDOW:g})" in help_text
    assert scanning.DEFAULT_HOP_FRACTION == 0.5 and "(default: half the window)" in help_text


# -- real speech ---------------------------------------------------------------------------------
needs_real_speech = pytest.mark.skipif(
    not SPEECH.is_dir() or importlib.util.find_spec("resemblyzer") is None,
    reason=f"needs the speech data at {SPEECH} and the resemblyzer package (pip install 'voicebank[resemblyzer]')",
)


Turn = tuple[float, float, str | None]  # start and end in seconds, the speaker (None: unknown)


def concatenate_turns(parts: list[tuple[Path, str | None]], path: Path, gap: float = 1.0) -> list[Turn]:
    """Write the recordings one after another, ``gap`` seconds of silence around each, to ``path``;
    returns the true turns (start, end, speaker or None)."""
    import soundfile as sf

    pieces, turns, at = [silence(gap)], [], gap
    for recording, who in parts:
        samples, rate = sf.read(recording, dtype="float32")
        assert rate == SR
        pieces += [samples, silence(gap)]
        turns.append((at, at + len(samples) / SR, who))
        at += len(samples) / SR + gap
    sf.write(path, np.concatenate(pieces), SR)
    return turns


def scan_real_turns(tmp_path: Path, enrolled: list[Path], unknown: Path) -> tuple[list[Turn], list[Segment]]:
    """Enroll three LibriSpeech test-other speakers from their first three recordings; scan
    tmp_path/meeting.wav, made of other recordings of two of them and of a never-enrolled speaker."""
    files = {d.name: sorted(d.glob("*.flac")) for d in enrolled}
    a, b = enrolled[0].name, enrolled[1].name
    parts = [(files[a][6], a), (unknown, None), (files[b][6], b), (files[a][7], a), (files[b][7], b)]
    turns = concatenate_turns(parts, tmp_path / "meeting.wav")
    with VoiceBank.open(tmp_path / "real.db", "resemblyzer", create=True) as bank:
        for name, recordings in files.items():
            bank.enroll(name, recordings[:3])
        # Windows are shorter than whole recordings, so scan is calibrated for them (as the README
        # says): measured on held-out LibriSpeech files (not these), the equal-error threshold of
        # 3 s windows was 0.77 on average over six speaker triples.
        bank.thresholds.set(0.77)
        bank.thresholds.set(0.77, "scan")
        assert scanning.DEFAULT_WINDOW == 3.0
        segments = bank.scan(tmp_path / "meeting.wav")
    return turns, segments


def timeline_problems(turns: list[Turn], segments: list[Segment], recording: Path, window: float) -> list[str]:
    """What is wrong with ``segments`` against the true ``turns``: a turn whose speech is not
    mostly given the right answer, edges more than one ``window`` off, too much wrongly labelled
    speech. Speech is what silero-vad hears (the turns include the files' own silences)."""
    import soundfile as sf

    samples, rate = sf.read(recording, dtype="float32")
    frames = (np.flatnonzero(audio.voiced_frames(samples, rate)) + 0.5) * vad.FRAME_SECONDS  # frame centres, s
    said = np.array([next(((s.name or "?") for s in segments if s.start <= t < s.end), "-") for t in frames])
    problems, wrong = [], 0
    for start, end, who in turns:
        inside = (frames >= start) & (frames < end)
        right = said[inside] == (who or "?")
        wrong += int(np.count_nonzero(~right & (said[inside] != "-")))
        mine = [s for s in segments if s.name == who and min(s.end, end) > max(s.start, start)]
        if np.mean(right) < 0.8:
            problems.append(f"{who or 'unknown'} {start:.1f}-{end:.1f} s: {np.mean(right):.0%} of its speech labelled right")
        if mine and (abs(mine[0].start - start) > window or abs(mine[-1].end - end) > window):
            problems.append(f"{who or 'unknown'} {start:.1f}-{end:.1f} s: found at {mine[0].start:.1f}-{mine[-1].end:.1f} s")
    if wrong > 0.1 * len(frames):
        problems.append(f"{wrong / len(frames):.0%} of the speech given a wrong answer")
    return problems


@pytest.mark.slow
@needs_real_speech
def test_scanning_real_speech_finds_every_turn_and_its_boundaries(tmp_path, monkeypatch):
    other = sorted(d for d in (SPEECH / "librispeech-test-other").iterdir() if d.is_dir())
    clean = sorted((SPEECH / "librispeech-train-clean-100").glob("*.flac"))
    turns, segments = scan_real_turns(tmp_path, other[:3], clean[0])
    assert timeline_problems(turns, segments, tmp_path / "meeting.wav", scanning.DEFAULT_WINDOW) == [], segments
    a, b = other[0].name, other[1].name
    # The unknown speaker pauses for 1.6 s (3.4-5.0 s into 103-1240-0000.flac, 20 dB below the
    # speech): silero-vad hears the pause, so that turn may come as two segments.
    assert [name for name, _ in itertools.groupby(s.name for s in segments if s.duration > 1.0)] == [a, None, b, a, b]

    # The CLI prints the same timeline as JSON and as RTTM.
    from voicebank.cli import main

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--db", "real.db", "scan", "meeting.wav", "--json", "--rttm", "meeting.rttm"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)["segments"]
    assert printed == [s.to_dict() for s in segments]
    rows = [line.split() for line in (tmp_path / "meeting.rttm").read_text().splitlines()]
    assert [(r[1], float(r[3]), float(r[3]) + float(r[4]), r[7]) for r in rows] == [
        ("meeting", pytest.approx(s["start"], abs=1e-3), pytest.approx(s["end"], abs=2e-3), s["speaker"] or "unknown")
        for s in printed]


def test_every_segment_of_a_scan_is_audited(tone_bank):
    segments = tone_bank.scan((np.concatenate([tone(ALICE, 6.5), tone(STRANGER, 5.5)]), SR), window=2.0, hop=1.0)
    rows = list(reversed(tone_bank.audit.entries(operation="scan")))
    assert [(r.returned, r.accepted, r.channel) for r in rows] == [(s.name, s.name is not None, "telephone")
                                                                    for s in segments]
    assert [r.detail for r in rows] == [f"{s.start:.2f}-{s.end:.2f} s" for s in segments]
    assert rows[0].returned == "alice" and rows[-1].returned is None and rows[0].score_kind == "mean best cosine"
