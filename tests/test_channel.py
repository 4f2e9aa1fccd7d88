"""Channels (voicebank.channel): which channel a recording came through, measured from its audio;
the simulated telephone line; a recording too narrowband to decide on; and decisions taken in the
channel of the probe, against voiceprints of that channel, with that channel's thresholds."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import butter, sosfiltfilt

from conftest import SR, synth_voice
from voicebank import VoiceBank, channel
from voicebank.audio import load
from voicebank.decode import resample
from voicebank.errors import NarrowbandError

pytestmark = pytest.mark.usefixtures("remembered_vad")


@pytest.fixture(scope="module")
def voice() -> np.ndarray:
    return synth_voice(150.0, 3.0, seed=3)


def mu_law_call(samples: np.ndarray) -> np.ndarray:
    """A plain G.711 call: 8 kHz, 8-bit mu-law, written without voicebank's code."""
    low = np.clip(resample(samples, SR, 8000), -1, 1)
    coded = np.round(np.sign(low) * np.log1p(255 * np.abs(low)) / np.log1p(255) * 127) / 127
    return (np.sign(coded) * np.expm1(np.abs(coded) * np.log1p(255)) / 255).astype(np.float32)


def test_wideband_and_telephone_are_told_apart_whatever_rate_the_file_says(tmp_path, voice):
    wide = load((voice, SR), SR)
    assert wide.channel.channel == channel.WIDEBAND and not wide.telephone
    assert wide.channel.high_db > channel.BOUNDARY_DB + 10 and wide.channel.bandwidth_hz > 6000
    call = mu_law_call(voice)
    for rate, samples in ((8000, call), (44100, resample(call, 8000, 44100))):  # the header's rate says nothing
        path = tmp_path / f"call{rate}.wav"
        sf.write(path, samples, rate, subtype="PCM_16")
        heard = load(path, SR)
        assert heard.telephone and heard.channel.high_db < channel.BOUNDARY_DB - 10, (rate, heard.channel)
        assert 3000 < heard.channel.bandwidth_hz < 4100
    # a hiss added after the line (a recorder's noise floor) fills every band, the speech only its own;
    # the floor is measured in the pauses
    pause = np.zeros(SR // 2, np.float32)
    spoken = np.concatenate([pause, resample(call, 8000, SR), pause, resample(call, 8000, SR), pause])
    hissed = spoken + np.random.default_rng(0).normal(0, 10 ** (-60 / 20), len(spoken))
    assert load((hissed.astype(np.float32), SR), SR).telephone


def test_the_simulated_line_is_a_telephone_line(voice):
    line = channel.telephone(voice, SR)
    assert line.shape == voice.shape and line.dtype == np.float32
    heard = load((line, SR), SR)
    assert heard.telephone and heard.channel.bandwidth_hz < 4000
    # the speech is still there, at the same level give or take what the 4 kHz band limit takes
    assert 0.3 < np.std(line) / np.std(voice) < 1.2
    assert heard.speech_seconds > 0.8 * load((voice, SR), SR).speech_seconds


def test_a_recording_too_narrowband_to_decide_on_is_refused(voice):
    muffled = sosfiltfilt(butter(8, 1200, fs=SR, output="sos"), voice).astype(np.float32)
    with pytest.raises(NarrowbandError, match=r"<array>: its speech reaches only \d+ Hz, below the minimum of 2000 Hz"):
        load((muffled, SR), SR)


@pytest.mark.skipif(shutil.which("sox") is None, reason="needs sox to code a GSM call")
def test_the_spectrum_taken_in_blocks_is_the_spectrum_of_the_whole_recording():
    # 20 s: frames of several blocks, the last one partial; speech and pauses spread over all of them
    rng = np.random.default_rng(5)
    samples = (rng.standard_normal(20 * SR + 123) * np.linspace(0.01, 0.3, 20 * SR + 123)).astype(np.float32)
    size = channel._FFT
    count = len(samples) // size
    assert count > 2 * channel._BLOCK
    speech = rng.random(count) < 0.7
    frames = samples[: count * size].reshape(count, size) * np.hanning(size)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    level = power[~speech].sum(axis=1)
    floor = power[~speech][level <= np.quantile(level, 0.8)].mean(axis=0)
    expected = np.maximum(power[speech].mean(axis=0) - floor, 0.0)
    found, freqs = channel.speech_spectrum(samples, SR, speech)
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-7 * expected.max())
    assert freqs[-1] == SR / 2


