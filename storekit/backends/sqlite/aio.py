"""SQLite for storekit.aio: short statements on the event loop, the rest off it.

A thread hop per call costs tens of microseconds (aiosqlite's 150x the sync call), so
statements run on the loop, and only what may wait or run long leaves it:

- Reads run under a budget: sqlite3's progress handler interrupts one that runs past
  BUDGET_S, and it runs again in a worker thread (an interrupted read changed nothing;
  an interrupted autocommit write was rolled back whole).
- SQLite's busy handler would sleep on the loop, so these connections have busy_timeout
  0; a statement that meets SQLITE_BUSY (BEGIN IMMEDIATE behind another program's writer,
  a WAL recovery) runs again in a thread with the configured timeout.
- Tasks queue for the write connection in arrival order (storekit/aio_gate.py). The
  process's cross-process turn (writelock.WriteLease) is taken on the loop when the
  process holds it, else awaited from a thread. A checkpoint runs in a thread: beside
  the next writer when tasks or another process wait (a PASSIVE checkpoint does not
  block writers), else in the turn, as the sync backend does.
- A statement on the loop never suspends its task, so one that finds no other task has
  run for TURN_S yields first: a loop over short statements does not hold the loop.
- A write inside an explicit transaction cannot be interrupted (SQLite rolls back the
  whole transaction), so it runs on the loop; a statement that once took longer than
  the budget runs in a thread from then on, as does run_many of more than
  MANY_ON_LOOP_ROWS rows or MANY_ON_LOOP_BYTES of text and blobs (a few small rows cost
  less than the hop to a thread). Scripts always run
  in a thread.
- Nor can a write transaction's COMMIT (FTS5 flushes its pending index there, a long
  write): it runs on the loop uninterrupted after a small transaction, and in the
  writer's thread after one that ran anything off the loop or changed many rows.

A thread is never left using a connection someone else gets next: a cancelled task
interrupts its thread's statement and waits for it, and a cancelled wait for the turn
or a checkpoint gives the write lock back only when its thread is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from storekit.aio_gate import Gate
from storekit.backends.base import Refusing, Row, RunResult, SqliteOptions
from storekit.backends.sqlite.backend import SqliteBackend, SqliteHandle
from storekit.backends.sqlite.converters import convert
from storekit.errors import (
    BAD_INPUT,
    BusyError,
    OperationalError,
    StoreError,
    ended,
    from_bad_input,
    from_sqlite,
)
from storekit.params import Params, cached_sqlite, sqlite_values, translate
from storekit.url import DatabaseURL

BUDGET_S = 0.002  # a statement on the loop is interrupted after this long
PROGRESS_OPS = 1000  # VM instructions between two looks at the clock (tens of us)
BATCH = 1000  # iter(): rows per fetch
# A write in a transaction that ran past the budget this many times runs in a thread,
# until a run there shows it is fast again (one slow run may be the machine's load).
SLOW_STRIKES = 2
# A write transaction that changed more rows than this commits in the writer's thread.
COMMIT_ON_LOOP_ROWS = 256
MANY_ON_LOOP_ROWS = 16  # run_many in a write transaction: up to this many rows on the loop
# ... and up to this many bytes of text and blobs: copying megabytes into the file would
# hold the loop for many milliseconds, the first time as much as later.
MANY_ON_LOOP_BYTES = 64 * 1024
_INF = float("inf")
_BUSY = 5  # SQLITE_BUSY
_RERUN = (_BUSY, 9)  # SQLITE_BUSY, SQLITE_INTERRUPT: the statement had no effect
# SQLITE_ERROR. With busy_timeout 0, SQLite skips the schema check it cannot lock for
# (another process writes, in rollback-journal mode, or recovers the WAL) and reports
# what the stale schema it has cached says: "no such table" for a table just created.
# Outside a write transaction whose BEGIN took the lock (which keeps the schema still)
# such a statement runs again in a thread, waiting for the lock; it had no effect (an
# error rolls back the statement, and an autocommit one whole).
_ERROR = 1
BUSY_SLICE_MS = 50  # a wait for the lock in a thread: how long between looks at a cancel
# A statement on the loop never suspends the task: after this long without a turn for
# other tasks (a loop of many short statements), the next statement yields first.
TURN_S = 0.002
_WITH_WRITE = re.compile(r"\b(insert|update|delete|replace)\b", re.IGNORECASE)
_AGAIN: Any = object()
_LATER: Any = object()
T = TypeVar("T")


class _Conn:
    """A connection and the deadline its progress handler enforces (inf: none)."""

    __slots__ = ("__weakref__", "budget_end", "conn", "handle")

    def __init__(self, handle: SqliteHandle) -> None:
        self.handle = handle
        self.conn = handle.conn
        self.budget_end = _INF
        now = time.monotonic
        handle.conn.set_progress_handler(lambda: now() > self.budget_end, PROGRESS_OPS)
        handle.conn.execute("PRAGMA busy_timeout=0")  # waits happen in threads


# A handle's connection once its transaction ended. AsyncTransaction binds the handle's
# methods, and a reference kept past the block (r = tx.run) must not run on the
# connection the next transaction holds.
_ENDED: Any = Refusing("the transaction has ended; use it inside its with block")


def _small(rows: list[Any]) -> bool:
    """The rows' text and blobs add up to at most MANY_ON_LOOP_BYTES."""
    size = 0
    for row in rows:
        for v in (row.values() if isinstance(row, Mapping) else
                  (row,) if isinstance(row, (str, bytes)) else row):
            if isinstance(v, (str, bytes, bytearray, memoryview)):
                size += len(v)
    return size <= MANY_ON_LOOP_BYTES


