"""PostgreSQL notifications for storekit.aio: LISTEN on an async connection of its own
(never a pooled one); after a lost connection it reconnects, LISTENs again and delivers a
`reconnected` marker, as the sync subscription does."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from storekit.aio_notify import Listener
from storekit.notify import Notification
from storekit.schema_names import quote_ident

if TYPE_CHECKING:
    from storekit.aio import AsyncDatabase
    from storekit.aio_notify import AsyncSubscription


async def notify(db: AsyncDatabase, channel: str, text: str) -> None:
    await db.run("SELECT pg_notify(?, ?)", (channel, text))


class PostgresListener(Listener):
    """LISTEN on a dedicated async connection, re-LISTENing after reconnects."""

    def __init__(self, sub: AsyncSubscription, conninfo: str) -> None:  # a direct server
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
