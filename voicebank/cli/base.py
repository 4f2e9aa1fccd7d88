"""The ``voicebank`` group, its options, and what every command shares."""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import click

from .output import Group

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def finite(_ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """click's FloatRange lets NaN through (every comparison with it is false)."""
    import math

    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number.", param=param)
    return value


class Context:
    """What the group options decided, handed to every command."""

    def __init__(self, db: str | None, model: str | None, device: str | None, primary: str | None = None,
                 max_lag: float | None = None):
        self.db, self.model, self.device, self.primary, self.max_lag = db, model, device, primary, max_lag

    def open(self, **kwargs: Any):
        from ..bank import VoiceBank

        return VoiceBank.open(self.db, self.model, device=self.device, primary=self.primary, max_lag=self.max_lag,
                              **kwargs)

    def refuse_on_replica(self, what: str) -> None:
        """Raise ReplicaError when --primary names another database than --db (for the commands
        that work on a bare engine rather than an open bank)."""
        from ..store import replica, resolve_url

        url = resolve_url(self.db)
        primary = replica.primary_url(url, resolve_url(self.primary) if self.primary else None)
        if primary is not None:
            raise replica.refusal(what, url, primary)

    @contextmanager
    def engine(self) -> Iterator[Any]:
        """A bare SQLAlchemy engine on the database (for schema work on a bank that may not open)."""
        from ..store import database_error, make_engine, resolve_url

        url = resolve_url(self.db)
        engine = make_engine(url)
        try:
            yield engine
        except Exception as exc:  # cannot connect, not a database, disk full: said as an open bank says it
            translated = database_error(exc, url)
            if translated is exc:
                raise
            raise translated from exc
        finally:
            engine.dispose()


def handle_errors(command: Callable) -> Callable:
    """Turn voicebank's own errors (user mistakes, bad input) into `Error: ...` and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..errors import VoiceBankError

        try:
            return command(*args, **kwargs)
        except VoiceBankError as exc:
            click.echo(f"Error: {safe(str(exc))}", err=True)
            sys.exit(2)

    return wrapper


def emit(data: dict | list, as_json: bool, text: str) -> None:
    """Print ``data`` as JSON, or ``text`` for people: with anything untrusted in it (labels, file
    names, metadata) unable to drive the terminal (:func:`safe`)."""
    from ..validate import printable

    click.echo(printable(json.dumps(data, ensure_ascii=False, indent=None), json=True) if as_json
               else safe(text, "\n\t"))


def lengths_text(lengths: list[dict]) -> str:
    """A threshold's values by the speech behind a probe (``OperatingPoint.to_dict()["lengths"]``), a line."""
    if not lengths:
        return ""
    steps = [f"{d['threshold']:.4f} at {d['seconds']:.1f} s ({d['counted']} of {d['trials']} counted)" for d in lengths]
    return (f"    by the speech in a probe: {steps[0]} and less, " + ", ".join(steps[1:])
            + ", read between them and rising one step further above (longer probes' strangers score higher)")


def safe(text: str, keep: str = "") -> str:
    """Control and invisible formatting characters written as visible escapes. Text built from
    untrusted pieces (file names, labels) should escape each piece before joining lines: a newline
    inside a file name would otherwise start a line of its own."""
    from ..validate import printable

    return printable(text, keep)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--db", envvar="VOICEBANK_DB", metavar="URL|PATH",
              help="Database: a SQLite file path or a SQLAlchemy URL (postgresql://...). "
                   "Default: $VOICEBANK_DB, else ./voicebank.db.")
@click.option("--primary", envvar="VOICEBANK_PRIMARY", metavar="URL",
              help="When --db is a PostgreSQL read replica: its primary, which receives the audit rows; the "
                   "process identifies, verifies and reads, and refuses changes (make them with --db set to the "
                   "primary). Example: --db postgresql://reader@replica/voices --primary "
                   "postgresql://app@primary/voices. Default: $VOICEBANK_PRIMARY.")
