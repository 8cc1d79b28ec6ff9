"""Session state set by one client through a transaction pooler must not reach another.

PgBouncer (transaction mode) hands a server connection to whichever client runs the next
transaction and runs no reset query, so a plain SET that commits (in exec(), run(), or a
transaction) would change every client that later gets that server connection. The test
PgBouncer keeps few server connections, so the clients below share them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from storekit import Database, PoolOptions, create_database

pytestmark = pytest.mark.postgres
POOLED = PoolOptions(pooler="transaction", max_size=4)
# settings a client could change and another would then run under
PROBES = {"search_path": "pg_temp_nowhere", "lock_timeout": "7s",
          "statement_timeout": "9s", "application_name": "leaked"}


@pytest.fixture
def pair(storekit_pgbouncer_url: str) -> Iterator[tuple[Database, Database]]:
    a = create_database(storekit_pgbouncer_url, pool=POOLED)
    b = create_database(storekit_pgbouncer_url, pool=POOLED)
    yield a, b
    a.close()
    b.close()


def _seen_by(db: Database, name: str) -> set[str]:
    # many statements, so that every server connection of the pooler is seen
    return {str(db.get(f"SELECT current_setting('{name}') AS v")["v"])  # type: ignore[index]
            for _ in range(40)}


@pytest.mark.parametrize("how", ["exec", "run", "atomic"])
@pytest.mark.parametrize("name", sorted(PROBES))
def test_set_does_not_leak_to_other_clients(pair: tuple[Database, Database], how: str,
                                            name: str) -> None:
    a, b = pair
    before = _seen_by(b, name)
    statement = f"SET {name} = '{PROBES[name]}'"
    for _ in range(8):
        if how == "exec":
            a.exec(statement)
        elif how == "run":
            a.run(statement)
        else:
            a.atomic(lambda tx: tx.run(statement))
    assert _seen_by(b, name) == before
    assert _seen_by(a, name) == before  # nor to the same client's later statements


def test_exec_still_runs_what_a_transaction_block_refuses(pair: tuple[Database, Database]
                                                          ) -> None:
    a, _ = pair
    a.exec("CREATE TABLE v (x int)")
    a.exec("VACUUM v")
    a.exec("CREATE INDEX CONCURRENTLY v_x ON v (x)")
    a.exec("INSERT INTO v VALUES (1) -- a trailing comment")
    assert a.get("SELECT count(*) AS n FROM v") == {"n": 1}


def test_read_only_transactions_still_commit(pair: tuple[Database, Database]) -> None:
    a, _ = pair
    with a.transaction(readonly=True) as tx:
        assert tx.get("SELECT 1 AS one") == {"one": 1}


@pytest.mark.parametrize("how", ["exec", "run", "atomic"])
def test_async_set_does_not_leak(storekit_pgbouncer_url: str, how: str) -> None:
    import asyncio

    from storekit.aio import create_database as connect

    async def main() -> set[str]:
        a = await connect(storekit_pgbouncer_url, pool=POOLED)
        b = await connect(storekit_pgbouncer_url, pool=POOLED)
        try:
            statement = "SET application_name = 'leaked'"
            for _ in range(8):
                if how == "exec":
                    await a.exec(statement)
                elif how == "run":
                    await a.run(statement)
                else:
                    async def fn(tx: Any) -> None:
                        await tx.run(statement)
                    await a.atomic(fn)
            seen = set()
            for db in (a, b):
                for _ in range(40):
                    row = await db.get("SELECT current_setting('application_name') AS v")
                    seen.add(str(row["v"]))  # type: ignore[index]
            return seen
        finally:
            await a.close()
            await b.close()

    assert "leaked" not in asyncio.run(main())
