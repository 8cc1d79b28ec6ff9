"""pytest fixtures for storekit users' tests and storekit's own.

- `storekit_postgres_server` / `storekit_postgres_url`: one throwaway server per session.
- `store_url`: a clean database URL, parametrized over SQLite and PostgreSQL.
- `store`: an open Database on that URL, closed after the test.
- `astore`: the same as a storekit.aio AsyncDatabase, for async tests run by anyio's
  pytest plugin (`pip install anyio`; mark the test `@pytest.mark.anyio`).
- `storekit_pgbouncer` / `storekit_pgbouncer_url`: one PgBouncer (transaction pooling) per
  session in front of that server, and a fresh database through it per test.

Each PostgreSQL test gets its own schema (dropped afterwards), which isolates tables as a
fresh database would, at a fraction of the cost. With CI=true a missing server fails the
test run instead of skipping it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from storekit.database import Database, create_database
from storekit.errors import DatabaseUnavailable
from storekit.testing import (
    LocalPostgres,
    PgBouncer,
    PostgresServer,
    isolated_schema,
    pgbouncer_server,
    pooled_database,
    postgres_server,
)

BACKENDS = ("sqlite", "postgres")
__all__ = ["astore", "isolated_schema", "store", "store_url", "storekit_pgbouncer",
           "storekit_pgbouncer_url", "storekit_postgres_server", "storekit_postgres_url"]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def storekit_postgres_server() -> Iterator[PostgresServer | LocalPostgres]:
    stack = contextlib.ExitStack()
    try:
        server = stack.enter_context(postgres_server())
    except DatabaseUnavailable as exc:
        stack.close()
        if _in_ci():
            pytest.fail(f"CI=true and {exc}", pytrace=False)
        pytest.skip(str(exc))
    with stack:
        yield server


@pytest.fixture(scope="session")
def storekit_postgres_url(storekit_postgres_server: PostgresServer | LocalPostgres) -> str:
    return storekit_postgres_server.url


@pytest.fixture(scope="session")
def storekit_pgbouncer(storekit_postgres_url: str) -> Iterator[PgBouncer]:
    stack = contextlib.ExitStack()
    try:
        bouncer = stack.enter_context(pgbouncer_server(storekit_postgres_url))
    except DatabaseUnavailable as exc:
        stack.close()
        if _in_ci():
            pytest.fail(f"CI=true and {exc}", pytrace=False)
        pytest.skip(str(exc))
    with stack:
        yield bouncer


@pytest.fixture
def storekit_pgbouncer_url(storekit_pgbouncer: PgBouncer) -> Iterator[str]:
    """A new database, reached through PgBouncer; dropped after the test."""
    with pooled_database(storekit_pgbouncer) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    base = request.getfixturevalue("storekit_postgres_url")
    with isolated_schema(base) as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Iterator[Database]:
    db = create_database(store_url)
    try:
        yield db
    finally:
        db.close()


@pytest.fixture
async def astore(store_url: str, anyio_backend: Any) -> AsyncIterator[Any]:
    """An open storekit.aio.AsyncDatabase on store_url, closed after the test (asyncio)."""
    from storekit import aio

    db = await aio.create_database(store_url)
    try:
        yield db
    finally:
        await db.close()


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "postgres: needs a PostgreSQL server")
