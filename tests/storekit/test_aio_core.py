"""storekit.aio on both backends: the sync suite's behaviours, awaited."""

from __future__ import annotations

import asyncio
import multiprocessing
import secrets
from typing import Any

import pytest

import storekit
from storekit import aio
from storekit.rls import create_app_role
from storekit.url import DatabaseURL

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _table(db: aio.AsyncDatabase) -> None:
    await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL DEFAULT 0,"
                  " name TEXT UNIQUE, doc JSON)")


async def test_placeholders_json_and_rows(astore: aio.AsyncDatabase) -> None:
    await _table(astore)
    r = await astore.run("INSERT INTO t (id, name, doc) VALUES (?, ?, ?)",
                         (1, "a", {"k": [1, 2], "s": "x"}))
    assert r.rowcount == 1
    await astore.run("INSERT INTO t (id, name, doc) VALUES (:id, :name, :doc)",
                     {"id": 2, "name": "b", "doc": [1]})
    assert await astore.get("SELECT doc FROM t WHERE name = :n", {"n": "a"}) == {
        "doc": {"k": [1, 2], "s": "x"}}
    assert await astore.get("SELECT id FROM t WHERE id = ?", (99,)) is None
    assert [r["id"] for r in await astore.all("SELECT id FROM t ORDER BY id")] == [1, 2]
    assert [r["name"] async for r in astore.iter("SELECT name FROM t ORDER BY id")] == ["a", "b"]
    assert await astore.run_many("INSERT INTO t (id, name) VALUES (?, ?)",
                                 [(i, f"n{i}") for i in range(3, 2503)]) == 2500
    ids = [r["id"] async for r in astore.iter("SELECT id FROM t ORDER BY id")]
    assert ids == list(range(1, 2503))  # more than one batch


async def test_errors_are_the_store_error_tree_with_the_cause(
        astore: aio.AsyncDatabase) -> None:
    await _table(astore)
    await astore.run("INSERT INTO t (id, name) VALUES (1, 'a')")
    with pytest.raises(storekit.UniqueViolation) as info:
        await astore.run("INSERT INTO t (id, name) VALUES (2, 'a')")
    assert info.value.__cause__ is not None
    with pytest.raises(storekit.ProgrammingError):
        await astore.all("SELEC nothing")
    with pytest.raises(storekit.ProgrammingError):
        await astore.get("SELECT ?", (object(),))
    with pytest.raises(storekit.UniqueViolation):
        await astore.run_many("INSERT INTO t (id, name) VALUES (?, ?)", [(5, "x"), (6, "a")])
    assert await astore.get("SELECT count(*) AS c FROM t") == {"c": 1}  # the batch undone
    with pytest.raises(storekit.ConfigurationError):
        astore.transaction(isolation="chaos")


async def test_transactions_savepoints_and_joining(astore: aio.AsyncDatabase) -> None:
    await _table(astore)
    await astore.run("INSERT INTO t (id) VALUES (1)")
    async with astore.transaction() as tx:
        await astore.run("UPDATE t SET n = n + 1")  # joins tx: same task
        async with astore.transaction():
            await tx.run("UPDATE t SET n = n + 10")
        with pytest.raises(RuntimeError):
            async with astore.transaction():
                await astore.run("UPDATE t SET n = n + 100")
                raise RuntimeError
        with pytest.raises(storekit.ConfigurationError):
            async with astore.transaction(readonly=True):
                pass
        with pytest.raises(storekit.ConfigurationError):
            async with astore.transaction(isolation="read committed"):
                pass

        async def other_task() -> Any:
            # Another task is another transaction: it does not see the uncommitted write.
            return await astore.get("SELECT n FROM t")

        assert await asyncio.create_task(other_task()) == {"n": 0}
        assert await astore.get("SELECT n FROM t") == {"n": 11}
    assert await astore.get("SELECT n FROM t") == {"n": 11}
    with pytest.raises(ValueError, match="boom"):
        async with astore.transaction():
            await astore.run("UPDATE t SET n = 0")
            raise ValueError("boom")
    assert await astore.get("SELECT n FROM t") == {"n": 11}
    async with astore.transaction(readonly=True) as ro:
        assert await ro.get("SELECT n FROM t") == {"n": 11}
        with pytest.raises(storekit.OperationalError):
            await ro.run("UPDATE t SET n = 1")


