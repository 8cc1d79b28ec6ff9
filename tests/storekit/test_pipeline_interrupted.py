"""An exception raised into a pipeline's exit (a signal handler, a task's cancellation)
reaches the caller as itself, not as a database error, and leaves nothing behind.

psycopg's pipeline exit, when interrupted, fails its cleanup with "cannot exit pipeline
mode while busy", and that error replaced the interruption: a Ctrl-C or a cancelled task
surfaced as DatabaseUnavailable. The interruption is raised here at the entry of
storekit's exit sequence (pipeline._exit_gen, which psycopg runs inside its exit), for a
transaction's first statement, a commit with held-back writes, and a pooled autocommit
statement (sent as one pipeline behind PgBouncer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import storekit
from storekit import PoolOptions, aio
from storekit.backends.postgres import pipeline
from storekit.testing import pgbouncer_server, pooled_database
from tests.storekit.test_signal_storm import interrupted_at, raising_handler

pytestmark = [pytest.mark.postgres]
EXIT_GEN = pipeline._exit_gen.__code__


@pytest.fixture
def pg(storekit_postgres_url: str) -> Iterator[storekit.Database]:
    with storekit.create_database(storekit_postgres_url) as db:
        db.exec("CREATE TABLE IF NOT EXISTS interrupted (k int)")
        db.run("DELETE FROM interrupted")
        yield db


def _first_statement(db: storekit.Database) -> None:
    with db.transaction() as tx:
        tx.run("INSERT INTO interrupted VALUES (1)")


def _held_back_commit(db: storekit.Database) -> None:
    with db.transaction() as tx:
        tx.get("SELECT 1 AS x")
        tx.run_deferred("INSERT INTO interrupted VALUES (2)")


@pytest.mark.parametrize("write", [_first_statement, _held_back_commit])
def test_a_transaction_interrupted_in_its_pipeline(pg: storekit.Database,
                                                   write: Callable[[storekit.Database], None]
                                                   ) -> None:
    with raising_handler():
        assert interrupted_at(EXIT_GEN, lambda: write(pg))  # Interrupt, nothing else
    assert pg._local.tx is None
    write(pg)  # the next one works, on a good connection
    rows = pg.all("SELECT k FROM interrupted")
    assert len(rows) in (1, 2)  # the interrupted one may or may not have committed


def test_a_pooled_statement_interrupted_in_its_pipeline(storekit_postgres_url: str) -> None:
    with pgbouncer_server(storekit_postgres_url, pool_size=2) as bouncer, \
            pooled_database(bouncer) as url, \
            storekit.create_database(url, pool=PoolOptions(pooler="transaction",
                                                           max_size=1)) as db:
        db.exec("CREATE TABLE IF NOT EXISTS interrupted (k int)")
        with raising_handler():
            assert interrupted_at(EXIT_GEN, lambda: db.run("INSERT INTO interrupted VALUES (3)"))
        db.run("INSERT INTO interrupted VALUES (4)")  # the pool replaced the connection
        assert {r["k"] for r in db.all("SELECT k FROM interrupted")} >= {4}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_task_cancelled_in_its_pipeline_sees_the_cancellation(
        storekit_postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cancellation arrives inside the pipeline's exit: the task ends cancelled."""
    async with await aio.create_database(storekit_postgres_url) as db:
        await db.exec("CREATE TABLE IF NOT EXISTS interrupted (k int)")
        cancelled: list[bool] = []
        real = pipeline._exit_gen

        def exit_gen(self: Any) -> Any:
            if not cancelled:
                cancelled.append(True)
                raise asyncio.CancelledError  # as a cancellation delivered at this await
            return real(self)

        monkeypatch.setattr(pipeline.AsyncPipeline, "_exit_gen", exit_gen)

        async def write() -> None:
            async with db.transaction() as tx:
                await tx.run("INSERT INTO interrupted VALUES (5)")

        with pytest.raises(asyncio.CancelledError):
            await write()
        await write()  # a good connection next
        assert await db.get("SELECT count(*) AS n FROM interrupted WHERE k = 5") == {"n": 1}
        await db.exec("DROP TABLE interrupted")
