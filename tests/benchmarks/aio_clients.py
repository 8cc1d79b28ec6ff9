"""Clients for the storekit.aio benchmarks: the same two operations, written the way each
library's documentation shows.

- point: one row by primary key, as a dict.
- read_write: a transaction that reads a counter and writes it back plus one (the agent
  step's shape), serializable where the library lets one say so, as storekit is.

SQLite: storekit.aio, the sync storekit API, aiosqlite (execute_fetchall, its one-hop
call; BEGIN IMMEDIATE, WAL, NORMAL). PostgreSQL: storekit.aio, one psycopg AsyncConnection
(autocommit, dict rows, transaction() at SERIALIZABLE), SQLAlchemy's asyncio engine with
text() on psycopg. Every client counts the writes it made, so a test can check the
counters lost none.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import storekit
from storekit import aio
from storekit.schema import Column, Table

COUNTER = Table("aio_counter", [Column("id", "integer", primary_key=True),
                                Column("n", "integer", nullable=False)])
N_COUNTERS = 64
POINT = "SELECT id, name, n, doc FROM items WHERE id = ?"
READ = "SELECT n FROM aio_counter WHERE id = ?"
WRITE = "UPDATE aio_counter SET n = ? WHERE id = ?"
SQLITE_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                  "busy_timeout=5000")


def seed_counters(db: storekit.Database) -> None:
    db.create_table(COUNTER)
    db.run_many(db.dialect.insert_or_ignore("aio_counter", ["id", "n"]),
                [{"id": i, "n": 0} for i in range(1, N_COUNTERS + 1)])


def counter_total(db: storekit.Database) -> int:
    row = db.get("SELECT COALESCE(SUM(n), 0) AS s FROM aio_counter")
    assert row is not None
    return int(row["s"])


def key(i: int) -> int:
    return 1 + i % N_COUNTERS


def item(i: int) -> int:
    return 1 + i % 1000  # the items table's ids (conftest.N_ROWS rows)


def pg(sql: str) -> str:
    return sql.replace("?", "%s")


class Client:
    name = "?"
    is_async = True
    writes = 0

    async def open(self, url: str) -> None: ...
    async def point(self, i: int) -> Any: ...
    async def read_write(self, i: int) -> None: ...
    async def close(self) -> None: ...


class StorekitAio(Client):
    name = "storekit.aio"

    async def open(self, url: str) -> None:
        self.db = await aio.create_database(url)

    async def point(self, i: int) -> Any:
        return await self.db.get(POINT, (item(i),))

    async def read_write(self, i: int) -> None:
        async with self.db.transaction() as tx:
            row = await tx.get(READ, (key(i),))
            assert row is not None
            await tx.run(WRITE, (row["n"] + 1, key(i)))
        self.writes += 1

    async def close(self) -> None:
        await self.db.close()


class StorekitSync(Client):
    """The sync API, called directly (no event loop): the figure the issue's ratios use."""

    name = "storekit"
    is_async = False

    def open_sync(self, url: str) -> None:
        self.db = storekit.create_database(url)

    def point_sync(self, i: int) -> Any:
        return self.db.get(POINT, (item(i),))

    def read_write_sync(self, i: int) -> None:
        with self.db.transaction() as tx:
            row = tx.get(READ, (key(i),))
            assert row is not None
            tx.run(WRITE, (row["n"] + 1, key(i)))
        self.writes += 1

    async def close(self) -> None:
        self.db.close()


class Aiosqlite(Client):
    name = "aiosqlite"

    async def open(self, url: str) -> None:
        import aiosqlite

        # Declared-type converters, as the raw sqlite3 client registers for JSON.
        sqlite3.register_converter("JSON", json.loads)
        path = storekit.DatabaseURL.parse(url).database
        self.conn = await aiosqlite.connect(path, isolation_level=None,
                                            detect_types=sqlite3.PARSE_DECLTYPES)
        self.conn.row_factory = sqlite3.Row
        for pragma in SQLITE_PRAGMAS:
            await self.conn.execute(f"PRAGMA {pragma}")

    async def point(self, i: int) -> Any:
        rows = await self.conn.execute_fetchall(POINT, (item(i),))
        return dict(next(iter(rows)))

    async def read_write(self, i: int) -> None:
        await self.conn.execute("BEGIN IMMEDIATE")
        try:
            rows = list(await self.conn.execute_fetchall(READ, (key(i),)))
            await self.conn.execute(WRITE, (rows[0]["n"] + 1, key(i)))
            await self.conn.execute("COMMIT")
        except BaseException:
            await self.conn.execute("ROLLBACK")
            raise
        self.writes += 1

    async def close(self) -> None:
        await self.conn.close()


class PsycopgAsync(Client):
    name = "psycopg"

    async def open(self, url: str) -> None:
        import psycopg
        from psycopg.rows import dict_row

        self.conn = await psycopg.AsyncConnection.connect(
            storekit.DatabaseURL.parse(url).conninfo(), autocommit=True, row_factory=dict_row)
        await self.conn.set_isolation_level(psycopg.IsolationLevel.SERIALIZABLE)  # storekit's

    async def point(self, i: int) -> Any:
        cur = await self.conn.execute(pg(POINT), (item(i),))
        return await cur.fetchone()

    async def read_write(self, i: int) -> None:
        async with self.conn.transaction():
            cur = await self.conn.execute(pg(READ), (key(i),))
            row = await cur.fetchone()
            assert row is not None
            await self.conn.execute(pg(WRITE), (row["n"] + 1, key(i)))
        self.writes += 1

    async def close(self) -> None:
        await self.conn.close()


class SQLAlchemyAsync(Client):
    name = "sqlalchemy"

    async def open(self, url: str) -> None:
        import sqlalchemy as sa
        from sqlalchemy.ext.asyncio import create_async_engine

        u = storekit.DatabaseURL.parse(url)
        self.engine = create_async_engine(
            u.replace(scheme="postgresql+psycopg").render(mask=False), pool_size=4,
            max_overflow=0, isolation_level="SERIALIZABLE")
        self.point_sql = sa.text(POINT.replace("?", ":i"))
        self.read_sql = sa.text(READ.replace("?", ":i"))
        self.write_sql = sa.text("UPDATE aio_counter SET n = :n WHERE id = :i")

    async def point(self, i: int) -> Any:
        async with self.engine.connect() as conn:
            row = (await conn.execute(self.point_sql, {"i": item(i)})).first()
            return dict(row._mapping) if row else None

    async def read_write(self, i: int) -> None:
        async with self.engine.begin() as conn:
            n = (await conn.execute(self.read_sql, {"i": key(i)})).scalar_one()
            await conn.execute(self.write_sql, {"n": n + 1, "i": key(i)})
        self.writes += 1

    async def close(self) -> None:
        await self.engine.dispose()


CLIENTS: dict[str, dict[str, type[Client]]] = {
    "sqlite": {"storekit.aio": StorekitAio, "storekit": StorekitSync, "aiosqlite": Aiosqlite},
    "postgres": {"storekit.aio": StorekitAio, "psycopg": PsycopgAsync,
                 "sqlalchemy": SQLAlchemyAsync},
}
