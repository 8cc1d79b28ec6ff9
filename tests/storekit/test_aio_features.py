"""storekit.aio's schema, search, row security and migration: the sync suite's behaviours
(test_schema, test_search, test_rls, test_migrate), awaited, on both backends. The tables,
queries and hostile inputs are the sync tests' own, imported, so the two cannot drift."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import storekit
from bench.harness.corpus import Corpus
from storekit import aio
from storekit.aio_features import create_app_role
from storekit.dialect import dialect_for
from storekit.schema import Column, Index, Table
from storekit.url import DatabaseURL
from tests.storekit.test_aio_loop import Ticker
from tests.storekit.test_rls import AGENTS as TEAM_AGENTS
from tests.storekit.test_schema import AGENTS, RESULTS
from tests.storekit.test_search import CHAT, HOSTILE, QUERIES

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def adb(astore: aio.AsyncDatabase) -> aio.AsyncDatabase:
    await astore.create_table(AGENTS)
    await astore.create_table(RESULTS)
    return astore


@pytest.fixture
async def chat(astore: aio.AsyncDatabase) -> aio.AsyncDatabase:
    await astore.create_table(CHAT)
    return astore


# Schema (test_schema.py).
async def test_same_definition_creates_and_introspects(adb: aio.AsyncDatabase) -> None:
    assert await adb.tables() == ["agents", "results"]
    cols = {c.name: c for c in await adb.columns("agents")}
    assert {n: cols[n].type for n in ("id", "config", "active", "created_at", "avatar")} == {
        "id": "id", "config": "json", "active": "boolean", "created_at": "timestamp",
        "avatar": "blob"}
    assert not cols["name"].nullable
    await adb.create_table(AGENTS)  # if_not_exists: a second call is harmless
    assert await adb.columns("nothing_here") == []


async def test_schema_matches_the_sync_api(adb: aio.AsyncDatabase) -> None:
    with storekit.create_database(adb.reveal_url()) as db:
        assert db.tables() == await adb.tables()
        assert db.columns("agents") == await adb.columns("agents")
        assert db.schema_sql(RESULTS) == adb.schema_sql(RESULTS)
    assert adb.dialect is dialect_for(adb.backend)


async def test_types_round_trip(adb: aio.AsyncDatabase) -> None:
    when = dt.datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=dt.timezone.utc)
    await adb.run(
        "INSERT INTO agents (name, config, active, score, runs, avatar, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        ("a", {"model": "m1", "tools": ["x"]}, False, 1.5, 2**40, b"\x00\x01", when))
    await adb.run("INSERT INTO agents (name) VALUES ('defaults')")
    row = await adb.get("SELECT * FROM agents WHERE name = 'a'")
    assert row is not None
    assert (row["config"], row["active"], row["score"], row["runs"]) == (
        {"model": "m1", "tools": ["x"]}, False, 1.5, 2**40)
    assert bytes(row["avatar"]) == b"\x00\x01"
    assert row["created_at"] == when
    defaults = await adb.get("SELECT active, runs, created_at FROM agents"
                             " WHERE name = 'defaults'")
    assert defaults is not None
    assert (defaults["active"], defaults["runs"]) == (True, 0)
    assert defaults["created_at"].utcoffset() == dt.timedelta(0)


async def test_json_paths_upsert_and_foreign_keys(adb: aio.AsyncDatabase) -> None:
    await adb.run_many("INSERT INTO agents (name, config) VALUES (?, ?)",
                       [(f"a{i}", {"model": f"m{i % 3}", "limits": {"tokens": i}})
                        for i in range(30)])
    d = adb.dialect
    rows = await adb.all(f"SELECT name FROM agents WHERE {d.json_get('config', '$.model')} = ?"
                         " ORDER BY id", ("m1",))
    assert [r["name"] for r in rows] == [f"a{i}" for i in range(30) if i % 3 == 1]
    sql = d.upsert("agents", ["name", "team_id"], conflict=("name",))
    await adb.run(sql, {"name": "x", "team_id": 1})
    await adb.run(sql, {"name": "x", "team_id": 2})
    assert await adb.get("SELECT team_id FROM agents WHERE name = 'x'") == {"team_id": 2}
    agent = (await adb.run("INSERT INTO agents (name) VALUES ('fk') RETURNING id")).last_id
    await adb.run("INSERT INTO results (agent_id, body) VALUES (?, 'x')", (agent,))
    with pytest.raises(storekit.ForeignKeyViolation) as info:
        await adb.run("INSERT INTO results (agent_id, body) VALUES (999, 'x')")
    assert info.value.__cause__ is not None
    await adb.run("DELETE FROM agents WHERE id = ?", (agent,))
    assert await adb.get("SELECT COUNT(*) AS c FROM results") == {"c": 0}
    with pytest.raises((storekit.CheckViolation, storekit.ProgrammingError)):
        await adb.run("INSERT INTO agents (name, config) VALUES ('bad', ?)", ("{not json",))


async def test_gin_index_is_postgres_only(astore: aio.AsyncDatabase) -> None:
    table = Table("docs", [Column("id", "id"), Column("body", "json")],
                  indexes=[Index(gin="body")])
    if astore.backend == "sqlite":
        with pytest.raises(storekit.CapabilityError, match="json_path"):
            await astore.create_table(table)
        assert "docs" not in await astore.tables()
        return
    await astore.create_table(table)
    await astore.run("INSERT INTO docs (body) VALUES (?)", ({"k": "v"},))
    assert await astore.get("SELECT id FROM docs WHERE body @> ?", ({"k": "v"},)) == {"id": 1}


@pytest.mark.parametrize(
    "name", ['x"; DROP TABLE agents; --', "a b", "x'--", "1abc", "", "a;b", "é"])
async def test_hostile_identifiers_are_rejected(adb: aio.AsyncDatabase, name: str) -> None:
    with pytest.raises(storekit.ProgrammingError, match="invalid"):
        await adb.drop_table(name)
    with pytest.raises(storekit.ProgrammingError, match="invalid"):
        await adb.columns(name)
    with pytest.raises(storekit.ProgrammingError, match="invalid"):
        await adb.enable_search(name, ["body"])
    if adb.backend == "postgres":  # SQLite refuses row security before any name
        with pytest.raises(storekit.ProgrammingError, match="invalid"):
            await adb.enable_row_security(name)
    assert await adb.tables() == ["agents", "results"]


async def test_wrong_argument_types_are_programming_errors(adb: aio.AsyncDatabase) -> None:
    calls: list[Any] = [
        lambda: adb.columns(5),
        lambda: adb.drop_table(None),
        lambda: adb.create_table("agents"),  # schema_statements refuses a non-Table
        lambda: adb.search("results", 5),
        lambda: adb.search("results", "x", limit="3"),
        lambda: adb.search("results", "x", columns="body"),
        lambda: adb.search_sql("results", "x", offset=-1),
    ]
    for call in calls:
        with pytest.raises(storekit.ProgrammingError):
            await call()
    with pytest.raises(storekit.ProgrammingError):
        adb.schema_sql("agents")  # type: ignore[arg-type]


async def test_reserved_words_are_quoted_and_drop_table(astore: aio.AsyncDatabase) -> None:
    table = Table("order", [Column("id", "id"), Column("user", "text"), Column("select", "json")])
    await astore.create_table(table)
    await astore.run('INSERT INTO "order" ("user", "select") VALUES (?, ?)', ("u", {"a": 1}))
    assert await astore.get('SELECT "user", "select" FROM "order"') == {
        "user": "u", "select": {"a": 1}}
    await astore.drop_table("order")
    assert "order" not in await astore.tables()
    await astore.drop_table("order")  # if_exists
    with pytest.raises(storekit.ProgrammingError):
        await astore.drop_table("order", if_exists=False)


async def test_create_table_joins_the_tasks_transaction(astore: aio.AsyncDatabase) -> None:
    with pytest.raises(RuntimeError):
        async with astore.transaction():
            await astore.create_table(CHAT)
            assert await astore.tables() == ["chat"]
            raise RuntimeError
    assert await astore.tables() == []  # rolled back with the transaction, search and all


async def test_tasks_creating_the_same_table_together_all_succeed(
        astore: aio.AsyncDatabase) -> None:
    await asyncio.gather(*(astore.create_table(AGENTS) for _ in range(8)))
    assert await astore.tables() == ["agents"]


# Search (test_search.py).
async def test_search_finds_what_the_sync_api_finds(chat: aio.AsyncDatabase) -> None:
    messages = [(f"agent{i % 5}", m) for i, m in enumerate(Corpus(seed=1).messages(300))]
    await chat.run_many("INSERT INTO chat (agent, content) VALUES (?, ?)", messages)
    queries = [*QUERIES, *(Corpus(seed=7).query() for _ in range(20))]
    with storekit.create_database(chat.reveal_url()) as db:
        for q in queries:
            assert await chat.search_sql("chat", q, limit=50) == db.search_sql(
                "chat", q, limit=50), q
            assert await chat.search("chat", q, limit=300) == db.search("chat", q, limit=300), q
    assert await chat.search("chat", "the") == []


async def test_rank_orders_results_and_paging(chat: aio.AsyncDatabase) -> None:
    await chat.run_many("INSERT INTO chat (agent, content) VALUES (?, ?)", [
        ("a", "deploy deploy deploy the server"), ("b", "deploy once"),
        ("c", "nothing relevant here")])
    rows = await chat.search("chat", "deploy")
    assert [r["agent"] for r in rows] == ["a", "b"]
    assert rows[0]["rank"] > rows[1]["rank"]
    assert [r["agent"] for r in await chat.search("chat", "deploy", limit=1, offset=1)] == ["b"]
    only = await chat.search("chat", "deploy", where="agent = ?", params=["b"],
                             columns=["agent"])
    assert [set(r) for r in only] == [{"agent", "rank"}]
    named = await chat.search("chat", "deploy", where="agent = :who", params={"who": "a"})
    assert [r["agent"] for r in named] == ["a"]


async def test_search_inside_a_transaction_sees_its_own_rows(chat: aio.AsyncDatabase) -> None:
    async with chat.transaction():
        await chat.run("INSERT INTO chat (agent, content) VALUES ('a', 'uncommitted words')")
        assert len(await chat.search("chat", "uncommitted")) == 1
        async with asyncio.timeout(30):  # another task does not see it (nor wait on it)
            other = await asyncio.create_task(chat.search("chat", "uncommitted"))
        assert other == []


async def test_updates_deletes_and_rebuild(chat: aio.AsyncDatabase) -> None:
    rid = (await chat.run("INSERT INTO chat (agent, content) VALUES ('a', 'alpha beta')"
                          " RETURNING id")).last_id
    assert [r["id"] for r in await chat.search("chat", "alpha")] == [rid]
    await chat.run("UPDATE chat SET content = 'gamma' WHERE id = ?", (rid,))
    assert await chat.search("chat", "alpha") == []
    assert [r["id"] for r in await chat.search("chat", "gamma")] == [rid]
    await chat.run("DELETE FROM chat WHERE id = ?", (rid,))
    await chat.rebuild_search("chat")
    assert await chat.search("chat", "gamma") == []


async def test_enable_search_on_existing_table_indexes_old_rows(
        astore: aio.AsyncDatabase) -> None:
    await astore.create_table(Table("notes", [Column("id", "id"), Column("body", "text")]))
    await astore.run("INSERT INTO notes (body) VALUES ('writing before search')")
    with pytest.raises(storekit.ProgrammingError):
        await astore.search("notes", "writes")  # not searchable yet
    await astore.enable_search("notes", ["body"])
    assert [r["body"] for r in await astore.search("notes", "writes")] == [
        "writing before search"]
    with pytest.raises(storekit.StoreError):
        await astore.enable_search("notes", ["body"], language="no_such_language")


@pytest.mark.parametrize("query", HOSTILE)
async def test_hostile_queries_never_raise(chat: aio.AsyncDatabase, query: str) -> None:
    await chat.run("INSERT INTO chat (agent, content) VALUES ('a', 'drop table chat near')")
    assert isinstance(await chat.search("chat", query), list)
    assert await chat.tables() == ["chat"]


async def test_arbitrary_text_never_raises(chat: aio.AsyncDatabase) -> None:
    # test_search runs this with hypothesis; its @given does not drive coroutines, so the
    # same kind of text comes from a seeded generator here.
    rng = random.Random(5)
    alphabet = 'ab "*-():^\'\\\x00é😀OR NEAR AND'
    for _ in range(150):
        query = "".join(rng.choice(alphabet) for _ in range(rng.randrange(40)))
        assert isinstance(await chat.search("chat", query), list), query


async def test_injection_through_names_fails_cleanly(chat: aio.AsyncDatabase) -> None:
    with pytest.raises(storekit.ProgrammingError, match="invalid"):
        await chat.search('chat"; DROP TABLE chat; --', "x")
    with pytest.raises(storekit.ProgrammingError, match="invalid"):
        await chat.search("chat", "x", columns=['content" FROM chat; --'])
    with pytest.raises(storekit.ProgrammingError, match="invalid"):
        await chat.enable_search("chat", ["content); DROP TABLE chat; --"])
    assert await chat.tables() == ["chat"]


# Row-level security (test_rls.py).
async def test_row_security_scopes(astore: aio.AsyncDatabase) -> None:
    if astore.backend != "postgres":
        with pytest.raises(storekit.CapabilityError):
            await astore.enable_row_security("agents")
        return
    await astore.create_table(TEAM_AGENTS)
    await astore.run_many("INSERT INTO agents (team_id, name) VALUES (?, ?)",
                          [(team, f"t{team}-a{i}") for team in (1, 2, 3) for i in range(5)])
    await astore.enable_row_security("agents")
    role = f"app_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12)
    await create_app_role(astore, role, password)
    url = astore.reveal_url().replace(username=role, password=password)
    try:
        async with await aio.create_database(url) as app:
            assert await app.all("SELECT * FROM agents") == []
            with pytest.raises(storekit.ProgrammingError, match="row-level security"):
                await app.run("INSERT INTO agents (team_id, name) VALUES (1, 'sneaky')")

            async def team_view(team: int) -> set[int]:
                async with app.scope(team_id=team) as tx:
                    await asyncio.sleep(0)  # the scopes interleave on the pool
                    return {r["team_id"] for r in await tx.all("SELECT team_id FROM agents")}

            views = await asyncio.gather(*(team_view(1 + i % 3) for i in range(12)))
            assert views == [{1 + i % 3} for i in range(12)]
            assert await app.all("SELECT * FROM agents") == []  # nothing left on the pool
            with pytest.raises(storekit.StoreError):
                await app.enable_row_security("agents")  # the app role does not own it
    finally:
        await astore.exec(f'DROP OWNED BY "{role}"; DROP ROLE "{role}"')


# Migration (test_migrate.py).
async def test_migrate_from_an_async_database(astore: aio.AsyncDatabase, tmp_path: Path,
                                              storekit_postgres_url: str) -> None:
    await astore.create_table(CHAT)
    await astore.run_many("INSERT INTO chat (agent, content) VALUES (?, ?)",
                          [(f"a{i}", f"deploy message {i}") for i in range(500)])
    other: Any
    if astore.backend == "sqlite":
        from storekit.testing import isolated_schema

        other_ctx = isolated_schema(storekit_postgres_url, prefix="aiomig")
        other = other_ctx.__enter__()
    else:
        other_ctx, other = None, f"sqlite:///{tmp_path / 'copy.db'}"
    try:
        seen: list[int] = []
        report = await aio.migrate(astore, other, progress=lambda t, done, n: seen.append(done))
        assert report.ok
        assert seen[-1] == 500
        assert await astore.get("SELECT count(*) AS n FROM chat") == {"n": 500}  # still open
        async with await aio.create_database(other) as copy:
            assert len(await copy.search("chat", "deploy", limit=1000)) == 500
    finally:
        if other_ctx is not None:
            other_ctx.__exit__(None, None, None)
    async with await aio.create_memory_database() as memory:
        with pytest.raises(storekit.ConfigurationError, match="in-memory"):
            await aio.migrate(memory, other)


# Errors and masking.
async def test_closed_database_and_masked_url(store_url: str) -> None:
    db = await aio.create_database(store_url)
    await db.close()
    for call in (db.tables(), db.create_table(CHAT), db.search("chat", "x"),
                 db.enable_search("chat", ["content"])):
        with pytest.raises(storekit.StoreError, match="closed") as info:
            await call
        password = DatabaseURL.parse(store_url).password
        assert not password or password not in str(info.value)


async def test_enable_search_over_many_rows_commits_without_blocking_the_loop(
        astore: aio.AsyncDatabase) -> None:
    # Building the index writes for a long time, much of it at COMMIT (FTS5 flushes its
    # pending terms then): an interrupt there would roll the whole transaction back.
    await astore.create_table(Table("notes", [Column("id", "id"), Column("body", "text")]))
    await astore.run_many("INSERT INTO notes (body) VALUES (?)",
                          [(m,) for m in Corpus(seed=2).messages(50_000)])
    async with Ticker() as ticker:
        started = time.monotonic()
        await astore.enable_search("notes", ["body"])
        took = time.monotonic() - started
    assert await astore.get("SELECT count(*) AS n FROM notes") == {"n": 50_000}
    assert len(await astore.search("notes", "deploy*", limit=50_000)) > 0
    # A loop blocked for the whole build would tick about once (test_aio_loop's measure).
    assert ticker.worst < max(took / 2, 0.05), (ticker.worst, took)


def test_create_table_refuses_a_non_table_on_the_sync_api_too() -> None:
    with storekit.create_memory_database() as db, pytest.raises(storekit.ProgrammingError):
        db.create_table("agents")  # type: ignore[arg-type]


class _PeakConnections:
    """The most client connections the server had at once, sampled from another thread."""

    def __init__(self, url: str) -> None:
        self.url, self.peak, self._stop = url, 0, threading.Event()

    def _count(self, db: storekit.Database) -> int:
        row = db.get("SELECT count(*) AS n FROM pg_stat_activity"
                     " WHERE backend_type = 'client backend'")
        assert row is not None
        return int(row["n"])

    def __enter__(self) -> _PeakConnections:
        self._db = storekit.create_database(self.url, pool=storekit.PoolOptions(max_size=1))
        self.before = self._count(self._db)
        self._thread = threading.Thread(target=self._run)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._count(self._db))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._db.close()


# Enough waiters for a two-connection pool that many wait past the first second.
WAITERS, HOLD_S = 150, 0.03


async def test_many_tasks_waiting_for_the_pool_share_one_server_probe(
        storekit_postgres_url: str) -> None:
    from storekit.testing import isolated_schema

    with isolated_schema(storekit_postgres_url, prefix="probe") as url:
        pool = storekit.PoolOptions(min_size=2, max_size=2, timeout=60)
        async with await aio.create_database(url, pool=pool) as db:
            with _PeakConnections(url) as seen:
                await asyncio.gather(*(db.get("SELECT pg_sleep(?) AS s", (HOLD_S,))
                                       for _ in range(WAITERS)))
    # The pool's two and one probe at a time (plus one: a closed probe's server process
    # may linger a moment beside the next). A probe per waiter reached dozens.
    assert seen.peak - seen.before <= 2 + 2, (seen.before, seen.peak)


def test_many_threads_waiting_for_the_pool_share_one_server_probe(
        storekit_postgres_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from storekit.testing import isolated_schema

    with isolated_schema(storekit_postgres_url, prefix="probe") as url:
        pool = storekit.PoolOptions(min_size=2, max_size=2, timeout=60)
        with storekit.create_database(url, pool=pool) as db, _PeakConnections(url) as seen, \
                ThreadPoolExecutor(WAITERS) as threads:
            list(threads.map(lambda _: db.get("SELECT pg_sleep(?) AS s", (HOLD_S,)),
                             range(WAITERS)))
    assert seen.peak - seen.before <= 2 + 2, (seen.before, seen.peak)