async def test_iter_after_the_transaction_ended_raises(astore: aio.AsyncDatabase) -> None:
    await _table(astore)
    await astore.run_many("INSERT INTO t (id) VALUES (?)", [(i,) for i in range(5000)])
    async with astore.transaction() as tx:
        rows = tx.iter("SELECT id FROM t ORDER BY id")
        assert (await rows.__anext__())["id"] == 0
    with pytest.raises(storekit.StoreError, match="ended"):
        async for _ in rows:
            pass


async def test_atomic_200_tasks_read_then_write_exact_count(store_url: str) -> None:
    async with await aio.create_database(
            store_url, pool=None if store_url.startswith("sqlite") else storekit.PoolOptions(
                max_size=8)) as db:
        await _table(db)
        await db.run("INSERT INTO t (id, n) VALUES (1, 0)")
        attempts = 0

        async def bump(tx: aio.AsyncTransaction) -> int:
            nonlocal attempts
            attempts += 1
            row = await tx.get("SELECT n FROM t WHERE id = 1")
            assert row is not None
            await asyncio.sleep(0)  # let the others interleave
            await tx.run("UPDATE t SET n = ? WHERE id = 1", (row["n"] + 1,))
            return int(row["n"])

        seen = await asyncio.gather(*(db.atomic(bump, retries=1_000_000) for _ in range(200)))
        assert await db.get("SELECT n FROM t WHERE id = 1") == {"n": 200}
        assert sorted(seen) == list(range(200))  # serializable: no two read the same value
        if db.backend == "postgres":
            assert attempts > 200  # conflicts happened and were retried


async def test_atomic_gives_up_with_the_retryable_class(astore: aio.AsyncDatabase) -> None:
    async def conflict(tx: aio.AsyncTransaction) -> None:
        raise storekit.TransactionConflict("always")

    with pytest.raises(storekit.TransactionConflict, match="gave up after 3 attempts"):
        await astore.atomic(conflict, retries=2)


