"""The reference set of strangers (voicebank.reference) and what calibration does with it: unknown-
person trials for banks too small to have their own, moved to the level of the bank's own strangers;
new banks that start from measured thresholds and are measured again as they fill."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest

from conftest import SR, synth_voice, take
from voicebank import reference
from voicebank.calibration import MARGIN, decide, top2
from voicebank.evaluation import at_level, bank_trials, level_shift, shift_spread, trials_from_embeddings
from voicebank.norm import Normalizer
from voicebank.reference import Reference

RESEMBLYZER = importlib.util.find_spec("resemblyzer") is not None
needs_resemblyzer = pytest.mark.skipif(not RESEMBLYZER, reason="the shipped reference set is resemblyzer's "
                                                               "(pip install -e '.[resemblyzer]')")


def cone(rng, people: int, per: int, dim: int = 32, spread: float = 0.35, level: float = 0.0):
    """Unit vectors of ``people`` people (``per`` recordings each) around a common direction: voices
    alike as real ones are (``level`` raises every cosine a little)."""
    centre = np.zeros(dim)
    centre[0] = 1.0
    out = []
    for _ in range(people):
        voice = centre * (1.5 + level) + rng.normal(0, spread, dim)
        takes = voice + rng.normal(0, 0.25, (per, dim))
        out.append((takes / np.linalg.norm(takes, axis=1, keepdims=True)).astype(np.float32))
    return out


def test_the_level_shift_moves_the_reference_to_the_bank_s_own_strangers():
    rng = np.random.default_rng(0)
    own = [rng.normal(0.6, 0.05, 9) for _ in range(30)]
    ref = [rng.normal(0.5, 0.05, 10) for _ in range(300)]
    shift = level_shift(own, ref, MARGIN)
    stat = lambda rows: np.median([decide(*top2(r), MARGIN) for r in rows])  # noqa: E731
    nine = [np.delete(r, k) for r in ref for k in range(len(r))]  # every gallery with one voiceprint left out
    assert shift == pytest.approx(stat(own) - stat(nine)) and 0.05 < shift < 0.15
    assert stat([r[:9] + shift for r in ref]) == pytest.approx(stat(own), abs=0.01)
    assert level_shift(own[:2], ref, MARGIN) == 0.0  # two of its own say nothing yet


@pytest.mark.parametrize("rule", [MARGIN, "best"])
def test_the_level_shift_compares_galleries_of_one_size(rule):
    """The bank's own strangers are scored without their own voiceprint, one candidate fewer than a
    stranger meets. Drawn from one population, they must not look like a lower level: that would
    move the reference set down, and the threshold with it."""
    rng = np.random.default_rng(1)
    own = list(rng.normal(0.5, 0.1, (20000, 9)))
    ref = list(rng.normal(0.5, 0.1, (20000, 10)))
    naive = np.median([decide(*top2(r), rule) for r in own]) - np.median([decide(*top2(r), rule) for r in ref])
    assert naive < -0.0025  # the best of nine is lower than the best of ten
    assert abs(level_shift(own, ref, rule)) < 0.0012


def test_the_level_s_uncertainty_comes_from_the_bank_s_people_and_spreads_the_reference_rows():
    """Three recordings each of a few people: the level of their strangers' scores is known only
    as well as the people are many (their recordings score alike), and the reference rows are
    spread over what it may be, centred on the shift."""
    rng = np.random.default_rng(4)

    def bank(people: int) -> tuple[list[np.ndarray], list[int]]:
        levels = rng.normal(0.6, 0.05, people)  # each person's own level
        rows = [rng.normal(level, 0.01, people - 1) for level in levels for _ in range(3)]
        return rows, [k for k in range(people) for _ in range(3)]

    few, many = shift_spread(*bank(5), MARGIN), shift_spread(*bank(60), MARGIN)
    assert few > 2 * many > 0
    alike = bank(5)  # the same rows taken as 15 people of one recording each: less uncertain than 5 people
    assert shift_spread(alike[0], list(range(15)), MARGIN) < few
    assert shift_spread(alike[0][:3], [0, 0, 0], MARGIN) == 0.0  # one person: nothing to resample
    ref = [rng.normal(0.5, 0.05, 5) for _ in range(400)]
    moved = at_level(ref, 0.1, few)
    offsets = np.array([m[0] - r[0] for m, r in zip(moved, ref)])
    assert np.mean(offsets) == pytest.approx(0.1, abs=1e-3) and np.std(offsets) == pytest.approx(few, rel=0.05)
    assert [m - r for m, r in zip(at_level(ref, 0.1, 0.0), ref)][7] == pytest.approx(np.full(5, 0.1))
    assert all(np.array_equal(a, b) for a, b in zip(moved, at_level(ref, 0.1, few)))  # the same every time
    # a spread estimated from five people: Student's t with 4 degrees of freedom, wider in the tails
    heavy = np.array([m[0] - r[0] for m, r in zip(at_level(ref, 0.1, few, people=5), ref)])
    assert np.median(heavy) == pytest.approx(0.1, abs=few / 20)
    assert np.quantile(heavy, 0.99) - 0.1 > 1.5 * (np.quantile(offsets, 0.99) - 0.1)


def test_a_bank_of_three_takes_the_reference_set_at_its_own_level_and_keeps_a_usable_threshold():
    """Three people: the level of their strangers would be drawn from Student's t on 2 degrees of
    freedom, whose tails asked for a verification threshold of 1.0 (everyone rejected). Below four
    people the reference set is taken at its own level; from four on it is moved."""
    rng = np.random.default_rng(2)
    strangers = np.concatenate(cone(rng, 200, 3, spread=0.6))
    ref = Reference("m", {"wideband": strangers}, np.repeat(np.arange(200), 3), np.array(["x"] * 600))
    scorer = Normalizer("cosine", 0)
    from voicebank.calibration import identification_point, verification_point

    voices = cone(rng, 4, 3, level=0.3)
    three = bank_trials([(k + 1, e) for k, e in enumerate(voices[:3])], None, scorer, MARGIN, (), ref, "wideband")
    four = bank_trials([(k + 1, e) for k, e in enumerate(voices)], None, scorer, MARGIN, (), ref, "wideband")
    assert three.sources["people"] == 3 and three.sources["shift"] == 0.0 and three.sources["spread"] == 0.0
    assert four.sources["people"] == 4 and four.sources["shift"] > 0 and four.sources["spread"] > 0
    genuine = float(np.median(three.target))
    assert verification_point(three, 0.01).threshold < genuine  # a usable point: genuine speakers reach it
    assert identification_point(three, 0.01, 3).threshold < 1.0


def test_a_bank_of_five_has_a_promise_from_the_reference_set():
    """Five people with three recordings: 15 unknown-person trials of its own, too few for 1%; with
    a reference set of 600 strangers the 1% point is calibrated as asked, and the reference's
    scores sit at the level of the bank's own strangers."""
    rng = np.random.default_rng(1)
    bank = [(k + 1, e) for k, e in enumerate(cone(rng, 5, 3, level=0.3))]
    strangers = cone(rng, 200, 3, spread=0.6)  # from elsewhere: further from the bank's voices than its own people
    rows = np.concatenate(strangers)
    ref = Reference("m", {"wideband": rows}, np.repeat(np.arange(200), 3), np.array(["x"] * 600))
    scorer = Normalizer("cosine", 0)
    own = trials_from_embeddings(bank, None, scorer, rule=MARGIN)
    assert len(own.unknown) == 15
    trials = bank_trials(bank, None, scorer, MARGIN, (), ref, "wideband")
    assert trials.sources["reference"] == 600 and trials.sources["own"] == 15 and len(trials.unknown) == 615
    assert trials.sources["shift"] > 0  # the bank's own strangers score higher than the reference set's
    assert trials.sources["spread"] > 0 and trials.sources["people"] == 5  # the level is uncertain: 5 people
    from voicebank.calibration import identification_point

    point = identification_point(trials, 0.01, 5)
    assert point.target == 0.01 and point.asked is None and point.trials == 615 and point.upper is not None
    # a bank with enough strangers of its own does not take the reference set
    big = [(k + 1, e) for k, e in enumerate(cone(rng, 80, 3))]
    assert bank_trials(big, None, scorer, MARGIN, (), ref, "wideband").sources["reference"] == 0


