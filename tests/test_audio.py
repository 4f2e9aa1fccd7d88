"""voicebank.audio: decoding every supported input, mono, resampling, hashing, and the errors.

Every error test checks the exact error class and that the message names the recording and tells
the user what to do (errors.py: "Every message says what happened and what to do next")."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import SR, synth_voice
from voicebank.audio import Audio, AudioLimits, load, speech_seconds
from voicebank.errors import AudioError, NotEnoughSpeechError

# An instruction to the user: what to do next. Checked on the message with the label removed, so a
# word in a temporary path cannot satisfy it.
ACTION = re.compile(
    r"\b(record|use|give|check|cut|convert|re-?export|re-?encode|copy|pass|try|split|must be)\b", re.I
)


def assert_helpful(excinfo: pytest.ExceptionInfo, label: str) -> str:
    message = str(excinfo.value)
    assert label in message, f"the message does not name the recording {label!r}: {message!r}"
    rest = message.replace(label, "")
    assert ACTION.search(rest), f"the message does not say what to do: {message!r}"
    return message


# A pure tone is the probe that shows pitch and level surviving resampling; it holds no speech,
# so the tests that use it accept recordings without speech (test_vad.py checks it is refused).
TONES = AudioLimits(min_speech_seconds=0.0, min_bandwidth_hz=0.0)  # a tone is neither speech nor broadband


def tone(freq: float, seconds: float, sr: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(samples: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / sr)[np.argmax(spectrum)])


@pytest.fixture(scope="module")
def voice() -> np.ndarray:
    return synth_voice(150.0, seconds=3.0, seed=3)


# -- decoding ----------------------------------------------------------------------------------

LOSSLESS = [("WAV", "FLOAT", "wav", 1e-7), ("WAV", "PCM_16", "wav", 1 / 2**14), ("FLAC", "PCM_16", "flac", 1 / 2**14)]


@pytest.mark.parametrize("fmt,subtype,ext,atol", LOSSLESS)
def test_lossless_files_decode_to_the_written_samples(tmp_path, voice, fmt, subtype, ext, atol):
    path = tmp_path / f"v.{ext}"
    sf.write(path, voice, SR, format=fmt, subtype=subtype)
    audio = load(path, SR)
    assert isinstance(audio, Audio)
    assert audio.sample_rate == SR
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert audio.samples.shape == voice.shape
    np.testing.assert_allclose(audio.samples, voice, atol=atol)
    assert audio.duration == pytest.approx(3.0)
    assert audio.label == str(path)
    assert audio.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def _write_lossy(path: Path, wave: np.ndarray, fmt: str) -> None:
    try:
        sf.write(path, wave, SR, format=fmt)
    except (sf.LibsndfileError, TypeError, ValueError) as exc:  # pragma: no cover - depends on libsndfile
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) cannot write {fmt}: {exc}")


@pytest.mark.parametrize("fmt,ext", [("OGG", "ogg"), ("MP3", "mp3")])
def test_lossy_files_decode_to_the_same_sound(tmp_path, voice, fmt, ext):
    path = tmp_path / f"v.{ext}"
    _write_lossy(path, voice, fmt)
    audio = load(path, SR)
    assert audio.sample_rate == SR and audio.samples.dtype == np.float32
    assert audio.duration == pytest.approx(3.0, abs=0.1)  # codec frames may pad or trim a little
    n = min(audio.samples.size, voice.size)
    # Lossy, and a codec may shift by its encoder delay: compare at the best lag within 50 ms.
    best = max(
        np.corrcoef(audio.samples[lag:n], voice[: n - lag])[0, 1] for lag in range(0, int(0.05 * SR), 8)
    )
    assert best > 0.9
    assert audio.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert audio.speech_seconds > 2.5


def test_stereo_file_is_mixed_to_mono(tmp_path, voice):
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([voice, 0.5 * voice], axis=1), SR, subtype="FLOAT")
    audio = load(path, SR)
    assert audio.samples.ndim == 1 and audio.samples.shape == voice.shape
    np.testing.assert_allclose(audio.samples, 0.75 * voice, atol=1e-6)  # mean of the two channels


@pytest.mark.parametrize("rate", [8_000, 44_100])
def test_files_at_other_rates_are_resampled_keeping_pitch(tmp_path, rate):
    path = tmp_path / f"tone{rate}.wav"
    sf.write(path, tone(440.0, 2.0, rate), rate, subtype="FLOAT")
    audio = load(path, SR, TONES)
    assert audio.speech_seconds == 0.0
    assert audio.sample_rate == SR
    assert abs(audio.samples.size - 2 * SR) <= 1
    assert audio.duration == pytest.approx(2.0, abs=1e-3)
    assert peak_hz(audio.samples, SR) == pytest.approx(440.0, abs=1.0)
    # the level survives too: RMS of a 0.5-amplitude sine is 0.5 / sqrt(2)
    assert np.sqrt(np.mean(audio.samples[SR // 4 : -SR // 4] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_array_at_another_rate_is_resampled():
    audio = load((tone(1000.0, 2.0, 44_100), 44_100), SR, TONES)
    assert abs(audio.samples.size - 2 * SR) <= 1
    assert peak_hz(audio.samples, SR) == pytest.approx(1000.0, abs=1.0)


def test_bytes_and_file_objects_decode_like_the_path(tmp_path, voice):
    path = tmp_path / "v.flac"
    sf.write(path, voice, SR, format="FLAC")
    raw = path.read_bytes()
    expected_sha = hashlib.sha256(raw).hexdigest()
    from_path = load(path, SR)
    from_str = load(str(path), SR)
    from_bytes = load(raw, SR)
    from_bytearray = load(bytearray(raw), SR)
    from_bytesio = load(io.BytesIO(raw), SR)
    with open(path, "rb") as handle:
        from_handle = load(handle, SR)
    for audio in (from_path, from_str, from_bytes, from_bytearray, from_bytesio, from_handle):
        assert audio.sha256 == expected_sha
        np.testing.assert_array_equal(audio.samples, from_path.samples)
    assert from_handle.label == str(path)  # a named file object is labelled by its name
    assert str(len(raw)) in from_bytes.label


def test_mp3_bytes_decode(tmp_path, voice):
    path = tmp_path / "v.mp3"
    _write_lossy(path, voice, "MP3")
    audio = load(path.read_bytes(), SR)  # no file name: the format comes from the bytes alone
    assert audio.duration == pytest.approx(3.0, abs=0.1)
    assert audio.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_float_array_is_taken_as_is(voice):
    audio = load((voice, SR), SR)
    np.testing.assert_array_equal(audio.samples, voice)
    assert audio.label == "<array>"
    assert load((voice.copy(), SR), SR).sha256 == audio.sha256  # same samples, same hash
    assert load((voice * 0.9, SR), SR).sha256 != audio.sha256


def test_int16_array_is_scaled_to_unit_range(voice):
    ints = np.round(voice * 32767).astype(np.int16)
    audio = load((ints, SR), SR)
    assert audio.samples.dtype == np.float32
    np.testing.assert_allclose(audio.samples, ints.astype(np.float64) / 32768, atol=1e-7)
    np.testing.assert_allclose(audio.samples, voice, atol=1e-4)


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_two_channel_arrays_are_mixed_to_mono(voice, layout, dtype):
    stereo = np.stack([voice, 0.5 * voice])  # (channels, samples)
    if dtype == "int16":
        stereo = np.round(stereo * 32767).astype(np.int16)
    if layout == "channels_last":
        stereo = stereo.T
    audio = load((stereo, SR), SR)
    assert audio.samples.shape == voice.shape
    np.testing.assert_allclose(audio.samples, 0.75 * voice, atol=1e-4)


# -- speech measurement ------------------------------------------------------------------------


def test_speech_seconds_counts_voice_not_silence():
    wave = np.concatenate([synth_voice(140.0, seconds=2.0, seed=5), np.zeros(2 * SR, np.float32)])
    assert speech_seconds(wave, SR) == pytest.approx(2.0, abs=0.15)
    # the same voice in the middle of silence
    wave = np.concatenate([np.zeros(SR, np.float32), synth_voice(140.0, 2.0, seed=5), np.zeros(SR, np.float32)])
    assert speech_seconds(wave, SR) == pytest.approx(2.0, abs=0.15)
    assert load((wave, SR), SR).speech_seconds == pytest.approx(2.0, abs=0.15)


def test_speech_seconds_of_silence_is_zero():
    assert speech_seconds(np.zeros(4 * SR, np.float32), SR) == 0.0
    assert speech_seconds(np.zeros(10, np.float32), SR) == 0.0  # shorter than one frame


# -- errors ------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError) as excinfo:
        load(path, SR)
    assert type(excinfo.value) is AudioError
    assert_helpful(excinfo, str(path))


def test_directory(tmp_path):
    with pytest.raises(AudioError) as excinfo:
        load(tmp_path, SR)
    assert type(excinfo.value) is AudioError
    assert_helpful(excinfo, str(tmp_path))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError) as excinfo:
        load(path, SR)
    assert type(excinfo.value) is AudioError
    assert "empty" in assert_helpful(excinfo, str(path))


def test_text_is_not_audio(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are meeting notes, not a recording\n" * 50)
    with pytest.raises(AudioError) as excinfo:
        load(path, SR)
    assert type(excinfo.value) is AudioError
    assert_helpful(excinfo, str(path))
    with pytest.raises(AudioError) as excinfo:
        load(b"plain text, not audio " * 40, SR)
    assert type(excinfo.value) is AudioError
    assert_helpful(excinfo, "bytes")


def _flac_bytes(voice: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, voice, SR, format="FLAC")
    return buffer.getvalue()


def test_truncated_flac(tmp_path, voice):
    data = _flac_bytes(voice)
    path = tmp_path / "cut.flac"
    path.write_bytes(data[: len(data) // 2])  # header kept, second half of the frames gone
    with pytest.raises(AudioError) as excinfo:
        load(path, SR)
    assert type(excinfo.value) is AudioError
    assert_helpful(excinfo, str(path))


def test_flac_with_garbage_frames(tmp_path, voice):
    data = bytearray(_flac_bytes(voice))
    rng = np.random.default_rng(7)
    data[200:] = rng.integers(0, 256, len(data) - 200, dtype=np.uint8).tobytes()  # header kept
    path = tmp_path / "garbage.flac"
    path.write_bytes(bytes(data))
    with pytest.raises(AudioError) as excinfo:
        load(path, SR)
    assert type(excinfo.value) is AudioError
    assert_helpful(excinfo, str(path))


def test_truncated_wav(tmp_path, voice):
    """A WAV whose header promises 3 s but whose data stops half way (a half-copied upload) must be
    refused, not silently used as a 1.5 s recording."""
    full = tmp_path / "full.wav"
    sf.write(full, voice, SR)
    data = full.read_bytes()
    path = tmp_path / "cut.wav"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError) as excinfo:
        load(path, SR)
    assert type(excinfo.value) is AudioError
    assert_helpful(excinfo, str(path))


def test_wav_cut_inside_the_header(tmp_path, voice):
    full = tmp_path / "full.wav"
    sf.write(full, voice, SR)
    path = tmp_path / "stub.wav"
    path.write_bytes(full.read_bytes()[:60])
    with pytest.raises(AudioError) as excinfo:
        load(path, SR)
    assert type(excinfo.value) is AudioError
    assert_helpful(excinfo, str(path))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(voice, bad):
    samples = voice.copy()
    samples[1234] = bad
    with pytest.raises(AudioError) as excinfo:
        load((samples, SR), SR)
    assert type(excinfo.value) is AudioError
    assert_helpful(excinfo, "<array>")


def test_silent_recording(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(3 * SR, np.float32), SR)
    with pytest.raises(AudioError) as excinfo:
        load(path, SR)
    assert type(excinfo.value) is AudioError
    assert "silent" in assert_helpful(excinfo, str(path))


def test_too_short(voice):
    with pytest.raises(AudioError) as excinfo:
        load((voice[: int(0.3 * SR)], SR), SR, AudioLimits(min_seconds=0.5, min_speech_seconds=0.1))
    assert type(excinfo.value) is AudioError
    assert "0.5" in assert_helpful(excinfo, "<array>")


def test_not_enough_speech(tmp_path):
    wave = np.zeros(5 * SR, np.float32)
    wave[2 * SR : 2 * SR + SR // 2] = synth_voice(200.0, seconds=0.5, seed=9)
    path = tmp_path / "mostly-silence.wav"
    sf.write(path, wave, SR)
    with pytest.raises(NotEnoughSpeechError) as excinfo:
        load(path, SR, AudioLimits(min_speech_seconds=1.0))
    assert type(excinfo.value) is NotEnoughSpeechError
    assert_helpful(excinfo, str(path))
    # ...and the same recording passes when half a second of speech is enough
    assert load(path, SR, AudioLimits(min_speech_seconds=0.4)).speech_seconds == pytest.approx(0.5, abs=0.1)


def test_too_long(tmp_path, voice):
    path = tmp_path / "long.wav"
    sf.write(path, voice, SR)  # 3 s
    limits = AudioLimits(max_seconds=2.0)
    with pytest.raises(AudioError) as excinfo:
        load(path, SR, limits)
    assert type(excinfo.value) is AudioError
    assert_helpful(excinfo, str(path))
    with pytest.raises(AudioError) as excinfo:
        load((voice, SR), SR, limits)
    assert type(excinfo.value) is AudioError
    assert_helpful(excinfo, "<array>")
    assert load(path, SR, AudioLimits(max_seconds=3.5)).duration == pytest.approx(3.0)


def test_text_mode_file_object(tmp_path, voice):
    path = tmp_path / "v.wav"
    sf.write(path, voice, SR)
    with open(path, encoding="latin-1") as handle:
        with pytest.raises(AudioError) as excinfo:
            load(handle, SR)
    assert type(excinfo.value) is AudioError
    assert "binary" in assert_helpful(excinfo, str(path))


@pytest.mark.parametrize("recording", [42, 3.5, None, ["a.wav"]])
def test_unsupported_type(recording):
    with pytest.raises(AudioError) as excinfo:
        load(recording, SR)
    assert type(excinfo.value) is AudioError
    assert_helpful(excinfo, type(recording).__name__)


# -- soxr and the resemblyzer front end, without librosa -----------------------------------------

@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100, 48_000])
def test_resampling_matches_librosa_soxr_hq(rate):
    librosa = pytest.importorskip("librosa")
    from voicebank.decode import resample

    samples = synth_voice(150.0, seconds=1.3, seed=rate, sr=rate)
    ours = resample(samples, rate, SR)
    theirs = librosa.resample(samples, orig_sr=rate, target_sr=SR, res_type="soxr_hq")
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    assert np.max(np.abs(ours - theirs)) < 1e-6


@pytest.mark.parametrize("network", ["numpy", "torch"])
def test_resemblyzer_front_end_is_the_packages_own(network):
    """Mel spectrogram, volume normalization and silence trimming as resemblyzer (through librosa)
    computes them, and the same embeddings from the package's own VoiceEncoder, with the network
    run in numpy (a process without torch) and in torch (a server)."""
    resemblyzer = pytest.importorskip("resemblyzer")
    from resemblyzer import audio as theirs

    from voicebank.embedding import resemblyzer as ours

    rng = np.random.default_rng(0)
    voice = np.concatenate([synth_voice(140.0, 2.0, seed=1), np.zeros(SR, np.float32), synth_voice(140.0, 1.7, seed=2)])
    voice = (voice + 0.001 * rng.standard_normal(voice.size)).astype(np.float32)
    mel, their_mel = ours.mel_spectrogram(voice), theirs.wav_to_mel_spectrogram(voice)
    assert mel.shape == their_mel.shape == (voice.size // 160 + 1, 40)
    assert np.max(np.abs(mel - their_mel)) <= 1e-5 * np.max(their_mel)
    trimmed = ours.preprocess(voice)
    assert trimmed.size < voice.size  # the second of silence is cut
    np.testing.assert_allclose(trimmed, theirs.preprocess_wav(voice, source_sr=SR), atol=1e-6)
    encoder = resemblyzer.VoiceEncoder("cpu", verbose=False)
    embedder = ours.ResemblyzerEmbedder(device="cpu", network=network)
    for wave in (voice, voice[: 2 * SR], np.tile(voice, 3)):  # one partial, several, many
        expected = encoder.embed_utterance(theirs.preprocess_wav(wave, source_sr=SR))
        assert float(embedder.embed([wave])[0] @ expected) > 0.99999
    together = embedder.embed([voice, voice[: 2 * SR], np.tile(voice, 3)])  # partials batched across recordings
    alone = np.stack([embedder.embed([w])[0] for w in (voice, voice[: 2 * SR], np.tile(voice, 3))])
    assert np.min(np.sum(together * alone, axis=1)) > 0.99999
