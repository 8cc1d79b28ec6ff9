"""Fair hand-off of SQLite's single write lock, across threads and across processes.

SQLite's busy handler sleeps with a growing backoff (up to 100 ms), so a newcomer can
overtake a writer that has waited longest: throughput is fine, the slowest commits take
seconds and agents get unequal shares. Web frameworks fixed this for their stacks with a
short, fair retry. storekit queues instead:

- threads of one process wait in a FIFO queue and the lock is handed directly to the
  longest waiter (FairLock);
- processes sharing a file take a blocking advisory lock (flock) on a sidecar file
  `<db>-storekit.lock` before BEGIN IMMEDIATE, so they sleep in the kernel and wake as
  soon as the holder finishes, with no backoff. flock wakes every waiter and the first
  to run wins, so the order is close to, not exactly, arrival order. (A strict FIFO
  queue across processes, tickets plus byte-range locks, was measured too: perfectly
  fair, but each commit then waits for one particular process to be scheduled, and on 2
  cores throughput fell to a fifth of the stock handler's.)

The busy timeout bounds the whole wait and a timeout still raises BusyError. Programs that
do not take part (the sqlite3 shell, other libraries) are still handled by SQLite's own
busy handler after the sidecar lock is held; the sidecar is always taken before the
SQLite lock, so the two cannot deadlock.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections import deque


class FairLock:
    """A lock handed to waiters in arrival order."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._locked = False
        self._waiters: deque[threading.Lock] = deque()

    def acquire(self, timeout: float = -1) -> bool:
        with self._mutex:
            if not self._locked:
                self._locked = True
                return True
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        if waiter.acquire(timeout=timeout):
            return True  # release() handed the lock over; it is still marked locked
        with self._mutex:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                return True  # handed over just as the wait timed out: we own it
            return False

    def release(self) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._locked = False

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class _Waiter:
    __slots__ = ("abandoned", "got")

    def __init__(self) -> None:
        self.got = threading.Event()
        self.abandoned = False


class FileLock:
    """An exclusive flock on a sidecar file, taken with a timeout.

    flock has no timeout, so a contended acquisition blocks in one helper thread; if the
    caller gives up first, the helper stays queued and the next acquire() reuses it, or it
    releases the lock the moment it gets it. Only one helper exists at a time: flock is per
    open file, so a second one would be granted the lock the first one holds.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self._state = threading.Lock()
        self._waiter: _Waiter | None = None
        self._closed = False

    def _wait(self, waiter: _Waiter) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        with self._state:
            if waiter.abandoned:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                if self._waiter is waiter:
                    self._waiter = None
                if self._closed:
                    os.close(self._fd)  # close() left the descriptor to this thread
            else:
                waiter.got.set()

    def acquire(self, timeout: float) -> bool:
        with self._state:
            waiter = self._waiter
            if waiter is None:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return True
                except BlockingIOError:
                    pass
                waiter = self._waiter = _Waiter()
                threading.Thread(target=self._wait, args=(waiter,), daemon=True,
                                 name="storekit-flock").start()
            else:
                waiter.abandoned = False  # an earlier caller gave up; this one takes over
        if waiter.got.wait(max(0.0, timeout)):
            with self._state:
                self._waiter = None
            return True
        with self._state:
            if waiter.got.is_set():
                self._waiter = None
                return True
            waiter.abandoned = True
            return False

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._state:
            self._closed = True
            if self._waiter is not None and not self._waiter.got.is_set():
                # A helper is still blocked in flock on this descriptor; closing it now
                # could let the number be reused under the helper. The helper closes it.
                self._waiter.abandoned = True
                return
        os.close(self._fd)

