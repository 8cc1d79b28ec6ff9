"""A transaction kept past its with block refuses every data method (StoreError): the
connection it ran on belongs to the next borrower now. Sync and aio, both backends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import storekit
from storekit import aio
from storekit.errors import StoreError
from tests.helpers import KEPT_CALLS

CALLS = KEPT_CALLS


@pytest.mark.parametrize(("method", "args"), CALLS, ids=[c[0] for c in CALLS])
def test_sync_transaction_refuses_after_its_block(store: storekit.Database, method: str,
                                                  args: tuple[Any, ...]) -> None:
    store.exec("CREATE TABLE kept (v integer)")
    with store.transaction() as tx:
        tx.run("INSERT INTO kept (v) VALUES (0)")
    with pytest.raises(StoreError):
        getattr(tx, method)(*args)
    with pytest.raises(StoreError):
        list(tx.iter("SELECT v FROM kept"))
    assert store.all("SELECT v FROM kept") == [{"v": 0}]


@pytest.mark.parametrize(("method", "args"), CALLS, ids=[c[0] for c in CALLS])
def test_aio_transaction_refuses_after_its_block(store_url: str, method: str,
                                                 args: tuple[Any, ...]) -> None:
    async def main() -> list[Any]:
        async with await aio.create_database(store_url) as db:
            await db.exec("CREATE TABLE kept (v integer)")
            async with db.transaction() as tx:
                await tx.run("INSERT INTO kept (v) VALUES (0)")
            with pytest.raises(StoreError):
                await getattr(tx, method)(*args)
            with pytest.raises(StoreError):
                [row async for row in tx.iter("SELECT v FROM kept")]
            return await db.all("SELECT v FROM kept")

    assert asyncio.run(main()) == [{"v": 0}]