def test_a_gsm_call_is_telephone(tmp_path, voice):
    src, gsm = tmp_path / "v.wav", tmp_path / "v.gsm"
    sf.write(src, voice, SR, subtype="PCM_16")
    subprocess.run(["sox", str(src), "-r", "8000", "-c", "1", str(gsm)], check=True, capture_output=True)
    back = tmp_path / "back.wav"
    subprocess.run(["sox", str(gsm), "-r", "16000", str(back)], check=True, capture_output=True)
    assert load(back, SR).telephone


def test_speaker_prints_per_channel():
    rng = np.random.default_rng(0)
    e = rng.standard_normal((3, 8)).astype(np.float32)
    t = rng.standard_normal((3, 8)).astype(np.float32)
    from voicebank.vectors import voiceprint

    wide, tel, has = channel.speaker_prints(list(e), ["wideband", "telephone", "wideband"], list(t))
    assert has == channel.BOTH  # the wideband voiceprint is of the wideband recordings only
    np.testing.assert_allclose(wide, voiceprint(e[[0, 2]]), atol=1e-6)
    np.testing.assert_allclose(tel, voiceprint(t), atol=1e-6)
    wide, tel, has = channel.speaker_prints(list(e), ["telephone"] * 3, list(t))
    assert has == channel.TELEPHONE and wide is tel  # the index holds the telephone voiceprint
    wide, tel, has = channel.speaker_prints(list(e), [None] * 3, [None] * 3)  # enrolled before channels
    assert has == channel.WIDEBAND and tel is None


def test_which_channel_a_decision_is_taken_in():
    lacks = lambda **n: (lambda c: n.get(c, 0))  # noqa: E731
    assert channel.decision_channel("wideband", lacks()) == ("wideband", None)
    assert channel.decision_channel("telephone", lacks()) == ("telephone", None)
    decided, note = channel.decision_channel("wideband", lacks(wideband=2))
    assert decided == "telephone" and note.startswith("2 speakers have enrolled over the telephone only: decided in")
    decided, note = channel.decision_channel("telephone", lacks(telephone=1))
    assert decided == "wideband" and "1 speaker has no telephone voiceprint" in note and "enroll them again" in note


@pytest.mark.embedder("fake")
def test_a_call_is_decided_in_the_telephone_channel_against_telephone_voiceprints(tmp_path, model, voices):
    """Enrolled at a desk (wideband), then identified and verified over the phone: the answer says
    the call was heard as telephone and decided in that channel, with the telephone thresholds;
    the audit row says so too."""
    with VoiceBank.open(tmp_path / "b.db", model, create=True, threshold=0.9, identify_rule="best") as bank:
        bank.thresholds.set(0.5, channel="telephone")  # the telephone channel's own, apart from the wideband 0.9
        for name in ("alice", "bob", "carol"):
            bank.enroll(name, voices[name][:2])
        probe, rate = sf.read(voices["bob"][2], dtype="float32")
        call = mu_law_call(probe)
        result = bank.identify((call, 8000))
        assert result.channel["heard"]["channel"] == "telephone" and result.channel["decided"] == "telephone"
        assert result.threshold == 0.5 and result.calibration["channel"] == "telephone"
        assert result.match is not None and result.match.name == "bob"
        verdict = bank.verify("bob", (call, 8000))
        assert verdict.threshold == 0.5 and verdict.channel["decided"] == "telephone" and verdict.accepted
        # the score is against bob's telephone voiceprint: his recordings through the simulated line
        _, stored = bank.voiceprint("bob")
        assert verdict.score != pytest.approx(float(bank.embed((call, 8000)) @ stored), abs=1e-3)
        assert [r.channel for r in bank.audit.entries(limit=2)] == ["telephone", "telephone"]
        wide = bank.identify(voices["bob"][2])
        assert wide.channel == {"decided": "wideband", "heard": wide.channel["heard"]} and wide.threshold == 0.9
        # a refused probe leaves an audit row saying why, and nothing else
        with pytest.raises(Exception):
            bank.identify((np.zeros(SR, np.float32), SR))
        refused = bank.audit.entries(limit=1)[0]
        assert refused.accepted is False and refused.score is None and refused.detail.startswith("refused: <array>")


