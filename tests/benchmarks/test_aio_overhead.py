"""storekit.aio against the sync API and aiosqlite (SQLite), and against psycopg's
AsyncConnection and SQLAlchemy's asyncio engine (PostgreSQL): an uncontended point select
and an uncontended read-then-write transaction.

An async call cannot be handed to pytest-benchmark alone, so one benchmarked call is a
batch of OPS_PER_CALL operations awaited in one run_until_complete on a loop kept for the
session (the sync client runs the same batch as a plain loop); per-operation figures are
the call's figure / ops_per_call (extra_info), which `python -m bench micro` prints. The
batch's one run_until_complete costs tens of microseconds, under 0.5 us per operation.
The normal test run (--benchmark-disable) runs each case once and checks its result:
the row, and that the counters hold every write. Nothing here asserts a timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import storekit
from tests.benchmarks.aio_clients import CLIENTS, Client, counter_total, seed_counters
from tests.benchmarks.conftest import ITEMS, N_ROWS

OPS_PER_CALL = int(os.environ.get("STOREKIT_MICRO_AIO_OPS", "200"))
CASES = [(backend, client) for backend, clients in CLIENTS.items() for client in clients]


class Env:
    """One seeded database, an event loop, and every client of its backend, open."""

    def __init__(self, backend: str, url: str) -> None:
        self.backend = backend
        self.url = url
        self.db = storekit.create_database(url)
        self.db.create_table(ITEMS)
        self.db.run_many("INSERT INTO items (name, n, doc) VALUES (?, ?, ?)",
                         [(f"item{i}", i, {"model": f"m{i % 50}", "i": i})
                          for i in range(N_ROWS)])
        seed_counters(self.db)
        self.loop = asyncio.new_event_loop()
        self.clients: dict[str, Client] = {}
        try:
            for name, cls in CLIENTS[backend].items():
                client = cls()
                if client.is_async:
                    self.loop.run_until_complete(client.open(url))
                else:
                    client.open_sync(url)  # type: ignore[attr-defined]
                self.clients[name] = client
        except BaseException:
            self.close()
            raise

    def batch(self, client: Client, op: str) -> Callable[[], Any]:
        """One benchmarked call: OPS_PER_CALL operations, the last one's result."""
        if not client.is_async:
            sync = getattr(client, f"{op}_sync")

            def plain() -> Any:
                result = None
                for i in range(OPS_PER_CALL):
                    result = sync(i)
                return result

            return plain
        fn = getattr(client, op)

        async def many() -> Any:
            result = None
            for i in range(OPS_PER_CALL):
                result = await fn(i)
            return result

        return lambda: self.loop.run_until_complete(many())

    def close(self) -> None:
        for client in self.clients.values():
            self.loop.run_until_complete(client.close())
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()
        self.db.close()


@pytest.fixture(scope="session")
def aio_envs(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Env]]:
    envs: dict[str, Env] = {}
    schemas = contextlib.ExitStack()

    def get(backend: str) -> Env:
        if backend not in envs:
            if backend == "sqlite":
                path: Path = tmp_path_factory.mktemp("micro-aio") / "aio.db"
                url = f"sqlite:///{path}"
            else:
                from storekit.testing import isolated_schema

                base = request.getfixturevalue("storekit_postgres_url")
                url = schemas.enter_context(isolated_schema(base, prefix="microaio"))
            envs[backend] = Env(backend, url)
        return envs[backend]

    with schemas:
        yield get
        for env in envs.values():
            env.close()


def bench(benchmark: Any, op: str, env: Env, client: str, method: str) -> Any:
    benchmark.group = f"aio {op}[{env.backend}]"
    benchmark.extra_info.update({
        "suite": "aio", "operation": op, "backend": env.backend, "client": client,
        "ops_per_call": OPS_PER_CALL, "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "server_version": env.db.capabilities.server_version,
    })
    return benchmark(env.batch(env.clients[client], method))


@pytest.mark.parametrize(("backend", "client"), CASES)
def test_aio_point_select(benchmark: Any, aio_envs: Callable[[str], Env], backend: str,
                          client: str) -> None:
    row = bench(benchmark, "point_select", aio_envs(backend), client, "point")
    assert row["id"] == 1 + (OPS_PER_CALL - 1) % N_ROWS
    assert row["doc"]["i"] == row["id"] - 1


@pytest.mark.parametrize(("backend", "client"), CASES)
def test_aio_read_then_write(benchmark: Any, aio_envs: Callable[[str], Env], backend: str,
                             client: str) -> None:
    env = aio_envs(backend)
    impl = env.clients[client]
    before, writes = counter_total(env.db), impl.writes
    bench(benchmark, "read_then_write_tx", env, client, "read_write")
    assert impl.writes - writes >= OPS_PER_CALL
    assert counter_total(env.db) - before == impl.writes - writes  # none lost
