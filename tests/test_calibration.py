"""The two operating points (voicebank.calibration): promised rates against rates measured on
fresh impostors, refusal of targets the data cannot support, the EER margin, storage round trips."""

from __future__ import annotations

import numpy as np
import pytest

from voicebank.calibration import (
    IDENTIFY,
    VERIFY,
    ImpostorModel,
    OpenSetTrials,
    OperatingPoint,
    RateModel,
    Smoothed,
    ThinDataError,
    identification_point,
    needed,
    upper_bound,
    verification_point,
)
from voicebank.openset import genuine_rates

# The bank tests here check calibration bookkeeping, not the model: the fake embedder (conftest).
pytestmark = [pytest.mark.embedder("fake"), pytest.mark.usefixtures("remembered_vad")]


def impostor_rows(rng, probes: int, gallery: int, tail: str) -> list[np.ndarray]:
    """Each unknown probe has its own score level; its scores against a gallery spread around it
    with a light (bounded), Gaussian or heavy (Student t, 8 d.o.f.) tail."""
    levels = rng.normal(0.6, 0.05, probes)
    spread = {"light": lambda n: 0.4 * (rng.beta(8, 8, n) - 0.5), "gauss": lambda n: 0.08 * rng.standard_normal(n),
              "heavy": lambda n: 0.08 * rng.standard_t(8, n)}[tail]
    return [m + spread(gallery) for m in levels]


def measured_false_alarms(rows: list[np.ndarray], threshold: float) -> float:
    return float(np.mean([r.max() >= threshold for r in rows]))


@pytest.mark.parametrize("tail", ["light", "gauss", "heavy"])
def test_promised_false_alarms_hold_on_new_people_and_a_grown_bank(tail):
    """Five calibrations, each on 600 unknown probes against 60 voiceprints, each measured on
    4,000 other people: at the calibrated size the typical (median) calibration keeps its
    promise within 0.5x-2x and none is off by 3x; with ten times as many enrolled (an
    extrapolation: `check` asks for a new calibration well before that), within 3x typically."""
    ratios: dict[int, list[float]] = {60: [], 600: []}
    for seed in range(5):
        rng = np.random.default_rng(seed)
        model = ImpostorModel.fit(impostor_rows(rng, 600, 60, tail))
        for gallery in ratios:
            threshold = model.threshold(0.01, gallery)
            assert model.false_alarm(threshold, gallery) == pytest.approx(0.01, rel=1e-3)
            ratios[gallery].append(measured_false_alarms(impostor_rows(rng, 4000, gallery, tail), threshold) / 0.01)
        # more enrolled speakers, more chances for a stranger: a higher threshold for the same promise
        assert model.threshold(0.01, 60) < model.threshold(0.01, 600) < model.threshold(0.01, 6000)
    assert 0.5 <= np.median(ratios[60]) <= 2.0 and all(1 / 3 <= r <= 3 for r in ratios[60]), ratios
    assert 1 / 3 <= np.median(ratios[600]) <= 3.0, ratios


def as_trials(rows: list[np.ndarray], gallery: int) -> OpenSetTrials:
    return OpenSetTrials(np.zeros(0), np.zeros(0), np.zeros(0, bool), rows, gallery, "cosine")


@pytest.mark.parametrize("tail", ["light", "gauss", "heavy"])
def test_the_product_rates_hold_on_new_people(tail):
    """What calibrate uses: the counted rates, smoothed, carried to other sizes by the model."""
    ratios: dict[str, list[float]] = {"far": [], "60": [], "600": []}
    for seed in range(5):
        rng = np.random.default_rng(seed)
        model = RateModel.fit(as_trials(impostor_rows(rng, 600, 60, tail), 60))
        fresh = impostor_rows(rng, 4000, 600, tail)
        threshold = model.threshold(0.01)
        ratios["far"].append(float(np.mean(np.concatenate([r[:60] for r in fresh]) >= threshold)) / 0.01)
        for gallery in (60, 600):
            t = model.threshold(0.01, gallery)
            assert model.false_alarm(t, gallery) == pytest.approx(0.01, rel=1e-3)
            ratios[str(gallery)].append(measured_false_alarms([r[:gallery] for r in fresh], t) / 0.01)
        # one claim is one chance: the 1:N threshold for the same rate is higher
        assert threshold < model.threshold(0.01, 60) < model.threshold(0.01, 600)
    assert all(0.7 <= r <= 1.4 for r in ratios["far"]), ratios  # 1.4 million pairs behind each
    assert 0.5 <= np.median(ratios["60"]) <= 2.0 and all(1 / 3 <= r <= 3 for r in ratios["60"]), ratios
    assert 1 / 3 <= np.median(ratios["600"]) <= 3.0, ratios


