"""Hostile use of the leaner transaction path: methods kept from a savepoint past its
block, atomic() with an int subclass as retries, SQL as a str subclass whose __hash__ and
__eq__ lie (the translation cache is looked up before translate()), close() inside a
transaction, and odd arguments to transaction()/atomic(). Sync and aio, both backends."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import storekit
from storekit import aio
from storekit.errors import (
    BusyError,
    ConfigurationError,
    ProgrammingError,
    StoreError,
)
from tests.helpers import KEPT_CALLS

NAMES = [c[0] for c in KEPT_CALLS]


# Kept references of a savepoint's methods.
def test_sync_savepoint_methods_kept_past_its_block_refuse(store: storekit.Database) -> None:
    store.exec("CREATE TABLE kept (v integer)")
    with store.transaction() as outer:
        outer.run("INSERT INTO kept (v) VALUES (0)")
        with store.transaction() as inner:
            kept = {name: getattr(inner, name) for name in [*NAMES, "iter"]}
        for name, args in KEPT_CALLS:
            with pytest.raises(StoreError):
                kept[name](*args)
        with pytest.raises(StoreError):
            list(kept["iter"]("SELECT v FROM kept"))
        outer.run("INSERT INTO kept (v) VALUES (10)")
    assert store.all("SELECT v FROM kept ORDER BY v") == [{"v": 0}, {"v": 10}]


def test_aio_savepoint_methods_kept_past_its_block_refuse(store_url: str) -> None:
    async def main() -> list[Any]:
        async with await aio.create_database(store_url) as db:
            await db.exec("CREATE TABLE kept (v integer)")
            async with db.transaction() as outer:
                await outer.run("INSERT INTO kept (v) VALUES (0)")
                async with db.transaction() as inner:
                    kept = {name: getattr(inner, name) for name in NAMES}
                for name, args in KEPT_CALLS:
                    with pytest.raises(StoreError):
                        await kept[name](*args)
                await outer.run("INSERT INTO kept (v) VALUES (10)")
            return await db.all("SELECT v FROM kept ORDER BY v")

    assert asyncio.run(main()) == [{"v": 0}, {"v": 10}]


# atomic(retries=<int subclass>).
class _RaisingInt(int):
    def __lt__(self, other: object) -> bool:
        raise RuntimeError("compared")

    __gt__ = __le__ = __ge__ = __lt__


class _NeverDone(int):
    """Says it is never less than anything: `attempt > retries` would never be true."""

    def __lt__(self, other: object) -> bool:
        return False

    def __gt__(self, other: object) -> bool:
        return False


class _GaveUp(Exception):
    pass


def _busy_fn(attempts: list[int]) -> Any:
    def fn(tx: Any) -> None:
        attempts.append(1)
        if len(attempts) > 10:
            raise _GaveUp  # the retries were not counted
        raise BusyError("busy, for the test")

    return fn


@pytest.mark.parametrize("cls", [_RaisingInt, _NeverDone])
def test_sync_atomic_counts_an_int_subclass_as_its_value(store: storekit.Database,
                                                         cls: type[int]) -> None:
    attempts: list[int] = []
    with pytest.raises(BusyError, match="gave up after 3 attempts"):
        store.atomic(_busy_fn(attempts), retries=cls(2))
    assert len(attempts) == 3
    assert store.atomic(lambda tx: tx.get("SELECT 1 AS one"), retries=cls(0)) == {"one": 1}


@pytest.mark.parametrize("cls", [_RaisingInt, _NeverDone])
def test_aio_atomic_counts_an_int_subclass_as_its_value(store_url: str,
                                                        cls: type[int]) -> None:
    async def main() -> list[int]:
        attempts: list[int] = []

        async def fn(tx: Any) -> None:
            _busy_fn(attempts)(tx)

        async with await aio.create_database(store_url) as db:
            with pytest.raises(BusyError, match="gave up after 3 attempts"):
                await db.atomic(fn, retries=cls(2))
        return attempts

    assert len(asyncio.run(main())) == 3


@pytest.mark.parametrize("retries", [-1, True, False, 2.0, "3", None, _RaisingInt(-1)])
def test_atomic_refuses_retries_that_are_not_a_count(store: storekit.Database,
                                                     retries: Any) -> None:
    with pytest.raises(ConfigurationError):
        store.atomic(lambda tx: None, retries=retries)


def test_atomic_fn_edge_cases(store: storekit.Database) -> None:
    class Made:
        def __init__(self, tx: Any) -> None:
            self.one = tx.get("SELECT 1 AS one")

    assert store.atomic(Made).one == {"one": 1}  # a class is callable
    holder = type("Holder", (), {})()
    holder.__call__ = lambda tx: 1  # on the instance only: not callable
    with pytest.raises(ProgrammingError):
        store.atomic(holder)
    assert store.atomic(lambda tx: 1, retries=10**100) == 1


# SQL as a str subclass whose __hash__ and __eq__ are the caller's code.
_SAFE = "SELECT count(*) AS n FROM lied"


class _Liar(str):
    """Claims to be _SAFE: hashes as it and equals anything."""

    def __hash__(self) -> int:
        return hash(_SAFE)

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False


class _RaisingHash(str):
    def __hash__(self) -> int:
        raise RuntimeError("hashed")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("compared")

    def __ne__(self, other: object) -> bool:
        raise RuntimeError("compared")


def _victim(tag: str) -> str:
    return f"SELECT v FROM lied WHERE v = 424242 AND 'victim' <> '{tag}'"


class _Poison(str):
    """Hashes as _victim(tag) and equals anything: stored as a cache key, it would answer
    for the victim's plain str."""

    tag = ""

    def __hash__(self) -> int:
        return hash(_victim(self.tag))

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False


