"""Fair hand-off of SQLite's single write lock, across threads and across processes.

SQLite's busy handler sleeps with a growing backoff, so a newcomer can overtake a writer
that has waited longest. storekit queues instead: threads of a process wait in a FIFO
(FairLock); processes sharing a file queue in arrival order on `<db>-storekit.lock`
(TicketQueue), and each keeps its turn for a short slice (WriteLease) in which its writers
commit back to back. A stalled holder is waited out after STALL_S, then SQLite's busy
handler takes over; the sidecar orders storekit writers only and never guards data.
Design and measurements: docs/fair-locking.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import threading
import time
from collections import deque
from typing import Any


class _Waiter:
    __slots__ = ("granted", "ident", "wake")

    def __init__(self) -> None:
        self.ident = threading.get_ident()
        self.wake = threading.Lock()
        self.wake.acquire()
        self.granted = False  # set by release() under the mutex: the lock is this waiter's


class FairLock:
    """A lock handed to waiters in arrival order.

    Safe against exceptions raised while waiting (a signal handler, KeyboardInterrupt): the
    waiter leaves the queue, or passes on the lock if it was handed over meanwhile.
    """

    def __init__(self) -> None:
        self._mutex = threading.RLock()  # an RLock can tell _hold whether it got it
        self._locked = False
        # The thread the lock is this moment's: an exception can come between the lock
        # changing hands and the caller learning of it (Python checks for pending signals
        # after every call), so callers give it back by owner (release_if_owned).
        self._owner: int | None = None
        self._waiters: deque[_Waiter] = deque()

    def acquire(self, timeout: float = -1) -> bool:
        with self._mutex:
            if not self._locked:
                self._locked = True
                self._owner = threading.get_ident()
                return True
            waiter = _Waiter()
            self._waiters.append(waiter)
        try:
            if waiter.wake.acquire(timeout=timeout):
                return True  # release() handed the lock over; it is still marked locked
        except BaseException:
            if self._leave(waiter):
                self.release()  # handed over as the exception came: pass it on
            raise
        return self._leave(waiter)  # timed out, unless handed over just then

    def _leave(self, waiter: _Waiter) -> bool:
        """Leave the queue; True if the lock was handed to this waiter first (idempotent)."""
        interrupted = _hold(self._mutex)
        try:
            if not waiter.granted:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            granted = waiter.granted
        finally:
            self._mutex.release()
        if interrupted is not None:
            if granted:
                self.release()
            raise interrupted
        return granted

    def release(self) -> None:
        interrupted = _hold(self._mutex)
        try:
            if self._waiters:
                waiter = self._waiters.popleft()
                waiter.granted = True
                self._owner = waiter.ident
                waiter.wake.release()
            else:
                self._locked = False
                self._owner = None
        finally:
            self._mutex.release()
        if interrupted is not None:
            raise interrupted

    def owned(self) -> bool:
        """True if the calling thread holds the lock."""
        return self._owner == threading.get_ident()

    def release_if_owned(self) -> None:
        if self._owner == threading.get_ident():
            self.release()

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _hold(lock: Any) -> BaseException | None:
    """Acquire the RLock `lock` even if signal handlers raise while it waits (a blocking
    acquire is interruptible in the main thread); return the first exception, for the
    caller to raise once its bookkeeping is done, so a release or a withdrawal is never
    left half-done. The exception may also come just after the acquire succeeded: then
    the lock is this thread's already (acquiring again would hold it twice)."""
    interrupted: BaseException | None = None
    while True:
        try:
            if interrupted is None or not lock._is_owned():
                lock.acquire()
            return interrupted
        except BaseException as exc:  # re-raised by the caller
            interrupted = interrupted or exc


_OFD = hasattr(fcntl, "F_OFD_SETLKW")  # Linux; elsewhere flock, in wake-up order
_TICKETS = 1 << 30  # ticket bytes wrap after this many turns
_TICKET_BASE = 1 << 32  # past the counter stored at offset 0


