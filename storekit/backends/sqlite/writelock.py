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

import _thread
import contextlib
import fcntl
import os
import queue
import struct
import threading
from time import monotonic as _monotonic
from typing import Any


class _Node:
    """A place in FairLock's queue (a CLH queue lock): its lock is held until the node is
    done, and its successor waits on it. `done` and `abandoned` are set before the lock is
    released, so a successor reads them rather than the lock's state."""

    __slots__ = ("abandoned", "done", "lock", "prev")

    def __init__(self) -> None:
        self.lock = _thread.allocate_lock()
        self.lock.acquire()
        self.prev: _Node | None = None
        self.done = False  # released or abandoned: the successor need not wait on it
        self.abandoned = False  # left without holding: the successor looks further back


class FairLock:
    """A lock handed to waiters in arrival order (a CLH queue of C-level locks).

    Exception-safe at every point (a signal handler raising at any call or function entry,
    KeyboardInterrupt): CPython runs signal handlers and switches threads only at calls,
    function entries and backward jumps, so each change of state below is a run of plain
    attribute stores ended by one C call (a lock's release), and a waiter that leaves
    (timeout, exception) marks its node abandoned before releasing it: whatever point an
    exception comes at, the queue stays whole. Releasing is two stores and one C call.
    """

    def __init__(self) -> None:
        self._mutex = _thread.allocate_lock()  # held for two stores only (enqueue)
        tail = _Node()
        tail.done = True
        tail.lock.release()
        self._tail = tail
        # The holder, by thread and node: an exception can come between the lock changing
        # hands and the caller learning of it, so callers give it back by owner.
        self._owner: int | None = None
        self._node: _Node | None = None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """As threading.Lock.acquire (blocking=False is timeout=0)."""
        if not blocking:
            timeout = 0
        node = _Node()
        ident = _thread.get_ident()
        deadline = _monotonic() + timeout if timeout > 0 else 0.0
        try:
            with self._mutex:  # C-level: nothing can come between its acquire and release
                node.prev = self._tail
                self._tail = node
            pred: _Node | None = node.prev  # never None: the first node is done
            while pred is not None:
                if pred.done:
                    if not pred.abandoned:
                        node.prev = None
                        self._node = node  # no call between these two stores
                        self._owner = ident
                        break
                    pred = node.prev = pred.prev  # it left: wait for the one before it
                    continue
                if timeout < 0:
                    pred.lock.acquire()
                elif timeout == 0:
                    break
                else:
                    left = deadline - _monotonic()
                    if left <= 0 or not pred.lock.acquire(True, left):
                        break
        finally:
            if self._node is not node:
                # Timed out or interrupted before it was this thread's: leave the queue.
                # If the lock was handed over meanwhile, the successor gets it instead.
                node.abandoned = True
                node.done = True
                node.lock.release()
        return self._node is node

    def release(self) -> None:
        node = self._node
        assert node is not None, "release of an unlocked FairLock"
        self._node = None
        self._owner = None
        node.done = True
        node.lock.release()

    def locked(self) -> bool:
        return self._node is not None or not self._tail.done

    def others_waiting(self) -> bool:
        """Whether a thread queued behind the holder (a hint: it may be leaving)."""
        return self._tail is not self._node

    def owned(self) -> bool:
        """True if the calling thread holds the lock."""
        return self._owner == _thread.get_ident()

    def release_if_owned(self) -> None:
        if self._owner == _thread.get_ident():
            self.release()

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


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
# A turn nobody in the process has used for this long goes to the next process in the queue,
# slice or not: writers that commit back to back keep it, a process whose agents wait (on a
# model, a tool, a sleep) does not make every other process wait with them.
IDLE_S = 0.0005
# How often the lease thread looks at a turn its writers keep giving back and taking again
# while no other process queues: each look wakes the thread and takes the GIL from the
# writers. A process that queues is seen within this long, then looked for every IDLE_S.
BUSY_LOOK_S = 0.004
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

    Exception-safe in the writer (a signal handler raising at any call or function entry):
    the mutex is a C-level lock taken only by `with` (released whatever comes), writers
    wait on a lock of their own (no threading.Condition, whose methods are Python code),
    and every state a writer can be interrupted in is one the background thread resolves:
    a turn not in use is ended once its slice is over. Signals never interrupt that thread.
    """

    def __init__(self, path: str, slice_s: float, stall_s: float | None = None) -> None:
        self._queue = TicketQueue(path)
        self._slice = slice_s
        self._stall = stall_s
        self._mutex = _thread.allocate_lock()
        self._kick: queue.SimpleQueue[None] = queue.SimpleQueue()  # wakes the thread (C)
        self._grant: Any = None  # the waiting writer's wake lock, until the thread grants
        self._granted: Any = None  # the wake lock of the writer last granted the turn
        self._wanted = False
        self._held = False
        self._in_use = False
        self._used = False  # a write started since the slice began
        self._closed = False
        self._stalled = False  # writers gave up on the queue until this process's next turn
        self._slice_end = 0.0
        self._idle_from = 0.0  # when the last writer gave the turn back
        self._nap = False  # the thread sleeps until a writer gives the turn back (release)
        self._thread = threading.Thread(target=self._run, daemon=True, name="storekit-lease")
        try:
            self._thread.start()
        except BaseException:  # no thread to close the descriptor: close it here
            self._queue.close()
            raise

    def acquire(self, deadline: float, *, ask: bool = True) -> bool:
        """True once this process may write: it holds the turn, or (with stall_s) the
        queue has stalled; False if time.monotonic() reached deadline first. With
        ask=False, only a turn the process holds: False at once, without queueing."""
        wake = give_up = None
        try:
            with self._mutex:
                if self._held:
                    if _monotonic() < self._slice_end or self._extend():
                        self._in_use = self._used = True
                        return True
                    self._end_turn()  # slice over and others queue: to the back of the line
                elif self._stalled:
                    return True
                if not ask:
                    return False
                asked = _thread.allocate_lock()
                asked.acquire()
                # The background thread marks the turn in use for this caller when it
                # gets it, so a caller scheduled late still gets one write per turn.
                wake = self._grant = asked
                self._wanted = True
                self._kick.put(None)
            give_up = deadline
            if self._stall is not None:
                give_up = min(deadline, _monotonic() + self._stall)
            while self._granted is not wake:
                left = give_up - _monotonic()
                if left <= 0 or self._closed:
                    break
                wake.acquire(True, left)
        finally:
            # Plain stores, no call between: the thread sees all of them or none.
            if wake is not None and self._granted is not wake:
                # Timed out, closed or interrupted (a signal handler raised): stop asking,
                # or a turn nobody uses would be taken and kept.
                self._grant = None
                self._wanted = False
            # Granted: on an exception the caller gives the turn back (release).
        if self._granted is wake:
            return True
        if self._closed or give_up is None or give_up >= deadline:
            return False
        self._stalled = True  # the thread stays queued
        return True

    def release(self, hand_over: bool = False) -> None:
        """Give the turn back to the process; it ends when the slice is over, or at once
        with hand_over."""
        # Cleared first: should an exception interrupt the rest, the background thread
        # ends the turn once its slice is over.
        self._in_use = False
        self._granted = self._grant = None
        self._wanted = False
        if self._nap:  # no call since in_use: the thread sees it, or is woken here
            self._kick.put(None)
        if not self._held:
            return
        with self._mutex:
            now = self._idle_from = _monotonic()
            if self._held and (hand_over or (now >= self._slice_end and not self._extend())):
                self._end_turn()

    def others_waiting(self) -> bool:
        return self._queue.others_waiting()

    def _extend(self) -> bool:
        """Start another slice if nobody else has queued: a lone writer pays no hand-offs."""
        if self._queue.others_waiting():
            return False
        self._used = False
        self._slice_end = _monotonic() + self._slice
        return True

    def _end_turn(self) -> None:
        # The byte first: interrupted before it, the turn is still marked held and the
        # thread ends it (unlocking twice is harmless).
        self._queue.end_turn()
        self._held = False
        self._kick.put(None)

    def _wait_kick(self, timeout: float | None) -> None:
        with contextlib.suppress(queue.Empty):
            self._kick.get(timeout=timeout)
        while not self._kick.empty():  # one wake-up serves all sent so far
            self._kick.get_nowait()

    def _run(self) -> None:
        try:
            while True:
                while not self._wanted and not self._closed:
                    self._wait_kick(None)
                if self._closed:
                    return
                self._queue.wait_turn()
                with self._mutex:
                    self._held = True
                    self._used = False
                    self._stalled = False
                    # Fewer writers get longer slices, so a round of the queue takes
                    # about ROUND_S whatever their number: fewer hand-offs, the same
                    # bound on a writer's wait.
                    share = ROUND_S / (self._queue.waiting() + 1)
                    slice_end = _monotonic() + min(max(self._slice, share), MAX_SLICE_S)
                    wake = self._grant
                    if wake is not None:  # else the caller gave up meanwhile: pass it on
                        # No call between these stores: the writer sees all or none.
                        self._slice_end = slice_end
                        self._grant = None
                        self._wanted = False
                        self._in_use = self._used = True
                        self._granted = wake
                        wake.release()
                    else:
                        self._wanted = False
                        self._slice_end = 0.0
                self._watch()
        except BaseException:
            # The queue failed (an OSError from the kernel): writers go on under SQLite's
            # lock alone rather than wait for a turn that will never come.
            self._held = False
            self._stalled = True
            wake = self._grant
            if wake is not None:
                self._grant = None
                wake.release()  # the writer wakes, sees no grant, and stalls at its deadline
            raise
        finally:
            # The descriptor is closed here, never under a thread blocked in wait_turn.
            self._queue.close()

    def _watch(self) -> None:
        """Watch the held turn for a time it is left idle: writers end busy turns
        themselves, and give the turn back without waking this thread, which looks again
        IDLE_S after a release when another process queues, BUSY_LOOK_S when none does. A
        turn in use since the last look (no release between) has nothing to look at
        until it is given back: the thread sleeps and release() wakes it. An idle turn
        nobody queues for is looked at less and less often: a newcomer waits at most
        BUSY_LOOK_S or half as long as the turn had been idle, at most a slice."""
        seen: float | None = None  # _idle_from when the turn was last seen in use
        while self._held:
            nap = False
            with self._mutex:
                now = _monotonic()
                left = self._slice_end - now
                idle = now - self._idle_from
                if self._held and (self._closed or (not self._in_use and (
                        (left <= 0 and (not self._used or not self._extend()))
                        or (idle >= IDLE_S and self._queue.others_waiting())))):
                    self._end_turn()
                    continue
                if self._in_use:
                    nap = self._nap = seen == self._idle_from
                    seen = self._idle_from
                    pause = IDLE_S if nap or self._queue.others_waiting() else BUSY_LOOK_S
                else:
                    seen = None
                    # Past IDLE_S nobody waits (the turn would have ended above).
                    pause = (IDLE_S - idle if idle < IDLE_S and self._queue.others_waiting()
                             else min(max(BUSY_LOOK_S, idle / 2),
                                      max(self._slice, BUSY_LOOK_S)))
            if nap:
                # _nap set before in_use is read again, release() clears in_use before it
                # reads _nap: either this sees the turn given back or release() wakes it.
                if self._in_use:
                    self._wait_kick(None)
                self._nap = False
            else:
                self._wait_kick(min(left, pause) if left > 0 else pause)

    def close(self) -> None:
        self._closed = True
        self._kick.put(None)
        wake = self._grant
        if wake is not None and wake.locked():
            with contextlib.suppress(RuntimeError):
                wake.release()

    def abandon_after_fork(self) -> None:
        """In the child of os.fork(): drop this copy without unlocking anything. The turn
        belongs to the parent (its locks live on the open file description both share, and
        closing one descriptor of it releases none), and so does the background thread."""
        with contextlib.suppress(OSError):
            os.close(self._queue.fd)
