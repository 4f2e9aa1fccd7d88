"""Plots a person can read: the DET curve of verification and the open-set identification curve.

matplotlib is imported inside the functions, and each figure is a ``matplotlib.figure.Figure`` on
its own Agg canvas, never pyplot: importing this module costs nothing, and drawing leaves a host's
chosen backend and open figures alone.

A rate of 0 (or 1) has no place on a probit axis (it is at minus or plus infinity) nor on a log
axis, so the curves leave those points out rather than pin them to the edge; an operating point
with such a rate is drawn at 1/(n+1) (or n/(n+1)) for its n trials, and its legend entry says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import scoring
from .openset import open_set_curve

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Point = tuple[str, float, float]  # (label, x rate, y rate), rates in [0, 1]

# Probit tick candidates in order of preference: the first tier is always wanted, later tiers fill
# in only where they do not crowd the ones already placed. 50% is left out for 40%/60%, which read
# as "a little under/over half" on a probit axis that is symmetric around 50%.
TICK_TIERS = (
    (0.00001, 0.0001, 0.001, 0.01, 0.1, 0.4, 0.6, 0.9, 0.99, 0.999, 0.9999, 0.99999),
    (0.0005, 0.005, 0.05, 0.2, 0.8, 0.95, 0.995, 0.9995),
    (0.0002, 0.002, 0.02, 0.98, 0.998),
)
LIMIT_FLOOR = 1e-5  # a probit axis never runs below 0.001% or above 99.999%
MARKERS = ("o", "s", "^", "D", "v", "P")


def probit(p: np.ndarray | float) -> np.ndarray:
    """The normal deviate of a probability: the position of a rate on a DET axis."""
    from scipy.special import ndtri  # scipy comes with librosa

    return ndtri(np.asarray(p, dtype=np.float64))


def percent(p: float) -> str:
    """A rate as a percentage with three significant digits: 0.0123 -> '1.23%', 1e-05 -> '0.001%'."""
    return f"{100 * p:.3g}%"


def probit_ticks(lo: float, hi: float, min_gap: float) -> list[float]:
    """Tick rates whose probit lies in [lo, hi], at least ``min_gap`` probit apart, ascending."""
    chosen: list[float] = []
    for tier in TICK_TIERS:
        for p in tier:
            z = float(probit(p))
            if lo <= z <= hi and all(abs(z - float(probit(q))) >= min_gap for q in chosen):
                chosen.append(p)
    return sorted(chosen)


def _drawable(rate: float, n: int, name: str) -> tuple[float, str]:
    """(where to draw ``rate``, how to say it): 0 and 1 move to 1/(n+1) and n/(n+1)."""
    if rate <= 0:
        return 1 / (n + 1), f"{name} 0 of {n:,} (drawn at 1/{n + 1:,})"
    if rate >= 1:
        return n / (n + 1), f"{name} {n:,} of {n:,} (drawn at {n:,}/{n + 1:,})"
    return rate, f"{name} {percent(rate)}"


def _limits(z: np.ndarray, min_span: float = 2.0) -> tuple[float, float]:
    """Probit axis limits around the drawn values ``z``: padded, at least ``min_span`` wide (so a
    short curve is not blown up), and never beyond 0.001% / 99.999%."""
    floor = float(probit(LIMIT_FLOOR))
    lo, hi = (float(z.min()), float(z.max())) if z.size else (float(probit(0.001)), 0.0)
    lo, hi = max(lo, floor), min(hi, -floor)
    grow = max(min_span - (hi - lo), 0.0) / 2
    lo, hi = lo - grow, hi + grow
    pad = 0.04 * (hi - lo) + 0.1
    return lo - pad, hi + pad


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _mark(ax: Axes, points: list[tuple[float, float, str]]) -> None:
    for k, (x, y, label) in enumerate(points):
        ax.plot([x], [y], linestyle="none", marker=MARKERS[k % len(MARKERS)], markersize=8,
                color=f"C{k + 1}", markeredgecolor="white", markeredgewidth=1.0, label=label, zorder=3)


def _finish(fig: Figure, ax: Axes) -> None:
    ax.grid(True, color="0.85", linewidth=0.6)
    ax.set_axisbelow(True)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", fontsize=8.5, frameon=False)


def det_figure(target: np.ndarray, nontarget: np.ndarray, *, title: str | None = None,
               points: Sequence[Point] = ()) -> Figure:
    """The DET curve of ``target`` and ``nontarget`` scores (1-D, accepted when ``score >= t``):
    false reject rate against false accept rate, both on normal-deviate (probit) axes at the same
    scale, each axis limited to the data it shows (padded, at least two probit units wide, never
    beyond 0.001%..99.999%); the dashed diagonal is where FAR = FRR. ``points``: (label, far, frr)
    operating points, e.g. the EER point and the thresholds in use, each marked and listed in the
    legend with its rates (a point beyond 0.001% is left out)."""
    target, nontarget = np.asarray(target, dtype=np.float64), np.asarray(nontarget, dtype=np.float64)
    n_t, n_n = target.size, nontarget.size
    _, far, frr = scoring.error_rates(target, nontarget)
    inside = (far > 0) & (far < 1) & (frr > 0) & (frr < 1)
    x, y = probit(far[inside]), probit(frr[inside])
    marks = []
    for label, p_far, p_frr in points:
        dx, sx = _drawable(p_far, n_n, "FAR")
        dy, sy = _drawable(p_frr, n_t, "FRR")
        marks.append((float(probit(dx)), float(probit(dy)), f"{label}: {sx}, {sy}"))
    x_lo, x_hi = _limits(np.concatenate([x, [m[0] for m in marks]]))
    y_lo, y_hi = _limits(np.concatenate([y, [m[1] for m in marks]]))
    keep = (x > x_lo) & (x < x_hi) & (y > y_lo) & (y < y_hi)

    fig = _new_figure(6.0, 7.2)
    ax = fig.add_subplot()
    ax.axline((0.0, 0.0), slope=1.0, color="0.6", linestyle="--", linewidth=0.8,
              label="FAR = FRR (the EER lies on this line)")
    ax.plot(x[keep], y[keep], color="C0", linewidth=1.6,
            label=f"DET curve, {n_t:,} target and {n_n:,} non-target trials\n"
                  "(it stops where a rate reaches 0, which a probit axis cannot show)")
    _mark(ax, [m for m in marks if x_lo < m[0] < x_hi and y_lo < m[1] < y_hi])
    # One probit unit is as long on both axes (equal aspect), so the slope means the same
    # everywhere; labels side by side on x need about twice the room of labels stacked on y.
    unit = max(x_hi - x_lo, y_hi - y_lo)
    for (lo, hi), gap, set_ticks in (((x_lo, x_hi), unit / 9, ax.set_xticks),
                                     ((y_lo, y_hi), unit / 16, ax.set_yticks)):
        ticks = probit_ticks(lo, hi, gap)
        set_ticks(probit(ticks), [percent(t) for t in ticks])
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    ax.set_aspect("equal")
    ax.set_xlabel("False accept rate (impostors accepted)")
    ax.set_ylabel("False reject rate (genuine speakers rejected)")
    ax.set_title(title or "Verification: detection error trade-off (DET)")
    _finish(fig, ax)
    return fig


def det_plot(target: np.ndarray, nontarget: np.ndarray, path: str | Path, *, title: str | None = None,
             points: Sequence[Point] = ()) -> Figure:
    """Draw :func:`det_figure` and save it to ``path`` (the format from its suffix, e.g. .png, .svg,
    .pdf). Returns the figure."""
    fig = det_figure(target, nontarget, title=title, points=points)
    fig.savefig(path)
    return fig


def identification_figure(known_best: np.ndarray, known_correct: np.ndarray, unknown_best: np.ndarray, *,
                          title: str | None = None, points: Sequence[Point] = ()) -> Figure:
    """Open-set identification (see :mod:`voicebank.openset`): the correct identification rate of
    known probes (y, linear) against the false alarm rate of unknown probes (x, log), one point
    per threshold, and the closed-set rank-1 accuracy as the ceiling. ``points``: (label,
    false_alarm, correct_rate) operating points, e.g. from :func:`voicebank.openset.open_set_rates`."""
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    _, false_alarm, correct = open_set_curve(known_best, known_correct, unknown_best)
    n_known, n_unknown = np.size(known_best), np.size(unknown_best)
    rank1 = float(np.count_nonzero(known_correct)) / n_known
    inside = false_alarm > 0  # a log axis has no 0
    x, y = false_alarm[inside], correct[inside]
    marks = []
    for label, p_fa, p_correct in points:
        dx, sx = _drawable(p_fa, n_unknown, "false alarms")
        marks.append((dx, p_correct, f"{label}: {sx}, correct {percent(p_correct)}"))
    xs = np.concatenate([x, [m[0] for m in marks]])
    ys = np.concatenate([y, [m[1] for m in marks], [rank1]])
    x_lo = float(xs.min()) / 1.6 if xs.size else 1 / (n_unknown + 1)
    y_lo = max(0.0, np.floor((float(ys.min()) - 0.03) * 10) / 10)

    fig = _new_figure(6.4, 6.2)
    ax = fig.add_subplot()
    ax.axhline(rank1, color="0.6", linestyle="--", linewidth=0.8,
               label=f"closed-set rank-1 accuracy {percent(rank1)} (the ceiling)")
    ax.plot(x, y, color="C0", linewidth=1.6,
            label=f"{n_known:,} known and {n_unknown:,} unknown probes\n"
                  "(it stops where false alarms reach 0, which a log axis cannot show)")
    _mark(ax, marks)
    ax.set_xscale("log")
    ax.set_xlim(x_lo, 1.25)  # room beyond 100%, so everyone-named is not drawn on the frame
    pad = 0.02 * (1.0 - y_lo)  # so that a rate of 0% or 100% is not drawn on the frame
    ax.set_ylim(y_lo - pad, 1.0 + pad)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: percent(v)))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("False alarm rate (unknown voices named as someone enrolled)")
    ax.set_ylabel("Correct identification rate (known voices named correctly)")
    ax.set_title(title or "Open-set identification")
    _finish(fig, ax)
    return fig


def identification_plot(known_best: np.ndarray, known_correct: np.ndarray, unknown_best: np.ndarray,
                        path: str | Path, *, title: str | None = None, points: Sequence[Point] = ()) -> Figure:
    """Draw :func:`identification_figure` and save it to ``path``. Returns the figure."""
    fig = identification_figure(known_best, known_correct, unknown_best, title=title, points=points)
    fig.savefig(path)
    return fig
