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
from tests.helpers import KEPT_CALLS

CALLS = KEPT_CALLS
NAMES = [c[0] for c in CALLS]


class _Rollback(Exception):
    pass


@pytest.mark.parametrize("readonly", [False, True], ids=["write", "readonly"])
def test_sync_kept_method_refuses_while_another_thread_holds(
        store: storekit.Database, readonly: bool) -> None:
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


def test_sync_once_nested_transaction_reused_at_top_level(store_url: str) -> None:
    """Entered again after its block, a transaction that was a savepoint the first time is
    a transaction of its own: it commits, and the write lock is free after it (it used to
    RELEASE a savepoint that no longer exists and never give the connection back). The
    database is closed only if all went well: closing a wedged one would hang the test."""
    db = storekit.create_database(store_url, busy_timeout_ms=5000)
    db.exec("CREATE TABLE kept (v integer)")
    with db.transaction():
        inner = db.transaction()
        with inner:
            inner.run("INSERT INTO kept (v) VALUES (1)")
    with inner:
        inner.run("INSERT INTO kept (v) VALUES (2)")
    assert not db.in_transaction
    errors: list[BaseException] = []

    def other() -> None:
        try:
            db.run("INSERT INTO kept (v) VALUES (3)")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(60)
    assert errors == []
    assert db.all("SELECT v FROM kept ORDER BY v") == [{"v": 1}, {"v": 2}, {"v": 3}]
    db.close()


def test_aio_once_nested_transaction_reused_at_top_level(store_url: str) -> None:
    async def main() -> list[Any]:
        db = await aio.create_database(store_url, busy_timeout_ms=5000)
        await db.exec("CREATE TABLE kept (v integer)")
        async with db.transaction():
            inner = db.transaction()
            async with inner:
                await inner.run("INSERT INTO kept (v) VALUES (1)")
        async with inner:
            await inner.run("INSERT INTO kept (v) VALUES (2)")
        assert not db.in_transaction
        await asyncio.wait_for(
            asyncio.create_task(db.run("INSERT INTO kept (v) VALUES (3)")), 60)
        rows = await db.all("SELECT v FROM kept ORDER BY v")
        await db.close()
        return rows

    assert asyncio.run(main()) == [{"v": 1}, {"v": 2}, {"v": 3}]
