"""voicebank.scoring and voicebank.vectors against small cases worked out by hand.

Conventions (scoring.py): a trial is accepted when score >= threshold, so at threshold t
FRR(t) = #(target < t) / #target and FAR(t) = #(nontarget >= t) / #nontarget."""

from __future__ import annotations

import numpy as np
import pytest

from voicebank.scoring import ErrorRates, accept, cosine, eer, error_rates, min_dcf, threshold_at_far
from voicebank.vectors import l2_normalize, voiceprint

# -- error_rates -------------------------------------------------------------------------------


def test_error_rates_by_hand():
    # scores, ascending: 0.1 n | 0.2 t | 0.5 n | 0.6 t | 0.9 t
    # thresholds: every distinct score, then one just above the top (nobody accepted)
    #   t     FRR (targets below t)   FAR (nontargets at or above t)
    #   0.1   0/3                     2/2
    #   0.2   0/3                     1/2
    #   0.5   1/3                     1/2
    #   0.6   1/3                     0/2
    #   0.9   2/3                     0/2
    #   0.9+  3/3                     0/2
    thresholds, far, frr = error_rates([0.2, 0.6, 0.9], [0.5, 0.1])
    np.testing.assert_allclose(thresholds[:5], [0.1, 0.2, 0.5, 0.6, 0.9])
    assert thresholds.size == 6 and 0.9 < thresholds[5] < 0.9 + 1e-12
    np.testing.assert_allclose(frr, [0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(far, [1, 0.5, 0.5, 0, 0, 0])


def test_error_rates_count_ties_as_accepted():
    # target 0.5 and nontarget 0.5 tie: at t = 0.5 both are accepted -> FRR 0, FAR 1
    thresholds, far, frr = error_rates([0.5], [0.5])
    assert thresholds[0] == 0.5
    assert (far[0], frr[0]) == (1.0, 0.0)
    assert (far[-1], frr[-1]) == (0.0, 1.0)


def test_error_rates_need_both_kinds_of_trial():
    with pytest.raises(ValueError):
        error_rates([], [0.1])
    with pytest.raises(ValueError):
        error_rates([0.9], [])


# -- EER ---------------------------------------------------------------------------------------


def test_eer_of_separated_scores_is_zero():
    # thresholds 0.1 0.2 0.8 0.9 0.9+ ; FRR 0 0 0 .5 1 ; FAR 1 .5 0 0 0
    # FRR first reaches FAR at t = 0.8 where both are 0 -> EER 0 at 0.8
    rate, threshold = eer([0.8, 0.9], [0.1, 0.2])
    assert rate == 0.0
    assert threshold == pytest.approx(0.8)


def test_eer_of_identical_scores_is_one_half():
    # every score 0.5: at t = 0.5 FAR 1, FRR 0; just above, FAR 0, FRR 1.
    # The lines cross half way: EER = 0.5
    rate, threshold = eer([0.5, 0.5, 0.5], [0.5, 0.5])
    assert rate == pytest.approx(0.5)
    assert 0.5 <= threshold <= 0.5 + 1e-12


def test_eer_half_way_between_two_thresholds():
    # target 0.2, 0.8 ; nontarget 0.5
    # t     FRR   FAR   FAR-FRR
    # 0.5   0.5   1     +0.5
    # 0.8   0.5   0     -0.5     -> crossing half way: w = 0.5 / (0.5 + 0.5) = 0.5
    # EER = FAR(0.5) + w (FAR(0.8) - FAR(0.5)) = 1 - 0.5 = 0.5 ; threshold = 0.5 + 0.5 * 0.3 = 0.65
    rate, threshold = eer([0.2, 0.8], [0.5])
    assert rate == pytest.approx(0.5)
    assert threshold == pytest.approx(0.65)


def test_eer_a_third_of_the_way_between_two_thresholds():
    # the table of test_error_rates_by_hand: FAR-FRR is 1/2 - 1/3 = +1/6 at 0.5 and 0 - 1/3 = -1/3 at 0.6
    # w = (1/6) / (1/6 + 1/3) = 1/3 ; EER = 1/2 + 1/3 (0 - 1/2) = 1/3 ; threshold = 0.5 + 0.1 / 3
    rate, threshold = eer([0.2, 0.6, 0.9], [0.5, 0.1])
    assert rate == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.5 + 0.1 / 3)


def test_eer_does_not_depend_on_trial_order():
    rng = np.random.default_rng(0)
    target, nontarget = rng.normal(0.7, 0.1, 200), rng.normal(0.3, 0.1, 300)
    assert eer(target, nontarget) == eer(target[::-1], rng.permutation(nontarget))


# -- minDCF ------------------------------------------------------------------------------------

# target 0.5 0.6 0.7 0.8 0.9 ; 99 nontargets spread over [0, 0.4] and one impostor at 0.75 (100 in all)
DCF_TARGET = np.array([0.5, 0.6, 0.7, 0.8, 0.9])
DCF_NONTARGET = np.append(np.linspace(0.0, 0.4, 99), 0.75)


def test_min_dcf_with_p_target_0_01():
    # cost(t) = 0.01 FRR + 0.99 FAR, normalized by min(0.01, 0.99) = 0.01
    #   t = 0.4:  FRR 0,   FAR 2/100 -> 0.0198 / 0.01 = 1.98
    #   t = 0.5:  FRR 0,   FAR 1/100 -> 0.0099 / 0.01 = 0.99
    #   t = 0.8:  FRR 3/5, FAR 0     -> 0.006  / 0.01 = 0.6   <- the minimum
    #   t = 0.9:  FRR 4/5, FAR 0     -> 0.8 ; above everything: FRR 1 -> 1.0
    cost, threshold = min_dcf(DCF_TARGET, DCF_NONTARGET, p_target=0.01)
    assert cost == pytest.approx(0.6)
    assert threshold == pytest.approx(0.8)


def test_min_dcf_with_p_target_0_05():
    # cost(t) = 0.05 FRR + 0.95 FAR, normalized by 0.05
    #   t = 0.4:  FAR 2/100 -> 0.019  / 0.05 = 0.38
    #   t = 0.5:  FAR 1/100 -> 0.0095 / 0.05 = 0.19   <- the minimum
    #   t = 0.8:  FRR 3/5   -> 0.03   / 0.05 = 0.6
    cost, threshold = min_dcf(DCF_TARGET, DCF_NONTARGET, p_target=0.05)
    assert cost == pytest.approx(0.19)
    assert threshold == pytest.approx(0.5)


def test_min_dcf_with_costs():
    # c_miss 1, c_fa 10, p_target 0.5: cost = 0.5 FRR + 5 FAR, normalized by min(0.5, 5) = 0.5
    #   t = 0.5: FAR 1/100 -> 0.05 / 0.5 = 0.1  <- the minimum ; t = 0.8: 0.3 / 0.5 = 0.6
    cost, threshold = min_dcf(DCF_TARGET, DCF_NONTARGET, p_target=0.5, c_miss=1.0, c_fa=10.0)
    assert cost == pytest.approx(0.1)
    assert threshold == pytest.approx(0.5)


def test_min_dcf_of_separated_scores_is_zero():
    assert min_dcf([0.8, 0.9], [0.1, 0.2], p_target=0.01)[0] == 0.0


def test_min_dcf_never_exceeds_one():
    # accepting nobody (the threshold above every score) costs c_miss * p_target * 1, which for
    # p_target < 0.5 IS the normalizer: so the normalized minimum is at most 1 whatever the scores
    rng = np.random.default_rng(1)
    for _ in range(20):
        target, nontarget = rng.uniform(size=30), rng.uniform(size=40)
        assert 0.0 <= min_dcf(target, nontarget, p_target=0.01)[0] <= 1.0


# -- threshold at a false-accept rate ----------------------------------------------------------


def test_threshold_at_far_by_hand():
    # DCF data: FAR(0.4) = 2/100, FAR(0.5) = 1/100, FAR(0.8) = 0
    at = threshold_at_far(DCF_TARGET, DCF_NONTARGET, far=0.01)
    assert isinstance(at, ErrorRates)
    assert at.threshold == pytest.approx(0.5) and at.far == pytest.approx(0.01) and at.frr == 0.0
    at = threshold_at_far(DCF_TARGET, DCF_NONTARGET, far=0.0)
    assert at.threshold == pytest.approx(0.8) and at.far == 0.0 and at.frr == pytest.approx(0.6)
    at = threshold_at_far(DCF_TARGET, DCF_NONTARGET, far=0.015)  # between two achievable rates
    assert at.threshold == pytest.approx(0.5) and at.far <= 0.015


def test_threshold_at_far_is_the_lowest_with_exactly_that_far():
    # nontargets 0.1, 0.2, ..., 1.0 ; targets 0.65, 0.85, 0.95, 1.0
    #   t = 0.7: FAR = #{0.7 .. 1.0} / 10 = 4/10
    #   t = 0.8: FAR = #{0.8, 0.9, 1.0} / 10 = 3/10 exactly   FRR = #{0.65} / 4 = 1/4
    # so 0.8 is the lowest threshold with FAR <= 0.3 and must be the one returned
    nontarget = np.arange(1, 11) / 10
    target = np.array([0.65, 0.85, 0.95, 1.0])
    at = threshold_at_far(target, nontarget, far=0.3)
    assert at.threshold == pytest.approx(0.8)
    assert at.far == pytest.approx(0.3)
    assert at.frr == pytest.approx(0.25)


def test_threshold_at_far_keeps_its_promise():
    rng = np.random.default_rng(2)
    target, nontarget = rng.normal(0.7, 0.1, 500), rng.normal(0.3, 0.15, 700)
    thresholds, fars, _ = error_rates(target, nontarget)
    for wanted in (0.0, 0.001, 0.01, 0.05, 0.2, 1.0):
        at = threshold_at_far(target, nontarget, far=wanted)
        measured = np.mean(nontarget >= at.threshold)
        assert measured <= wanted + 1e-12
        assert at.far == pytest.approx(measured)
        assert at.frr == pytest.approx(np.mean(target < at.threshold))
        # and it is the lowest such threshold: one step lower breaks the promise
        i = int(np.searchsorted(thresholds, at.threshold))
        if i > 0:
            assert np.mean(nontarget >= thresholds[i - 1]) > wanted


# -- cosine and decisions ----------------------------------------------------------------------


def test_cosine_values_and_range():
    a = np.array([1.0, 0.0, 0.0])
    assert cosine(a, a) == pytest.approx(1.0)
    assert cosine(a, -a) == pytest.approx(-1.0)
    assert cosine(a, [0.0, 2.0, 0.0]) == pytest.approx(0.0)
    assert cosine([3.0, 4.0], [4.0, 3.0]) == pytest.approx(24 / 25)  # (12 + 12) / (5 * 5)
    assert cosine([2.0, 0.0], [5.0, 0.0]) == pytest.approx(1.0)  # scale does not matter
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((500, 8)), rng.standard_normal((500, 8))
    scores = cosine(x, y)
    assert scores.shape == (500,)
    assert np.all((scores >= -1) & (scores <= 1))
    np.testing.assert_allclose(cosine(x, x), 1.0)  # never above 1 through rounding
    np.testing.assert_allclose(cosine(x[0], y), [cosine(x[0], row) for row in y])  # broadcasts


def test_accept_at_equality():
    assert accept(0.86, 0.86) is True
    assert accept(np.float32(0.5), 0.5) is True
    assert accept(0.8599, 0.86) is False
    assert accept(-1.0, -1.0) is True


# -- vectors -----------------------------------------------------------------------------------


def test_l2_normalize():
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]])  # a zero row stays zero
    np.testing.assert_allclose(l2_normalize(np.array([1.0, 1.0])), [2**-0.5, 2**-0.5], rtol=1e-6)
    rng = np.random.default_rng(4)
    np.testing.assert_allclose(np.linalg.norm(l2_normalize(rng.standard_normal((10, 24)) * 50), axis=1), 1.0, rtol=1e-6)


def test_voiceprint_is_normalized_mean_of_normalized_embeddings():
    # [3, 0] -> [1, 0] ; [0, 0.5] -> [0, 1] ; mean [0.5, 0.5] -> [1/sqrt2, 1/sqrt2]
    # (the raw mean [1.5, 0.25] would point elsewhere: a loud utterance must not dominate)
    vp = voiceprint(np.array([[3.0, 0.0], [0.0, 0.5]]))
    assert vp.shape == (2,) and vp.dtype == np.float32
    np.testing.assert_allclose(vp, [2**-0.5, 2**-0.5], rtol=1e-6)
    single = voiceprint(np.array([[0.0, -7.0, 0.0]]))
    np.testing.assert_allclose(single, [0.0, -1.0, 0.0])


@pytest.mark.parametrize("bad", [np.zeros((0, 4)), np.zeros(4), np.zeros((2, 3, 4))])
def test_voiceprint_refuses_no_embeddings(bad):
    with pytest.raises(ValueError):
        voiceprint(bad)
