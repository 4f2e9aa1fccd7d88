"""Commands that measure and tune recognition: eval, calibrate, cohort, normalization."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

import click

from .base import JSON_OPTION, Context, emit, finite, handle_errors, lengths_text, main, progress_bar, safe


def plot_target(plot: str) -> None:
    """Refuse a --plot file that cannot be written, before the work rather than after it: a
    folder that exists but takes no files (/proc, read-only, another user's) too."""
    from ..errors import InvalidInputError
    from ..evaluation import writable

    path = writable(plot)
    existed = path.exists()
    try:
        with open(path, "ab"):  # appends nothing: an existing plot is left as it is until redrawn
            pass
        if not existed:
            path.unlink()
    except OSError as exc:
        raise InvalidInputError(f"--plot {path}: cannot write there ({exc.strerror or exc}); choose a folder "
                                "this user may write to.") from None


@contextmanager
def plot_written(plot: str) -> Iterator[None]:
    """Drawing the plot failing after all (the disk filled during the work) as an error of its own."""
    from ..errors import VoiceBankError

    try:
        yield
    except OSError as exc:
        raise VoiceBankError(f"--plot {plot}: could not write the plot ({exc.strerror or exc}); nothing was "
                             "stored. Free space or choose another place, and run again.") from None


TRIAL_OPTIONS = [
    click.option("--root", type=click.Path(file_okay=False), help="Folder that relative paths in the trial list start from "
                 "(default: the trial list's folder)."),
    click.option("--far", type=click.FloatRange(0.0001, 0.5), default=0.01, show_default=True, callback=finite,
                 help="Target false-accept rate for the operating point."),
]


def trial_options(command):
    for option in reversed(TRIAL_OPTIONS):
        command = option(command)
    return command


def _rates_text(report) -> str:
    lines = [
        f"score: {report.kind}   trials: {report.n_target} target, {report.n_nontarget} non-target",
        f"EER: {report.eer:.2%} at threshold {report.eer_threshold:.4f}",
    ]
    lines += [f"minDCF ({p}): {v['value']:.4f} at threshold {v['threshold']:.4f}" for p, v in report.min_dcf.items()]
    at = report.at_far
    lines.append(f"FAR <= {report.far_target:g}: threshold {at.threshold:.4f} (FAR {at.far:.2%}, FRR {at.frr:.2%})")
    if report.current is not None:
        c = report.current
        lines.append(f"stored threshold {c.threshold:.4f}: FAR {c.far:.2%}, FRR {c.frr:.2%}")
    if report.n_nontarget < 100 or report.n_target < 30:
        lines.append("note: few trials; these rates are rough. Measure on more recordings before relying on them.")
    return "\n".join(lines)


def _report_left_out(scores) -> None:
    """On stderr: the recordings of a trial list that could not be used, and what that cost."""
    for why in scores.left_out.values():
        click.echo(f"left out: {safe(why)}", err=True)
    if scores.left_out:
        trials = len(scores.target) + len(scores.nontarget) + scores.dropped
        click.echo(f"{len(scores.left_out)} of {scores.files} recordings could not be used: {scores.dropped} of {trials} "
                   f"trials were left out; the rates below are on the other {trials - scores.dropped}.", err=True)


@main.command(name="eval")
@click.argument("trials", type=click.Path(dir_okay=False))
@trial_options
@click.option("--plot", type=click.Path(dir_okay=False), help="Draw the DET curve, with the bank's thresholds "
              "marked, to this file (.png, .svg or .pdf).")
@JSON_OPTION
@click.pass_obj
@handle_errors
def eval_(obj: Context, trials: str, root: str | None, far: float, plot: str | None, as_json: bool) -> None:
    """Score a trial list and report EER, minDCF and operating thresholds.

    TRIALS has one trial a line: `1 a.wav b.wav` / `0 a.wav c.wav` (same speaker or not), or
    `1 alice probe.wav` to score against an enrolled speaker.

    \b
    Example:
      voicebank eval trials.txt --far 0.01 --plot det.png
    """
    from ..evaluation import plot_report, report

    if plot:
        plot_target(plot)
    with obj.open() as bank:
        bar, progress = progress_bar(0)
        with bar:
            scores = bank.score_trial_file(trials, root, progress)
        _report_left_out(scores)
        result = report(scores, far, bank.thresholds.verify)
    if plot:
        with plot_written(plot):
            plot_report(scores, result, plot)
    emit(result.to_dict(), as_json, _rates_text(result) + (f"\nDET curve: {plot}" if plot else ""))


@main.command()
@click.option("--trials", type=click.Path(dir_okay=False), help="Calibrate verification on this trial list (default: "
              "on the bank's own recordings, each held out from its speaker's voiceprint).")
@click.option("--root", type=click.Path(file_okay=False), help="Folder that relative paths in the trial list start from "
              "(default: the trial list's folder).")
@click.option("--far", type=click.FloatRange(0.0001, 0.5), default=0.01, show_default=True, callback=finite,
              help="Verification: false accepts per claim by someone else.")
@click.option("--unknown-rate", type=click.FloatRange(0.0001, 0.5), default=0.01, show_default=True, callback=finite,
              help="Identification: how often a person who is not enrolled may be matched to anyone.")
@click.option("--eer", "at_eer", is_flag=True, help="Verification at the equal-error rate instead of --far.")
@click.option("--for", "purpose", type=click.Choice(["both", "verify", "identify"]), default="both", show_default=True,
              help="Which threshold to choose (a trial list calibrates verify only).")
@click.option("--rule", type=click.Choice(["margin", "best"]), help="What identification decides on: the margin rule "
              "(2 x best - second best score; new banks) or the best score (banks from before 0.2). Default: the bank's.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Draw the DET curve to this file (.png, .svg, .pdf) "
              "and the identification view beside it (NAME-identify.png).")
@click.option("--yes", is_flag=True, help="Store the new thresholds without asking.")
@JSON_OPTION
@click.pass_obj
@handle_errors
def calibrate(obj: Context, trials: str | None, root: str | None, far: float, unknown_rate: float, at_eer: bool,
              purpose: str, rule: str | None, plot: str | None, yes: bool, as_json: bool) -> None:
    """Choose the verification and identification thresholds from data, and store them.

    Verification (verify NAME FILE) is set for a false-accept rate per claim; identification
    (identify, scan) for how often a person who is NOT enrolled is matched to anyone, which
    grows with the number of enrolled speakers. Without --trials both are measured on the
    bank itself: each recording against its own speaker's voiceprint made without it, and with
    its speaker taken out, against everyone else, as a stranger would be (plus the cohort, and
    the model's reference set of strangers where the bank's own are too few). Both channels are
    measured: wideband, and the telephone line each recording was also embedded through.
    Prints the rates to expect, each with the number of trials behind it and a 95% upper bound;
    a rate the trials cannot support is replaced by the lowest they do, saying so. Asks before
    replacing the stored thresholds (--yes to skip).

    \b
    Example:
      voicebank calibrate --far 0.01 --unknown-rate 0.01
      voicebank calibrate --for verify --trials trials.txt --eer --yes
    """
    from ..evaluation import plot_calibration

    if plot:
        plot_target(plot)
    purposes = ("verify", "identify") if purpose == "both" else (purpose,)
    with obj.open() as bank:
        if yes:  # before measuring, rather than after
            bank.refuse_changes("store thresholds")
        bar, progress = progress_bar(0)
        with bar:
            result = bank.thresholds.calibrate(trials, root=root, far=None if at_eer else far,
                                               unknown_rate=unknown_rate, purposes=purposes, rule=rule,
                                               progress=progress)
        if result.scored is not None:
            _report_left_out(result.scored)
        text = _calibration_text(result)
        if plot:
            with plot_written(plot):
                text += "\nplots: " + ", ".join(str(p) for p in plot_calibration(result, plot))
        ask = not yes and not as_json and sys.stdin.isatty()  # JSON goes to scripts: they pass --yes
        if ask:
            click.echo(text)  # what the question is about, before it
        store = yes or (ask and click.confirm("Store these thresholds?"))
        if store:
            bank.thresholds.store_calibration(result)
    verdict = "Stored." if store else "Not stored: run again with --yes to store them."
    emit({**result.to_dict(), "stored": bool(store)}, as_json, verdict if ask else f"{text}\n{verdict}")


def _calibration_text(result) -> str:
    channels = result.every_channel()
    lines = []
    for measured in channels:
        if len(channels) > 1 or result.skipped:
            lines.append(f"{measured.channel} channel (recordings that came through "
                         f"{'a telephone line' if measured.channel == 'telephone' else 'a wideband channel'}):")
        lines += _channel_lines(measured)
    lines += [f"{channel} channel: not calibrated: {why}" for channel, why in result.skipped.items()]
    if result.twins:
        pairs = ", ".join(f"{safe(a)} and {safe(b)}" for a, b in result.twins)
        lines.append(f"note: one voice enrolled twice? {pairs}: their voiceprints are within the duplicate-voice "
                     "threshold, so they were left out of each other's unknown-person trials (a person is no stranger "
                     "to their own voice). Remove one of each pair if it is the same person.")
    return "\n".join(lines)


def _channel_lines(result) -> list[str]:
    t, v = result.trials, result.verify_trials or result.trials
    lines = [f"score: {t.kind}   from: {result.source}   speakers: {t.gallery}   trials: {v.target.size} genuine, "
             f"{v.nontarget.size} impostor pairs, {len(t.unknown)} unknown-person{_sources(t)}"]
    for which, point in result.chosen.items():
        old = result.stored.get(which)
        lines += _point_lines(point, "chosen")
        if old is not None:
            lines += _point_lines(old, f"stored ({old.method})")
    if result.growth:
        grown = ", ".join(f"{r:.2%} at {n}" for n, r in result.growth[1:])
        lines.append(f"  unknown-person false alarms expected at this threshold if the bank grows: {grown} speakers "
                     "(as the model of impostor scores predicts); `voicebank check` says when to calibrate again.")
    if t.target.size < 30:
        lines.append(f"note: only {t.target.size} genuine trials: the false-reject rates are rough.")
    return lines


def _sources(trials) -> str:
    """Where the unknown-person trials came from, when the reference set of strangers is among them."""
    s = trials.sources or {}
    if not s.get("reference"):
        return ""
    return (f" ({s['own']} the bank's own, {s['cohort']} of the cohort, {s['reference']} of the reference set of "
            f"strangers, its scores moved by {s['shift']:+.3f}{_spread(s)} to the level of the bank's own strangers)")


def _spread(sources: dict) -> str:
    if not sources.get("spread"):
        return ""
    people = f", known from {sources['people']} people" if sources.get("people") else ""
    return f" (each by its own draw, spread {sources['spread']:.3f}{people})"


def _point_lines(point, label: str) -> list[str]:
    asked = (f"; asked {point.asked:g}, which {point.trials} trials cannot support: the lowest they support"
             if point.asked else "")
    upper = "" if point.upper is None else f", 95% upper bound {point.upper:.2%}"
    if point.purpose == "verify":
        target = "the equal-error rate" if point.method == "eer" else (
            f"{point.target:.3g} false accepts per claim{asked}" if point.target else "no target")
        head = f"verify   {label}: threshold {point.threshold:.4f} ({target})"
        miss = "-" if point.miss is None else f"{point.miss:.2%}"
        body = (f"    false accepts: expected {point.rate:.2%}, counted {point.counted} of {point.trials} impostor "
                f"trials ({point.counted / max(point.trials, 1):.2%}{upper}); false rejects {miss} of "
                f"{point.genuine} genuine trials")
        return [head, body] + ([lengths_text(point.to_dict(with_model=False)["lengths"])] if point.lengths else [])
    per = " per scan window" if point.purpose == "scan" else ""
    target = f"{point.target:.3g} unknown-person false alarms{per}{asked}" if point.target else "no target"
    on = "2 x best - second best score" if point.rule == "margin" else "the best score"
    head = f"{point.purpose:<8} {label}: threshold {point.threshold:.4f} on {on} ({target} with {point.gallery} enrolled)"
    body = (f"    unknown persons matched to someone: expected {point.rate:.2%}, counted {point.counted} of "
            f"{point.trials} ({point.counted / max(point.trials, 1):.2%}{upper})")
    known = (f"    of {point.genuine} genuine probes: {point.hit:.2%} identified, {point.wrong:.2%} matched to "
             f"someone else, {point.miss:.2%} not identified") if point.genuine else ""
    return [head, body] + ([known] if known else []) + ([lengths_text(point.to_dict(with_model=False)["lengths"])] if point.lengths else [])


@main.group()
def cohort() -> None:
    """Recordings of people who are not enrolled: AS-norm's cohort, and calibration's strangers.

    AS-norm (`voicebank normalization asnorm`) scores each side of a trial against them;
    `voicebank calibrate` counts each as an unknown person, beside the enrolled speakers.

    \b
    Example:
      voicebank cohort add others/*.wav
    """


@cohort.command(name="add")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.pass_obj
@handle_errors
def cohort_add(obj: Context, files: tuple[str, ...]) -> None:
    """Add recordings of people who are NOT enrolled to the cohort.

    \b
    Example:
      voicebank cohort add others/*.wav
    """
    from ..errors import VoiceBankError

    failed: list[str] = []
    with obj.open() as bank:
        bar, progress = progress_bar(len(files))
        with bar:
            size = bank.cohort.add(list(files), progress=progress, on_error=lambda _i, exc: failed.append(str(exc)))
    for why in failed:
        click.echo(f"left out: {safe(why)}", err=True)
    click.echo(f"The cohort holds {size} recordings.")
    if failed:
        raise VoiceBankError(f"{len(failed)} of {len(files)} recordings could not be used (see above); the others were "
                             "added.")


@cohort.command(name="show")
@click.pass_obj
@handle_errors
def cohort_show(obj: Context) -> None:
    """Print the cohort's size.

    \b
    Example:
      voicebank cohort show
    """
    with obj.open() as bank:
        click.echo(f"The cohort holds {bank.cohort.size()} recordings.")


@cohort.command(name="clear")
@click.pass_obj
@handle_errors
def cohort_clear(obj: Context) -> None:
    """Empty the cohort (AS-norm then uses the other enrolled speakers).

    \b
    Example:
      voicebank cohort clear
    """
    with obj.open() as bank:
        bank.cohort.clear()
    click.echo("The cohort is empty.")


@main.command()
@click.argument("kind", required=False, type=click.Choice(["cosine", "asnorm"]))
@click.option("--top-n", default=100, show_default=True, help="AS-norm: how many of the closest cohort scores to use.")
@click.option("--threshold", type=float, help="The threshold on the new score (default: its starting value).")
@click.pass_obj
@handle_errors
def normalization(obj: Context, kind: str | None, top_n: int, threshold: float | None) -> None:
    """Show or set the score: plain cosine, or AS-norm against a cohort.

    Switching replaces the threshold (the old one means nothing on the new score): calibrate after.

    \b
    Example:
      voicebank normalization asnorm --top-n 100 && voicebank calibrate --yes
    """
    with obj.open() as bank:
        if kind is not None:
            new = bank.thresholds.set_score_normalization(kind, top_n, threshold)
            click.echo(f"score: {kind}; threshold reset to {new:.4f} (verify and identify). Calibrate them: "
                       "voicebank calibrate")
        else:
            click.echo(f"score: {bank.thresholds.score_kind}; thresholds: verify {bank.thresholds.verify:.4f}, "
                       f"identify {bank.thresholds.identify:.4f}")
