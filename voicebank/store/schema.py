"""Running the Alembic migrations from code, and checking a database's schema on open.

The migrations live in ``migrations/`` at the repository root and are installed as the package
``voicebank.migrations``, so a pip-installed voicebank finds them too.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path
from typing import Literal

from sqlalchemy import Engine, inspect, text

from ..errors import BankNotFoundError, SchemaError


def migrations_dir() -> Path:
    checkout = Path(__file__).resolve().parents[2] / "migrations"  # this source tree's, when run from one
    if (checkout / "env.py").is_file() and (checkout / "versions").is_dir():
        return checkout
    spec = importlib.util.find_spec("voicebank.migrations")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(__file__).resolve().parents[2] / "migrations"  # a plain source checkout


def _config(engine: Engine):  # -> alembic.config.Config
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return config


def head() -> str:
    """The newest revision of the migrations this code ships."""
    revisions = _chain()
    if revisions is None:
        from alembic.script import ScriptDirectory

        return ScriptDirectory(str(migrations_dir())).get_current_head()
    parents = {down for down in revisions.values() if down}
    (newest,) = [rev for rev in revisions if rev not in parents]
    return newest


_REVISION = re.compile(r"""^(down_)?revision\b[^=\n]*=\s*(?:None|['"]([^'"]+)['"])""", re.M)


@functools.lru_cache(maxsize=4)
def _chain_in(folder: str) -> dict[str, str | None] | None:
    chain: dict[str, str | None] = {}
    for script in sorted(Path(folder, "versions").glob("*.py")):
        found = {bool(m.group(1)): m.group(2) for m in _REVISION.finditer(script.read_text(encoding="utf-8"))}
        if False in found and found[False]:
            chain[found[False]] = found.get(True)
    heads = set(chain) - {down for down in chain.values() if down}
    return chain if len(heads) == 1 else None


def _chain() -> dict[str, str | None] | None:
    """{revision: the revision before it} read from the migration files' ``revision`` and
    ``down_revision`` lines (milliseconds; alembic's loader compiles every script, 0.24 s of each
    command), or None where they cannot be read so, and alembic is asked instead."""
    return _chain_in(str(migrations_dir()))


def current(engine: Engine) -> str | None:
    """The revision the database is stamped with, None if it is not. Read with one query, as
    alembic stores it (its ``alembic_version`` table): importing alembic's migration runtime for
    this cost 0.16 s of every command's 0.8 s (``bench/cli.py``)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        found = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(found) > 1:  # alembic's own answer for a branched history; voicebank's has one line
        raise SchemaError(f"the database is stamped with several schema revisions ({', '.join(sorted(found))}).")
    return found[0] if found else None


OURS = {"bank", "speakers", "utterances", "changes", "audit", "cohort", "api_keys"}


def upgrade(engine: Engine, revision: str = "head") -> None:
    found = current(engine)
    if found is not None and found not in _known():
        raise SchemaError(_newer(found))
    if found is None:
        _refuse_foreign(engine)
    _run(engine, "upgrade", revision)


def _refuse_foreign(engine: Engine) -> None:
    """A database without a voicebank schema revision that already holds tables: migrating it
    would fail half-way (voicebank's own tables without their revision) or mix voicebank into
    another program's SQLite file."""
    tables = set(inspect(engine).get_table_names()) - {"alembic_version"}  # empty after a downgrade to base
    if tables & OURS:
        raise SchemaError(_unstamped(engine.url.render_as_string(hide_password=True)))
    if tables and engine.url.get_backend_name() == "sqlite":
        raise SchemaError(
            f"{engine.url.database} already holds tables of another program ({', '.join(sorted(tables)[:5])}): "
            "create the voicebank in a new file."
        )


def _unstamped(where: str) -> str:
    return (f"{where} has voicebank's tables but no schema revision (its alembic_version table is missing): "
            "it was damaged or made by hand. Restore it from a backup, or create a new bank.")


def downgrade(engine: Engine, revision: str) -> None:
    _run(engine, "downgrade", revision)


def _run(engine: Engine, verb: Literal["upgrade", "downgrade"], revision: str) -> None:
    from alembic import command

    config = _config(engine)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        getattr(command, verb)(config, revision)


def check(engine: Engine, url_for_messages: str) -> None:
    """Raise unless the database is a voicebank at the schema this code expects."""
    revision = current(engine)
    if revision is None:
        tables = set(inspect(engine).get_table_names())
        if "bank" not in tables:
            raise BankNotFoundError(
                f"no voicebank in {url_for_messages}: create one with `voicebank init` "
                "(or VoiceBank.open(..., create=True))."
            )
        raise SchemaError(_unstamped(url_for_messages))
    expected = head()
    if revision == expected:
        return
    if revision in _known():
        raise SchemaError(
            f"the database schema is at revision {revision}, older than this voicebank's {expected}: "
            f"back it up, then run `voicebank --db {url_for_messages} db upgrade`."
        )
    raise SchemaError(_newer(revision))


def _known() -> set[str]:
    revisions = _chain()
    if revisions is not None:
        return set(revisions)
    from alembic.script import ScriptDirectory

    return {rev.revision for rev in ScriptDirectory(str(migrations_dir())).walk_revisions()}


def _newer(revision: str) -> str:
    return (
        f"the database schema is at revision {revision}, which this voicebank does not know "
        f"(it expects {head()}): it was written by a newer voicebank; upgrade voicebank."
    )
