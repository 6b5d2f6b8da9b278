"""A real PostgreSQL (Debian's, installed by `make test`) shared by the whole test session.

The server is tests/integration/postgres.py's throwaway one (initdb into a temporary directory,
a free port, password authentication); each test gets its own fresh database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.integration.postgres import PostgresMissingError, installed, temporary_server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A libpq URL of a superuser on a running server (database ``postgres``)."""
    try:
        installed()
    except PostgresMissingError as exc:
        pytest.fail(str(exc))
    with temporary_server() as url:
        yield url


@pytest.fixture
def database_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
