"""Real recordings from ../shared/data/speech (skipped when absent): decoding every file, and
enrollment, identification and rejection of real people with the offline resemblyzer backend."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from conftest import SPEECH
from voicebank import VoiceBank, audio

pytestmark = pytest.mark.skipif(not (SPEECH / "manifest.csv").exists(), reason=f"no real speech at {SPEECH}")


def manifest() -> list[dict[str, str]]:
    with open(SPEECH / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_recording_in_the_manifest_loads():
    rows = manifest()
    assert len(rows) == 240
    for row in rows:
        loaded = audio.load(SPEECH / row["path"], 16_000)
        assert loaded.duration == pytest.approx(float(row["duration_s"]), abs=0.02), row["path"]
        assert 0.3 * loaded.duration < loaded.speech_seconds <= loaded.duration + 0.01, row["path"]


@pytest.fixture(scope="module")
def real_bank(tmp_path_factory):
    """14 real speakers enrolled from their first 3 recordings; the rest are probes."""
    pytest.importorskip("resemblyzer")
    rows = manifest()
    by_speaker: dict[str, list[str]] = {}
    for row in rows:
        by_speaker.setdefault(row["speaker"], []).append(str(SPEECH / row["path"]))
    enrolled = {name: paths for name, paths in by_speaker.items() if len(paths) >= 10}
    unknown = [paths[0] for name, paths in by_speaker.items() if len(paths) == 1]
    db = tmp_path_factory.mktemp("real") / "real.db"
    bank = VoiceBank.open(db, "resemblyzer", create=True)
    for name, paths in enrolled.items():
        bank.enroll(name, paths[:3])
    probes = [(name, path) for name, paths in enrolled.items() for path in paths[3:]]
    yield bank, probes, unknown
    bank.close()


@pytest.mark.slow
def test_real_speakers_are_identified_and_strangers_rejected(real_bank):
    bank, probes, unknown = real_bank
    assert len(bank) == 14 and len(probes) == 98 and len(unknown) == 100
    results = [(name, bank.identify(path, top_k=3)) for name, path in probes]
    top1 = np.mean([r.candidates[0].name == name for name, r in results])
    correct = np.mean([r.match is not None and r.match.name == name for name, r in results])
    false_alarms = np.mean([bank.identify(path).match is not None for path in unknown])
    # bench/quality.py measures 100% top-1 and ~98% correct at 1% false alarms on these files.
    assert top1 >= 0.97
    assert correct >= 0.90, f"only {correct:.0%} of enrolled speakers accepted at threshold {bank.thresholds.verify}"
    assert false_alarms <= 0.05, f"{false_alarms:.0%} of never-enrolled speakers matched someone"


@pytest.mark.parametrize("around", ["silence", "noise at -60 dBFS"])
def test_minutes_of_silence_or_noise_around_a_probe_change_neither_the_decision_nor_the_score(real_bank, around):
    """The speech of a probe, alone and in the middle of 10 minutes of silence or faint noise: the
    same decision, and a score within 0.02 (the silence reached the embedding, and the probe matched
    nobody, scoring 0.3 to 0.5 against its own voice)."""
    bank, probes, _ = real_bank
    rng = np.random.default_rng(5)
    for name, path in probes[::33]:
        alone = audio.load(path, 16_000)
        minutes = np.zeros(600 * 16_000, dtype=np.float32) if around == "silence" else \
            (10 ** (-60 / 20) * rng.standard_normal(600 * 16_000)).astype(np.float32)
        middle = len(minutes) // 2
        minutes[middle:middle + len(alone.samples)] += alone.samples
        plain, padded = bank.identify(path), bank.identify((minutes, 16_000))
        assert (plain.match and plain.match.name) == (padded.match and padded.match.name), (name, plain, padded)
        assert padded.candidates[0].name == plain.candidates[0].name
        assert abs(padded.candidates[0].score - plain.candidates[0].score) < 0.02, (name, plain, padded)


def test_only_what_is_near_speech_is_embedded():
    frame = round(audio.vad.FRAME_SECONDS * 16_000)
    samples = np.arange(200 * frame, dtype=np.float32)
    voiced = np.zeros(200, dtype=bool)
    voiced[100:110] = True  # 0.32 s of speech in 6.4 s
    kept = audio.near_speech(samples, 16_000, voiced)
    pad = round(audio.SPEECH_PAD_SECONDS / audio.vad.FRAME_SECONDS)
    assert np.array_equal(kept, samples[(100 - pad) * frame:(110 + pad) * frame])
    assert audio.near_speech(samples, 16_000, np.zeros(200, dtype=bool)) is samples  # no speech: all of it
    assert audio.near_speech(samples, 16_000, None) is samples
    everywhere = np.zeros(200, dtype=bool)
    everywhere[::40] = everywhere[-1] = True  # never more than a second from speech: all of it
    assert audio.near_speech(samples, 16_000, everywhere) is samples


@pytest.mark.slow
def test_verification_and_calibration_on_real_speech(real_bank):
    bank, probes, _ = real_bank
    name, path = probes[0]
    other = next(n for n, _ in probes if n != name)
    assert bank.verify(name, path).accepted
    assert not bank.verify(other, path).accepted

    from voicebank.evaluation import Scores, report

    # 14 speakers x 3 recordings cannot support 1% unknown-person false alarms on their own: the
    # reference set of strangers fills in, less the 14 enrolled people, who are in it (these are its
    # corpora): each scores against their own voiceprint higher than any two of its people do
    wide = bank.thresholds.calibrate()
    reference = bank.thresholds.reference_set()
    sources = wide.chosen["identify"].sources
    assert sources["own"] == 42 and wide.chosen["identify"].target == 0.01 and wide.chosen["identify"].asked is None
    assert len(reference) - 160 <= sources["reference"] <= len(reference) - 130
    assert wide.chosen["verify"].sources["reference"] == 0  # 42 x 13 impostor pairs of its own are enough for 1%
    result = bank.thresholds.calibrate(far=0.05, unknown_rate=0.05)  # each recording held out from its voiceprint
    t = result.trials
    assert (t.target.size, t.nontarget.size, len(t.unknown)) == (42, 42 * 13, 42)
    verify, ident = result.chosen["verify"], result.chosen["identify"]
    assert verify.rate == pytest.approx(0.05, rel=1e-3) and ident.rate == pytest.approx(0.05, rel=1e-3)
    assert ident.rule == "margin" and ident.gallery == 14 and ident.hit >= 0.9
    assert report(Scores(t.target, t.nontarget, t.kind), far=0.01).eer < 0.05