@click.option("--max-lag", envvar="VOICEBANK_MAX_LAG", type=click.FloatRange(min=0), callback=finite, metavar="SECONDS",
              help="With --primary: before each identification or verification, wait at most this long for the replica "
                   "to replay every change the primary has acknowledged (a removal, a threshold), then refuse rather "
                   "than decide on stale rows. Default: $VOICEBANK_MAX_LAG, else 5.")
@click.option("--model", envvar="VOICEBANK_MODEL", metavar="ID|DIR",
              help="Speaker model: hub id or local directory. Default: $VOICEBANK_MODEL, else the bank's own "
                   "(microsoft/wavlm-base-plus-sv for a new bank).")
@click.option("--device", envvar="VOICEBANK_DEVICE", type=click.Choice(["auto", "cpu", "cuda"]),
              help="Where the model runs. Default: $VOICEBANK_DEVICE, else auto (CUDA when present).")
@click.option("-v", "--verbose", count=True, help="Log progress to stderr (-vv for debug).")
@click.version_option(package_name="voicebank")
@click.pass_context
def main(ctx: click.Context, db: str | None, primary: str | None, max_lag: float | None, model: str | None,
         device: str | None, verbose: int) -> None:
    """Enroll speakers from recordings, then identify (who is this?) and verify (is this Alice?).

    \b
    Example:
      voicebank init
      voicebank enroll alice a1.wav a2.flac --meta employee_id=42
      voicebank identify unknown.wav
      voicebank verify alice attempt.wav
    """
    from .. import runtime

    # this process is the command's own: threads to the cores, no progress bars from libraries,
    # and -v/-vv raise voicebank's loggers only (numba's debug output is not ours)
    runtime.configure(log_level=logging.WARNING if not verbose else logging.INFO if verbose == 1 else logging.DEBUG)
    ctx.obj = Context(db, model, device, primary, max_lag)


def parse_meta(values: tuple[str, ...]) -> dict[str, str]:
    meta = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            from ..errors import InvalidInputError

            raise InvalidInputError(f"--meta {item!r} is not KEY=VALUE (for example --meta employee_id=42).")
        meta[key] = value
    return meta


PROGRESS_EVERY = 5.0  # seconds between progress lines when stderr is not a terminal


def progress_bar(total: int, label: str = "Embedding", absolute: bool = False
                 ) -> tuple[Any, Callable[[int, int, str], None]]:
    """(a context manager showing progress on stderr, the library's progress callback feeding it).
    The callback is called once per item done, or with ``absolute`` now and then with the count done.

    On a terminal, a bar. Otherwise (a log file, CI, a service manager) a line every
    ``PROGRESS_EVERY`` seconds and one at the end, so that a long command is never silent for
    minutes; a command that ends sooner prints none."""
    bar = (click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True) if sys.stderr.isatty()
           else ProgressLines(total, label, PROGRESS_EVERY))

    def progress(done: int, total: int, _label: str) -> None:
        bar.length = total  # the library's count: an import skips the speakers already enrolled
        bar.update(done - bar.pos if absolute else 1)

    return bar, progress


class ProgressLines:
    """Progress as lines (``Embedding: 120/500 (24%), 31 s``), with click's progress bar surface
    (``length``, ``pos``, ``update``, a context manager)."""

    def __init__(self, length: int, label: str, every: float = PROGRESS_EVERY):
        self.length, self.label, self.every, self.pos = length, label, every, 0
        self._start = self._last = time.monotonic()
        self._shown = False

    def __enter__(self) -> "ProgressLines":
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is None and self._shown:
            self._line()

    def update(self, steps: int) -> None:
        self.pos += steps
        if time.monotonic() - self._last >= self.every:
            self._line()

    def _line(self) -> None:
        now = time.monotonic()
        share = f" ({100 * self.pos / self.length:.0f}%)" if self.length else ""
        click.echo(f"{self.label}: {self.pos}/{self.length}{share}, {now - self._start:.0f} s", err=True)
        self._last, self._shown = now, True