class TicketQueue:
    """Turns in arrival order across processes: a queue lock on byte-range locks.

    Each process draws a ticket from a counter in the file (under a short lock on byte 0),
    locks the byte of its own ticket, then waits for the byte of the ticket before it.
    Releasing wakes exactly the next process. Open-file-description locks conflict between
    descriptors even in one process, and the kernel drops them when a process dies.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self._ticket = 0

    def _lock(self, cmd: int, kind: int, start: int) -> None:
        fcntl.fcntl(self.fd, cmd, struct.pack("hhqqi", kind, os.SEEK_SET, start, 1, 0))

    def wait_turn(self) -> None:
        """Block until this process's turn; no timeout (WriteLease bounds the callers).

        The wait covers the two tickets ahead, not just the one before: if the process
        queued just ahead dies, its lock vanishes, and this one must still wait for the
        holder. (Two processes dying in a row can still let one overlap the holder.)
        """
        if not _OFD:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            return
        self._lock(fcntl.F_OFD_SETLKW, fcntl.F_WRLCK, 0)
        try:
            ticket = self._drawn()
            self._lock(fcntl.F_OFD_SETLK, fcntl.F_WRLCK, _TICKET_BASE + ticket % _TICKETS)
            os.pwrite(self.fd, (ticket + 1).to_bytes(8, "little"), 0)
        finally:
            self._lock(fcntl.F_OFD_SETLK, fcntl.F_UNLCK, 0)
        for ahead in (1, 2):
            # The ticket before first: a release then wakes only the next process, and
            # the second wait returns at once unless the one before has died. Read locks,
            # as two processes can then wait on the same byte.
            byte = _TICKET_BASE + (ticket - ahead) % _TICKETS
            self._lock(fcntl.F_OFD_SETLKW, fcntl.F_RDLCK, byte)
            self._lock(fcntl.F_OFD_SETLK, fcntl.F_UNLCK, byte)
        self._ticket = ticket

    def _drawn(self) -> int:
        """Tickets drawn so far: the counter at offset 0 (an empty file has drawn none)."""
        raw = os.pread(self.fd, 8, 0)
        return int.from_bytes(raw, "little") if len(raw) == 8 else 0

    def waiting(self) -> int:
        """How many processes have queued behind this one (1 where flock cannot tell)."""
        if not _OFD:
            return 1
        return max(0, self._drawn() - self._ticket - 1)

    def others_waiting(self) -> bool:
        return self.waiting() > 0

    def end_turn(self) -> None:
        if not _OFD:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            return
        self._lock(fcntl.F_OFD_SETLK, fcntl.F_UNLCK, _TICKET_BASE + self._ticket % _TICKETS)

    def close(self) -> None:
        os.close(self.fd)


ROUND_S = 0.032  # target time for every queued process to have had one turn
MAX_SLICE_S = 0.016
# A writer whose turn has not come within this long writes under SQLite's lock alone
# (WriteLease): well above a healthy queue's wait (a round takes about ROUND_S).
STALL_S = 0.5


class WriteLease:
    """Lends this process's cross-process turn to its writers for a time slice.

    One background thread queues for the turn when a writer asks and hands it to that
    writer; writers keep it while their slice lasts, and the writer that finds the slice
    over ends the turn itself (unless nobody else has queued), so a hand-off costs no
    extra thread switch. The thread also ends a turn the process has stopped using.
    Only that thread waits in the queue, so a writer that gives up (busy timeout) simply
    stops asking, and the kernel wait never needs a timeout. Callers are serialised by
    FairLock.

    The turn guards fairness, never data, so it must not let one process block the others:
    a process stopped (SIGSTOP, a debugger, a frozen container) while it holds its turn
    keeps it, its thread being stopped too. With stall_s, a writer whose turn has not come
    within stall_s writes anyway, under SQLite's own lock and busy handler, as do this
    process's later writers until its thread gets the turn (the queue moved again). The
    alternative, ending the turn whenever a process goes idle, would make a lone writer
    queue again for every transaction; this costs nothing until the queue stalls.
    """

    def __init__(self, path: str, slice_s: float, stall_s: float | None = None) -> None:
        self._queue = TicketQueue(path)
        self._slice = slice_s
        self._stall = stall_s
        self._mutex = threading.RLock()  # for _hold, as FairLock's
        self._cv = threading.Condition(self._mutex)
        self._wanted = False
        self._held = False
        self._in_use = False
        self._used = False  # a write started since the slice began
        self._closed = False
        self._stalled = False  # writers gave up on the queue until this process's next turn
        self._slice_end = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True, name="storekit-lease")
        try:
            self._thread.start()
        except BaseException:  # no thread to close the descriptor: close it here
            self._queue.close()
            raise

    def acquire(self, deadline: float) -> bool:
        """True once this process may write: it holds the turn, or (with stall_s) the
        queue has stalled; False if time.monotonic() reached deadline first."""
        # The condition's own lock, entered directly: Condition.__enter__ is a Python call
        # on every write, and self._cv.wait() below works the same under it.
        with self._mutex:
            if self._held:
                if time.monotonic() < self._slice_end or self._extend():
                    self._in_use = self._used = True
                    return True
                self._end_turn()  # slice over and others queue: to the back of the line
            elif self._stalled:
                return True
            self._wanted = True
            self._cv.notify_all()
            give_up = deadline
            if self._stall is not None:
                give_up = min(deadline, time.monotonic() + self._stall)
            # The background thread marks the turn in use for this caller when it gets
            # it, so a caller scheduled late still gets at least one write per turn.
            try:
                while not self._in_use:
                    left = give_up - time.monotonic()
                    if left <= 0 or self._closed:
                        self._wanted = False
                        if self._closed or give_up >= deadline:
                            return False
                        self._stalled = True  # the thread stays queued
                        return True
                    self._cv.wait(left)
            except BaseException:
                # Interrupted (a signal handler raised, KeyboardInterrupt): stop asking, or
                # a turn nobody uses would be taken and kept; end one granted meanwhile.
                self._wanted = False
                if self._in_use:
                    self._in_use = False
                    if self._held:
                        self._end_turn()
                raise
            return True

    def release(self, *, hand_over: bool = False) -> None:
        """Give the turn back to the process; it ends when the slice is over, or at once
        with hand_over."""
        # Cleared first, outside the lock: should an exception interrupt the rest, the
        # background thread still ends the turn once its slice is over.
        self._in_use = False
        interrupted = _hold(self._mutex)
        try:
            if self._held and (hand_over or (time.monotonic() >= self._slice_end
                                             and not self._extend())):
                self._end_turn()
        finally:
            self._mutex.release()
        if interrupted is not None:
            raise interrupted

    def others_waiting(self) -> bool:
        return self._queue.others_waiting()

    def _extend(self) -> bool:
        """Start another slice if nobody else has queued: a lone writer pays no hand-offs."""
        if self._queue.others_waiting():
            return False
        self._used = False
        self._slice_end = time.monotonic() + self._slice
        return True

    def _end_turn(self) -> None:
        self._held = False
        self._queue.end_turn()
        self._cv.notify_all()

    def _run(self) -> None:
        cv = self._cv
        try:
            while True:
                with cv:
                    while not self._wanted and not self._closed:
                        cv.wait()
                    if self._closed:
                        return
                self._queue.wait_turn()
                with cv:
                    self._held = True
                    self._used = False
                    self._stalled = False
                    if self._wanted:  # else the caller gave up meanwhile: pass the turn on
                        self._wanted = False
                        self._in_use = True
                        # Fewer writers get longer slices, so a round of the queue
                        # takes about ROUND_S whatever their number: fewer hand-offs,
                        # the same bound on a writer's wait.
                        share = ROUND_S / (self._queue.waiting() + 1)
                        self._slice_end = time.monotonic() + min(max(self._slice, share),
                                                                 MAX_SLICE_S)
                        cv.notify_all()
                    else:
                        self._slice_end = 0.0
                    # Watch for a turn left idle: writers end busy turns themselves.
                    while self._held:
                        left = self._slice_end - time.monotonic()
                        if self._closed or (left <= 0 and not self._in_use
                                            and (not self._used or not self._extend())):
                            self._end_turn()
                        else:
                            cv.wait(left if left > 0 else self._slice)
        except BaseException:
            # The queue failed (an OSError from the kernel): writers go on under SQLite's
            # lock alone rather than wait for a turn that will never come.
            with cv:
                self._held = False
                self._stalled = True
                cv.notify_all()
            raise
        finally:
            # The descriptor is closed here, never under a thread blocked in wait_turn.
            self._queue.close()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def abandon_after_fork(self) -> None:
        """In the child of os.fork(): drop this copy without unlocking anything. The turn
        belongs to the parent (its locks live on the open file description both share, and
        closing one descriptor of it releases none), and so does the background thread."""
        with contextlib.suppress(OSError):
            os.close(self._queue.fd)
