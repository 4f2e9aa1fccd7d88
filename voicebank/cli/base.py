"""The ``voicebank`` group, its options, and what every command shares."""

from __future__ import annotations

import functools
import json
import logging
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import click

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


class Context:
    """What the group options decided, handed to every command."""

    def __init__(self, db: str | None, model: str | None, device: str | None):
        self.db, self.model, self.device = db, model, device

    def open(self, **kwargs: Any):
        from ..bank import VoiceBank

        return VoiceBank.open(self.db, self.model, device=self.device, **kwargs)

    @contextmanager
    def engine(self) -> Iterator[Any]:
        """A bare SQLAlchemy engine on the database (for schema work on a bank that may not open)."""
        from ..store import make_engine, resolve_url

        engine = make_engine(resolve_url(self.db))
        try:
            yield engine
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


def safe(text: str, keep: str = "") -> str:
    """Control and invisible formatting characters written as visible escapes. Text built from
    untrusted pieces (file names, labels) should escape each piece before joining lines: a newline
    inside a file name would otherwise start a line of its own."""
    from ..validate import printable

    return printable(text, keep)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--db", envvar="VOICEBANK_DB", metavar="URL|PATH",
              help="Database: a SQLite file path or a SQLAlchemy URL (postgresql://...). "
                   "Default: $VOICEBANK_DB, else ./voicebank.db.")
@click.option("--model", envvar="VOICEBANK_MODEL", metavar="ID|DIR",
              help="Speaker model: hub id or local directory. Default: $VOICEBANK_MODEL, else the bank's own "
                   "(microsoft/wavlm-base-plus-sv for a new bank).")
@click.option("--device", envvar="VOICEBANK_DEVICE", type=click.Choice(["auto", "cpu", "cuda"]),
              help="Where the model runs. Default: $VOICEBANK_DEVICE, else auto (CUDA when present).")
@click.option("-v", "--verbose", count=True, help="Log progress to stderr (-vv for debug).")
@click.version_option(package_name="voicebank")
@click.pass_context
def main(ctx: click.Context, db: str | None, model: str | None, device: str | None, verbose: int) -> None:
    """Enroll speakers from recordings, then identify (who is this?) and verify (is this Alice?).

    \b
    Example:
      voicebank init
      voicebank enroll alice a1.wav a2.flac --meta employee_id=42
      voicebank identify unknown.wav
      voicebank verify alice attempt.wav
    """
    level = logging.WARNING if not verbose else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not verbose:  # its retries on a machine without the hub: dozens of lines before our one-line error
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    ctx.obj = Context(db, model, device)


def parse_meta(values: tuple[str, ...]) -> dict[str, str]:
    meta = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            from ..errors import InvalidInputError

            raise InvalidInputError(f"--meta {item!r} is not KEY=VALUE (for example --meta employee_id=42).")
        meta[key] = value
    return meta


def progress_bar(total: int) -> tuple[Any, Callable[[int, int, str], None]]:
    bar = click.progressbar(length=total, label="Embedding", file=sys.stderr, show_pos=True, hidden=not sys.stderr.isatty())

    def progress(_done: int, total: int, _label: str) -> None:
        bar.length = total  # the library's count: an import skips the speakers already enrolled
        bar.update(1)

    return bar, progress
