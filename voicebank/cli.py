"""The ``voicebank`` command: a thin click layer over :class:`voicebank.VoiceBank`.

Every command parses its arguments, makes one facade call and prints. Library errors become a
one-line ``Error: ...`` and exit code 2; ``verify`` exits 1 when it rejects and ``identify`` when
it finds no match. Heavy modules are imported inside commands so ``voicebank --help`` is instant.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from typing import Any, Callable

import click

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


class Context:
    """What the group options decided, handed to every command."""

    def __init__(self, db: str | None, model: str | None, device: str | None):
        self.db, self.model, self.device = db, model, device

    def open(self, **kwargs: Any):
        from .bank import VoiceBank

        return VoiceBank.open(self.db, self.model, device=self.device, **kwargs)


def handle_errors(command: Callable) -> Callable:
    """Turn voicebank's own errors (user mistakes, bad input) into `Error: ...` and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .errors import VoiceBankError

        try:
            return command(*args, **kwargs)
        except VoiceBankError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)

    return wrapper


def emit(data: dict | list, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=None) if as_json else text)


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
    ctx.obj = Context(db, model, device)


@main.command()
@click.option("--threshold", type=float, help="Decision threshold on the cosine score (default: the model's).")
@JSON_OPTION
@click.pass_obj
@handle_errors
def init(obj: Context, threshold: float | None, as_json: bool) -> None:
    """Create a new, empty bank (database schema + the model's identity and threshold).

    \b
    Example:
      voicebank --db voicebank.db init
      voicebank --db postgresql://user@host/voices --model ./wavlm-base-plus-sv init
    """
    from .errors import BankNotFoundError, VoiceBankError

    try:
        obj.open().close()
    except BankNotFoundError:
        pass
    else:
        raise VoiceBankError("a voicebank already exists there; nothing was changed.")
    with obj.open(create=True, threshold=threshold) as bank:
        info = {"db": obj.db or "voicebank.db", "model": bank.model_source, "model_id": bank.model_id,
                "dimension": bank.dimension, "threshold": bank.threshold}
    emit(info, as_json, f"Created a voicebank with {info['model']} ({info['dimension']}-dim), threshold {info['threshold']:.3f}.")


def _parse_meta(values: tuple[str, ...]) -> dict[str, str]:
    meta = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--meta")
        meta[key] = value
    return meta


def _progress_bar(total: int) -> tuple[Any, Callable[[int, int, str], None]]:
    bar = click.progressbar(length=total, label="Embedding", file=sys.stderr, show_pos=True)
    return bar, lambda done, _total, _label: bar.update(1)


@main.command()
@click.argument("name")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Metadata to store with the speaker (repeatable).")
@JSON_OPTION
@click.pass_obj
@handle_errors
def enroll(obj: Context, name: str, files: tuple[str, ...], meta: tuple[str, ...], as_json: bool) -> None:
    """Enroll a new speaker NAME from one or more recordings (wav, flac, ogg, mp3, ...).

    All recordings are checked before anything is stored; if one is unusable, nothing is.

    \b
    Example:
      voicebank enroll alice a1.wav a2.flac a3.mp3 --meta employee_id=42
    """
    metadata = _parse_meta(meta)
    with obj.open() as bank:
        bar, progress = _progress_bar(len(files))
        with bar:
            speaker = bank.enroll(name, list(files), metadata=metadata, progress=progress)
    emit(speaker.to_dict(), as_json,
         f"Enrolled {speaker.name} from {len(speaker.recordings)} recordings ({speaker.speech_seconds:.1f} s of speech).")


@main.command()
@click.argument("name")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@JSON_OPTION
@click.pass_obj
@handle_errors
def add(obj: Context, name: str, files: tuple[str, ...], as_json: bool) -> None:
    """Add recordings to an enrolled speaker; the voiceprint is recomputed from all of them.

    \b
    Example:
      voicebank add alice a4.wav a5.wav
    """
    with obj.open() as bank:
        bar, progress = _progress_bar(len(files))
        with bar:
            speaker = bank.add_recordings(name, list(files), progress=progress)
    emit(speaker.to_dict(), as_json, f"{speaker.name} now has {len(speaker.recordings)} recordings.")


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--top-k", "-k", default=5, show_default=True, help="How many candidates to list.")
@JSON_OPTION
@click.pass_obj
@handle_errors
def identify(obj: Context, file: str, top_k: int, as_json: bool) -> None:
    """Who is speaking in FILE? Prints the best match, or "unknown" below the threshold.

    Exit code 0 when a speaker matched, 1 when the voice is unknown.

    \b
    Example:
      voicebank identify unknown.wav --top-k 3
      voicebank identify unknown.wav --json
    """
    with obj.open() as bank:
        result = bank.identify(file, top_k=top_k)
    lines = [f"match: {result.match.name} (score {result.match.score:.3f})" if result.match
             else f"match: unknown (best score below threshold {result.threshold:.3f})"]
    lines += [f"  {i}. {c.name:<30} {c.score:.3f}" for i, c in enumerate(result.candidates, 1)]
    emit(result.to_dict(), as_json, "\n".join(lines))
    sys.exit(0 if result.match else 1)


