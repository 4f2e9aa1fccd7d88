"""Commands that measure and tune recognition: eval, calibrate, cohort, normalization."""

from __future__ import annotations

import sys

import click

from .base import JSON_OPTION, Context, emit, handle_errors, main, progress_bar

TRIAL_OPTIONS = [
    click.option("--root", type=click.Path(file_okay=False), help="Folder that relative paths in the trial list start from "
                 "(default: the trial list's folder)."),
    click.option("--far", type=click.FloatRange(0.0001, 0.5), default=0.01, show_default=True,
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


def _score_trial_file(bank, trials: str, root: str | None):
    from ..evaluation import read_trials, score_trials

    style, parsed = read_trials(trials, {s.name for s in bank.speakers()}, root)
    count = len({str(t.right) for t in parsed} | ({t.left for t in parsed} if style == "pairs" else set()))
    bar, progress = progress_bar(count)
    with bar:
        return score_trials(bank, style, parsed, progress)


@main.command(name="eval")
@click.argument("trials", type=click.Path(dir_okay=False))
@trial_options
@click.option("--plot", type=click.Path(dir_okay=False), help="Write the DET curve to this PNG file.")
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
    from ..evaluation import plot_det, report

    with obj.open() as bank:
        scores = _score_trial_file(bank, trials, root)
        result = report(scores, far, bank.threshold)
    if plot:
        plot_det(scores, result, plot)
    emit(result.to_dict(), as_json, _rates_text(result) + (f"\nDET curve: {plot}" if plot else ""))


@main.command()
@click.option("--trials", type=click.Path(dir_okay=False), help="Calibrate on this trial list (default: on the bank's "
              "own recordings, each held out from its speaker's voiceprint).")
@trial_options
@click.option("--eer", "at_eer", is_flag=True, help="Choose the equal-error-rate threshold instead of the --far one.")
@click.option("--yes", is_flag=True, help="Store the new threshold without asking.")
@JSON_OPTION
@click.pass_obj
@handle_errors
def calibrate(obj: Context, trials: str | None, root: str | None, far: float, at_eer: bool, yes: bool, as_json: bool) -> None:
    """Choose the bank's threshold from data and store it.

    Without --trials, uses the enrolled recordings themselves. Prints what to expect at the
    chosen threshold; asks before replacing the stored one (--yes to skip the question).

    \b
    Example:
      voicebank calibrate --far 0.01
      voicebank calibrate --trials trials.txt --eer --yes
    """
    from ..evaluation import bank_scores, report

    with obj.open() as bank:
        scores = _score_trial_file(bank, trials, root) if trials else bank_scores(bank)
        result = report(scores, far, bank.threshold)
        chosen = result.eer_threshold if at_eer else result.at_far.threshold
        expected = report(scores, far, chosen).current
        old = bank.threshold
        rates = _rates_text(result) + f"\nchosen threshold {chosen:.4f}: expect FAR {expected.far:.2%}, FRR {expected.frr:.2%}"
        ask = not yes and not as_json and sys.stdin.isatty()  # JSON goes to scripts: they pass --yes
        if ask:
            click.echo(rates)  # what the question is about, before it
        store = yes or (ask and click.confirm(f"Replace the threshold {old:.4f} with {chosen:.4f}?"))
        if store:
            bank.set_threshold(chosen)
    data = {**result.to_dict(), "chosen": {"threshold": chosen, "far": expected.far, "frr": expected.frr},
            "previous_threshold": old, "stored": bool(store)}
    verdict = f"Stored (was {old:.4f})." if store else "Not stored: run again with --yes to store it."
    emit(data, as_json, verdict if ask else f"{rates}\n{verdict}")


@main.group()
def cohort() -> None:
    """The AS-norm cohort: recordings of people who are not enrolled.

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
    with obj.open() as bank:
        bar, progress = progress_bar(len(files))
        with bar:
            size = bank.add_cohort(list(files), progress=progress)
    click.echo(f"The cohort holds {size} recordings.")


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
        click.echo(f"The cohort holds {bank.cohort_size()} recordings.")


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
        bank.clear_cohort()
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
            new = bank.set_score_normalization(kind, top_n, threshold)
            click.echo(f"score: {kind}; threshold reset to {new:.4f}. Calibrate it: voicebank calibrate")
        else:
            click.echo(f"score: {bank.score_kind}; threshold {bank.threshold:.4f}")