def test_sync_str_subclass_sql_runs_its_own_text(store: storekit.Database,
                                                 request: pytest.FixtureRequest) -> None:
    store.exec("CREATE TABLE lied (v integer)")
    store.run("INSERT INTO lied (v) VALUES (1)")
    assert store.get(_SAFE) == {"n": 1}  # _SAFE's translation is cached now
    for sql in [_SAFE + "\x00", "DELETE FROM lied; DELETE FROM lied"]:
        with pytest.raises(ProgrammingError):
            store.run(_Liar(sql))
        with store.transaction() as tx, pytest.raises(ProgrammingError):
            tx.get(_Liar(sql))
    assert store.get(_SAFE) == {"n": 1}
    with store.transaction() as tx:
        assert tx.all(_Liar("SELECT v * 7 AS w FROM lied")) == [{"w": 7}]
        assert list(tx.iter(_Liar("SELECT v * 8 AS w FROM lied"))) == [{"w": 8}]
    assert store.run(_Liar("DELETE FROM lied")).rowcount == 1
    assert store.get(_SAFE) == {"n": 0}
    # A raising __hash__/__eq__ is never called: the text runs.
    assert store.get(_RaisingHash(_SAFE)) == {"n": 0}
    store.run_many(_RaisingHash("INSERT INTO lied (v) VALUES (?)"), [(5,)])
    # A subclass stored first does not answer for a plain str later.
    tag = request.node.name
    poison = _Poison("SELECT 'poisoned' AS v")
    poison.tag = tag
    assert store.all(poison) == [{"v": "poisoned"}]
    assert store.all(_victim(tag)) == []


def test_aio_str_subclass_sql_runs_its_own_text(store_url: str,
                                                request: pytest.FixtureRequest) -> None:
    tag = "aio " + request.node.name

    async def main() -> None:
        async with await aio.create_database(store_url) as db:
            await db.exec("CREATE TABLE lied (v integer)")
            await db.run("INSERT INTO lied (v) VALUES (1)")
            assert await db.get(_SAFE) == {"n": 1}
            with pytest.raises(ProgrammingError):
                await db.run(_Liar(_SAFE + "\x00"))
            async with db.transaction() as tx:
                with pytest.raises(ProgrammingError):
                    await tx.get(_Liar("DELETE FROM lied; DELETE FROM lied"))
            async with db.transaction() as tx:
                assert await tx.all(_Liar("SELECT v * 7 AS w FROM lied")) == [{"w": 7}]
                assert await tx.get(_RaisingHash(_SAFE)) == {"n": 1}
                assert (await tx.run(_Liar("DELETE FROM lied"))).rowcount == 1
            assert await db.get(_SAFE) == {"n": 0}
            poison = _Poison("SELECT 'poisoned' AS v")
            poison.tag = tag
            assert await db.all(poison) == [{"v": "poisoned"}]
            assert await db.all(_victim(tag)) == []

    asyncio.run(main())


