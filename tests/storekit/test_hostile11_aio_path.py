"""Hostile use of the thinner statement path (storekit.aio's bound data methods, the
SQLite handle's _now/_later): a method reference taken inside a transaction and called
after it, while another task or thread holds the connection it ran on, must refuse
(StoreError) and write nothing there. Sync and aio, both backends."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import storekit
from storekit import aio
from storekit.errors import StoreError

CALLS: list[tuple[str, tuple[Any, ...]]] = [
    ("run", ("INSERT INTO kept (v) VALUES (?)", (1,))),
    ("run_deferred", ("INSERT INTO kept (v) VALUES (?)", (2,))),
    ("get", ("SELECT count(*) AS n FROM kept",)),
    ("all", ("SELECT v FROM kept",)),
    ("run_many", ("INSERT INTO kept (v) VALUES (?)", [(3,), (4,)])),
    ("exec", ("INSERT INTO kept (v) VALUES (5)",)),
]
NAMES = [c[0] for c in CALLS]


class _Rollback(Exception):
    pass


@pytest.mark.parametrize("readonly", [False, True], ids=["write", "readonly"])
def test_sync_kept_method_refuses_while_another_thread_holds(
        store: storekit.Database, readonly: bool, request: pytest.FixtureRequest) -> None:
    if store.backend == "sqlite":
        # Not fixed: the sync SQLite backend hands every write transaction the one shared
        # writer handle (and a thread's reads its one reader handle), so a bound method
        # kept past the block cannot be told apart from the next transaction's. The fix
        # is a handle per transaction, poisoned at its end (as PostgreSQL's), which must
        # also follow the fork and signal-safety rules of backends/sqlite/backend.py.
        request.applymarker(pytest.mark.xfail(strict=True, reason="sync SQLite shares"
                                              " its writer handle across transactions"))
    store.exec("CREATE TABLE kept (v integer)")
    store.run("INSERT INTO kept (v) VALUES (0)")
    with store.transaction(readonly=readonly) as tx:
        kept = {name: getattr(tx, name) for name in NAMES}
    holding, done = threading.Event(), threading.Event()

    def other() -> None:
        try:
            with store.transaction() as t2:
                t2.run("INSERT INTO kept (v) VALUES (100)")
                holding.set()
                done.wait(30)
                raise _Rollback
        except _Rollback:
            pass

    thread = threading.Thread(target=other)
    thread.start()
    try:
        assert holding.wait(30)
        outcomes = {}
        for name, args in CALLS:
            try:
                kept[name](*args)
                outcomes[name] = "ran"
            except StoreError:
                outcomes[name] = "refused"
    finally:
        done.set()
        thread.join(30)
    assert outcomes == dict.fromkeys(NAMES, "refused")
    # Nor in autocommit, with nobody holding the connection.
    for name, args in CALLS:
        with pytest.raises(StoreError):
            kept[name](*args)
    assert store.all("SELECT v FROM kept") == [{"v": 0}]


@pytest.mark.parametrize("readonly", [False, True], ids=["write", "readonly"])
def test_aio_kept_method_refuses_while_another_task_holds(
        store_url: str, readonly: bool) -> None:
    async def main() -> tuple[dict[str, str], list[Any]]:
        async with await aio.create_database(store_url) as db:
            await db.exec("CREATE TABLE kept (v integer)")
            await db.run("INSERT INTO kept (v) VALUES (0)")
            async with db.transaction(readonly=readonly) as tx:
                kept = {name: getattr(tx, name) for name in NAMES}
            holding, done = asyncio.Event(), asyncio.Event()

            async def other() -> None:
                try:
                    async with db.transaction() as t2:
                        await t2.run("INSERT INTO kept (v) VALUES (100)")
                        holding.set()
                        await done.wait()
                        raise _Rollback
                except _Rollback:
                    pass

            task = asyncio.create_task(other())
            await asyncio.wait_for(holding.wait(), 30)
            outcomes = {}
            try:
                for name, args in CALLS:
                    try:
                        await kept[name](*args)
                        outcomes[name] = "ran"
                    except StoreError:
                        outcomes[name] = "refused"
            finally:
                done.set()
                await asyncio.wait_for(task, 30)
            for name, args in CALLS:
                with pytest.raises(StoreError):
                    await kept[name](*args)
            return outcomes, await db.all("SELECT v FROM kept")

    outcomes, rows = asyncio.run(main())
    assert outcomes == dict.fromkeys(NAMES, "refused")
    assert rows == [{"v": 0}]