@pytest.mark.embedder("fake")
def test_a_bank_from_before_channels_decides_calls_against_wideband_voiceprints_and_says_so(tmp_path, model, voices):
    from sqlalchemy import create_engine, text

    db = tmp_path / "old.db"
    with VoiceBank.open(db, model, create=True, threshold=0.9, identify_rule="best") as bank:
        for name in ("alice", "bob", "carol"):
            bank.enroll(name, voices[name][:2])
    engine = create_engine(f"sqlite:///{db}")  # as migration 0006 leaves a bank enrolled before it
    with engine.begin() as conn:
        conn.execute(text("UPDATE speakers SET telephone = NULL, channels = 'wideband'"))
        conn.execute(text("UPDATE utterances SET telephone = NULL, channel = NULL"))
    engine.dispose()
    with VoiceBank.open(db) as bank:
        assert bank.index.lacking("telephone") == 3
        probe, _ = sf.read(voices["bob"][2], dtype="float32")
        result = bank.identify((mu_law_call(probe), 8000))
        assert result.channel["decided"] == "wideband" and result.channel["heard"]["channel"] == "telephone"
        assert "3 speakers have no telephone voiceprint" in result.channel["note"]
        assert result.threshold == 0.9
        report = bank.index.check()
        assert report.lacking == {"telephone": 3, "wideband": 0}
        bank.add_recordings("bob", [voices["bob"][2]])  # new recordings add bob's telephone voiceprint
        assert bank.index.lacking("telephone") == 2
        with pytest.raises(Exception, match="no speaker named"):
            bank.verify("nobody", (probe, SR))


@pytest.mark.embedder("fake")
def test_calibrate_measures_both_channels(tmp_path, model, voices):
    with VoiceBank.open(tmp_path / "c.db", model, create=True) as bank:
        for name in ("alice", "bob", "carol", "dave"):
            bank.enroll(name, voices[name])
        result = bank.thresholds.calibrate(far=0.05, unknown_rate=0.05)
        assert [c.channel for c in result.every_channel()] == ["wideband", "telephone"]
        telephone = result.channels["telephone"]
        assert {p.channel for p in telephone.chosen.values()} == {"telephone"}
        assert telephone.trials.channel == "telephone" and telephone.trials.target.size == result.trials.target.size
        bank.thresholds.store_calibration(result)
        points = bank.thresholds.operating_points("telephone")
        assert points["verify"].threshold == telephone.chosen["verify"].threshold
        assert points["verify"].method == "far" and bank.thresholds.operating_points()["verify"].channel == "wideband"
        as_json = json.loads(json.dumps(result.to_dict()))
        assert as_json["channels"]["telephone"]["chosen"]["verify"]["channel"] == "telephone"


@pytest.mark.embedder("fake")
def test_the_telephone_voiceprints_have_an_index_of_their_own_kept_with_sql(tmp_path, model, voices):
    """Calls are searched among the telephone voiceprints (not proposed by the wideband index): a
    file beside the wideband one, stamped with its channel, caught up from SQL like it, and rebuilt
    from SQL when it is missing."""
    db = tmp_path / "i.db"
    probe, _ = sf.read(voices["carol"][2], dtype="float32")
    with VoiceBank.open(db, model, create=True, threshold=0.9, identify_rule="best") as bank:
        for name in ("alice", "bob"):
            bank.enroll(name, voices[name][:2])
        bank.identify((mu_law_call(probe), 8000))  # the first call builds the telephone index
    telephone = tmp_path / "i.db.telephone.faiss"
    assert telephone.is_file() and json.loads((tmp_path / "i.db.telephone.faiss.json").read_text())["channel"] == "telephone"
    assert json.loads((tmp_path / "i.db.faiss.json").read_text())["channel"] == "wideband"
    with VoiceBank.open(db) as other:  # another process enrolls carol: the telephone index catches up
        other.enroll("carol", voices["carol"][:2])
    telephone.unlink()
    with VoiceBank.open(db) as bank:
        result = bank.identify((mu_law_call(probe), 8000))
        assert result.channel["decided"] == "telephone" and result.candidates[0].name == "carol"
        assert result.calibration["gallery"] == 3
        _, tel = bank._repository.voiceprint("carol", "telephone")  # the score is against carol's telephone voiceprint
        assert result.candidates[0].score == pytest.approx(
            float(bank.embed_samples([channel.telephone(resample(mu_law_call(probe), 8000, SR), SR)])[0] @ tel), abs=1e-4)
    assert telephone.is_file()  # rebuilt from SQL, and saved
