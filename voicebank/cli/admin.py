"""Commands that look after the bank: threshold, reindex, check, db."""

from __future__ import annotations

import sys

import click

from .base import JSON_OPTION, Context, emit, handle_errors, main


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
    from .. import schema
    from ..store import make_engine, resolve_url

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
    from .. import schema
    from ..store import make_engine, resolve_url

    engine = make_engine(resolve_url(obj.db))
    try:
        click.echo(f"database: {schema.current(engine) or 'empty'}\nnewest:   {schema.head()}")
    finally:
        engine.dispose()