def test_smoothed_rates_fall_between_scores_and_round_trip():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    smooth = Smoothed.of(scores)
    assert smooth(0.3) == pytest.approx(0.5, abs=0.05)  # about half the mass above the middle score
    assert smooth(0.0) > 0.95 and smooth(1.0) < 1e-6
    t = smooth.threshold(0.2)
    assert smooth(t) == pytest.approx(0.2, abs=1e-6) and t not in set(scores)
    assert Smoothed.from_dict(smooth.to_dict())(0.35) == pytest.approx(smooth(0.35))


def trials(rng, speakers: int = 60, per: int = 5) -> OpenSetTrials:
    unknown = impostor_rows(rng, speakers * per, speakers - 1, "gauss")
    target = rng.normal(0.9, 0.03, speakers * per)
    best_other = np.array([r.max() for r in unknown])
    return OpenSetTrials(target, np.maximum(target, best_other), target >= best_other, unknown, speakers, "cosine")


def test_a_target_the_trials_cannot_support_is_calibrated_at_the_rate_they_can_with_its_upper_bound():
    data = trials(np.random.default_rng(1), speakers=30, per=3)  # 90 unknown-person trials
    assert needed(0.01) == 200 and needed(0.001) == 2000
    point = identification_point(data, 0.01)
    # 90 trials support 2/90: that is what is promised, and what was asked is kept beside it
    assert point.target == pytest.approx(2 / 90) and point.asked == 0.01
    assert point.rate == pytest.approx(2 / 90, rel=1e-3)
    assert point.upper == pytest.approx(upper_bound(point.counted, 90)) and point.upper > point.counted / 90
    enough = identification_point(data, 0.05)  # 90 trials do support 5%: calibrated as asked
    assert enough.target == 0.05 and enough.asked is None and enough.threshold < point.threshold
    far = verification_point(data, 0.0001)  # 90 probes, each against the 29 other voiceprints
    assert far.target == pytest.approx(2 / 2610) and far.asked == 0.0001
    with pytest.raises(ThinDataError, match="needs unknown-person trials"):
        identification_point(OpenSetTrials(data.target, data.known_best, data.known_correct, [], 30, "cosine"), 0.01)


def test_the_upper_bound_is_clopper_pearson():
    """0 errors in n trials: the 95% bound is 1 - 0.05 ** (1 / n) (the rule of three, about 3 / n);
    and a bound always lies above the rate counted."""
    for n in (10, 300, 3000):
        assert upper_bound(0, n) == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-6)
    assert upper_bound(10, 1000) == pytest.approx(0.01690, abs=5e-5) and upper_bound(5, 5) == 1.0
    assert upper_bound(0, 0) is None


def test_identification_point_reports_expected_and_counted_rates():
    data = trials(np.random.default_rng(2))
    point = identification_point(data, 0.01)
    assert point.purpose == IDENTIFY and point.gallery == 60 and point.trials == 300 and point.genuine == 300
    assert point.rate == pytest.approx(0.01, rel=1e-3)
    assert point.counted == int(np.sum(data.unknown_best >= point.threshold))
    hit, wrong, miss = genuine_rates(data.known_best, data.known_correct, point.threshold)
    assert (point.hit, point.wrong, point.miss) == (hit, wrong, miss)
    assert hit + wrong + miss == pytest.approx(1.0)


def test_open_set_rates_by_hand():
    best = np.array([0.9, 0.8, 0.7, 0.95])
    correct = np.array([True, False, True, True])
    assert genuine_rates(best, correct, 0.75) == (0.5, 0.25, 0.25)


