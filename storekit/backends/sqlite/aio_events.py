"""SQLite notifications for storekit.aio: events.py's table, and its polling thread (it
waits on PRAGMA data_version, off the loop) with its queue pointed at the loop."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from storekit.aio_notify import Listener
from storekit.backends.sqlite.events import (
    EVENTS_DDL,
    INSERT,
    PRUNE,
    PRUNE_EVERY,
    RETENTION_SECONDS,
    SqliteSubscription,
)
from storekit.errors import StoreError, from_sqlite
from storekit.features import FeatureState
from storekit.notify import Notification

if TYPE_CHECKING:
    from storekit.aio import AsyncDatabase
    from storekit.aio_notify import AsyncSubscription

_ready: FeatureState[dict[str, bool]] = FeatureState(dict)  # per AsyncDatabase


async def ensure_events_table(db: AsyncDatabase) -> None:
    state = _ready.of(db)
    if not state.get("events"):
        await db.exec(EVENTS_DDL)
        state["events"] = True


async def notify(db: AsyncDatabase, channel: str, text: str) -> None:
    await ensure_events_table(db)
    result = await db.run(INSERT, (channel, text, time.time()))
    if result.last_id and result.last_id % PRUNE_EVERY == 0:
        await db.run(PRUNE, (time.time() - RETENTION_SECONDS,))


class _ToLoop:
    """Stands in for SqliteSubscription's queue.Queue: put() from its thread, onto the loop."""

    def __init__(self, sub: AsyncSubscription) -> None:
        self._sub = sub
        self._loop = asyncio.get_running_loop()

    def put(self, note: Notification) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._sub._put, note)


class _MemoryShim:
    """What SqliteSubscription's thread needs of a Database, for an in-memory one: its
    reads run on the loop (the one connection is the loop's)."""

    def __init__(self, db: AsyncDatabase) -> None:
        self._db = db
        self._loop = asyncio.get_running_loop()

    @property
    def closed(self) -> bool:
        return self._db.closed

    def reveal_url(self) -> Any:
        return self._db.reveal_url()

    def get(self, sql: str, params: Any = None) -> Any:
        return asyncio.run_coroutine_threadsafe(self._db.get(sql, params), self._loop).result()

    def all(self, sql: str, params: Any = None) -> Any:
        return asyncio.run_coroutine_threadsafe(self._db.all(sql, params), self._loop).result()


class SqliteListener(Listener):
    def __init__(self, sub: AsyncSubscription, db: AsyncDatabase) -> None:
        shim: Any = _MemoryShim(db) if db.reveal_url().is_memory else db
        self._thread_sub = SqliteSubscription(shim, sub.channels, sub._poll_interval)
        self._thread_sub._queue = _ToLoop(sub)  # type: ignore[assignment]

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self._thread_sub._start)
        except sqlite3.Error as exc:
            raise from_sqlite(exc) from exc
        except StoreError:
            raise

    async def stop(self) -> None:
        await asyncio.to_thread(self._thread_sub.close)
