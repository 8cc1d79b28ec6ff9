"""Clients for the adapter-overhead suite: storekit, the raw driver, SQLAlchemy Core text().

All three talk to the same database, seeded once per backend, and run the same SQL. The raw
clients are written the way the driver's documentation shows: sqlite3 with WAL, NORMAL and
explicit BEGIN IMMEDIATE; psycopg through psycopg_pool with autocommit and dict rows.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import storekit
from bench.harness.corpus import Corpus
from storekit.schema import Column, Index, SearchSpec, Table

N_ROWS = 1_000
N_BIG = int(os.environ.get("STOREKIT_MICRO_BIG", "100000"))
N_MESSAGES = int(os.environ.get("STOREKIT_MICRO_MESSAGES", "10000"))
ITEMS = Table("items", [Column("id", "id"), Column("name", "text"), Column("n", "integer"),
                        Column("doc", "json")],
              indexes=[Index(json_path=("doc", "$.model"))])
BIG = Table("big", [Column("id", "id"), Column("n", "integer"), Column("label", "text")])
CHAT = Table("chat", [Column("id", "id"), Column("content", "text")],
             search=SearchSpec(["content"]))
SINK = Table("sink", [Column("id", "id"), Column("name", "text"), Column("n", "integer")])


def seed(db: storekit.Database) -> None:
    for t in (ITEMS, BIG, CHAT, SINK):
        db.create_table(t)
    db.run_many("INSERT INTO items (name, n, doc) VALUES (?, ?, ?)",
                [(f"item{i}", i, {"model": f"m{i % 50}", "tag": f"t{i % 97}", "i": i})
                 for i in range(N_ROWS)])
    db.run_many("INSERT INTO big (n, label) VALUES (?, ?)",
                [(i, f"row {i}") for i in range(N_BIG)])
    corpus = Corpus(seed=3)
    db.run_many("INSERT INTO chat (content) VALUES (?)",
                [(m,) for m in corpus.messages(N_MESSAGES)])
    if db.backend == "postgres":
        db.exec("ANALYZE")


class Backend:
    """The SQL of each operation for one backend, in storekit's ? form."""

    def __init__(self, name: str, url: str, db: storekit.Database) -> None:
        self.name = name
        self.url = url
        self.db = db
        d = db.dialect
        self.sql = {
            "point": "SELECT id, name, n, doc FROM items WHERE id = ?",
            "insert": "INSERT INTO sink (name, n) VALUES (?, ?)",
            "select1000": "SELECT id, name, n FROM items",
            "iterate": "SELECT id, n, label FROM big",
            "json_index": f"SELECT id FROM items WHERE {d.json_get('doc', '$.model')} = ?",
            "json_noindex": f"SELECT id FROM items WHERE {d.json_get('doc', '$.tag')} = ?",
        }
        search_sql, _ = db.search_sql("chat", "deploy", limit=20)
        assert search_sql is not None
        self.sql["search"] = search_sql
        self.search_params = lambda q: db.search_sql("chat", q, limit=20)[1]


def to_psycopg(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


def to_named(sql: str) -> tuple[str, list[str]]:
    names: list[str] = []

    def repl(_: re.Match[str]) -> str:
        names.append(f"p{len(names)}")
        return f":{names[-1]}"

    return re.sub(r"\?", repl, sql), names


class Impl:
    """One client. Each method does one benchmarked operation and returns what it read."""

    name = "?"

    def __init__(self, backend: Backend) -> None:
        self.b = backend

    def close(self) -> None:
        pass


class StorekitImpl(Impl):
    name = "storekit"

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)
        self.db = storekit.create_database(backend.url)
        self.s = backend.sql

    def point(self, i: int) -> Any:
        return self.db.get(self.s["point"], (i,))

    def insert(self, i: int) -> Any:
        return self.db.run(self.s["insert"], ("x", i))

    def insert100(self, i: int) -> Any:
        with self.db.transaction() as tx:
            for k in range(100):
                tx.run(self.s["insert"], ("y", k))

    def run_many(self, rows: Sequence[tuple[str, int]]) -> Any:
        return self.db.run_many(self.s["insert"], rows)

    def select1000(self) -> Any:
        return self.db.all(self.s["select1000"])

    def iterate(self) -> int:
        return sum(1 for _ in self.db.iter(self.s["iterate"]))

    def json_lookup(self, key: str, value: str) -> Any:
        return self.db.all(self.s[key], (value,))

    def search(self, q: str) -> Any:
        return self.db.search("chat", q, limit=20)

    def empty_tx(self) -> None:
        with self.db.transaction():
            pass

    def close(self) -> None:
        self.db.close()


