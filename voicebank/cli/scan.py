"""The scan command: who spoke when in a long recording."""

from __future__ import annotations

import contextlib
from typing import Callable

import click

from .base import JSON_OPTION, Context, emit, handle_errors, main, progress_bar


@main.command(name="scan")
@click.argument("recording", type=click.Path(dir_okay=False))
@click.option("--window", type=click.FloatRange(0.5, 30.0), default=None, metavar="S",
              help="Window length in seconds (default: 3).")
@click.option("--hop", type=click.FloatRange(0.05, 30.0), default=None, metavar="S",
              help="Step between windows in seconds, at most the window (default: half the window).")
@click.option("--rttm", type=click.Path(dir_okay=False, writable=True, allow_dash=True), metavar="FILE|-",
              help="Write the timeline as RTTM to FILE; '-' prints RTTM instead of the table.")
@JSON_OPTION
@click.pass_obj
@handle_errors
def scan_(obj: Context, recording: str, window: float | None, hop: float | None, rttm: str | None, as_json: bool) -> None:
    """Who speaks when in RECORDING: a timeline of enrolled speakers and unknown voices.

    The recording (up to 4 hours) is identified window by window; silence is left out and
    neighbouring windows with the same answer are merged. Each line: start and end in seconds,
    the speaker or "unknown", and the mean of the windows' best scores.

    \b
    Example:
      voicebank scan meeting.wav
      voicebank scan meeting.wav --window 2 --json
      voicebank scan meeting.wav --rttm meeting.rttm
      voicebank scan meeting.wav --rttm - > meeting.rttm
    """
    from .. import scan as scanning
    from ..errors import InvalidInputError

    if rttm == "-" and as_json:
        raise InvalidInputError("--json and --rttm - would both print to stdout: give --rttm a file name instead.")
    if rttm and rttm != "-":
        from pathlib import Path

        target = Path(rttm)
        if target.is_dir() or not target.parent.is_dir():
            raise InvalidInputError(f"--rttm {rttm}: " + ("is a folder; give a file name." if target.is_dir() else
                                    f"the folder {target.parent} does not exist; create it or choose another."))
    window = window or scanning.DEFAULT_WINDOW
    hop = hop or window * scanning.DEFAULT_HOP_FRACTION
    with obj.open() as bank, contextlib.ExitStack() as bars:
        segments = bank.scan(recording, window=window, hop=hop, progress=_progress_bar(bars))
    lines = scanning.rttm(segments, scanning.file_id(recording))
    if rttm == "-":
        click.echo(lines, nl=False)
        return
    if rttm:
        with click.open_file(rttm, "w", encoding="utf-8", atomic=True) as f:
            f.write(lines)
    data = {"recording": recording, "window": window, "hop": hop, "threshold": segments.threshold,
            "channel": segments.channel, "segments": [s.to_dict() for s in segments]}
    emit(data, as_json, _table(segments) if segments else f"No speech found in {recording}.")


def _table(segments: list) -> str:
    rows = [f"{'start':>9} {'end':>9}  {'speaker':<30} {'score':>7}"]
    rows += [f"{s.start:9.2f} {s.end:9.2f}  {s.name or 'unknown':<30} {s.score:7.4f}" for s in segments]
    return "\n".join(rows)


def _progress_bar(stack: contextlib.ExitStack) -> Callable[[int, int, str], None]:
    """A progress callback drawing a bar on stderr, opened (on ``stack``) once the number of
    windows is known, i.e. after the recording is decoded."""
    bars: list = []

    def progress(done: int, total: int, _label: str) -> None:
        if not total:
            return
        if not bars:
            bars.append(stack.enter_context(progress_bar(total, "Scanning")[0]))
        bars[0].update(done - bars[0].pos)

    return progress
