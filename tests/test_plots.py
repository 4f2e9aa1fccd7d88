"""voicebank.plots and voicebank.openset: the rates they draw, and figures a person can read.

voicebank.scoring's EER and minDCF are checked against scikit-learn's det_curve, an independent
implementation of the same convention (accept when score >= threshold)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from voicebank.openset import open_set_curve, open_set_rates
from voicebank.scoring import eer, error_rates, min_dcf

pytest.importorskip("matplotlib")
det_curve = pytest.importorskip("sklearn.metrics").det_curve

from voicebank import plots  # noqa: E402


def gaussian_scores(seed: int, n_target: int = 300, n_nontarget: int = 3000, decimals: int | None = None):
    rng = np.random.default_rng(seed)
    target, nontarget = rng.normal(0.6, 0.12, n_target), rng.normal(0.3, 0.12, n_nontarget)
    if decimals is not None:  # rounding makes ties, within and across the two classes
        target, nontarget = target.round(decimals), nontarget.round(decimals)
    return target, nontarget


def sklearn_rates(target, nontarget):
    """(fpr, fnr, thresholds) from scikit-learn, thresholds ascending."""
    labels = np.r_[np.ones(len(target)), np.zeros(len(nontarget))]
    return det_curve(labels, np.r_[target, nontarget])


# -- scoring against scikit-learn ---------------------------------------------------------------


@pytest.mark.parametrize("seed, decimals", [(0, None), (1, None), (2, 2)])
def test_eer_matches_sklearn_det_curve(seed, decimals):
    target, nontarget = gaussian_scores(seed, decimals=decimals)
    fpr, fnr, thresholds = sklearn_rates(target, nontarget)
    i = int(np.argmax(fnr >= fpr))  # sklearn's first threshold where misses have caught up
    assert 0 < i < len(fpr)
    rate, threshold = eer(target, nontarget)
    # within the step where sklearn's rates cross...
    assert max(fnr[i - 1], fpr[i]) <= rate <= min(fpr[i - 1], fnr[i])
    assert thresholds[i - 1] <= threshold <= thresholds[i]
    # ...and exactly the linear interpolation of sklearn's two neighbouring points
    d0, d1 = fpr[i - 1] - fnr[i - 1], fpr[i] - fnr[i]
    assert rate == pytest.approx(fpr[i - 1] + d0 / (d0 - d1) * (fpr[i] - fpr[i - 1]), abs=1e-12)
    assert 0.05 < rate < 0.15  # the classes are 2.5 standard deviations apart: EER near 10%


@pytest.mark.parametrize("seed, decimals", [(0, None), (3, None), (4, 2)])
@pytest.mark.parametrize("p_target", [0.01, 0.05, 0.5])
def test_min_dcf_matches_sklearn_det_curve(seed, decimals, p_target):
    target, nontarget = gaussian_scores(seed, decimals=decimals)
    fpr, fnr, thresholds = sklearn_rates(target, nontarget)
    cost = p_target * fnr + (1 - p_target) * fpr
    # sklearn trims the runs at FAR 0 and FRR 0 to their best point; rejecting or accepting
    # everyone are still decisions, costing p_target and 1 - p_target
    best = min(cost.min(), p_target, 1 - p_target)
    value, threshold = min_dcf(target, nontarget, p_target=p_target)
    assert value == pytest.approx(best / min(p_target, 1 - p_target), abs=1e-9)
    at = p_target * np.mean(target < threshold) + (1 - p_target) * np.mean(nontarget >= threshold)
    assert at == pytest.approx(best, abs=1e-12)


def test_error_rates_contain_sklearn_curve():
    target, nontarget = gaussian_scores(5, decimals=2)
    fpr, fnr, thresholds = sklearn_rates(target, nontarget)
    ours, far, frr = error_rates(target, nontarget)
    at = np.searchsorted(ours, thresholds[np.isfinite(thresholds)])
    np.testing.assert_array_equal(ours[at], thresholds[np.isfinite(thresholds)])
    np.testing.assert_allclose(far[at], fpr[np.isfinite(thresholds)], atol=1e-15)
    np.testing.assert_allclose(frr[at], fnr[np.isfinite(thresholds)], atol=1e-15)


# -- open-set rates ---------------------------------------------------------------------------


def test_open_set_curve_by_hand():
    # known probes: best 0.9 right, 0.8 WRONG speaker, 0.7 right, 0.6 right; unknown: 0.75, 0.5
    # thresholds: the unknown scores and the right matches (0.8 changes neither rate), then 0.9+
    #   t      false alarm (unknown >= t)   correct (right and >= t, of 4 known)
    #   0.5    2/2                          3/4
    #   0.6    1/2                          3/4
    #   0.7    1/2                          2/4
    #   0.75   1/2                          1/4
    #   0.9    0/2                          1/4
    #   0.9+   0/2                          0/4
    known_best, known_correct = [0.9, 0.8, 0.7, 0.6], [True, False, True, True]
    thresholds, false_alarm, correct = open_set_curve(known_best, known_correct, [0.75, 0.5])
    np.testing.assert_allclose(thresholds[:5], [0.5, 0.6, 0.7, 0.75, 0.9])
    assert thresholds.size == 6 and 0.9 < thresholds[5] < 0.9 + 1e-12
    assert false_alarm.tolist() == [1.0, 0.5, 0.5, 0.5, 0.0, 0.0]
    assert correct.tolist() == [0.75, 0.75, 0.5, 0.25, 0.25, 0.0]
    assert open_set_rates(known_best, known_correct, [0.75, 0.5], 0.7) == (0.5, 0.5)
    assert open_set_rates(known_best, known_correct, [0.75, 0.5], 0.8) == (0.0, 0.25)


def test_open_set_curve_counts_ties_as_named():
    # a known and an unknown probe both at 0.5: at t = 0.5 both are named
    thresholds, false_alarm, correct = open_set_curve([0.5], [True], [0.5])
    assert thresholds[0] == 0.5 and (false_alarm[0], correct[0]) == (1.0, 1.0)
    assert (false_alarm[-1], correct[-1]) == (0.0, 0.0)


def test_open_set_curve_rejects_bad_input():
    with pytest.raises(ValueError, match="one bool per known probe"):
        open_set_curve([0.9, 0.8], [True], [0.5])
    with pytest.raises(ValueError, match="at least one known probe and one unknown probe"):
        open_set_curve([0.9], [True], [])


# -- DET plot ---------------------------------------------------------------------------------


def tick_rates(labels) -> list[float]:
    return [float(label.get_text().rstrip("%")) / 100 for label in labels]


def drawn_lines(ax):
    """The curve and the markers: every line but the guides drawn across the whole axes (the
    FAR = FRR diagonal, the rank-1 ceiling)."""
    from matplotlib.lines import AxLine

    guides = lambda line: isinstance(line, AxLine) or line.get_label().startswith("closed-set")  # noqa: E731
    return [line for line in ax.lines if not guides(line)]


def assert_inside_limits(ax):
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    for line in drawn_lines(ax):
        x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
        assert x.size and np.isfinite(x).all() and np.isfinite(y).all(), line.get_label()
        assert (x > x0).all() and (x < x1).all() and (y > y0).all() and (y < y1).all(), line.get_label()


def assert_labels_apart(fig, ax):
    """No two tick labels of an axis overlap once drawn."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for labels, lo, hi in ((ax.get_xticklabels(), "x0", "x1"), (ax.get_yticklabels(), "y0", "y1")):
        boxes = sorted((label.get_window_extent(renderer) for label in labels if label.get_text()),
                       key=lambda b: getattr(b, lo))
        assert len(boxes) >= 3
        for a, b in zip(boxes, boxes[1:]):
            assert getattr(a, hi) + 2 <= getattr(b, lo), [label.get_text() for label in labels]