def test_a_person_of_the_reference_set_who_is_enrolled_is_no_stranger(caplog):
    rng = np.random.default_rng(2)
    people = cone(rng, 40, 3)
    ref = Reference("m", {"wideband": np.concatenate(people)}, np.repeat(np.arange(40), 3), np.array(["x"] * 120))
    enrolled = [(1, people[7]), (2, cone(rng, 1, 3)[0]), (3, cone(rng, 1, 3)[0])]  # person 7 enrolls
    with caplog.at_level(logging.INFO, logger="voicebank.evaluation"):
        trials = bank_trials(enrolled, None, Normalizer("cosine", 0), MARGIN, (), ref, "wideband")
    assert trials.sources["reference"] == 117  # their 3 recordings left out
    assert "left 1 people of the reference set out" in caplog.text


def test_a_damaged_reference_file_costs_the_reference_not_the_bank(tmp_path, monkeypatch, caplog):
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    monkeypatch.setattr(reference, "FOLDER", tmp_path)
    monkeypatch.setattr(reference, "_loaded", {})
    with caplog.at_level(logging.WARNING, logger="voicebank.reference"):
        assert reference.for_model("anything") is None
    assert "cannot read the reference set" in caplog.text


@needs_resemblyzer
def test_the_shipped_reference_set_is_found_by_model_and_holds_both_channels():
    from voicebank.embedding import load_embedder

    found = reference.for_model(load_embedder("resemblyzer").model_id)
    assert found is not None and found.people() > 200 and len(found) > 1200
    for channel in ("wideband", "telephone"):
        rows = found.embeddings[channel]
        assert rows.shape == (len(found), 256) and rows.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-3)
    # a recording and itself through the telephone line: close, but not the same
    same = np.sum(found.embeddings["wideband"] * found.embeddings["telephone"], axis=1)
    assert 0.5 < np.median(same) < 0.99
    assert reference.for_model("some other model") is None