def test_eer_threshold_keeps_a_margin_on_a_small_bank():
    """Genuine and impostor scores that do not overlap: the old EER put the threshold exactly on
    the lowest genuine score. Now it sits strictly between the two sides."""
    rng = np.random.default_rng(4)
    unknown = impostor_rows(rng, 12, 4, "gauss")
    target = np.array([0.93, 0.95, 0.96, 0.97, 0.99])
    data = OpenSetTrials(target, target, np.ones(5, bool), unknown, 5, "cosine")
    point = verification_point(data, None)
    assert point.method == "eer" and point.target is None
    assert point.threshold not in set(target)
    assert max(r.max() for r in unknown) < point.threshold < target.min()
    assert point.miss == 0.0


def test_operating_points_round_trip_and_say_when_the_bank_outgrew_them():
    data = trials(np.random.default_rng(5))
    point = identification_point(data, 0.01)
    back = OperatingPoint.from_dict(point.to_dict())
    assert back.threshold == point.threshold and back.gallery == 60
    assert back.rate_at(60) == pytest.approx(point.rate, rel=1e-3)  # the stored model is a sample of the fitted one
    assert not back.outgrown(60) and not back.outgrown(70)
    assert back.outgrown(600)  # ten times the speakers: well past 1.5x the promised rate
    status = back.status(600)
    assert status["gallery_at_calibration"] == 60 and status["outgrown"] and status["expected_rate"] > 0.015
    assert back.rate_at(0) == 0.0 and back.status(0)["expected_rate"] == 0.0  # an empty bank matches no one
    manual = OperatingPoint(VERIFY, 0.8, "cosine", "manual", None, None)
    assert OperatingPoint.from_dict(manual.to_dict()) == manual and not manual.outgrown(10**6)


def test_a_bank_that_outgrew_its_calibration_says_so(bank, voices, db_path):
    """Calibrated when it held two speakers (for 1% unknown-person false alarms), it now holds
    four: identify --json, the identify warning and check all say so."""
    import json

    from click.testing import CliRunner

    from voicebank.cli import main

    for name in ("alice", "bob", "carol", "dave"):
        bank.enroll(name, voices[name][:2])
    rng = np.random.default_rng(0)
    rows = [m + 0.0002 * rng.standard_normal(2) for m in rng.normal(0.9990, 0.0003, 400)]
    point = identification_point(as_trials(rows, 2), 0.01, gallery=2)
    bank.thresholds.set_operating_point(point)
    assert bank.thresholds.identify == point.threshold
    status = bank.thresholds.status()["identify"]
    assert status["outgrown"] and status["gallery_at_calibration"] == 2 and status["gallery"] == 4
    assert status["expected_rate"] > 0.015

    run = lambda *args: CliRunner().invoke(main, ["--db", str(db_path), *args])  # noqa: E731
    found = run("identify", str(voices["alice"][2]), "--json")
    data = json.loads(found.stdout)
    assert data["calibration"]["outgrown"] is True and data["calibration"]["target"] == 0.01
    assert found.stderr.startswith("warning: the identification threshold was calibrated with 2 speakers for 1.00% ")
    checked = run("check")
    assert "WARNING: the bank has outgrown its calibration" in checked.stdout and checked.exit_code == 0


def test_the_margin_rule_by_hand():
    from voicebank.calibration import BEST, MARGIN, decide

    assert decide(0.9, 0.6, MARGIN) == pytest.approx(1.2) and decide(0.9, 0.6, BEST) == 0.9
    assert decide(0.9, None, MARGIN) == 0.9  # alone in the gallery: the best score
    rows = [np.array([0.5, 0.9, 0.6]), np.array([0.7, 0.7])]
    trials = OpenSetTrials(np.zeros(0), np.array([0.95]), np.array([True]), rows, 3, "cosine", np.array([0.8]), MARGIN)
    np.testing.assert_allclose(trials.unknown_best, [1.2, 0.7])
    np.testing.assert_allclose(trials.known_decision, [1.1])


