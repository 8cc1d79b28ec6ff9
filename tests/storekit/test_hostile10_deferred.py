"""Held-back statements psycopg refuses to send (a NUL or a lone surrogate in a value, an
interruption while the pipeline is being filled) must not let part of what was held back
commit. The statements queued before the refused one still run at the pipeline's Sync:
without BEGIN (the async read-committed transaction whose statements were all held back
to COMMIT) PostgreSQL's implicit transaction committed them there, and with BEGIN a caller
that caught the error committed them while the writes after it were silently dropped."""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Iterator
from types import CodeType, FrameType
from typing import Any

import psycopg
import pytest

import storekit
from storekit import aio

pytestmark = [pytest.mark.postgres]
BAD_VALUES = ["b\x00", "b\udc00"]  # psycopg refuses both before sending anything


class Interrupt(Exception):
    """Stands for a signal handler's exception, raised while a value is dumped."""


@contextlib.contextmanager
def interrupted_at_call(code: CodeType, n: int) -> Iterator[None]:
    """Interrupt raised at the n-th entry of code (the queuing of the n-th statement)."""
    calls = [0]

    def trace(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code is code:
            calls[0] += 1
            if calls[0] == n:
                raise Interrupt

    sys.settrace(trace)  # type: ignore[arg-type]
    try:
        yield
    finally:
        sys.settrace(None)


@pytest.fixture
def pg(storekit_postgres_url: str) -> Iterator[storekit.Database]:
    with storekit.create_database(storekit_postgres_url) as db:
        yield db


@pytest.fixture
def table(pg: storekit.Database) -> Iterator[str]:
    name = f"refused_{uuid.uuid4().hex[:8]}"
    pg.exec(f"CREATE TABLE {name} (id int PRIMARY KEY, v text)")
    yield name
    pg.exec(f"DROP TABLE {name}")


def ids(db: storekit.Database, table: str) -> list[int]:
    return [r["id"] for r in db.all(f"SELECT id FROM {table} ORDER BY id")]


@pytest.mark.parametrize("bad", BAD_VALUES, ids=["nul", "surrogate"])
def test_a_refused_held_back_write_caught_cannot_commit_the_others(
        pg: storekit.Database, table: str, bad: str) -> None:
    with pytest.raises(storekit.StoreError) as at_commit, pg.transaction() as tx:
        tx.run_deferred(f"INSERT INTO {table} VALUES (1, 'a')")
        tx.run_deferred(f"INSERT INTO {table} VALUES (2, ?)", (bad,))
        tx.run_deferred(f"INSERT INTO {table} VALUES (3, 'c')")
        with pytest.raises(storekit.ProgrammingError) as caught:
            tx.get("SELECT 1 AS x")
        assert caught.value.__cause__ is not None
    assert isinstance(at_commit.value.__cause__, storekit.ProgrammingError)
    assert ids(pg, table) == []
    pg.run(f"INSERT INTO {table} VALUES (9, 'z')")  # the pooled connection is clean
    assert ids(pg, table) == [9]


def test_a_refused_team_scope_leaves_no_unscoped_transaction(pg: storekit.Database) -> None:
    """The scope's set_config is held back with BEGIN: if psycopg refuses the team id, the
    transaction must not go on without the scope."""
    with pytest.raises(storekit.StoreError), pg.scope(team_id="a\x00b") as tx:
        with pytest.raises(storekit.ProgrammingError):
            tx.get("SELECT 1 AS x")
        tx.get("SELECT current_setting('app.team_id', true) AS s")


def test_a_savepoint_undoes_a_refused_write_and_the_transaction_commits(
        pg: storekit.Database, table: str) -> None:
    with pg.transaction() as tx:
        tx.run(f"INSERT INTO {table} VALUES (1, 'a')")
        with pytest.raises(storekit.ProgrammingError), pg.transaction() as inner:
            inner.run_deferred(f"INSERT INTO {table} VALUES (2, 'b')")
            inner.run_deferred(f"INSERT INTO {table} VALUES (3, ?)", ("c\x00",))
            inner.get("SELECT 1 AS x")
        tx.run_deferred(f"INSERT INTO {table} VALUES (4, 'd')")
    assert ids(pg, table) == [1, 4]


def test_an_interruption_while_queuing_cannot_commit_half(pg: storekit.Database,
                                                          table: str) -> None:
    with pytest.raises(storekit.StoreError), pg.transaction() as tx:
        tx.run_deferred(f"INSERT INTO {table} VALUES (1, 'a')")
        tx.run_deferred(f"INSERT INTO {table} VALUES (2, 'b')")
        tx.run_deferred(f"INSERT INTO {table} VALUES (3, 'c')")
        # BEGIN, 1 and 2 are queued by conn.execute: interrupted as 2 is queued
        with pytest.raises(Interrupt), interrupted_at_call(psycopg.Connection.execute.__code__, 3):
            tx.get("SELECT 1 AS x")
    assert ids(pg, table) == []
    pg.run(f"INSERT INTO {table} VALUES (9, 'z')")
    assert ids(pg, table) == [9]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.parametrize("bad", [*BAD_VALUES, "interrupt"], ids=["nul", "surrogate", "interrupt"])
@pytest.mark.parametrize("isolation", ["read committed", "serializable"])
async def test_async_a_refused_held_back_write_commits_nothing(
        storekit_postgres_url: str, bad: str, isolation: str) -> None:
    """Read committed with every write held back to COMMIT runs without BEGIN: the
    writes queued before the refused one committed at the Sync, and the caller saw an
    error (a bare UnicodeEncodeError for a lone surrogate)."""
    name = f"refused_{uuid.uuid4().hex[:8]}"
    async with await aio.create_database(storekit_postgres_url) as db:
        await db.exec(f"CREATE TABLE {name} (id int PRIMARY KEY, v text)")
        try:
            interrupt = bad == "interrupt"
            # Queued by conn.execute at COMMIT: BEGIN (read committed leaves it out), 1, 2.
            at = 2 if isolation == "read committed" else 3
            code = psycopg.AsyncConnection.execute.__code__
            with pytest.raises(Interrupt if interrupt else storekit.ProgrammingError), \
                    interrupted_at_call(code, at if interrupt else 0):
                async with db.transaction(isolation=isolation) as tx:
                    await tx.run_deferred(f"INSERT INTO {name} VALUES (1, 'a')")
                    await tx.run_deferred(f"INSERT INTO {name} VALUES (2, ?)",
                                          ("b" if interrupt else bad,))
                    await tx.run_deferred(f"INSERT INTO {name} VALUES (3, 'c')")
            assert await db.all(f"SELECT id FROM {name}") == []
            await db.run(f"INSERT INTO {name} VALUES (9, 'z')")
            assert await db.all(f"SELECT id FROM {name}") == [{"id": 9}]
        finally:
            await db.exec(f"DROP TABLE {name}")