def _code(exc: StoreError) -> int:
    return getattr(exc.__cause__, "sqlite_errorcode", 0) & 0xFF


class AsyncSqliteHandle:
    """Data methods on the connection a transaction holds."""

    __slots__ = ("_b", "c", "write_tx")

    def __init__(self, backend: AsyncSqliteBackend, c: _Conn, write_tx: bool) -> None:
        self._b, self.c, self.write_tx = backend, c, write_tx

    # _stmt's common case inline (see _now): one coroutine per statement, not two.
    async def run(self, sql: str, params: Params = None) -> RunResult:
        b, c, i = self._b, self.c, self._interruptible(sql)
        done = b._now(c, c.handle.run, i, sql, params)
        if done is _LATER or done is _AGAIN:
            return await b._later(done, c, c.handle.run, i, sql, params)
        return done

    async def get(self, sql: str, params: Params = None) -> Row | None:
        b, c, i = self._b, self.c, self._interruptible(sql)
        done = b._now(c, c.handle.get, i, sql, params)
        if done is _LATER or done is _AGAIN:
            return await b._later(done, c, c.handle.get, i, sql, params)
        return done

    async def all(self, sql: str, params: Params = None) -> list[Row]:
        b, c, i = self._b, self.c, self._interruptible(sql)
        done = b._now(c, c.handle.all, i, sql, params)
        if done is _LATER or done is _AGAIN:
            return await b._later(done, c, c.handle.all, i, sql, params)
        return done

    def iter(self, sql: str, params: Params = None, tx: Any = None) -> AsyncIterator[Row]:
        return self._b._iter(self.c, self._interruptible(sql), sql, params, tx)

    async def run_deferred(self, sql: str, params: Params = None) -> None:
        await self.run(sql, params)  # no round trip to save: it runs now

    async def run_many(self, sql: str, seq: Iterable[Sequence[Any] | Mapping[str, Any]]) -> int:
        try:
            rows = seq if isinstance(seq, list) else list(seq)  # a generator stays on the loop
            small = self.write_tx and len(rows) <= MANY_ON_LOOP_ROWS and _small(rows)
        except BAD_INPUT as exc:  # not a sequence of rows: as the sync handle refuses it
            raise from_bad_input(exc) from exc
        if small:
            # Not interruptible, as run() in a write transaction; one that ran long moves
            # to the thread next time (_stmt).
            return await self._b._stmt(self.c, self.c.handle.run_many, False, sql, rows)
        return await self._b._off_loop(self.c, self.c.handle.run_many, sql, rows)

    async def exec(self, script: str) -> None:
        await self._b._off_loop(self.c, self.c.handle.exec, script)

    def _interruptible(self, sql: str) -> bool:
        return not self.write_tx or self._b._is_read(sql)