def test_det_plot_writes_png_with_ticks_over_the_whole_range(tmp_path):
    # few, overlapping trials: the curve runs from FRR ~95% to FAR ~95%
    target, nontarget = gaussian_scores(6, n_target=40, n_nontarget=300)
    target -= 0.2
    path = tmp_path / "det.png"
    fig = plots.det_plot(target, nontarget, path, title="overlapping")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    for labels, ticks in ((ax.get_xticklabels(), ax.get_xticks()), (ax.get_yticklabels(), ax.get_yticks())):
        rates = tick_rates(labels)
        np.testing.assert_allclose(ticks, plots.probit(rates))  # the labels say where the ticks are
        assert max(rates) > 0.5 and min(rates) < 0.05, rates
    assert ax.get_title() == "overlapping"
    assert_labels_apart(fig, ax)


def test_det_figure_draws_no_zero_rate_at_the_axis_limits():
    target, nontarget = gaussian_scores(7, n_target=200, n_nontarget=5000)
    top = nontarget.max() + 0.01  # no impostor accepted: FAR exactly 0
    frr_top = float(np.mean(target < top))
    rate, _ = eer(target, nontarget)
    fig = plots.det_figure(target, nontarget, points=[("EER", rate, rate), ("strict", 0.0, frr_top)])
    ax = fig.axes[0]
    assert_inside_limits(ax)
    curve, eer_mark, strict = drawn_lines(ax)
    _, far, frr = error_rates(target, nontarget)
    # the curve leaves out exactly the thresholds with a rate of 0 or 1, keeps the rest
    assert curve.get_xdata().size == np.count_nonzero((far > 0) & (far < 1) & (frr > 0) & (frr < 1))
    # a FAR of 0 is drawn at 1/(n+1), and the legend says so
    assert strict.get_xdata()[0] == pytest.approx(plots.probit(1 / 5001))
    assert strict.get_label() == f"strict: FAR 0 of 5,000 (drawn at 1/5,001), FRR {plots.percent(frr_top)}"
    assert eer_mark.get_label() == f"EER: FAR {plots.percent(rate)}, FRR {plots.percent(rate)}"
    assert eer_mark.get_xdata()[0] == pytest.approx(plots.probit(rate))
    assert ax.get_xlabel() and ax.get_ylabel()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[2:] == [eer_mark.get_label(), strict.get_label()]
    assert_labels_apart(fig, ax)


