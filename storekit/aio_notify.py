"""Notifications for storekit.aio: notify.py's rules, delivered to an asyncio queue.

PostgreSQL listens on an async connection of its own (never a pooled one), and after a
lost connection reconnects, LISTENs again and delivers a `reconnected` marker, as the
sync PostgresSubscription does. SQLite reuses notify.SqliteSubscription's polling thread
(it waits on PRAGMA data_version, off the loop) with its queue pointed at the loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from storekit.errors import StoreError, from_sqlite
from storekit.notify import (
    _EVENTS_DDL,
    EVENTS_TABLE,
    PRUNE_EVERY,
    RETENTION_SECONDS,
    Notification,
    SqliteSubscription,
    _payload_text,
)
from storekit.schema_names import check_ident, quote_ident

if TYPE_CHECKING:
    from storekit.aio import AsyncDatabase

_CLOSED: Any = object()


async def notify(db: AsyncDatabase, channel: str, payload: str | Mapping[str, Any] = "") -> None:
    check_ident(channel, "channel name")
    text = _payload_text(payload)
    if db.backend == "postgres":
        await db.run("SELECT pg_notify(?, ?)", (channel, text))
        return
    if not db._events_ready:
        await db.exec(_EVENTS_DDL)
        db._events_ready = True
    result = await db.run(
        f"INSERT INTO {EVENTS_TABLE} (channel, payload, created_at) VALUES (?, ?, ?)",
        (channel, text, time.time()))
    if result.last_id and result.last_id % PRUNE_EVERY == 0:
        await db.run(f"DELETE FROM {EVENTS_TABLE} WHERE created_at < ?",
                     (time.time() - RETENTION_SECONDS,))


class AsyncSubscription:
    """Notifications on some channels: `async for note in sub`, or `await sub.get()`."""

    def __init__(self, db: AsyncDatabase, channels: Sequence[str], poll_interval: float) -> None:
        if not channels:
            from storekit.errors import ProgrammingError

            raise ProgrammingError("listen() needs at least one channel")
        self.channels = tuple(check_ident(c, "channel name") for c in channels)
        self._db = db
        self._poll_interval = poll_interval
        self._queue: asyncio.Queue[Notification] = asyncio.Queue()
        self._closed = False
        self._listener: _Listener | None = None
        self.reconnects = 0

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> AsyncSubscription:
        if self._listener is None:
            db = self._db
            if db.backend == "postgres":
                self._listener = _PostgresListener(self, db._url.conninfo())
            else:
                if not db._events_ready:
                    await db.exec(_EVENTS_DDL)
                    db._events_ready = True
                self._listener = _SqliteListener(self, db)
            await self._listener.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(_CLOSED)  # wakes a task waiting in get()
            if self._listener is not None:
                await self._listener.stop()

    def _put(self, note: Notification) -> None:
        if note.channel in self.channels:
            if note.reconnected:
                self.reconnects += 1 if note.channel == self.channels[0] else 0
            self._queue.put_nowait(note)

    async def get(self, timeout: float | None = None) -> Notification | None:
        """The next notification, or None if none arrives within the timeout (or the
        subscription is closed)."""
        if self._closed and self._queue.empty():
            return None
        try:
            note = await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return None
        if note is _CLOSED:
            self._queue.put_nowait(_CLOSED)  # for the next getter too
            return None
        return note

    def __aiter__(self) -> AsyncSubscription:
        return self

    async def __anext__(self) -> Notification:
        note = await self.get()
        if note is None:
            raise StopAsyncIteration
        return note


class _Listener:
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class _PostgresListener(_Listener):
    """LISTEN on a dedicated async connection, re-LISTENing after reconnects."""

    def __init__(self, sub: AsyncSubscription, conninfo: str) -> None:
        self._sub = sub
        self._conninfo = conninfo
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None
        self.backend_pid: int | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        await asyncio.shield(self._ready)

    async def _connect(self) -> Any:
        import psycopg

        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True,
                                                     connect_timeout=2)
        for channel in self._sub.channels:
            await conn.execute(f"LISTEN {quote_ident(channel)}")
        return conn

    async def _run(self) -> None:
        import psycopg

        from storekit.errors import from_psycopg

        conn = None
        lost = False
        try:
            while True:
                try:
                    if conn is None:
                        conn = await self._connect()
                        self.backend_pid = conn.info.backend_pid
                        if not self._ready.done():
                            self._ready.set_result(None)
                        if lost:
                            lost = False  # anything sent while it was down is gone
                            now = time.time()
                            for channel in self._sub.channels:
                                self._sub._put(Notification(channel, "", now, reconnected=True))
                    async for n in conn.notifies():
                        self._sub._put(Notification(n.channel, n.payload, time.time()))
                except psycopg.Error as exc:
                    if not self._ready.done():
                        error = from_psycopg(exc)
                        error.__cause__ = exc
                        self._ready.set_exception(error)
                        return
                    if conn is not None:
                        await conn.close()
                        conn = None
                        lost = True
                    await asyncio.sleep(0.2)  # the server is restarting; try again shortly
        finally:
            if conn is not None:
                await conn.close()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


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
        self._url = db._url
        self._loop = asyncio.get_running_loop()

    @property
    def closed(self) -> bool:
        return self._db.closed

    def get(self, sql: str, params: Any = None) -> Any:
        return asyncio.run_coroutine_threadsafe(self._db.get(sql, params), self._loop).result()

    def all(self, sql: str, params: Any = None) -> Any:
        return asyncio.run_coroutine_threadsafe(self._db.all(sql, params), self._loop).result()


class _SqliteListener(_Listener):
    def __init__(self, sub: AsyncSubscription, db: AsyncDatabase) -> None:
        shim: Any = _MemoryShim(db) if db._url.is_memory else db
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


def listen(db: AsyncDatabase, channels: Sequence[str], *, poll_interval: float = 0.02
           ) -> AsyncSubscription:
    if poll_interval <= 0:
        from storekit.errors import ProgrammingError

        raise ProgrammingError("poll_interval must be > 0")
    return AsyncSubscription(db, channels, poll_interval)
