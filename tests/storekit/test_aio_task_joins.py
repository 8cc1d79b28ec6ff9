"""Which transaction an AsyncDatabase call joins is decided by the task that awaits it:
a coroutine made inside a transaction and run as a task of its own
(asyncio.create_task(db.get(...))) works on its own connection, as another thread does in
the sync API, and does not see the transaction's uncommitted rows."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from storekit import aio


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'joins.db'}"
        return
    from storekit.testing import isolated_schema

    with isolated_schema(request.getfixturevalue("storekit_postgres_url"),
                         prefix="aiojoins") as u:
        yield u


def test_a_task_of_its_own_does_not_join_the_transaction(url: str) -> None:
    async def main() -> tuple[int, int, int]:
        async with await aio.create_database(url) as db:
            await db.exec("CREATE TABLE t (id integer PRIMARY KEY)")
            async with db.transaction() as tx:
                await tx.run("INSERT INTO t (id) VALUES (1)")
                inside = await db.get("SELECT count(*) AS n FROM t")
                outside = await asyncio.create_task(db.get("SELECT count(*) AS n FROM t"))
                rows = await asyncio.create_task(db.all("SELECT id FROM t"))
            assert inside is not None
            assert outside is not None
            return inside["n"], outside["n"], len(rows)

    assert asyncio.run(main()) == (1, 0, 0)
