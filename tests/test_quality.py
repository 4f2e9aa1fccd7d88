"""Recognition quality features: AS-norm, trial lists, eval, calibrate, cohort, enrollment checks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import TINY_THRESHOLD
from voicebank import VoiceBank, scoring
from voicebank.audio import AudioLimits
from voicebank.cli import main
from voicebank.errors import (
    DuplicateRecordingError,
    DuplicateVoiceError,
    InconsistentRecordingError,
    InvalidInputError,
    NotEnoughSpeechError,
)
from voicebank.norm import Normalizer

# Score normalization, trial lists, eval, calibrate and the enrollment checks are logic on scores:
# the fake embedder (conftest).
pytestmark = [pytest.mark.embedder("fake"), pytest.mark.usefixtures("remembered_vad")]


# -- AS-norm maths, by hand -----------------------------------------------------------------------
def test_asnorm_matches_hand_computation():
    # probe cohort scores [0.1, 0.3, 0.5] top-2 -> [0.5, 0.3]: mean 0.4, std 0.1
    # enroll cohort scores [0.2, 0.2, 0.6] top-2 -> [0.6, 0.2]: mean 0.4, std 0.2
    # raw 0.8: 0.5 * ((0.8 - 0.4) / 0.1 + (0.8 - 0.4) / 0.2) = 0.5 * (4 + 2) = 3
    out = scoring.asnorm(np.array([[0.8]]), np.array([[0.1, 0.3, 0.5]]), np.array([[0.2, 0.2, 0.6]]), top_n=2)
    assert out.shape == (1, 1)
    assert out[0, 0] == pytest.approx(3.0)


def test_normalizer_with_enrolled_cohort_leaves_out_the_speakers_of_the_trial():
    # Three enrolled "speakers" as unit vectors; the search returns them all, best first.
    bank = {1: np.array([1.0, 0.0]), 2: np.array([0.0, 1.0]), 3: np.array([0.6, 0.8])}

    def search(queries, k):
        ids = np.array(list(bank))
        scores = np.stack([[q @ bank[i] for i in ids] for q in queries])
        order = np.argsort(-scores, axis=1)[:, :k]
        return np.take_along_axis(scores, order, 1), ids[order]

    probe, claimed = np.array([0.8, 0.6]), bank[1]
    normalizer = Normalizer("asnorm", top_n=5, search=search)
    got = normalizer.score(probe, claimed, [1], [1])[0]
    # probe side without speaker 1: scores with 2 and 3 = 0.6, 0.96 -> mean 0.78, std 0.18
    # enroll side (speaker 1) without itself: scores with 2 and 3 = 0.0, 0.6 -> mean 0.3, std 0.3
    raw = 0.8
    assert got == pytest.approx(0.5 * ((raw - 0.78) / 0.18 + (raw - 0.3) / 0.3))


def test_leave_one_out_scores_each_utterance_against_the_others():
    e = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    # utterance 0 vs normalize(e1 + e2) = (1,1)/sqrt2 -> 1/sqrt2; utterance 1 vs (1,0)*2 -> 0
    np.testing.assert_allclose(scoring.leave_one_out(e), [2**-0.5, 0.0, 2**-0.5], atol=1e-9)


# -- enrollment checks ----------------------------------------------------------------------------
def test_enrollment_needs_enough_speech_in_all(bank, voices, db_path):
    from conftest import table_dump

    before = table_dump(db_path)
    needed = re.escape(f"{AudioLimits().min_enroll_speech_seconds:g}")
    with pytest.raises(NotEnoughSpeechError, match=rf"alice: the recordings hold 2\.\d s of speech in all; .*at least {needed} s"):
        bank.enroll("alice", voices["alice"][:1])
    assert table_dump(db_path) == before


def test_enrollment_checks_have_thresholds_of_their_own(bank, tmp_path, model):
    # set when the bank is made, at the measured offsets from its starting threshold
    assert bank.thresholds.enrollment_checks == pytest.approx((TINY_THRESHOLD - 0.15, 1.0))
    with VoiceBank.open(tmp_path / "d.db", str(model), create=True) as default:
        assert default.thresholds.enrollment_checks == pytest.approx((0.86 - 0.15, 0.86 + 0.08))
        assert default.thresholds.verify == 0.86 and default.thresholds.identify == pytest.approx(0.94)  # margin rule: +0.08
    db = tmp_path / "d.db"
    shown = invoke(db, "checks", "--json")
    assert shown.exit_code == 0 and json.loads(shown.stdout) == pytest.approx({"consistency": 0.71, "duplicate": 0.94})
    assert invoke(db, "checks", "--consistency", "0.6").stdout == "consistency: 0.6000\nduplicate voice: 0.9400\n"
    assert invoke(db, "checks", "--duplicate", "2").stderr.startswith("Error: a threshold on the cosine score is between")
    assert invoke(db, "checks", "--reset", "--json").stdout.strip() == json.dumps({"consistency": 0.71, "duplicate": 0.94})
    with VoiceBank.open(db) as reopened:
        assert reopened.thresholds.verify == 0.86  # the decision thresholds are another matter


def test_an_inconsistent_recording_is_refused_by_name_unless_allowed(bank, voices, db_path):
    from conftest import table_dump

    bank.thresholds.set_enrollment_checks(TINY_THRESHOLD, TINY_THRESHOLD)  # the random model's scale
    mixed = [voices["alice"][0], voices["alice"][1], voices["bob"][0]]
    before = table_dump(db_path)
    with pytest.raises(InconsistentRecordingError) as caught:
        bank.enroll("alice", mixed)
    assert voices["bob"][0].name in str(caught.value) and "--allow-inconsistent" in str(caught.value)
    assert table_dump(db_path) == before
    speaker = bank.enroll("alice", mixed, allow_inconsistent=True)
    assert len(speaker.recordings) == 3


def retakes(path, folder, count: int = 2) -> list:
    """Other recordings of the voice in ``path``: the same signal at another gain with its own faint
    noise (other bytes, so not the same recording; the same voice to the model)."""
    import soundfile as sf

    samples, rate = sf.read(path, dtype="float32")
    out = []
    for k in range(count):
        rng = np.random.default_rng(500 + k)
        again = folder / f"retake{k}-{path.name}"
        sf.write(again, (samples * (0.9 - 0.05 * k) + 0.001 * rng.standard_normal(samples.size)).astype(np.float32), rate)
        out.append(again)
    return out


def test_a_voice_matching_another_speaker_warns_or_is_refused_when_strict(bank, voices, tmp_path):
    bank.thresholds.set_enrollment_checks(TINY_THRESHOLD, TINY_THRESHOLD)  # the random model's scale
    bank.enroll("alice", voices["alice"][:2])
    again = [voices["alice"][2], *retakes(voices["alice"][0], tmp_path, 1)]
    with pytest.raises(DuplicateVoiceError, match="already matches alice"):
        bank.enroll("alice-again", again, strict=True)
    assert [s.name for s in bank.speakers()] == ["alice"]
    speaker = bank.enroll("alice-again", again)
    assert len(speaker.warnings) == 1 and "already matches alice" in speaker.warnings[0]
    assert bank.enroll("bob", voices["bob"][:2]).warnings == ()


def test_each_rule_is_said_in_the_same_words_by_enrollment_and_by_its_dry_run(bank, voices, tmp_path):
    """Enrollment raises the first rule the takes break; ``check_recordings`` reports every one. For
    each rule, the same takes for the same speaker give the same message through both."""
    from dataclasses import replace

    bank.thresholds.set_enrollment_checks(TINY_THRESHOLD, TINY_THRESHOLD)  # the random model's scale
    alice, bob = voices["alice"], voices["bob"]
    bank.enroll("alice", alice[:2])
    bank.enroll("bob", bob[:2])
    bank.enroll("alice-again", [alice[2], *retakes(alice[0], tmp_path, 1)])  # warned: her voice

    def said_by_both(name, takes, refused):
        checked = bank.check_recordings(takes, name)
        reported = [p for r in checked.recordings for p in r.problems] + list(checked.problems)
        if refused is None:
            assert bank.add_recordings(name, takes).warnings == checked.warnings
            return checked.warnings[0]
        with pytest.raises(refused) as raised:
            bank.add_recordings(name, takes)
        assert str(raised.value) in reported, (str(raised.value), reported)
        return str(raised.value)

    assert "same recording as" in said_by_both("bob", [bob[2], bob[2]], DuplicateRecordingError)
    assert "already enrolled for bob" in said_by_both("bob", [bob[0]], DuplicateRecordingError)
    assert "already enrolled for alice" in said_by_both("bob", [alice[0]], DuplicateRecordingError)
    assert "does not sound like the other recordings of alice" in said_by_both("alice", [bob[2]],
                                                                              InconsistentRecordingError)
    limits = bank.limits
    bank.limits = replace(limits, min_enroll_speech_seconds=1000.0)
    assert "bob: the recordings hold" in said_by_both("bob", [bob[2]], NotEnoughSpeechError)
    bank.limits = limits
    again = retakes(alice[1], tmp_path, 1)
    assert "the voice of alice-again already matches alice" in said_by_both("alice-again", again, None)


# -- AS-norm in the bank --------------------------------------------------------------------------
def enroll_all(bank, voices, names=("alice", "bob", "carol", "dave")):
    for name in names:
        bank.enroll(name, voices[name][:2])


def test_asnorm_bank_identifies_and_rejects_with_an_enrolled_cohort(bank, voices):
    enroll_all(bank, voices)
    threshold = bank.thresholds.set_score_normalization("asnorm", top_n=2)
    assert bank.thresholds.score_kind == "asnorm" and threshold == 3.0
    for name in ("alice", "bob", "carol", "dave"):
        result = bank.identify(voices[name][2])
        assert result.candidates[0].name == name
        assert result.candidates[0].score > result.candidates[1].score
    assert bank.verify("alice", voices["alice"][2]).score > bank.verify("alice", voices["bob"][2]).score
    with pytest.raises(InvalidInputError):
        bank.thresholds.set(1000)


def test_asnorm_refuses_a_cohort_too_small_to_have_a_spread(bank, voices):
    from voicebank.errors import VoiceBankError

    with pytest.raises(InvalidInputError, match="top-N is a whole number from 2 to 10000, not 1"):
        bank.thresholds.set_score_normalization("asnorm", top_n=1)
    for name in ("alice", "bob"):
        bank.enroll(name, voices[name][:2])
    bank.thresholds.set_score_normalization("asnorm", top_n=10)
    # two speakers: scoring alice leaves one other voiceprint, a cohort with no standard deviation
    with pytest.raises(VoiceBankError, match="AS-norm needs a cohort of at least 2: enroll at least 3 speakers"):
        bank.identify(voices["alice"][2])
    bank.cohort.add([voices["carol"][0]])
    with pytest.raises(VoiceBankError, match="AS-norm needs a cohort of at least 2 recordings; it holds 1"):
        bank.identify(voices["alice"][2])
    bank.cohort.add([voices["dave"][0]])
    score = bank.identify(voices["alice"][2]).candidates[0].score
    assert np.isfinite(score) and abs(score) < 1e4


def test_asnorm_with_an_explicit_cohort_and_the_cohort_commands(tmp_path, model, voices):
    db = tmp_path / "c.db"
    run = lambda *args: CliRunner().invoke(main, ["--db", str(db), "--model", str(model), *args])  # noqa: E731
    assert run("init", "--threshold", str(TINY_THRESHOLD), "--identify-rule", "best").exit_code == 0
    for name in ("alice", "bob"):
        assert run("enroll", name, *map(str, voices[name][:2])).exit_code == 0
    added = run("cohort", "add", *map(str, voices["carol"]), str(voices["dave"][0]))
    assert added.exit_code == 0, added.output
    assert "The cohort holds 4 recordings." in added.output
    again = run("cohort", "add", str(voices["dave"][0]))  # the same recording is not added twice
    assert "The cohort holds 4 recordings." in again.output
    switched = run("normalization", "asnorm", "--top-n", "3")
    assert switched.exit_code == 0 and "score: asnorm; threshold reset to 3.0000" in switched.output
    assert "score: asnorm; thresholds: verify 3.0000, identify 3.0000" in run("normalization").output
    with VoiceBank.open(db) as bank:
        near, far_ = bank.verify("alice", voices["alice"][2]).score, bank.verify("alice", voices["bob"][2]).score
        # the cohort as stored (embedded in one batch by `cohort add`): re-embedding it one recording
        # at a time differs in the last float32 bits, which AS-norm's small spreads magnify
        cohort = bank.scorer().cohort
        assert cohort.shape == (4, bank.dimension)
        alone = np.stack([bank.embed(p) for p in [*voices["carol"], voices["dave"][0]]])
        assert np.all((alone @ cohort.T).max(axis=1) > 0.999)  # the same recordings
        probe, (_, print_) = bank.embed(voices["alice"][2]), bank.voiceprint("alice")
        expected = scoring.asnorm(np.array([[probe @ print_]]), (cohort @ probe)[None], (cohort @ print_)[None], 3)[0, 0]
    assert near == pytest.approx(expected, rel=1e-4)
    assert near > far_
    assert run("cohort", "clear").exit_code == 0
    assert "holds 0" in run("cohort", "show").output


# -- trial lists, eval and calibrate --------------------------------------------------------------
@pytest.fixture
def enrolled_db(tmp_path, model, voices):
    db = tmp_path / "e.db"
    with VoiceBank.open(db, str(model), create=True, threshold=TINY_THRESHOLD, identify_rule="best") as bank:
        enroll_all(bank, voices)
    return db


def invoke(db, *args):
    return CliRunner().invoke(main, ["--db", str(db), *args])


def test_eval_pairs_and_enrolled_styles_report_rates_and_plot(enrolled_db, voices, tmp_path):
    v = voices
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("# VoxCeleb style\n"
                     f"1 {v['alice'][0]} {v['alice'][2]}\n1 {v['bob'][0]} {v['bob'][2]}\n"
                     f"0 {v['alice'][0]} {v['bob'][2]}\n0 {v['carol'][0]} {v['dave'][2]}\ntarget {v['dave'][1]} {v['dave'][2]}\n")
    result = invoke(enrolled_db, "eval", str(pairs), "--json", "--plot", str(tmp_path / "det.png"))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["n_target"], report["n_nontarget"], report["score"]) == (3, 2, "cosine")
    assert report["eer"] == 0.0  # near-identical recordings vs other voices separate perfectly
    assert set(report["min_dcf"]) == {"p_target=0.01", "p_target=0.05"}
    assert (tmp_path / "det.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    enrolled = tmp_path / "enrolled.txt"
    enrolled.write_text(f"1 alice {v['alice'][2].name}\n0 alice {v['bob'][2].name}\n0 bob {v['stranger'][0].name}\n",
                        encoding="utf-8")
    text = invoke(enrolled_db, "eval", str(enrolled), "--root", str(v["alice"][2].parent))
    assert text.exit_code == 0, text.output
    assert "trials: 1 target, 2 non-target" in text.output and "EER: 0.00%" in text.output


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("1 {a} {missing}\n0 {a} {b}\n", "line 1: no such file"),
        ("yes {a} {b}\n0 {a} {b}\n", "line 1: label 'yes' is not 1/0/target/nontarget"),
        ("1 {a}\n0 {a} {b}\n", "line 1: expected 'LABEL a b' (3 fields), found 2"),
        ("1 {a} {b}\n1 {a} {b}\n", "needs at least one target (1) and one non-target (0) trial"),
        ("1 alice {b}\n0 {a} {b}\n", "mixes 'LABEL speaker path' and 'LABEL path path' lines"),
        ("1 nobody {b}\n0 {a} {b}\n", "line 1: nobody is neither a file nor an enrolled speaker"),
        # a name over 255 bytes: is_file() raised ENAMETOOLONG, an OSError traceback
        ("1 {a} {long}\n0 {a} {b}\n", "line 1: no such file " + "x" * 300),
        ("1 {long} {b}\n0 {a} {b}\n", "line 1: " + "x" * 300 + ".wav is neither a file nor an enrolled speaker"),
    ],
)
def test_bad_trial_lists_are_refused_with_the_line(enrolled_db, voices, tmp_path, content, expected):
    trials = tmp_path / "trials.txt"
    trials.write_text(content.format(a=voices["alice"][0], b=voices["bob"][0], missing=tmp_path / "gone.wav",
                                     long="x" * 300 + ".wav"))
    result = invoke(enrolled_db, "eval", str(trials))
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_rate_the_bank_cannot_support_is_calibrated_at_the_one_it_can_and_says_so(enrolled_db):
    # 4 speakers x 2 recordings: 8 unknown-person trials (each recording against the 3 others), 24
    # impostor pairs, and no reference set for this model: 1% is out of reach, 2/8 and 2/24 are not
    result = invoke(enrolled_db, "calibrate")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    verify = next(line for line in lines if line.startswith("verify   chosen"))
    identify = next(line for line in lines if line.startswith("identify chosen"))
    assert "(0.0833 false accepts per claim; asked 0.01, which 24 trials cannot support: the lowest they support)" in verify
    assert "(0.25 unknown-person false alarms; asked 0.01, which 8 trials cannot support: the lowest they support" in identify
    assert any("95% upper bound" in line for line in lines)
    assert lines[-1] == "Not stored: run again with --yes to store them."  # no terminal: stored only with --yes
    with VoiceBank.open(enrolled_db) as bank:
        assert (bank.thresholds.verify, bank.thresholds.identify) == (TINY_THRESHOLD, TINY_THRESHOLD)
        assert {p.method for p in bank.thresholds.operating_points().values()} == {"default"}
    data = json.loads(invoke(enrolled_db, "calibrate", "--json", "--yes").stdout)
    assert data["stored"] is True and data["chosen"]["identify"]["asked"] == 0.01
    with VoiceBank.open(enrolled_db) as bank:
        point = bank.thresholds.operating_points()["identify"]
        assert point.method == "far" and point.target == 0.25 and point.asked == 0.01 and point.upper > 0.25


def test_calibrate_from_the_bank_measures_both_points_and_asks_before_storing(enrolled_db, voices):
    result = invoke(enrolled_db, "calibrate", "--far", "0.1", "--unknown-rate", "0.25", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["trials"] == {"genuine": 8, "impostor": 24, "unknown": 8} and data["gallery"] == 4
    assert data["stored"] is False and set(data["chosen"]) == {"verify", "identify"}
    verify, ident = data["chosen"]["verify"], data["chosen"]["identify"]
    assert (verify["method"], verify["target"], verify["trials"], verify["genuine"]) == ("far", 0.1, 24, 8)
    assert (ident["target"], ident["gallery"], ident["trials"], ident["genuine"]) == (0.25, 4, 8, 8)
    assert ident["rate"] == pytest.approx(0.25, rel=1e-3) and verify["rate"] == pytest.approx(0.1, rel=1e-3)
    assert [g["speakers"] for g in data["growth"]] == [4, 8, 20, 40]
    with VoiceBank.open(enrolled_db) as bank:
        assert bank.thresholds.verify == TINY_THRESHOLD  # asked nothing, stored nothing

    plot = enrolled_db.parent / "cal.png"
    stored = invoke(enrolled_db, "calibrate", "--far", "0.1", "--unknown-rate", "0.25", "--yes", "--plot", str(plot))
    assert stored.exit_code == 0, stored.output
    both = [plot, plot.with_name("cal-identify.png")]
    assert f"plots: {both[0]}, {both[1]}" in stored.output
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in both)
    assert "verify   chosen: threshold" in stored.output and "identify chosen: threshold" in stored.output
    assert "of 8 genuine probes:" in stored.output and stored.output.rstrip().endswith("Stored.")
    with VoiceBank.open(enrolled_db) as bank:
        assert bank.thresholds.verify == pytest.approx(verify["threshold"])
        assert bank.thresholds.identify == pytest.approx(ident["threshold"])
        points = bank.thresholds.operating_points()
        assert (points["identify"].method, points["identify"].target, points["identify"].gallery) == ("far", 0.25, 4)
        result = bank.identify(voices["alice"][2])
        assert result.threshold == pytest.approx(ident["threshold"])
        assert result.to_dict()["calibration"]["gallery_at_calibration"] == 4
        assert bank.verify("alice", voices["alice"][2]).threshold == pytest.approx(verify["threshold"])

    only = invoke(enrolled_db, "calibrate", "--for", "verify", "--eer", "--yes", "--json")
    assert only.exit_code == 0, only.output
    chosen = json.loads(only.stdout)["chosen"]
    assert set(chosen) == {"verify"} and chosen["verify"]["method"] == "eer"
    with VoiceBank.open(enrolled_db) as bank:
        assert bank.thresholds.verify == pytest.approx(chosen["verify"]["threshold"])
        assert bank.thresholds.identify == pytest.approx(ident["threshold"])  # untouched
        assert bank.thresholds.identify_rule == "best"

    moved = invoke(enrolled_db, "calibrate", "--for", "identify", "--rule", "margin", "--unknown-rate", "0.25",
                   "--yes", "--json")
    assert moved.exit_code == 0, moved.output
    chosen = json.loads(moved.stdout)["chosen"]["identify"]
    assert chosen["rule"] == "margin" and chosen["threshold"] > ident["threshold"] - 1e-9  # 2 s1 - s2 >= s1
    with VoiceBank.open(enrolled_db) as bank:
        assert bank.thresholds.identify_rule == "margin" and bank.thresholds.identify == pytest.approx(chosen["threshold"])


@pytest.mark.parametrize("command", ["eval", "calibrate"])
def test_a_plot_that_cannot_be_written_is_refused_before_the_work(enrolled_db, tmp_path, command, voices):
    trials = tmp_path / "t.txt"
    trials.write_text(f"1 {voices['alice'][0]} {voices['alice'][2]}\n0 {voices['alice'][0]} {voices['bob'][2]}\n")
    args = [str(trials)] if command == "eval" else ["--for", "verify", "--trials", str(trials), "--far", "0.5"]
    # a folder that exists but takes no files: /proc (even for root), where the work used to run
    # first and the plot to end in a traceback
    unwritable = [(Path("/proc/x.png"), "cannot write there (No such file or directory); choose a folder this user "
                   "may write to.")] if Path("/proc/self").is_dir() else []
    for plot, expected in ((tmp_path / "no" / "such" / "det.png", "does not exist"),
                           (tmp_path / "det.txt", "give a .png, .svg or .pdf file name"),
                           (tmp_path / ("d" * 300) / "det.png", "cannot write there (File name too long)"),
                           *unwritable):
        result = invoke(enrolled_db, command, *args, "--plot", str(plot))
        assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.output
        assert result.stderr.startswith(f"Error: --plot {plot}: ") and expected in result.stderr
        assert "Traceback" not in result.output


def test_the_check_of_a_plot_file_leaves_no_file_and_an_old_plot_as_it_was(enrolled_db, tmp_path, monkeypatch):
    """The check writes nothing; a plot that fails to be drawn after all is one error line, and
    nothing is stored."""
    from voicebank import evaluation

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    old = tmp_path / "old.png"
    old.write_bytes(b"an old plot")
    monkeypatch.setattr(evaluation, "plot_calibration", disk_full)
    for plot in (tmp_path / "new.png", old):
        result = invoke(enrolled_db, "calibrate", "--far", "0.1", "--unknown-rate", "0.25", "--yes", "--plot", str(plot))
        assert result.exit_code == 2, result.output
        assert result.stderr == (f"Error: --plot {plot}: could not write the plot (No space left on device); nothing was "
                                 "stored. Free space or choose another place, and run again.\n")
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".png") == ["old.png"]
    assert old.read_bytes() == b"an old plot"
    with VoiceBank.open(enrolled_db) as bank:
        assert {p.method for p in bank.thresholds.operating_points().values()} == {"default"}


def test_calibrate_needs_three_speakers(tmp_path, model, voices):
    db = tmp_path / "two.db"
    with VoiceBank.open(db, str(model), create=True, threshold=TINY_THRESHOLD, identify_rule="best") as bank:
        bank.enroll("alice", voices["alice"][:2])
        bank.enroll("bob", voices["bob"][:2])
    result = invoke(db, "calibrate")
    assert result.exit_code == 2 and "needs at least 3 enrolled speakers (it has 2)" in result.stderr


def test_a_recording_enrolled_for_one_speaker_is_refused_for_another(bank, voices, db_path):
    from conftest import table_dump

    bank.enroll("alice", voices["alice"][:2])
    before = table_dump(db_path)
    for attempt in (lambda: bank.enroll("alicia", [voices["alice"][1], voices["alice"][2]]),
                    lambda: bank.enroll("bob", voices["bob"][:2]) and bank.add_recordings("bob", [voices["alice"][0]])):
        with pytest.raises(DuplicateRecordingError) as refused:
            attempt()
        assert "is already enrolled for alice (the same recording: the same file, or the same audio in another one)" in str(refused.value)
    assert [s.name for s in bank.speakers()] == ["alice", "bob"]  # bob enrolled, without alice's recording
    assert len(bank.speaker("bob").recordings) == 2 and table_dump(db_path) != before


def test_eval_and_cohort_add_carry_on_past_an_unusable_recording(enrolled_db, voices, tmp_path):
    short = tmp_path / "short.wav"
    import soundfile as sf

    sf.write(short, np.zeros(1600, dtype=np.float32), 16_000)  # 0.1 s: too short
    v = voices
    trials = tmp_path / "t.txt"
    trials.write_text(f"1 {v['alice'][0]} {v['alice'][2]}\n1 {v['bob'][0]} {short}\n"
                      f"0 {v['alice'][0]} {v['bob'][2]}\n0 {v['carol'][0]} {v['dave'][2]}\n")
    result = invoke(enrolled_db, "eval", str(trials), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["n_target"], report["n_nontarget"], report["dropped_trials"]) == (1, 2, 1)
    assert list(report["left_out"]) == [str(short)] and "shorter than the minimum" in report["left_out"][str(short)]
    assert result.stderr.splitlines()[-1] == ("1 of 7 recordings could not be used: 1 of 4 trials were left out; "
                                              "the rates below are on the other 3.")
    only = tmp_path / "only.txt"  # the unusable file held the only target trial: the rates would mislead
    only.write_text(f"1 {v['bob'][0]} {short}\n0 {v['alice'][0]} {v['bob'][2]}\n")
    assert "which leaves no target trials to score" in invoke(enrolled_db, "eval", str(only)).stderr

    added = invoke(enrolled_db, "cohort", "add", str(v["stranger"][0]), str(short), str(v["stranger"][1]))
    assert added.exit_code == 2 and "The cohort holds 2 recordings." in added.stdout
    assert "left out: " in added.stderr and "1 of 3 recordings could not be used" in added.stderr