@main.command()
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False))
@JSON_OPTION
@click.pass_obj
@handle_errors
def verify(obj: Context, name: str, file: str, as_json: bool) -> None:
    """Is the speaker in FILE the enrolled NAME? Exit code 0 accepted, 1 rejected.

    \b
    Example:
      voicebank verify alice attempt.wav && echo "welcome, alice"
    """
    with obj.open() as bank:
        result = bank.verify(name, file)
    verdict = "accepted" if result.accepted else "rejected"
    emit(result.to_dict(), as_json, f"{verdict}: {name} (score {result.score:.3f}, threshold {result.threshold:.3f})")
    sys.exit(0 if result.accepted else 1)


@main.command(name="list")
@JSON_OPTION
@click.pass_obj
@handle_errors
def list_(obj: Context, as_json: bool) -> None:
    """List the enrolled speakers.

    \b
    Example:
      voicebank list --json
    """
    with obj.open() as bank:
        speakers = bank.speakers()
    rows = [f"{s.name:<30} {len(s.recordings):>3} recordings {s.speech_seconds:8.1f} s speech" for s in speakers]
    emit([s.to_dict() for s in speakers], as_json, "\n".join(rows) if rows else "No speakers enrolled.")


@main.command()
@click.argument("name")
@JSON_OPTION
@click.pass_obj
@handle_errors
def show(obj: Context, name: str, as_json: bool) -> None:
    """Show one speaker: metadata and recordings.

    \b
    Example:
      voicebank show alice
    """
    with obj.open() as bank:
        speaker = bank.speaker(name)
    lines = [f"name: {speaker.name}", f"enrolled: {speaker.created_at:%Y-%m-%d %H:%M:%S}",
             f"metadata: {json.dumps(speaker.metadata, ensure_ascii=False)}", "recordings:"]
    lines += [f"  {r.label}  {r.duration_s:.1f} s ({r.speech_s:.1f} s speech)  sha256 {r.sha256[:12]}" for r in speaker.recordings]
    emit(speaker.to_dict(), as_json, "\n".join(lines))


@main.command()
@click.argument("name")
@click.pass_obj
@handle_errors
def remove(obj: Context, name: str) -> None:
    """Remove a speaker and every embedding of their voice.

    \b
    Example:
      voicebank remove alice
    """
    with obj.open() as bank:
        bank.remove(name)
    click.echo(f"Removed {name}.")


@main.command()
@click.pass_obj
@handle_errors
def reindex(obj: Context) -> None:
    """Rebuild the FAISS index from the database (the source of truth).

    \b
    Example:
      voicebank reindex
    """
    with obj.open() as bank:
        count = bank.reindex()
    click.echo(f"Indexed {count} voiceprints.")


@main.command()
@JSON_OPTION
@click.pass_obj
@handle_errors
def check(obj: Context, as_json: bool) -> None:
    """Check that the FAISS index agrees with the database. Exit code 1 if it does not.

    \b
    Example:
      voicebank check || voicebank reindex
    """
    with obj.open() as bank:
        report = bank.check()
    text = (f"index file: {report.index_file}\nspeakers: {report.speakers_in_sql} in SQL, "
            f"{report.speakers_in_index} in the index\n" + ("OK: the index agrees with SQL." if report.ok else
            f"DISAGREEMENT: missing {report.missing_from_index}, not in SQL {report.not_in_sql}, "
            f"wrong vectors {report.wrong_vectors}. Run `voicebank reindex`."))
    emit(report.to_dict(), as_json, text)
    sys.exit(0 if report.ok else 1)


@main.command()
@click.argument("value", required=False, type=float)
@JSON_OPTION
@click.pass_obj
@handle_errors
def threshold(obj: Context, value: float | None, as_json: bool) -> None:
    """Show the decision threshold, or set it to VALUE (a cosine score in [-1, 1]).

    \b
    Example:
      voicebank threshold
      voicebank threshold 0.80
    """
    with obj.open() as bank:
        if value is not None:
            bank.set_threshold(value)
        current = bank.threshold
    emit({"threshold": current}, as_json, f"threshold: {current:.4f}")


@main.group()
def db() -> None:
    """Database schema: upgrade and inspect.

    \b
    Example:
      voicebank --db postgresql://user@host/voices db upgrade
    """


@db.command()
@click.pass_obj
@handle_errors
def upgrade(obj: Context) -> None:
    """Upgrade the database schema to this voicebank's newest revision (back it up first).

    \b
    Example:
      voicebank db upgrade
    """
    from . import schema
    from .store import make_engine, resolve_url

    engine = make_engine(resolve_url(obj.db))
    try:
        before = schema.current(engine)
        schema.upgrade(engine)
        after = schema.current(engine)
    finally:
        engine.dispose()
    click.echo(f"Schema at {after} (was {before or 'empty'}).")


@db.command()
@click.pass_obj
@handle_errors
def current(obj: Context) -> None:
    """Print the schema revision of the database and the newest this voicebank knows.

    \b
    Example:
      voicebank db current
    """
    from . import schema
    from .store import make_engine, resolve_url

    engine = make_engine(resolve_url(obj.db))
    try:
        click.echo(f"database: {schema.current(engine) or 'empty'}\nnewest:   {schema.head()}")
    finally:
        engine.dispose()