class RawSqliteImpl(Impl):
    name = "raw"

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)
        path = storekit.DatabaseURL.parse(backend.url).database
        # Declared-type converters, as a careful sqlite3 user would register for JSON.
        sqlite3.register_converter("JSON", json.loads)
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                    detect_types=sqlite3.PARSE_DECLTYPES)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                       "busy_timeout=5000"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.s = backend.sql

    def _dicts(self, cur: sqlite3.Cursor) -> list[dict[str, Any]]:
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def point(self, i: int) -> Any:
        cur = self.conn.execute(self.s["point"], (i,))
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row, strict=True))

    def insert(self, i: int) -> Any:
        return self.conn.execute(self.s["insert"], ("x", i)).lastrowid

    def insert100(self, i: int) -> Any:
        self.conn.execute("BEGIN IMMEDIATE")
        for k in range(100):
            self.conn.execute(self.s["insert"], ("y", k))
        self.conn.execute("COMMIT")

    def run_many(self, rows: Sequence[tuple[str, int]]) -> Any:
        self.conn.execute("BEGIN IMMEDIATE")
        count = self.conn.executemany(self.s["insert"], rows).rowcount
        self.conn.execute("COMMIT")
        return count

    def select1000(self) -> Any:
        return self._dicts(self.conn.execute(self.s["select1000"]))

    def iterate(self) -> int:
        cur = self.conn.execute(self.s["iterate"])
        names = [d[0] for d in cur.description]
        return sum(1 for row in cur if dict(zip(names, row, strict=True)))

    def json_lookup(self, key: str, value: str) -> Any:
        return self._dicts(self.conn.execute(self.s[key], (value,)))

    def search(self, q: str) -> Any:
        return self._dicts(self.conn.execute(self.s["search"], self.b.search_params(q)))

    def empty_tx(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


class RawPostgresImpl(Impl):
    name = "raw"

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)
        import psycopg_pool
        from psycopg.rows import dict_row

        conninfo = storekit.DatabaseURL.parse(backend.url).conninfo()
        self.pool = psycopg_pool.ConnectionPool(
            conninfo, min_size=1, max_size=4, open=True,
            kwargs={"autocommit": True, "row_factory": dict_row})
        self.s = {k: to_psycopg(v) for k, v in backend.sql.items()}

    def point(self, i: int) -> Any:
        with self.pool.connection() as conn:
            return conn.execute(self.s["point"], (i,)).fetchone()

    def insert(self, i: int) -> Any:
        with self.pool.connection() as conn:
            return conn.execute(self.s["insert"], ("x", i)).rowcount

    def insert100(self, i: int) -> Any:
        with self.pool.connection() as conn, conn.transaction():
            for k in range(100):
                conn.execute(self.s["insert"], ("y", k))

    def run_many(self, rows: Sequence[tuple[str, int]]) -> Any:
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(self.s["insert"], rows)
            return cur.rowcount

    def select1000(self) -> Any:
        with self.pool.connection() as conn:
            return conn.execute(self.s["select1000"]).fetchall()

    def iterate(self) -> int:
        with self.pool.connection() as conn, conn.transaction(), \
                conn.cursor(name="raw_iter") as cur:
            cur.itersize = 2000
            cur.execute(self.s["iterate"])
            return sum(1 for _ in cur)

    def json_lookup(self, key: str, value: str) -> Any:
        with self.pool.connection() as conn:
            return conn.execute(self.s[key], (value,)).fetchall()

    def search(self, q: str) -> Any:
        with self.pool.connection() as conn:
            return conn.execute(self.s["search"], self.b.search_params(q)).fetchall()

    def empty_tx(self) -> None:
        with self.pool.connection() as conn, conn.transaction():
            pass

    def close(self) -> None:
        self.pool.close()


