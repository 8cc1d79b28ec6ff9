"""A first-come, first-served gate for asyncio tasks: at most `size` inside at once.

storekit.aio queues its tasks here: for SQLite's write connection (size 1), and for a
pooled PostgreSQL connection (size max_size) rather than in psycopg_pool's own waiting
list. With 1,000 tasks on a 10-connection pool a task waits seconds for its turn; with
psycopg_pool's getconn(timeout) it would have to give up every second (to tell a server
that is down from a pool that is busy) and join again at the back, each time with an
exception and a probe connection opened on the event loop. Here a task keeps its place
until its turn or its deadline.

Waiting costs one future. Every waiter has the same timeout, so deadlines come in
arrival order and one timer, for the oldest waiter, serves them all: a timer each would
cost a heap push, a cancellation and a heap pop per task handed the lock, which is a
good part of a hand-off when 1,000 tasks take turns.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque

# _free once closed: the releases still to come never bring it above 0.
_CLOSED = -sys.maxsize


class Gate:
    """Admits tasks in arrival order, at most `size` at a time, without polling; a task
    that waits `timeout` seconds gives up (acquire() returns False).

    Cancellation-safe: a cancelled waiter leaves the queue, or passes its place on if it
    was admitted just as it was cancelled. Each admission is ended by one release().
    close() turns every waiter away (False), and every later caller. One event loop at a
    time (an AsyncDatabase's): a later loop gets a timer of its own."""

    __slots__ = ("_free", "_loop", "_timeout", "_timer", "_waiters")

    def __init__(self, size: int, timeout: float) -> None:
        self._free = size
        self._timeout = timeout
        # (deadline, future) of waiting tasks, oldest first; the timed out and the
        # cancelled are skipped by release().
        self._waiters: deque[tuple[float, asyncio.Future[bool]]] = deque()
        self._timer: asyncio.TimerHandle | None = None  # for the oldest waiter's deadline
        self._loop: asyncio.AbstractEventLoop | None = None  # the timer's

    def try_acquire(self) -> bool:
        # _free > 0 only when no task waits: release() hands a place straight on.
        if self._free > 0:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> bool:
        """A place: True once admitted, False after the gate's timeout or once closed."""
        if self._free > 0:
            self._free -= 1
            return True
        if self._free < 0:
            return False  # closed
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._moved_to(loop)
        fut: asyncio.Future[bool] = loop.create_future()
        deadline = loop.time() + self._timeout
        self._waiters.append((deadline, fut))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.result():
                self.release()  # admitted as the cancellation came: the place goes on
            raise

    def release(self) -> None:
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()[1]
            if not fut.done():
                fut.set_result(True)
                return
        self._free += 1

    def _moved_to(self, loop: asyncio.AbstractEventLoop) -> None:
        """The first wait on a new event loop: a timer left pending on the last one (whose
        oldest waiter was admitted before its deadline) would never fire, and waiters
        never time out; the waiters of a closed loop can never take a place."""
        self._loop = loop
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waiters = deque(w for w in self._waiters if not w[1].get_loop().is_closed())

    def close(self) -> None:
        """Admit nobody any more: the waiters, and every later acquire(), get False."""
        self._free = _CLOSED
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiters, self._waiters = self._waiters, deque()
        for _, fut in waiters:
            if not fut.done() and not fut.get_loop().is_closed():
                fut.set_result(False)

    @property
    def closed(self) -> bool:
        return self._free < 0

    def _expire(self) -> None:
        """The oldest waiters' deadline: those past it give up; the timer moves on."""
        self._timer = None
        waiters = self._waiters
        loop = asyncio.get_running_loop()
        now = loop.time()
        while waiters:
            deadline, fut = waiters[0]
            if not fut.done():
                if deadline > now:
                    self._timer = loop.call_at(deadline, self._expire)
                    return
                fut.set_result(False)
            waiters.popleft()

    @property
    def waiting(self) -> int:
        """Tasks in the queue (an upper bound: those gone are dropped lazily)."""
        return len(self._waiters)