def test_det_figure_limits_follow_the_data():
    target, nontarget = gaussian_scores(8, n_target=1000, n_nontarget=20000)
    ax = plots.det_figure(target + 0.1, nontarget).axes[0]
    _, far, frr = error_rates(target + 0.1, nontarget)
    inside = (far > 0) & (frr > 0)
    # a padded box around the curve, not the fixed 0.01%..99.99% range
    assert plots.probit(far[inside].min()) - 0.5 < ax.get_xlim()[0] < plots.probit(far[inside].min())
    assert plots.probit(frr[inside].max()) < ax.get_ylim()[1] < plots.probit(frr[inside].max()) + 0.5


# -- identification plot -----------------------------------------------------------------------


def test_identification_plot_writes_png(tmp_path):
    rng = np.random.default_rng(9)
    own, others = rng.normal(0.65, 0.1, 500), rng.normal(0.25, 0.1, (500, 49)).max(axis=1)
    known_best, known_correct = np.maximum(own, others), own >= others
    unknown_best = rng.normal(0.25, 0.1, (300, 50)).max(axis=1)
    points = [(f"t={t}", *open_set_rates(known_best, known_correct, unknown_best, t)) for t in (0.5, 0.9)]
    assert points[1][1] == 0.0  # nobody unknown reaches 0.9
    path = tmp_path / "id.png"
    fig = plots.identification_plot(known_best, known_correct, unknown_best, path, points=points)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() and ax.get_ylabel()
    assert_inside_limits(ax)
    curve, first, second = drawn_lines(ax)
    _, false_alarm, correct = open_set_curve(known_best, known_correct, unknown_best)
    np.testing.assert_array_equal(curve.get_xdata(), false_alarm[false_alarm > 0])
    np.testing.assert_array_equal(curve.get_ydata(), correct[false_alarm > 0])
    assert second.get_xdata()[0] == pytest.approx(1 / 301)
    assert second.get_label().startswith("t=0.9: false alarms 0 of 300 (drawn at 1/301), correct ")
    assert_labels_apart(fig, ax)


# -- no global matplotlib state ------------------------------------------------------------------


def test_plots_import_nothing_heavy_and_leave_the_backend_alone(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "import voicebank.plots as p\n"
        "assert 'matplotlib' not in sys.modules and 'scipy' not in sys.modules\n"
        "import matplotlib\n"
        "matplotlib.use('svg')\n"
        f"p.det_plot(np.array([0.6, 0.7, 0.4]), np.array([0.2, 0.5, 0.3]), {str(tmp_path / 'd.png')!r})\n"
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"
