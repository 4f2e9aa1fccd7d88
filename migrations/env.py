"""Alembic environment for voicebank: SQLite and PostgreSQL, from code or the plain CLI."""

from alembic import context

from voicebank.store import Base, make_engine, resolve_url

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    # -x db=... wins, then VOICEBANK_DB, then ./voicebank.db (resolve_url reads the env).
    given = context.get_x_argument(as_dictionary=True).get("db")
    return resolve_url(given)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection) -> None:
    # render_as_batch: SQLite can only alter tables by copying them, which batch mode does.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # voicebank.store.schema hands us its connection
        _run(connection)
        return
    engine = make_engine(_url())
    with engine.begin() as connection:
        _run(connection)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