async def test_url_resolution_options_and_masking(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Any,
                                                  storekit_postgres_url: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STOREKIT_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    async with await aio.create_database() as db:
        assert db.backend == "sqlite"
        assert db.settings["path"] == "storekit.db"
        assert db.settings["busy_timeout"] == 5000
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    async with await aio.create_database(busy_timeout_ms=123) as db:
        assert db.settings["path"].endswith("env.db")
        assert db.settings["busy_timeout"] == 123
    with pytest.raises(storekit.ConfigurationError):
        await aio.create_database("sqlite:///x.db", pool=storekit.PoolOptions())
    secret = "s3cret-" + secrets.token_hex(4)
    bad = DatabaseURL.parse(storekit_postgres_url).replace(username="nobody", password=secret)
    with pytest.raises(storekit.DatabaseUnavailable) as info:
        await aio.create_database(bad.render(mask=False))
    assert secret not in str(info.value)
    assert secret not in repr(info.value)
    async with await aio.create_database(storekit_postgres_url) as db:
        assert "postgres" in repr(db)
        url = DatabaseURL.parse(storekit_postgres_url)
        if url.password:
            assert url.password not in repr(db)
            assert url.password not in db.url
    async with await aio.create_memory_database() as mem:
        await mem.exec("CREATE TABLE m (x)")
        await mem.run("INSERT INTO m VALUES (1)")
        assert [r async for r in mem.iter("SELECT x FROM m")] == [{"x": 1}]
    db = await aio.open_database(tmp_path / "sub" / "f.db")
    await db.close()
    with pytest.raises(storekit.StoreError, match="closed"):
        await db.get("SELECT 1")


def _sync_listener(url: str, ready: Any, out: Any) -> None:
    with storekit.create_database(url) as db, db.listen("agent_updates") as sub:
        ready.set()
        for _ in range(2):
            n = sub.get(timeout=30)
            out.put(None if n is None else n.payload)


def _sync_notifier(url: str, go: Any) -> None:
    with storekit.create_database(url) as db:
        go.wait(30)
        db.notify("from_sync", {"hello": 1})


async def test_notify_across_processes(store_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready, go, out = ctx.Event(), ctx.Event(), ctx.Queue()
    listener = ctx.Process(target=_sync_listener, args=(store_url, ready, out))
    notifier = ctx.Process(target=_sync_notifier, args=(store_url, go))
    listener.start()
    notifier.start()
    try:
        async with await aio.create_database(store_url) as db:
            assert await asyncio.to_thread(ready.wait, 60)
            with pytest.raises(RuntimeError):
                async with db.transaction():
                    await db.notify("agent_updates", "rolled back")
                    raise RuntimeError
            async with db.transaction():
                await db.notify("agent_updates", {"n": 1})
            await db.notify("agent_updates", "last")
            got = [await asyncio.to_thread(out.get, True, 60) for _ in range(2)]
            assert got == ['{"n":1}', "last"]
            async with db.listen("from_sync") as sub:
                go.set()
                note = await sub.get(timeout=60)
                assert note is not None
                assert note.json() == {"hello": 1}
                assert await sub.get(timeout=0.05) is None
    finally:
        for p in (listener, notifier):
            await asyncio.to_thread(p.join, 60)


async def test_async_for_over_a_subscription_ends_when_closed(
        astore: aio.AsyncDatabase) -> None:
    received: list[str] = []
    async with astore.listen("a", "b") as sub:
        async def consume() -> None:
            async for note in sub:
                received.append(note.payload)
                if len(received) == 2:
                    await sub.aclose()

        consumer = asyncio.create_task(consume())
        await astore.notify("a", "1")
        await astore.notify("c", "not mine")
        await astore.notify("b", "2")
        await asyncio.wait_for(consumer, 30)
    assert received == ["1", "2"]


async def test_scope_sees_only_its_team(store: storekit.Database) -> None:
    if store.backend != "postgres":
        async with await aio.create_database(store.url) as db:
            with pytest.raises(storekit.CapabilityError):
                async with db.scope(team_id=1):
                    pass
        return
    store.exec("CREATE TABLE agents (id serial PRIMARY KEY, team_id integer NOT NULL,"
               " name text)")
    store.run_many("INSERT INTO agents (team_id, name) VALUES (?, ?)",
                   [(team, f"t{team}-{i}") for team in (1, 2) for i in range(3)])
    store.enable_row_security("agents")
    role = f"app_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12)
    create_app_role(store, role, password)
    url = DatabaseURL.parse(store._url.render(mask=False)).replace(username=role,
                                                                   password=password)
    try:
        async with await aio.create_database(url) as app:
            assert await app.all("SELECT * FROM agents") == []
            async with app.scope(team_id=1) as tx:
                assert {r["team_id"] for r in await tx.all("SELECT team_id FROM agents")} == {1}
                await app.run("INSERT INTO agents (team_id, name) VALUES (1, 'new')")
                with pytest.raises(storekit.ProgrammingError):
                    async with app.transaction():
                        await app.run("INSERT INTO agents (team_id, name) VALUES (2, 'x')")
                # Forging the setting from SQL gets nothing.
                await tx.get("SELECT set_config('app.team_id', '2', true)")
                assert await tx.all("SELECT * FROM agents") == []
            with pytest.raises(storekit.ConfigurationError):
                async with app.scope(team_id=1), app.scope(team_id=2):
                    pass
            async with app.scope(team_id=2) as tx:
                assert len(await tx.all("SELECT * FROM agents")) == 3
    finally:
        store.exec(f'DROP OWNED BY "{role}"; DROP ROLE "{role}"')
    assert store.get("SELECT count(*) AS c FROM agents WHERE team_id = 1") == {"c": 4}


async def test_isolation_conflict_is_raised_not_lost(store_url: str) -> None:
    if not store_url.startswith("postgres"):
        pytest.skip("SQLite runs write transactions one at a time: no conflict to see")
    async with await aio.create_database(store_url) as db:
        await _table(db)
        await db.run("INSERT INTO t (id, n) VALUES (1, 0)")
        both_read = asyncio.Barrier(2)

        async def bump() -> None:
            async with db.transaction() as tx:
                row = await tx.get("SELECT n FROM t WHERE id = 1")
                assert row is not None
                await both_read.wait()
                await tx.run("UPDATE t SET n = ? WHERE id = 1", (row["n"] + 1,))

        results = await asyncio.gather(bump(), bump(), return_exceptions=True)
        assert sum(isinstance(r, storekit.TransactionConflict) for r in results) == 1
        assert await db.get("SELECT n FROM t WHERE id = 1") == {"n": 1}