class SQLAlchemyImpl(Impl):
    name = "sqlalchemy"

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)
        import sqlalchemy as sa

        self.sa = sa
        u = storekit.DatabaseURL.parse(backend.url)
        if backend.name == "sqlite":
            self.engine = sa.create_engine(f"sqlite:///{u.database}")

            @sa.event.listens_for(self.engine, "connect")
            def pragmas(conn: Any, _: Any) -> None:
                for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000"):
                    conn.execute(f"PRAGMA {pragma}")
        else:
            self.engine = sa.create_engine(
                u.replace(scheme="postgresql+psycopg").render(mask=False),
                pool_size=4, max_overflow=0)
        self.s = {k: to_named(v) for k, v in backend.sql.items()}
        self.t = {k: sa.text(sql) for k, (sql, _) in self.s.items()}

    def _params(self, key: str, values: Sequence[Any]) -> dict[str, Any]:
        return dict(zip(self.s[key][1], values, strict=True))

    def _rows(self, key: str, values: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            result = conn.execute(self.t[key], self._params(key, values))
            return [dict(r._mapping) for r in result]

    def point(self, i: int) -> Any:
        with self.engine.connect() as conn:
            row = conn.execute(self.t["point"], self._params("point", (i,))).first()
            return dict(row._mapping) if row else None

    def insert(self, i: int) -> Any:
        with self.engine.begin() as conn:
            return conn.execute(self.t["insert"], self._params("insert", ("x", i))).rowcount

    def insert100(self, i: int) -> Any:
        with self.engine.begin() as conn:
            for k in range(100):
                conn.execute(self.t["insert"], self._params("insert", ("y", k)))

    def run_many(self, rows: Sequence[tuple[str, int]]) -> Any:
        with self.engine.begin() as conn:
            return conn.execute(self.t["insert"],
                                [self._params("insert", r) for r in rows]).rowcount

    def select1000(self) -> Any:
        return self._rows("select1000")

    def iterate(self) -> int:
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=2000).execute(
                self.t["iterate"])
            return sum(1 for r in result if r._mapping)

    def json_lookup(self, key: str, value: str) -> Any:
        return self._rows(key, (value,))

    def search(self, q: str) -> Any:
        return self._rows("search", self.b.search_params(q))

    def empty_tx(self) -> None:
        with self.engine.begin():
            pass

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def micro_backend(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("micro") / "micro.db"
        url = f"sqlite:///{path}"
        with storekit.create_database(url) as db:
            seed(db)
            yield Backend("sqlite", url, db)
        return
    from storekit.testing import isolated_schema

    base = request.getfixturevalue("storekit_postgres_url")
    with isolated_schema(base, prefix="micro") as url, storekit.create_database(url) as db:
        seed(db)
        yield Backend("postgres", url, db)


IMPLS = {"storekit": StorekitImpl, "raw": None, "sqlalchemy": SQLAlchemyImpl}


@pytest.fixture(scope="session")
def clients(micro_backend: Backend) -> Iterator[dict[str, Impl]]:
    raw: type[Impl] = RawSqliteImpl if micro_backend.name == "sqlite" else RawPostgresImpl
    made = {"storekit": StorekitImpl(micro_backend), "raw": raw(micro_backend),
            "sqlalchemy": SQLAlchemyImpl(micro_backend)}
    yield made
    for impl in made.values():
        impl.close()
