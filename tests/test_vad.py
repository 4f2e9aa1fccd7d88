"""voicebank.vad and the speech check of audio.load: what is not speech is refused, real speech is
accepted, the synthetic test voices are heard as speech, and threads agree with one thread."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import REPO, SR, VOICES, synth_voice, take
from voicebank import vad
from voicebank.audio import load, speech_seconds
from voicebank.errors import ModelError, NotEnoughSpeechError

SHARED = REPO.parent / "shared" / "data"


def seconds(n: float) -> np.ndarray:
    return np.arange(int(n * SR)) / SR


def colored_noise(exponent: float, n: float = 5.0) -> np.ndarray:
    """Noise with power falling as 1/f**exponent: 1 is pink, 2 is brown."""
    spectrum = np.fft.rfft(np.random.default_rng(2).standard_normal(int(n * SR)))
    freqs = np.fft.rfftfreq(int(n * SR), 1 / SR)
    freqs[0] = freqs[1]
    wave = np.fft.irfft(spectrum / freqs ** (exponent / 2), int(n * SR))
    return 0.3 * wave / np.max(np.abs(wave))


def clicks() -> np.ndarray:
    wave = np.zeros(5 * SR)
    wave[:: SR // 10] = 0.9  # ten impulses a second
    return wave


def chords() -> np.ndarray:
    """C, G, Am, F on a plucked five-harmonic timbre, two chords a second: music, not speech."""
    progression = [(261.6, 329.6, 392.0), (196.0, 246.9, 293.7), (220.0, 261.6, 329.6), (174.6, 220.0, 261.6)]
    t = seconds(0.5)
    notes = [sum(np.sin(2 * np.pi * h * f * t) / h for f in chord for h in range(1, 6)) * np.exp(-3 * t)
             for chord in progression]
    wave = np.concatenate([notes[k % 4] for k in range(10)])
    return 0.3 * wave / np.max(np.abs(wave))


NOT_SPEECH = {
    "white noise": lambda: 0.3 * np.random.default_rng(1).standard_normal(5 * SR),
    "pink noise": lambda: colored_noise(1),
    "brown noise": lambda: colored_noise(2),
    "440 Hz tone": lambda: 0.5 * np.sin(2 * np.pi * 440 * seconds(5)),
    "square wave": lambda: 0.3 * np.sign(np.sin(2 * np.pi * 220 * seconds(5))),
    "DC offset": lambda: np.full(5 * SR, 0.3),
    "clicks": clicks,
    "chords": chords,
}


@pytest.mark.parametrize("name", NOT_SPEECH)
def test_sounds_that_are_not_speech_are_refused(name):
    with pytest.raises(NotEnoughSpeechError) as excinfo:
        load((NOT_SPEECH[name]().astype(np.float32), SR), SR)
    assert str(excinfo.value) == (
        "<array>: no speech detected in 5.00 s of audio (noise, tones, music and silence are not speech). "
        "Use a recording of the person speaking."
    )


def test_noise_cannot_be_enrolled(bank):
    with pytest.raises(NotEnoughSpeechError, match="no speech detected"):
        bank.enroll("noise", [(NOT_SPEECH["white noise"]().astype(np.float32), SR)] * 3)
    assert len(bank) == 0


def test_a_little_speech_says_how_much(tmp_path):
    wave = np.zeros(5 * SR, np.float32)
    wave[SR : SR + SR // 2] = synth_voice(180.0, seconds=0.5, seed=4)
    with pytest.raises(NotEnoughSpeechError, match=r"^<array>: only 0\.\d\d s of speech detected in 5\.00 s, below the "
                                                   r"minimum of 1 s\. Use a recording with more speech\.$"):
        load((wave, SR), SR)


# -- what is speech ----------------------------------------------------------------------------


def real_recordings(folder: str, every: int) -> list:
    root = SHARED / folder
    if not root.is_dir():
        pytest.skip(f"needs the real speech at {root}")
    return sorted(root.rglob("*.flac"))[::every]


@pytest.mark.parametrize(("folder", "every"), [("speech", 10), ("speechocean762-dev", 50)])
def test_real_speech_is_accepted_with_plausible_speech_seconds(folder, every):
    # All 240 files of speech/ hold 46-99% speech by silero-vad (median 82%); speechocean762's
    # read sentences, with their hesitations, 34-83% (median 68%, every 10th file measured).
    ratios = []
    for path in real_recordings(folder, every):
        audio = load(path, SR)  # the default limits: at least 1 s of speech
        assert 0.3 * audio.duration <= audio.speech_seconds <= audio.duration, path
        ratios.append(audio.speech_seconds / audio.duration)
    assert 0.6 <= float(np.median(ratios)) <= 0.95


@pytest.mark.parametrize(("k", "name"), enumerate([*VOICES, "stranger"]))
def test_the_synthetic_test_voices_are_speech(k, name):
    # the recordings of the `voices` fixture: most of each is heard as speech
    f0 = {**VOICES, "stranger": 420.0}[name]
    base = synth_voice(f0, seconds=2.5, seed=k)
    for i in range(3):
        assert speech_seconds(take(base, 10 * k + i), SR) >= 0.85 * 2.5, (name, i)


def test_speech_is_found_where_it_is():
    wave = np.concatenate([np.zeros(2 * SR), synth_voice(150.0, seconds=3.0, seed=7), np.zeros(2 * SR)])
    frames = vad.speech_frames(wave.astype(np.float32), SR)
    assert len(frames) == int(np.ceil(7 * SR / vad.FRAME))
    times = (np.flatnonzero(frames) + 0.5) * vad.FRAME_SECONDS
    assert times.min() == pytest.approx(2.0, abs=0.15)
    assert times.max() == pytest.approx(5.0, abs=0.15)


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100])
def test_other_rates_are_resampled_for_the_detector(rate):
    import librosa

    voice = np.concatenate([np.zeros(SR), synth_voice(200.0, seconds=3.0, seed=8), np.zeros(SR)])
    other = librosa.resample(voice, orig_sr=SR, target_sr=rate).astype(np.float32)
    assert speech_seconds(other, rate) == pytest.approx(speech_seconds(voice, SR), abs=0.15)
    assert speech_seconds(other, rate) >= 2.7


def test_nothing_is_no_frames():
    assert vad.speech_frames(np.zeros(0, np.float32), SR).shape == (0,)
    assert speech_seconds(np.zeros(10, np.float32), SR) == 0.0


# -- how decisions are made ----------------------------------------------------------------------


def test_decisions_use_hysteresis_a_minimum_run_and_bridge_short_gaps():
    def decide(levels: str) -> str:  # one digit per frame: probability in tenths
        return "".join("#" if s else "." for s in vad.decide(np.array([int(c) / 10 for c in levels])))

    # speech starts at 0.5 and lasts while >= 0.35 (4 counts, 3 does not)
    assert decide("0005555444444300") == "...##########..."
    # fewer than 8 frames (250 ms) of speech is dropped: a click, a cough
    assert decide("00055555550000") == ".............."
    # a silence of 1-2 frames (under 100 ms) between speech is bridged, 3 frames is not
    assert decide("666666660066666666") == "##################"
    assert decide("6666666600066666666") == "########...########"


# -- how it runs ---------------------------------------------------------------------------------


def test_the_fast_path_gives_silero_s_own_probabilities():
    import torch

    wave = np.concatenate([synth_voice(140.0, seconds=2.0, seed=11), colored_noise(1, 1.0)]).astype(np.float32)
    model = torch.jit.load(str(vad._model_path()), map_location="cpu").eval()
    model.reset_states()
    padded = np.concatenate([wave, np.zeros(-len(wave) % vad.FRAME, np.float32)])
    with torch.inference_mode():
        reference = [float(model(torch.from_numpy(chunk), SR)) for chunk in padded.reshape(-1, vad.FRAME)]
    np.testing.assert_allclose(vad.speech_probabilities(wave, SR), reference, atol=1e-5)


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_both_engines_give_silero_s_own_probabilities_with_state_carried(engine):
    """The recurrent cell in numpy (a process without torch) and in torch (one that has it), the
    state carried between pieces as a live stream carries it."""
    import torch

    from voicebank import checkpoint, nets

    wave = np.concatenate([colored_noise(2, 0.7), synth_voice(180.0, seconds=1.5, seed=12)]).astype(np.float32)
    wave = np.concatenate([wave, np.zeros(-len(wave) % vad.FRAME, np.float32)])
    model = torch.jit.load(str(vad._model_path()), map_location="cpu").eval()
    model.reset_states()
    with torch.inference_mode():
        reference = [float(model(torch.from_numpy(chunk), SR)) for chunk in wave.reshape(-1, vad.FRAME)]
    tensors = checkpoint.read_torchscript(vad._model_path())
    network = nets.Silero({k.removeprefix("_model."): v for k, v in tensors.items() if k.startswith("_model.")}, engine)
    padded = np.concatenate([np.zeros(64, np.float32), wave])
    windows = np.array(np.lib.stride_tricks.sliding_window_view(padded, nets.Silero.WINDOW)[:: vad.FRAME])
    got, state = [], None
    for piece in np.array_split(windows, [5, 6, 20]):  # pieces of 5, 1, 14 and the rest of the frames
        hidden, state = network.cell.run(network.features(piece)[None], state)
        got += network.head(hidden[0]).tolist()
    assert max(reference) - min(reference) > 0.5  # it hears the voice begin, so the match means something
    np.testing.assert_allclose(got, reference, atol=1e-5)


def test_voicebank_nets_chooses_where_an_lstm_runs_and_both_agree_with_torch(monkeypatch):
    import torch

    from voicebank import nets

    reference = torch.nn.LSTM(6, 5, 2, batch_first=True).eval()
    layers = [tuple(getattr(reference, f"{n}_l{k}").detach().numpy() for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
              for k in range(2)]
    x = np.random.default_rng(3).standard_normal((3, 40, 6)).astype(np.float32)
    with torch.no_grad():
        expected, (h, c) = reference(torch.from_numpy(x))
    for engine in ("numpy", "torch"):
        monkeypatch.setenv("VOICEBANK_NETS", engine)
        lstm = nets.Lstm(layers)  # engine "auto": the variable decides, whatever the process has loaded
        out, state = lstm.run(x[:, :25])
        out2, state = lstm.run(x[:, 25:], state)  # the state carried across calls
        assert (lstm._torch is not None) == (engine == "torch")
        np.testing.assert_allclose(np.concatenate([out, out2], axis=1), expected.numpy(), atol=1e-5)
        np.testing.assert_allclose(state[0], h.numpy(), atol=1e-5)
        np.testing.assert_allclose(state[1], c.numpy(), atol=1e-5)
    monkeypatch.setenv("VOICEBANK_NETS", "numpyy")  # a typo is said, not taken for auto
    with pytest.raises(ModelError, match="VOICEBANK_NETS is 'numpyy': set it to numpy, torch or auto"):
        nets.Lstm(layers).run(x)
    with pytest.raises(ValueError, match="engine must be auto, numpy or torch"):
        nets.Lstm(layers, "gpu")


def test_threads_get_the_answers_of_one_thread(monkeypatch):
    waves = [synth_voice(f0, 3.0, seed=k) for k, f0 in enumerate([110.0, 180.0, 250.0, 320.0])]
    waves += [NOT_SPEECH["pink noise"]().astype(np.float32), chords().astype(np.float32)]
    alone = [vad.speech_probabilities(w, SR) for w in waves]
    monkeypatch.setattr(vad, "_model", None)  # the threads also race to load the model
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda w: vad.speech_probabilities(w, SR), waves * 3))
    for got, expected in zip(together, alone * 3):
        np.testing.assert_allclose(got, expected, atol=1e-6)
        np.testing.assert_array_equal(vad.decide(got), vad.decide(expected))


def test_no_process_wide_setting_changes():
    # The silero_vad package sets torch's thread count when imported; voicebank never imports it.
    code = (
        "import sys, numpy as np, torch\n"
        "torch.set_num_threads(3)\n"
        "from voicebank import audio\n"
        "audio.speech_seconds(np.random.default_rng(0).standard_normal(16000).astype(np.float32), 16000)\n"
        "assert torch.get_num_threads() == 3, torch.get_num_threads()\n"
        "assert 'silero_vad' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_a_missing_silero_vad_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(vad, "_model", None)
    monkeypatch.setattr(vad.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match=r'silero-vad, which is not installed: pip install "silero-vad>=6\.2\.3"'):
        vad.speech_frames(np.zeros(SR, np.float32), SR)


def test_a_damaged_model_file_is_a_clear_error_every_time(monkeypatch, tmp_path):
    damaged = tmp_path / "silero_vad.jit"
    damaged.write_bytes(b"not a model")
    monkeypatch.setattr(vad, "_model", None)
    monkeypatch.setattr(vad, "_model_path", lambda: damaged)
    for _ in range(2):  # a failed load leaves nothing half-loaded behind
        with pytest.raises(ModelError, match=r'could not be loaded .*--force-reinstall "silero-vad==6\.2\.3"$'):
            vad.speech_frames(np.zeros(SR, np.float32), SR)