@needs_resemblyzer
def test_a_new_bank_starts_from_measured_thresholds_and_measures_them_again_as_it_fills(tmp_path):
    from voicebank import VoiceBank

    with VoiceBank.open(tmp_path / "r.db", "resemblyzer", create=True) as bank:
        start = {c: bank.thresholds.operating_points(c) for c in ("wideband", "telephone")}
        for channel, points in start.items():
            for purpose, point in points.items():
                assert point.method == "auto" and point.channel == channel, (channel, purpose, point)
                assert point.trials > (200 if purpose == "scan" else 1000) and point.upper is not None
                assert point.target == 0.01
        status = bank.thresholds.status()
        assert status["identify"]["method"] == "auto" and status["identify"]["trials"] > 1000
        for k, f0 in enumerate((110.0, 170.0, 240.0)):
            base = synth_voice(f0, seconds=3.0, seed=40 + k)
            bank.enroll(f"s{k}", [(take(base, 100 * k + i), SR) for i in range(3)], allow_inconsistent=True)
        after = bank.thresholds.operating_points()
        assert after["identify"].method == "auto" and after["identify"].gallery == 3
        assert after["identify"].sources["reference"] > 1000 and after["identify"].sources["own"] == 9
        assert after["identify"].threshold != start["wideband"]["identify"].threshold
        bank.thresholds.set(0.9, "identify")  # set by hand: no longer measured automatically
        bank.enroll("s3", [(take(synth_voice(300.0, seconds=3.0, seed=50), 400 + i), SR) for i in range(3)],
                    allow_inconsistent=True)
        assert bank.thresholds.operating_points()["identify"].threshold == 0.9
        assert bank.thresholds.operating_points()["verify"].method == "auto"  # the others still are


@needs_resemblyzer
def test_a_bank_made_with_a_threshold_keeps_it(tmp_path):
    from voicebank import VoiceBank

    with VoiceBank.open(tmp_path / "t.db", "resemblyzer", create=True, threshold=0.8) as bank:
        assert bank.thresholds.verify == 0.8 and bank.thresholds.operating_points()["verify"].method == "default"


@needs_resemblyzer
def test_scan_windows_have_an_operating_point_of_their_own(tmp_path):
    """A 3 s window scores unlike a whole recording: a resemblyzer bank measures the threshold of
    scan's windows on the reference set's windows (per channel), and scan decides with it."""
    from voicebank import VoiceBank

    with VoiceBank.open(tmp_path / "w.db", "resemblyzer", create=True) as bank:
        assert bank.thresholds.operating_points()["scan"].method == "auto"  # measured at creation, on the reference set
        bases = [synth_voice(f0, seconds=3.0, seed=60 + k) for k, f0 in enumerate((110.0, 170.0, 240.0))]
        for k, base in enumerate(bases):
            bank.enroll(f"s{k}", [(take(base, 200 * k + i), SR) for i in range(3)], allow_inconsistent=True)
        points = bank.thresholds.operating_points()
        window, whole = points["scan"], points["identify"]
        assert window.method == "auto" and window.sources["windows"] == 1 and window.sources["reference"] > 1000
        assert window.threshold != whole.threshold and window.gallery == 3
        assert bank.thresholds.operating_points("telephone")["scan"].channel == "telephone"
        segments = bank.scan((np.concatenate([take(bases[0], 7), np.zeros(SR, np.float32), take(bases[1], 8)]), SR))
        rows = bank.audit.entries(operation="scan")
        assert segments and {r.threshold for r in rows} == {window.threshold}
        as_identify = bank.scan((np.concatenate([take(bases[0], 7), take(bases[1], 8)]), SR), purpose="identify")
        assert as_identify and bank.audit.entries(operation="scan", limit=1)[0].threshold == whole.threshold
        shown = bank.thresholds.status()
        assert shown["scan"]["method"] == "auto" and shown["scan"]["trials"] == window.trials
