"""pytest fixtures for storekit users' tests and storekit's own.

- `storekit_postgres_server` / `storekit_postgres_url`: one throwaway server per session.
- `store_url`: a clean database URL, parametrized over SQLite and PostgreSQL.
- `store`: an open Database on that URL, closed after the test.
- `astore`: the same as a storekit.aio AsyncDatabase, for async tests run by anyio's
  pytest plugin (`pip install anyio`; mark the test `@pytest.mark.anyio`).

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
from storekit.testing import LocalPostgres, PostgresServer, isolated_schema, postgres_server

BACKENDS = ("sqlite", "postgres")
__all__ = ["isolated_schema", "store", "store_url", "storekit_postgres_server",
           "storekit_postgres_url"]  # isolated_schema: kept importable from here too


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