@pytest.mark.parametrize("tail", ["light", "gauss"])
def test_margin_rule_promises_hold_on_new_people_and_a_grown_bank(tail):
    """As for the best-score rule: the counted rate of 2 x best - second best, smoothed, and its
    growth simulated from the impostor model (order statistics of the top two)."""
    from voicebank.calibration import MARGIN, decide

    ratios: dict[int, list[float]] = {60: [], 600: []}
    for seed in range(5):
        rng = np.random.default_rng(seed)
        rows = impostor_rows(rng, 600, 60, tail)
        trials = OpenSetTrials(np.zeros(0), np.zeros(0), np.zeros(0, bool), rows, 60, "cosine", None, MARGIN)
        model = RateModel.fit(trials)
        fresh = impostor_rows(rng, 4000, 600, tail)
        for gallery in ratios:
            t = model.threshold(0.01, gallery)
            stats = [decide(*np.sort(r[:gallery])[::-1][:2], MARGIN) for r in fresh]  # np.sort: 8x sorted()'s speed
            ratios[gallery].append(float(np.mean(np.array(stats) >= t)) / 0.01)
        assert model.threshold(0.01, 60) < model.threshold(0.01, 600)
    assert 0.5 <= np.median(ratios[60]) <= 2.0 and all(1 / 3 <= r <= 3 for r in ratios[60]), ratios
    assert 1 / 3 <= np.median(ratios[600]) <= 3.0, ratios


def test_a_new_bank_identifies_by_the_margin_rule_and_calibrate_keeps_it(tmp_path, model, voices):
    from voicebank import VoiceBank

    with VoiceBank.open(tmp_path / "m.db", str(model), create=True, threshold=0.9996) as bank:
        assert bank.thresholds.identify_rule == "margin"
        bank.thresholds.set(1.0002, "identify")  # the margin statistic goes past 1
        for name in ("alice", "bob", "carol"):
            bank.enroll(name, voices[name][:2])
        result = bank.identify(voices["alice"][2])
        s1, s2 = result.candidates[0].score, result.candidates[1].score
        assert result.rule == "margin" and result.decision == pytest.approx(2 * s1 - s2)
        assert result.match is not None and result.match.name == "alice"  # 2 x 1.0 - 0.999 clears 1.0002
        assert bank.identify(voices["stranger"][2]).match is None
        assert result.to_dict()["decision"] == {"rule": "margin", "kind": "margin", "score": round(result.decision, 6)}
        # the audit row names the score the threshold applied to: the margin statistic, not a cosine
        row = bank.audit.entries(limit=2)[1]  # alice's (the stranger's came after)
        assert (row.score_kind, row.score, row.channel) == ("margin", pytest.approx(result.decision), "wideband")
        from voicebank.evaluation import open_set_trials

        services = bank._services  # what the facade hands its use cases
        assert open_set_trials(services).rule == "margin" and open_set_trials(services, rule="best").rule == "best"


def test_one_voice_enrolled_twice_is_named_and_left_out_of_the_unknown_trials(tmp_path, model, voices):
    """alice enrolled again as 'alice2' from other takes of her voice: calibration names the pair
    and does not count her against her own second voiceprint as a stranger (which would push the
    identification threshold up for everyone)."""
    from conftest import SR, synth_voice, take
    from voicebank import VoiceBank

    with VoiceBank.open(tmp_path / "t.db", model, create=True) as bank:
        for name in ("alice", "bob", "carol", "dave"):
            bank.enroll(name, voices[name])
        alice = synth_voice(120.0, seconds=2.5, seed=0)  # the voices fixture's alice, other takes
        bank.enroll("alice2", [(take(alice, 90 + i), SR) for i in range(3)])
        result = bank.thresholds.calibrate(far=0.05, unknown_rate=0.05)
        assert result.twins == [("alice", "alice2")] and result.to_dict()["twins"] == [["alice", "alice2"]]
        ids = {s.name: s.id for s in bank.speakers()}
        assert result.trials.twins == ((ids["alice"], ids["alice2"]),)
        # alice's and alice2's recordings are scored against the 3 strangers (bob, carol, dave), the
        # others' against the 4 people they are not
        assert [len(r) for r in result.trials.unknown[:15]] == [3] * 3 + [4] * 9 + [3] * 3
        assert result.channels["telephone"].trials.twins == result.trials.twins  # one voice in every channel
