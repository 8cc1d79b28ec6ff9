"""Notifications for storekit.aio: notify.py's rules, delivered to an asyncio queue.

Each async backend supplies the delivery (`notify`, `listener`); this module holds what
both share: payload and channel checks, the subscription and its queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from storekit.errors import ProgrammingError
from storekit.notify import Notification, _payload_text, check_poll_interval
from storekit.schema_names import check_ident

if TYPE_CHECKING:
    from storekit.aio import AsyncDatabase

_CLOSED: Any = object()


async def notify(db: AsyncDatabase, channel: str, payload: str | Mapping[str, Any] = "") -> None:
    check_ident(channel, "channel name")
    await db._backend.notify(db, channel, _payload_text(payload))


class Listener:
    """Delivers a subscription's notifications until stopped (one per backend)."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class AsyncSubscription:
    """Notifications on some channels: `async for note in sub`, or `await sub.get()`."""

    def __init__(self, db: AsyncDatabase, channels: Sequence[str], poll_interval: float) -> None:
        if not channels:
            raise ProgrammingError("listen() needs at least one channel")
        self.channels = tuple(check_ident(c, "channel name") for c in channels)
        self._db = db
        self._poll_interval = poll_interval
        self._queue: asyncio.Queue[Notification] = asyncio.Queue()
        self._closed = False
        self._listener: Listener | None = None
        self.reconnects = 0

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> AsyncSubscription:
        if self._listener is None:
            self._listener = await self._db._backend.listener(self._db, self)
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


def listen(db: AsyncDatabase, channels: Sequence[str], *, poll_interval: float = 0.02
           ) -> AsyncSubscription:
    check_poll_interval(poll_interval)
    return AsyncSubscription(db, channels, poll_interval)