@pytest.mark.parametrize("sql", [["SELECT 1"], b"SELECT 1", 1, None])
def test_sql_that_is_not_a_str_is_refused(store: storekit.Database, sql: Any) -> None:
    for method in ("run", "get", "all"):
        with pytest.raises(ProgrammingError):
            getattr(store, method)(sql)
        with store.transaction() as tx, pytest.raises(ProgrammingError):
            getattr(tx, method)(sql)


# close() inside a transaction.
def test_sync_close_inside_a_transaction_rolls_it_back(store_url: str) -> None:
    """It used to wait forever on SQLite (the write lock its own transaction held): run in
    a thread, so a hang fails the test instead of wedging the session."""
    db = storekit.create_database(store_url)
    db.exec("CREATE TABLE closing (v integer)")
    outcome: list[str] = []

    def body() -> None:
        try:
            with db.transaction() as tx:
                tx.run("INSERT INTO closing (v) VALUES (1)")
                with db.transaction() as inner:
                    inner.run("INSERT INTO closing (v) VALUES (2)")
                    db.close()
                    try:
                        inner.run("INSERT INTO closing (v) VALUES (3)")
                    except StoreError:
                        outcome.append("refused")
        except StoreError:
            outcome.append("block ended with StoreError")

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "close() inside a transaction hung"
    assert outcome == ["refused", "block ended with StoreError"]
    assert db.closed
    with pytest.raises(StoreError):
        db.transaction()
    with pytest.raises(StoreError):
        db.atomic(lambda tx: None)
    with storekit.create_database(store_url) as again:
        assert again.all("SELECT v FROM closing") == []
        with again.transaction() as tx:  # nothing left held
            tx.run("INSERT INTO closing (v) VALUES (4)")
        assert again.all("SELECT v FROM closing") == [{"v": 4}]


def test_sync_transaction_made_before_close(store_url: str) -> None:
    db = storekit.create_database(store_url)
    tx = db.transaction()
    db.close()
    with pytest.raises(StoreError):
        tx.__enter__()
    for name, args in KEPT_CALLS:
        with pytest.raises(StoreError):
            getattr(tx, name)(*args)
    with pytest.raises(StoreError):
        tx.connection  # noqa: B018


# Odd arguments to transaction().
class _RaisingStr(str):
    def __str__(self) -> str:
        raise RuntimeError("str")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    def __hash__(self) -> int:
        raise RuntimeError("hash")

    def lower(self) -> str:  # type: ignore[override]
        raise RuntimeError("lower")


@pytest.mark.parametrize("readonly", [0, 1, None, "yes", 1.0, [True]])
def test_readonly_must_be_a_bool(store: storekit.Database, readonly: Any) -> None:
    with pytest.raises(ConfigurationError):
        store.transaction(readonly=readonly)


@pytest.mark.parametrize("isolation", [b"serializable", 0, 1, True, "", ["serializable"],
                                       "serializable; drop table x"])
def test_isolation_must_be_a_level_name(store: storekit.Database, isolation: Any) -> None:
    with pytest.raises(ConfigurationError):
        store.transaction(isolation=isolation)


def test_isolation_str_subclass_is_read_as_its_text(store: storekit.Database) -> None:
    with store.transaction(isolation=_RaisingStr("Read_Committed")) as tx:
        assert tx.isolation == "read committed"
        assert type(tx.isolation) is str
        assert tx.get("SELECT 1 AS one") == {"one": 1}