class AsyncSqliteBackend:
    name = "sqlite"
    options_from = staticmethod(SqliteBackend.options_from)

    @classmethod
    async def open(cls, url: DatabaseURL, options: SqliteOptions | None) -> AsyncSqliteBackend:
        # Opening sets the journal mode, which may wait for another process: in a thread.
        sync = await _settled(asyncio.to_thread(SqliteBackend, url, options),
                              lambda s: s.close())
        try:
            self = cls(sync)
            if not sync.memory:
                self._idle.append(await _settled(asyncio.to_thread(self._open_reader),
                                                 self._idle.append))
        except BaseException:
            await asyncio.to_thread(sync.close)
            raise
        return self

    def __init__(self, sync: SqliteBackend) -> None:
        self._sync = sync
        self.capabilities = sync.capabilities
        self.memory = sync.memory
        self.where = sync.where
        o = sync.options
        self._busy_ms = o.busy_timeout_ms
        self._timeout = o.busy_timeout_ms / 1000
        self._w = _Conn(sync._writer)
        self._raw_w = functools.partial(self._raw, self._w)  # BEGIN and COMMIT
        self._idle: list[_Conn] = []
        self._queue = Gate(1, self._timeout)
        self._closing = False
        # One thread for what runs while the write lock is held (they are serialised
        # anyway), a few for reads that ran past the budget and outside checkpoints.
        self._wpool = ThreadPoolExecutor(1, thread_name_prefix="storekit-aio-writer")
        self._rpool = ThreadPoolExecutor(4, thread_name_prefix="storekit-aio-reader")
        # Uninterruptible statements seen running past the budget, and how often.
        self._slow: dict[str, int] = {}
        self._reads: dict[str, bool] = {}
        self._write_tx = False  # a write transaction is open on the writer
        self._tx_lost = False  # SQLite rolled it back (an interrupted write): refuse the rest
        self._tx_heavy = False  # the write transaction ran something off the loop
        self._tx_changes = 0  # the writer's total_changes when it began
        self._checkpointing: Future[None] | None = None  # one outside the turn, running
        self._turn_at = time.monotonic()  # when a statement last let other tasks run
        # Without WAL or with synchronous=full a COMMIT waits for readers or the disk.
        self._commit_off_loop = (o.synchronous.lower() in ("full", "extra")
                                 or o.journal_mode.lower() != "wal")
        # A write transaction's BEGIN locks the file (not a deferred one): see _ERROR.
        self._begin_locks = o.begin.lower() != "deferred"

    def _open_reader(self) -> _Conn:
        conn = self._sync._connect()
        with self._sync._readers_lock:
            self._sync._readers.append(conn)  # closed with the backend
        return _Conn(SqliteHandle(conn, self.where, self._sync._types))

    async def _reader(self) -> _Conn:
        if self._idle:
            return self._idle.pop()
        self._check_open()  # a connection opened now would outlive close()
        c: _Conn = await _settled(asyncio.to_thread(self._open_reader), self._idle.append)
        return c

    def _is_read(self, sql: str) -> bool:
        """A statement an interrupt cannot roll a transaction back for: a query."""
        if type(sql) is not str:
            # Not a key (a list: the call itself raises the error; a str subclass: its
            # __hash__ and __eq__ could answer with another statement's entry, or make
            # this one answer for others). Such a statement just runs uninterrupted.
            return False
        found = self._reads.get(sql)
        if found is None:
            try:
                t = translate(sql, "sqlite")
            except Exception:
                return False  # the call itself raises the error
            found = t.query and not (sql.lstrip()[:4].lower() == "with"
                                     and _WITH_WRITE.search(sql) is not None)
            if len(self._reads) > 4096:
                self._reads.clear()
            self._reads[sql] = found
        return found

    # Running a statement: on the loop under the budget, or in a thread.
    def _try(self, c: _Conn, fn: Callable[..., T], interruptible: bool, sql: str,
             params: Params) -> T:
        """fn(sql, params) on the loop; _AGAIN if it must run again off the loop."""
        if self._closing:
            self._check_open()  # see close(): the connections may be closing in a thread
        start = time.monotonic()
        if interruptible:
            if c is self._w and self._write_tx:
                # Describing result types creates a temporary view: a write, which an
                # interrupt would answer by rolling back the transaction. Not timed.
                try:  # noqa: SIM105 - contextlib.suppress costs a microsecond here
                    c.handle._converters((type(sql) is str and cached_sqlite(sql))
                                          or translate(sql, "sqlite"))
                except Exception:
                    pass
            c.budget_end = start + BUDGET_S
        try:
            return fn(sql, params)
        except StoreError as exc:
            if c is self._w and self._write_tx and not c.conn.in_transaction:
                # SQLite rolled the transaction back (SQLITE_FULL, IOERR, an interrupted
                # write): what follows must not run, nor COMMIT succeed, in autocommit.
                self._tx_lost = True
            code = _code(exc)
            if code not in _RERUN and (code != _ERROR or (
                    c is self._w and self._write_tx and (self._begin_locks or self._tx_lost))):
                raise
            if self._tx_lost and c is self._w:
                raise OperationalError(
                    f"SQLite rolled the transaction back ({exc}); nothing was committed"
                ) from exc
            return _AGAIN  # type: ignore[no-any-return]
        finally:
            c.budget_end = _INF
            if (not interruptible and time.monotonic() - start > BUDGET_S
                    and type(sql) is str):
                if len(self._slow) > 4096:
                    self._slow.clear()
                self._slow[sql] = self._slow.get(sql, 0) + 1

    async def _turn(self) -> None:
        """Let other tasks run (callers check TURN_S first: no coroutine per statement)."""
        await asyncio.sleep(0)
        self._turn_at = time.monotonic()

    def _now(self, c: _Conn, fn: Callable[..., T], interruptible: bool, sql: str,
             params: Params) -> T:
        """_stmt without a coroutine, when the statement can run on the loop now: its
        result; else _LATER (a turn is due, the transaction is lost, the statement was
        slow: all of _stmt) or _AGAIN (interrupted or SQLITE_BUSY: off the loop), which
        the caller passes to _later()."""
        if time.monotonic() - self._turn_at > TURN_S or (self._tx_lost and c is self._w):
            return _LATER  # type: ignore[no-any-return]
        # Only an exact str is a key of _slow (see _is_read); fn refuses what is not a str.
        if type(sql) is str and sql in self._slow:
            return _LATER  # type: ignore[no-any-return]
        return self._try(c, fn, interruptible, sql, params)

    async def _later(self, why: Any, c: _Conn, fn: Callable[..., T], interruptible: bool,
                     sql: str, params: Params) -> T:
        if why is _AGAIN:
            return await self._off_loop(c, fn, sql, params, again=True)
        return await self._stmt(c, fn, interruptible, sql, params)

    async def _stmt(self, c: _Conn, fn: Callable[..., T], interruptible: bool, sql: str,
                    params: Params) -> T:
        if time.monotonic() - self._turn_at > TURN_S:
            await self._turn()
        if self._tx_lost and c is self._w:
            raise OperationalError("the transaction was rolled back by SQLite; end it")
        fast = type(sql) is not str or self._slow.get(sql, 0) < SLOW_STRIKES
        if fast:
            result = self._try(c, fn, interruptible, sql, params)
            if result is not _AGAIN:
                return result
            return await self._off_loop(c, fn, sql, params, again=True)
        job = _Job()
        result = await self._off_loop(c, fn, sql, params, job=job, again=True)
        if job.seconds < BUDGET_S / 2 and type(sql) is str:
            self._slow.pop(sql, None)  # fast again (a load spike had marked it): on the loop
        return result

    async def _off_loop(self, c: _Conn, fn: Callable[..., T], *args: Any,
                        job: _Job | None = None, again: bool = False) -> T:
        """fn(*args) in a worker thread, with the busy timeout on. Never returns while the
        thread still uses the connection: a cancellation interrupts it and waits.
        again: fn is one statement, which SQLITE_BUSY leaves undone (see _in_thread)."""
        if self._closing:
            self._check_open()  # the pools are shut down or shutting down
        job = job or _Job()
        if c is self._w:
            self._tx_heavy = self._write_tx  # its COMMIT may be long too
        pool = self._wpool if c is self._w else self._rpool
        fut = asyncio.get_running_loop().run_in_executor(
            pool, self._in_thread, c, job, functools.partial(fn, *args), again)
        try:
            await asyncio.wait((fut,))
        except asyncio.CancelledError:
            job.cancelled = True
            while not fut.done():
                c.conn.interrupt()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait((fut,), timeout=0.05)
            if not fut.cancelled():
                fut.exception()  # retrieved: the interruption is the expected outcome
            if c is self._w and self._write_tx and not c.conn.in_transaction:
                self._tx_lost = True
            raise
        if (c is self._w and self._write_tx and fut.exception() is not None
                and not c.conn.in_transaction):
            self._tx_lost = True  # as in _try
        return fut.result()

    def _in_thread(self, c: _Conn, job: _Job, call: Callable[[], T], again: bool) -> T:
        if job.cancelled:
            raise _Abandoned  # the caller gave up before the thread started
        conn = c.conn
        start = time.monotonic()
        try:
            if not again or conn.in_transaction:
                conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
                return call()
            # interrupt() does not end the busy handler's sleep: a cancelled caller would
            # wait out the whole busy timeout, holding the write lock's queue. One
            # statement outside a transaction (BEGIN, an autocommit one) that meets
            # SQLITE_BUSY did nothing and may run again (SQLite's rule), so the wait goes
            # in slices, and a cancellation is seen between two.
            deadline = start + self._timeout
            while True:
                left = int((deadline - time.monotonic()) * 1000)
                conn.execute(f"PRAGMA busy_timeout={max(1, min(BUSY_SLICE_MS, left))}")
                try:
                    return call()
                except BusyError as exc:
                    if _code(exc) != _BUSY or job.cancelled or left <= BUSY_SLICE_MS:
                        raise
                except StoreError as exc:
                    if _code(exc) != _ERROR or job.cancelled:
                        raise
                    # Maybe a stale schema's error (see _ERROR): once more, with the
                    # whole wait left for the schema's lock. A real one comes at once.
                    conn.execute(f"PRAGMA busy_timeout={max(1, left)}")
                    return call()
        finally:
            job.seconds = time.monotonic() - start
            conn.execute("PRAGMA busy_timeout=0")

    def _raw(self, c: _Conn, statement: str, _params: Params = None) -> None:
        if self._closing:
            self._check_open()
        try:
            c.conn.execute(statement)
        except sqlite3.Error as exc:
            raise from_sqlite(exc, self.where) from exc

    # The write lock: this process's tasks in arrival order, then the cross-process turn.
    async def _acquire_writer(self) -> None:
        started = time.monotonic()
        if not self._queue.try_acquire() and not await self._queue.acquire():
            self._check_open()
            raise BusyError(f"waited {self._timeout:g} s for the write lock on {self.where}")
        sync = self._sync
        try:
            lease = sync._lease if sync._lease_tried else sync._open_lease()
            # On the loop, only a turn the process holds: asking would wake the lease's
            # thread for nothing (the thread below asks).
            if lease is not None and not lease.acquire(0.0, ask=False):
                ok = await self._holding(lease.acquire, started + self._timeout, leased=None)
                if not ok:
                    raise BusyError(f"waited {self._timeout:g} s for the write lock on "
                                    f"{self.where} (held by another process)")
            cp = sync._checkpoints
            if cp is not None and cp.tail_pending:  # the short tail, in this turn
                await self._holding(functools.partial(cp.run, in_turn=True), leased=True)
        except _Abandoned:
            raise asyncio.CancelledError from None
        except BaseException:
            self._let_go(hand_over=True)
            raise

    async def _holding(self, fn: Callable[..., Any], *args: Any, leased: bool | None) -> Any:
        """fn(*args) in the writer's thread while this task holds the write lock. If the
        task is cancelled, the lock is given back when the thread is done, not before
        (leased: whether the turn is held then; None: what fn returned says)."""
        if self._closing:
            self._check_open()
        fut = asyncio.get_running_loop().run_in_executor(self._wpool, fn, *args)
        try:
            await asyncio.wait((fut,))
        except asyncio.CancelledError:
            fut.add_done_callback(functools.partial(self._after_abandoned, leased))
            raise _Abandoned from None
        return fut.result()

    def _after_abandoned(self, leased: bool | None, fut: asyncio.Future[Any]) -> None:
        failed = fut.cancelled() or fut.exception() is not None
        held = leased if leased is not None else not failed and fut.result() is True
        self._let_go(hand_over=held)

    def _let_go(self, *, hand_over: bool = False) -> None:
        lease = self._sync._lease
        try:
            if lease is not None:
                lease.release(hand_over=hand_over)
        finally:
            self._queue.release()

    def _release_writer(self) -> None:
        """Roll back what is left open, checkpoint when due (in a thread), give back."""
        self._write_tx = self._tx_lost = self._tx_heavy = False
        if self._closing:  # close() rolls back; its thread may be closing conn now
            self._let_go()
            return
        conn = self._w.conn
        if conn.in_transaction:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
        sync = self._sync
        cp, lease = sync._checkpoints, sync._lease
        if cp is not None and cp.due():
            others = lease is not None and not cp.blocked and lease.others_waiting()
            if others or (not cp.blocked and self._queue.waiting > 0):
                # The next writer, another process's or a task of this one, writes while
                # the WAL is copied back: a PASSIVE checkpoint does not block writers.
                self._let_go(hand_over=others)
                if self._checkpointing is None or self._checkpointing.done():
                    self._checkpointing = self._rpool.submit(cp.run, in_turn=False)
                return
            # In the turn, as SQLite would: this process's next writer waits for it.
            fut = asyncio.get_running_loop().run_in_executor(
                self._wpool, functools.partial(cp.run, in_turn=True))
            fut.add_done_callback(functools.partial(self._after_abandoned, False))
            return
        self._let_go()

    async def _hold_memory(self) -> None:
        if not self._queue.try_acquire() and not await self._queue.acquire():
            self._check_open()
            raise BusyError(f"waited {self._timeout:g} s for the {self.where}"
                            " (another task's transaction holds it)")

    # Autocommit data methods.
    async def run(self, sql: str, params: Params = None) -> RunResult:
        await (self._hold_memory() if self.memory else self._acquire_writer())
        try:
            # Only a query is interruptible: a write reported as interrupted may have
            # committed already, and running it again would write it twice.
            return await self._stmt(self._w, self._w.handle.run, self._is_read(sql), sql,
                                    params)
        finally:
            self._release_writer()

    async def exec(self, script: str) -> None:
        await (self._hold_memory() if self.memory else self._acquire_writer())
        try:
            await self._off_loop(self._w, self._w.handle.exec, script)
        finally:
            self._release_writer()

    async def get(self, sql: str, params: Params = None) -> Row | None:
        if self.memory:
            return await self._memory(self._w.handle.get, sql, params)
        if time.monotonic() - self._turn_at > TURN_S:
            await self._turn()
        c = self._idle.pop() if self._idle else await self._reader()
        try:
            row = (self._try(c, c.handle.get, True, sql, params) if self._is_read(sql)
                    else _AGAIN)  # a write (RETURNING) is never interrupted: in a thread
            return row if row is not _AGAIN else await self._off_loop(c, c.handle.get, sql,
                                                                      params)
        finally:
            self._idle.append(c)

    async def all(self, sql: str, params: Params = None) -> list[Row]:
        if self.memory:
            return await self._memory(self._w.handle.all, sql, params)
        if time.monotonic() - self._turn_at > TURN_S:
            await self._turn()
        c = self._idle.pop() if self._idle else await self._reader()
        try:
            rows = (self._try(c, c.handle.all, True, sql, params) if self._is_read(sql)
                    else _AGAIN)  # a write (RETURNING) is never interrupted: in a thread
            return rows if rows is not _AGAIN else await self._off_loop(c, c.handle.all, sql,
                                                                        params)
        finally:
            self._idle.append(c)

    async def _memory(self, fn: Callable[..., T], sql: str, params: Params) -> T:
        await self._hold_memory()
        try:
            return await self._stmt(self._w, fn, self._is_read(sql), sql, params)
        finally:
            self._queue.release()

    def iter(self, sql: str, params: Params = None) -> AsyncIterator[Row]:
        return self._iter(None, self._is_read(sql), sql, params, None)

    async def _iter(self, c: _Conn | None, interruptible: bool, sql: str, params: Params,
                    tx: Any) -> AsyncIterator[Row]:
        """The first batch on the loop (a short result needs no thread), later ones in a
        thread: an interrupted fetch could not resume where it stopped."""
        if tx is not None and tx._handle is None:
            raise ended()
        if time.monotonic() - self._turn_at > TURN_S:  # its first batch runs on the loop
            await self._turn()
        own = c is None
        if c is None:
            if self.memory:  # read whole under the lock, as the sync backend does
                for row in await self.all(sql, params):
                    yield row
                return
            c = await self._reader()
        try:
            opened = (self._try(c, functools.partial(self._open_cursor, c), True, sql, params)
                      if interruptible else _AGAIN)  # a write runs in a thread
            if opened is _AGAIN:
                opened = await self._off_loop(c, functools.partial(self._open_cursor, c),
                                              sql, params)
            cur, names, conv, batch = opened
            if tx is not None:
                tx._opened(cur)
            try:
                while batch:
                    for values in convert(batch, conv) if conv else batch:
                        if tx is not None and tx._handle is None:
                            raise ended()
                        yield dict(zip(names, values, strict=True))
                    if len(batch) < BATCH:
                        return
                    if tx is not None and tx._handle is None:
                        raise ended()
                    batch = await self._off_loop(c, self._fetch, cur)
            finally:
                if not self._closing:  # else close() closes the connection, maybe now
                    cur.close()  # a half-read cursor would keep the connection's snapshot open
        finally:
            if own:
                self._idle.append(c)

    def _open_cursor(self, c: _Conn, sql: str, params: Params) -> tuple[Any, ...]:
        try:
            t = (type(sql) is str and cached_sqlite(sql)) or translate(sql, "sqlite")
            conv = c.handle._converters(t)
            cur = c.conn.execute(t.sql, sqlite_values(t, params))
            if cur.description is None:
                return cur, [], (), []
            return cur, [d[0] for d in cur.description], conv, cur.fetchmany(BATCH)
        except sqlite3.Error as exc:
            raise from_sqlite(exc, self.where) from exc
        except BAD_INPUT as exc:
            raise from_bad_input(exc) from exc

    def _fetch(self, cur: sqlite3.Cursor) -> list[Any]:
        try:
            return cur.fetchmany(BATCH)
        except sqlite3.Error as exc:
            raise from_sqlite(exc, self.where) from exc

    # Transactions.
    async def begin(self, *, readonly: bool, team_id: Any = None,
                    isolation: str = "serializable") -> AsyncSqliteHandle:
        if team_id is not None:
            from storekit.backends.sqlite.dialect import scope_error

            raise scope_error()
        if readonly and not self.memory:
            c = await self._reader()
            try:
                self._raw(c, "PRAGMA query_only=ON")  # a write fails, as on PostgreSQL
                self._raw(c, "BEGIN DEFERRED")
            except BaseException:
                with contextlib.suppress(StoreError):
                    self._raw(c, "PRAGMA query_only=OFF")
                self._idle.append(c)
                raise
            return AsyncSqliteHandle(self, c, write_tx=False)
        await (self._hold_memory() if self.memory else self._acquire_writer())
        try:
            # BEGIN IMMEDIATE behind another program's writer waits in a thread.
            # Never under the budget: an interrupted BEGIN may have opened the
            # transaction (SQLite calls the progress handler after the last step too).
            w, raw, sql = self._w, self._raw_w, self._sync._begin
            done = self._now(w, raw, False, sql, None)
            if done is _LATER or done is _AGAIN:
                await self._later(done, w, raw, False, sql, None)
        except BaseException:
            self._release_writer()
            raise
        self._write_tx = True
        self._tx_changes = self._w.conn.total_changes
        return AsyncSqliteHandle(self, self._w, write_tx=not readonly)

    async def finish(self, handle: Any, *, commit: bool) -> None:
        c: _Conn = handle.c
        handle.c = _ENDED  # first: nothing but this finish uses the connection now
        try:
            self._check_open()  # closing: close() rolls back, maybe in its thread now
            if commit and c is self._w and (self._tx_lost or not c.conn.in_transaction):
                raise OperationalError("SQLite rolled this transaction back (an interrupted"
                                       " write); nothing was committed")
            if c.conn.in_transaction:
                if not commit:
                    self._raw(c, "ROLLBACK")
                elif self._commit_off_loop or (c is self._w and (self._tx_heavy or (
                        c.conn.total_changes - self._tx_changes > COMMIT_ON_LOOP_ROWS))):
                    await self._off_loop(c, self._raw, c, "COMMIT")
                else:
                    # Never under the budget: an interrupted COMMIT may have committed. One
                    # that ran long moves to the thread next time (_stmt).
                    raw = self._raw_w if c is self._w else functools.partial(self._raw, c)
                    done = self._now(c, raw, False, "COMMIT", None)
                    if done is _LATER or done is _AGAIN:
                        await self._later(done, c, raw, False, "COMMIT", None)
        except BaseException:
            if not self._closing and c.conn.in_transaction:
                with contextlib.suppress(StoreError):  # the first error is the one to see
                    self._raw(c, "ROLLBACK")
            raise
        finally:
            if c is self._w:
                self._release_writer()
            else:
                with contextlib.suppress(StoreError):
                    self._raw(c, "PRAGMA query_only=OFF")
                self._idle.append(c)

    async def savepoint(self, handle: Any, name: str) -> None:
        self._raw(handle.c, f"SAVEPOINT {name}")

    async def release(self, handle: Any, name: str, *, commit: bool) -> None:
        if not commit:
            self._raw(handle.c, f"ROLLBACK TO SAVEPOINT {name}")
        self._raw(handle.c, f"RELEASE SAVEPOINT {name}")

    def settings(self) -> dict[str, Any]:
        found = self._sync.settings()
        found["busy_timeout"] = self._busy_ms  # the connections' own 0 is an implementation detail
        return found

    async def notify(self, db: Any, channel: str, text: str) -> None:
        from storekit.backends.sqlite.aio_events import notify

        await notify(db, channel, text)

    async def listener(self, db: Any, sub: Any) -> Any:
        from storekit.backends.sqlite.aio_events import SqliteListener, ensure_events_table

        await ensure_events_table(db)
        return SqliteListener(sub, db)

    def _check_open(self) -> None:
        if self._closing:
            raise StoreError(f"the database {self._sync.url} is closed")  # as AsyncDatabase's

    async def close(self) -> None:
        # The tasks queued for the write lock get an error now. So does every later
        # statement on the loop (_try, _raw, _off_loop...: they check _queue.closed): a
        # task suspended inside a call, holding a connection (at _turn's yield, say),
        # would otherwise use it while _close() closes it in a thread, which crashes.
        self._closing = True  # the gate's state, read as a plain attribute on hot paths
        self._queue.close()
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        # A statement in a thread (an endless query, a long script) would keep shutdown()
        # waiting for it for ever: it is interrupted, again until the pools are done (one
        # may start just after an interrupt), and its task gets the error (StoreError).
        # A checkpoint, on a connection of its own, still finishes first.
        stop = threading.Event()
        interrupter = threading.Thread(target=self._interrupt_until, args=(stop,),
                                       name="storekit-aio-close", daemon=True)
        interrupter.start()
        try:
            self._wpool.shutdown(wait=True)
            self._rpool.shutdown(wait=True)
        finally:
            stop.set()
            interrupter.join()
        self._sync.close()

    def _interrupt_until(self, stop: threading.Event) -> None:
        sync = self._sync
        while True:
            with sync._readers_lock:
                conns = [self._w.conn, *sync._readers]
            for conn in conns:
                with contextlib.suppress(sqlite3.Error):  # closed already
                    conn.interrupt()
            if stop.wait(0.02):
                return


class _Job:
    __slots__ = ("cancelled", "seconds")

    def __init__(self) -> None:
        self.cancelled = False
        self.seconds = 0.0


class _Abandoned(Exception):
    """A cancelled wait whose thread runs on; it gives the write lock back itself."""


async def _settled(fut: Any, keep: Callable[[Any], Any]) -> Any:
    """Await a thread's result; if cancelled meanwhile, hand it to keep() once it comes
    (a connection to the idle list, a backend to close), so nothing is leaked."""
    task = asyncio.ensure_future(fut)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        def done(t: asyncio.Future[Any]) -> None:
            if not t.cancelled() and t.exception() is None:
                keep(t.result())

        task.add_done_callback(done)
        raise
