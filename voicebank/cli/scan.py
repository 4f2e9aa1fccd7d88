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
        _rttm_target(rttm)
    window = window or scanning.DEFAULT_WINDOW
    hop = hop or window * scanning.DEFAULT_HOP_FRACTION
    with obj.open() as bank, contextlib.ExitStack() as bars:
        segments = bank.scan(recording, window=window, hop=hop, progress=_progress_bar(bars))
    lines = scanning.rttm(segments, scanning.file_id(recording))
    if rttm == "-":
        click.echo(lines, nl=False)
        return
    if rttm:
        _write_rttm(rttm, lines)
    data = {"recording": recording, "window": window, "hop": hop, "threshold": segments.threshold,
            "channel": segments.channel, "segments": [s.to_dict() for s in segments]}
    emit(data, as_json, _table(segments) if segments else f"No speech found in {recording}.")


def _rttm_target(rttm: str) -> None:
    """Refuse an --rttm file that cannot be written before the scan rather than after it: a name
    over 255 bytes (which stat refuses), a folder that takes no files (/proc, /sys, read-only)."""
    import tempfile
    from pathlib import Path

    from ..errors import InvalidInputError

    target = Path(rttm)
    try:
        if target.is_dir():
            raise InvalidInputError(f"--rttm {rttm}: is a folder; give a file name.")
        if not target.parent.is_dir():
            raise InvalidInputError(f"--rttm {rttm}: the folder {target.parent} does not exist; create it or choose "
                                    "another.")
        if target.exists() and not target.is_file():  # a pipe or a device: written as it is, not replaced
            return
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".voicebank-probe-"):
            pass  # the file is written beside itself and renamed over: the folder must take new files
    except OSError as exc:
        raise InvalidInputError(f"--rttm {rttm}: cannot write there ({exc.strerror or exc}); choose a folder this "
                                "user may write to.") from None


def _write_rttm(rttm: str, lines: str) -> None:
    """Write the RTTM whole (a new file beside it, renamed over it), or a pipe or device as it is;
    the disk filling meanwhile as an error of its own."""
    from pathlib import Path

    from ..errors import VoiceBankError

    target = Path(rttm)
    atomic = not (target.exists() and not target.is_file())  # /dev/stdout, a FIFO: never replaced by a file
    try:
        with click.open_file(rttm, "w", encoding="utf-8", atomic=atomic) as f:
            f.write(lines)
    except OSError as exc:
        raise VoiceBankError(f"--rttm {rttm}: could not write the timeline ({exc.strerror or exc}); it was "
                             "not saved. Free space or choose another file, and scan again.") from None


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
