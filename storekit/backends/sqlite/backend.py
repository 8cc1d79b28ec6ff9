"""SQLite through the standard library's sqlite3.

One writer connection per Database, shared by threads under a lock so they queue in
Python instead of spinning in SQLite's busy handler; one reader connection per thread,
which WAL lets run alongside the writer. Write transactions start with the configured
BEGIN (IMMEDIATE by default): a read-then-write transaction then waits for the lock up
front instead of failing with "database is locked" when it upgrades.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import sqlite3
import threading
import time
import weakref
from _thread import get_ident as _get_ident
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from time import monotonic as _monotonic
from typing import Any, NoReturn

from storekit.backends.base import (
    Capabilities,
    PoolOptions,
    Refusing,
    Row,
    RunResult,
    SqliteOptions,
)
from storekit.backends.sqlite import checkpoint, opening
from storekit.backends.sqlite.checkpoint import Checkpointer
from storekit.backends.sqlite.converters import Converters, convert, probe
from storekit.backends.sqlite.writelock import STALL_S, FairLock, WriteLease
from storekit.errors import (
    BAD_INPUT,
    BusyError,
    ConfigurationError,
    DatabaseUnavailable,
    ProgrammingError,
    StoreError,
    ended,
    from_bad_input,
    from_sqlite,
)
from storekit.params import (
    Params,
    Translated,
    adapt_sqlite,
    cached_sqlite,
    check_params,
    check_sql_text,
    sqlite_values,
    translate,
)
from storekit.url import DatabaseURL

_NOT_IN_A_TRANSACTION = re.compile(
    r"\s*(vacuum|pragma|attach|detach|begin|commit|end|rollback|savepoint|release)\b",
    re.IGNORECASE)


def split_script(script: str) -> list[str]:
    """Split a script into complete statements (triggers' BEGIN ... END stay whole).

    sqlite3's executescript() commits any open transaction first, so a script is run
    statement by statement instead.
    """
    if not isinstance(script, str):
        raise ProgrammingError(f"a script must be a str, not {type(script).__name__}")
    check_sql_text(script)
    statements: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                statements.append(pending)
            pending = ""
    if pending.strip(" \t\r\n;"):
        statements.append(pending)
    return statements


# NamedTuple's generated __new__ is a Python frame; tuple.__new__ builds the same object.
_result = tuple.__new__


class SqliteHandle:
    """Data methods on one sqlite3 connection.

    `types` (shared by the backend's connections) caches, per SQL string, which result
    columns need converting from their declared type; DDL run through storekit clears it.
    """

    __slots__ = ("conn", "types", "where")

    def __init__(self, conn: sqlite3.Connection, where: str,
                 types: dict[str, Converters]) -> None:
        self.conn = conn
        self.where = where
        self.types = types

    def _converters(self, t: Translated) -> Converters:
        conv = self.types.get(t.sql)
        if conv is None:
            conv = probe(self.conn, t)
            if conv is None:
                return ()
            self.types[t.sql] = conv
        return conv

    def run(self, sql: str, params: Params = None) -> RunResult:
        try:
            t = (type(sql) is str and cached_sqlite(sql)) or translate(sql, "sqlite")
            if t.ddl:
                self.types.clear()
            cur = self.conn.execute(t.sql, sqlite_values(t, params))
            if t.returning:
                rows = cur.fetchall()
                return RunResult(len(rows), rows[0][0] if rows else None)
            return _result(RunResult, (cur.rowcount, cur.lastrowid if t.insert else None))
        except sqlite3.Error as exc:
            raise from_sqlite(exc, self.where) from exc
        except BAD_INPUT as exc:
            raise from_bad_input(exc) from exc

    def get(self, sql: str, params: Params = None) -> Row | None:
        try:
            t = (type(sql) is str and cached_sqlite(sql)) or translate(sql, "sqlite")
            conv = self._converters(t)
            cur = self.conn.execute(t.sql, sqlite_values(t, params))
            row = cur.fetchone()
        except sqlite3.Error as exc:
            raise from_sqlite(exc, self.where) from exc
        except BAD_INPUT as exc:
            raise from_bad_input(exc) from exc
        if row is None:
            return None
        if conv:
            row = convert([row], conv)[0]
        return dict(zip([d[0] for d in cur.description], row, strict=True))

    def all(self, sql: str, params: Params = None) -> list[Row]:
        try:
            t = (type(sql) is str and cached_sqlite(sql)) or translate(sql, "sqlite")
            conv = self._converters(t)
            cur = self.conn.execute(t.sql, sqlite_values(t, params))
            rows = cur.fetchall()
        except sqlite3.Error as exc:
            raise from_sqlite(exc, self.where) from exc
        except BAD_INPUT as exc:
            raise from_bad_input(exc) from exc
        if not rows:
            return []
        if conv:
            rows = convert(rows, conv)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in rows]

    def iter(self, sql: str, params: Params = None, tx: Any = None) -> Iterator[Row]:
        """Rows in batches. With tx (the Transaction it was called on), every step first
        checks that the transaction is still open: the connection is someone else's after."""
        if tx is not None and tx._handle is None:
            raise ended()
        try:
            t = (type(sql) is str and cached_sqlite(sql)) or translate(sql, "sqlite")
            conv = self._converters(t)
            cur = self.conn.execute(t.sql, sqlite_values(t, params))
        except sqlite3.Error as exc:
            raise from_sqlite(exc, self.where) from exc
        except BAD_INPUT as exc:
            raise from_bad_input(exc) from exc
        if cur.description is None:
            return
        if tx is not None:
            tx._opened(cur)
        names = [d[0] for d in cur.description]
        try:
            while True:
                if tx is not None and tx._handle is None:
                    raise ended()
                try:
                    batch = cur.fetchmany(1000)
                except sqlite3.Error as exc:
                    raise from_sqlite(exc, self.where) from exc
                if not batch:
                    return
                if conv:
                    batch = convert(batch, conv)
                for row in batch:
                    if tx is not None and tx._handle is None:
                        raise ended()
                    yield dict(zip(names, row, strict=True))
        finally:
            cur.close()  # a half-read cursor would keep the connection's snapshot open

    def run_deferred(self, sql: str, params: Params = None) -> None:
        self.run(sql, params)  # no round trip to save: it runs now

    def run_many(self, sql: str, seq: Iterable[Sequence[Any] | Mapping[str, Any]]) -> int:
        """All rows or none: a savepoint undoes the rows done when one fails."""
        conn = self.conn
        try:
            t = (type(sql) is str and cached_sqlite(sql)) or translate(sql, "sqlite")
            rows = seq if isinstance(seq, list) else list(seq)
            conn.execute("SAVEPOINT storekit_many")
            try:
                count = -1
                if t.style == "qmark" and not (rows and isinstance(rows[0], str)):
                    # Hand the rows to sqlite3 as they are; if one holds a value it cannot
                    # bind (a dict, a Decimal) or has the wrong length, take the checked path.
                    try:
                        count = conn.executemany(t.sql, rows).rowcount
                    except sqlite3.ProgrammingError:
                        conn.execute("ROLLBACK TO storekit_many")
                if count < 0:
                    count = conn.executemany(
                        t.sql, (adapt_sqlite(check_params(t, p)) for p in rows)).rowcount
            except BaseException:
                conn.execute("ROLLBACK TO storekit_many")
                conn.execute("RELEASE storekit_many")
                raise
            conn.execute("RELEASE storekit_many")
            return count
        except sqlite3.Error as exc:
            raise from_sqlite(exc, self.where) from exc
        except BAD_INPUT as exc:
            raise from_bad_input(exc) from exc

    def exec(self, script: str) -> None:
        """A script runs whole or not at all, as on PostgreSQL: inside a savepoint (in a
        transaction) or its own transaction. Scripts with statements that cannot run in
        a transaction (VACUUM, PRAGMA, ATTACH, DETACH, transaction control) run as they are."""
        conn = self.conn
        try:
            statements = split_script(script)
            self.types.clear()
            if len(statements) == 1 or any(map(_NOT_IN_A_TRANSACTION.match, statements)):
                for statement in statements:
                    conn.execute(statement)
                return
            inside = conn.in_transaction
            conn.execute("SAVEPOINT storekit_exec" if inside else "BEGIN IMMEDIATE")
            try:
                for statement in statements:
                    conn.execute(statement)
            except BaseException:
                conn.execute("ROLLBACK TO storekit_exec" if inside else "ROLLBACK")
                if inside:
                    conn.execute("RELEASE storekit_exec")
                raise
            conn.execute("RELEASE storekit_exec" if inside else "COMMIT")
        except sqlite3.Error as exc:
            raise from_sqlite(exc, self.where) from exc
        except BAD_INPUT as exc:
            raise from_bad_input(exc) from exc


# The connection of a transaction that has ended.
_SPENT: Any = Refusing("the transaction is not active; use it inside its with block")


class _InheritedWriter:
    """Stands in for a write connection that a fork() caught inside a transaction."""

    def __init__(self, where: str) -> None:
        self._where = where

    def _refuse(self) -> NoReturn:
        raise StoreError(
            f"this SQLite database ({self._where}) was inherited by fork() while a write "
            "transaction was open; the child cannot write through it: open a new Database "
            "in the child")

    @property
    def in_transaction(self) -> bool:
        self._refuse()

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> NoReturn:
        self._refuse()


# Every open SqliteBackend, to reset in the child of a fork; and the connections a child
# must keep but never use or close (see SqliteBackend._after_fork).
_live: weakref.WeakSet[SqliteBackend] = weakref.WeakSet()
_set_aside: list[sqlite3.Connection] = []


def _after_fork_in_child() -> None:
    for backend in list(_live):
        # One Database that fails to reset must not keep the others from being reset.
        with contextlib.suppress(Exception):
            backend._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class SqliteBackend:
    name = "sqlite"

    @classmethod
    def from_options(cls, url: DatabaseURL, *, pool: PoolOptions | None,
                     sqlite: SqliteOptions | None, busy_timeout_ms: int | None
                     ) -> SqliteBackend:
        return cls(url, cls.options_from(pool=pool, sqlite=sqlite,
                                         busy_timeout_ms=busy_timeout_ms))

    @staticmethod
    def options_from(*, pool: PoolOptions | None, sqlite: SqliteOptions | None,
                     busy_timeout_ms: int | None) -> SqliteOptions | None:
        """create_database's options (sync and async): pool= is PostgreSQL's, refused."""
        if pool is not None:
            raise ConfigurationError("pool= applies to PostgreSQL; this URL is SQLite")
        if busy_timeout_ms is not None:
            sqlite = dataclasses.replace(sqlite or SqliteOptions(),
                                         busy_timeout_ms=busy_timeout_ms)
        return sqlite

    def __init__(self, url: DatabaseURL, options: SqliteOptions | None = None) -> None:
        self.url = url
        self.options = options or SqliteOptions()
        self.memory = url.is_memory
        self.path = url.database
        self.where = "in-memory database" if self.memory else f"file {self.path}"
        if not self.memory:
            self._check_path(Path(self.path), create=opening.creates_file(url))
        self._lock: Any = self._new_lock()
        self._holder: int | None = None  # the thread holding a plain (not fair) write lock
        self._lease: WriteLease | None = None
        self._busy_timeout = self.options.busy_timeout_ms / 1000
        self._target = opening.target(url)
        self.read_only = self._target.read_only  # why writes fail, set while connecting
        writer = self._open_writer()
        if self.read_only:
            self.where += f", opened read-only: {self.read_only}"
        # Nothing to write: no lock file to create, no checkpoints to run.
        self._lease_tried = self.memory or not self.options.fair_locking or bool(self.read_only)
        self._types: dict[str, Converters] = {}
        self._writer = SqliteHandle(writer, self.where, self._types)
        self._in_tx: SqliteHandle | None = None  # the last write transaction's handle
        if not self.memory:
            checkpoint.register(self.path)  # see checkpoint.py: never drop SQLite's locks
        self._checkpoints: Checkpointer | None = None
        o = self.options
        # Exclusive locking mode keeps the wal-index in heap memory: no -shm to read.
        shared = "locking_mode" not in {k.lower() for k in o.extra_pragmas}
        if (o.fair_locking and not self.memory and o.journal_mode.lower() == "wal"
                and o.wal_autocheckpoint > 0 and shared and not self.read_only):
            self._checkpoints = Checkpointer(self.path, o.wal_autocheckpoint, self._connect)
            self._writer.conn.execute("PRAGMA wal_autocheckpoint=0")
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._begin = f"BEGIN {self.options.begin.upper()}"
        _live.add(self)
        version = sqlite3.sqlite_version
        self.capabilities = Capabilities(
            concurrent_writers=False,
            network=False,
            listen_notify="emulated",
            row_level_security=False,
            jsonb=False,
            full_text="fts5",
            server_version=version,
        )

    def _new_lock(self) -> Any:
        return (threading.RLock() if self.memory else FairLock()
                if self.options.fair_locking else threading.Lock())

    def _after_fork(self) -> None:
        """In the child of os.fork(): only the forking thread lives on, locks other threads
        held stay held for good, no file lock of the parent's is inherited, and SQLite's
        connections must not be shared by two processes. So the locks are made anew, the
        parent's turn is dropped without being unlocked, and connections are reopened.

        A connection another thread may have been using at the fork (its reader, a writer
        the write lock was taken for) is set aside, never closed: closing would wait for
        that thread's connection mutex, and rolling back a write would edit the wal-index
        the parent shares. A writer caught inside a transaction cannot be replaced (SQLite
        still counts its write lock in this process), so the child's writes raise.
        """
        old_lock, self._lock = self._lock, self._new_lock()
        if self._lease is not None:
            self._lease.abandon_after_fork()
            self._lease = None
        self._lease_tried = (self.memory or not self.options.fair_locking
                             or bool(self.read_only))
        if self.memory:
            return  # the child has its own copy of the database, in its own memory
        mine = getattr(self._local, "reader", None)
        self._local = threading.local()
        self._readers_lock = threading.Lock()
        readers, self._readers = self._readers, []
        for conn in readers:
            if mine is not None and conn is mine.conn:
                conn.close()  # the forking thread's own: not in use
            else:
                _set_aside.append(conn)
        if self._checkpoints is not None:
            self._checkpoints.after_fork(_set_aside)
        writer = self._writer.conn
        busy = old_lock.locked()
        try:
            if writer.in_transaction:
                _set_aside.append(writer)
                self._writer.conn = _InheritedWriter(self.where)  # type: ignore[assignment]
                if self._in_tx is not None and self._in_tx.conn is writer:
                    self._in_tx.conn = self._writer.conn  # the transaction's own handle
                return
        except StoreError:
            return  # set aside at an earlier fork
        if busy:
            _set_aside.append(writer)
        else:
            writer.close()
        try:
            self._writer.conn = self._connect()
            if self._checkpoints is not None:
                self._writer.conn.execute("PRAGMA wal_autocheckpoint=0")
        except (StoreError, sqlite3.Error):
            self._writer.conn = _InheritedWriter(self.where)  # type: ignore[assignment]

    def _open_writer(self) -> sqlite3.Connection:
        try:
            conn = self._connect()
        except DatabaseUnavailable:
            fallback = opening.immutable_fallback(self.url)
            if fallback is None:
                raise
            self._target, self.read_only = fallback, fallback.read_only
            return self._connect()
        if not self.read_only and not self.memory and not os.access(self.path, os.W_OK):
            self.read_only = opening.NOT_WRITABLE  # already in the wanted journal mode
        return conn

    def _check_path(self, path: Path, *, create: bool) -> None:
        parent = path.parent
        try:
            if create:
                parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseUnavailable(
                f"cannot create the folder {parent} for SQLite file {path}: {exc.strerror}"
            ) from exc
        try:
            folder = path.is_dir()
        except OSError as exc:  # is_dir() raises for a name too long for the file system
            raise DatabaseUnavailable(f"cannot use SQLite file {path}: {exc.strerror}") from exc
        if folder:
            raise DatabaseUnavailable(f"SQLite path {path} is a folder, not a file")

    def _connect(self) -> sqlite3.Connection:
        o = self.options
        try:
            conn = sqlite3.connect(
                self._target.database,
                uri=self._target.uri,
                timeout=o.busy_timeout_ms / 1000,
                isolation_level=None,  # storekit issues BEGIN/COMMIT itself
                check_same_thread=False,
                cached_statements=256,
            )
        except sqlite3.Error as exc:
            raise DatabaseUnavailable(f"cannot open SQLite {self.where}: {exc}") from exc
        try:
            # journal_mode first: it reads the header, so a non-database fails here.
            self._set_journal_mode(conn)
            pragmas: dict[str, str | int] = {
                "busy_timeout": o.busy_timeout_ms,
                "synchronous": o.synchronous,
                "foreign_keys": "ON" if o.foreign_keys else "OFF",
                "cache_size": -o.cache_size_kib,
                "wal_autocheckpoint": o.wal_autocheckpoint,
                "journal_size_limit": o.journal_size_limit,
                # INSERT OR REPLACE fires delete triggers (search sync) only with this on.
                "recursive_triggers": "ON",
                **o.extra_pragmas,
            }
            for key, value in pragmas.items():
                conn.execute(f"PRAGMA {key}={value}")
        except sqlite3.Error as exc:
            conn.close()
            err = from_sqlite(exc, self.where)
            # SQLITE_READONLY_CANTINIT / _DIRECTORY: no -shm can be made for a WAL file.
            cannot_init = getattr(exc, "sqlite_errorcode", 0) in (1288, 1544)
            if isinstance(err, DatabaseUnavailable) or cannot_init or "not a database" in str(exc):
                hint = opening.cannot_open_hint(self.url)
                raise DatabaseUnavailable(
                    f"cannot open SQLite {self.where}: {exc}{hint}") from exc
            raise err from exc
        return conn

    def _set_journal_mode(self, conn: sqlite3.Connection) -> None:
        """Switch the journal mode, retrying while another process opens or closes the file.

        Changing the mode, and opening a WAL file while the last connection of another
        process is checkpointing it away, can fail with SQLITE_BUSY at once, without
        the busy handler; a short bounded retry makes concurrent opens reliable.
        """
        want = self.options.journal_mode
        deadline = time.monotonic() + self._busy_timeout
        delay = 0.001
        while True:
            try:
                (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
                if mode == want or self.memory or self.read_only:
                    return  # a read-only file keeps its mode: changing it is a write
                try:
                    conn.execute(f"PRAGMA journal_mode={want}").fetchone()
                except sqlite3.OperationalError as exc:
                    if getattr(exc, "sqlite_errorcode", 0) & 0xFF != 8:  # SQLITE_READONLY
                        raise
                    # A read-only file or folder: open for reading, keep the file's mode.
                    self.read_only = opening.NOT_WRITABLE
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _acquire_writer(self) -> None:
        """Queue for the write connection (threads, FIFO), then for the file (processes).

        Exception-safe at every point (a signal handler raising, KeyboardInterrupt): what
        this thread holds is given back, by owner, before the exception leaves, even one
        that comes just after a lock changed hands. A hold still leaked (an exception at
        the first instruction of a caller's cleanup) is taken back at this thread's next
        write: a thread never writes while it holds the writer (transactions reuse it).
        """
        lock = self._lock
        me = _get_ident()
        if lock.__class__ is FairLock and lock._owner == me:
            self._release_writer()  # leaked by an exception: roll back, give back
        timeout = self._busy_timeout
        started = _monotonic()
        acquired = False
        try:
            acquired = lock.acquire(True, timeout)
            if not acquired:
                raise BusyError(f"waited {timeout:g} s for the write lock on {self.where}")
            self._holder = me  # for abandon(); FairLock keeps its own
            lease = self._lease if self._lease_tried else self._open_lease()
            if lease is not None and not lease.acquire(started + timeout):
                raise BusyError(f"waited {timeout:g} s for the write lock on {self.where}"
                                " (held by another process)")
        except BaseException:
            try:
                self._give_back(acquired)
            except BaseException:  # interrupted at its entry: once more (by owner)
                self._give_back(acquired)
            raise
        if self._checkpoints is not None and self._checkpoints.tail_pending:
            try:
                self._checkpoints.run(in_turn=True)  # the short tail, in this turn (checkpoint.py)
            except BaseException:
                try:
                    self._release_held()
                except BaseException:
                    self._release_held()
                raise

    def _give_back(self, acquired: bool) -> None:
        """After an exception in _acquire_writer: end the turn and free the write lock if
        this thread holds them (a plain Lock cannot tell: then only if acquire returned)."""
        lock = self._lock
        if isinstance(lock, FairLock):
            if not lock.owned():
                return
            try:
                if self._lease is not None:
                    self._lease.release(hand_over=True)
            finally:
                lock.release()
        elif acquired:
            lock.release()

    def _open_lease(self) -> WriteLease | None:
        # A turn that has not come within a fifth of the busy timeout (at most STALL_S)
        # means the holder is stopped or stuck: write under SQLite's lock (writelock.py).
        stall = min(STALL_S, self._busy_timeout / 5)
        try:
            self._lease = WriteLease(self.path + "-storekit.lock",
                                     self.options.lock_slice_ms / 1000, stall)
        except (OSError, RuntimeError) as exc:
            # A read-only folder: SQLite's busy handler alone, for good. Out of descriptors
            # or threads (EMFILE, "can't start new thread"): this write only.
            if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EROFS,
                                                          errno.EPERM):
                self._lease_tried = True
            return None
        self._lease_tried = True
        return self._lease

    def _release_writer(self) -> None:
        """Never raises for a write that committed: checkpoint errors are swallowed (as
        SQLite's own automatic checkpoint's are), and the locks are released whatever
        happens; only an exception raised into this thread (a signal handler) leaves."""
        outside = others = False
        try:
            conn = self._writer.conn
            if conn.in_transaction:
                # An exception came between BEGIN and COMMIT/ROLLBACK (a signal handler):
                # never pass on a write lock SQLite still holds for this connection.
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
            cp = self._checkpoints
            if cp is not None and cp.due():
                # Another process, or a thread of this one, writes while this thread
                # copies the WAL back: a PASSIVE checkpoint does not block writers.
                others = (self._lease is not None and not cp.blocked
                          and self._lease.others_waiting())
                if others or (not cp.blocked and self._lock.__class__ is FairLock
                              and self._lock.others_waiting()):
                    outside = True
                else:
                    # Nobody waits, or a reader holds it back: in the turn, as SQLite would.
                    cp.run(in_turn=True)
        finally:
            # Each release is tried once more if an exception interrupts it (a signal
            # handler raising at its entry): both are idempotent, the lock's by owner.
            lease = self._lease
            try:
                if lease is not None:
                    lease.release(others)
            except BaseException:
                if lease is not None:
                    lease.release(hand_over=True)
                raise
            finally:
                self._holder = None
                lock = self._lock
                try:
                    lock.release()
                except BaseException:
                    if lock.__class__ is FairLock:
                        lock.release_if_owned()
                    raise
        if outside:
            assert self._checkpoints is not None
            self._checkpoints.run(in_turn=False)  # the bulk, while the next writer writes

    def _release_held(self) -> None:
        """_release_writer if this thread holds the writer: callers call it once more when
        an exception interrupts it (at its entry, say), and whatever the first call
        released is not released twice."""
        lock = self._lock
        if (lock._owner if lock.__class__ is FairLock else self._holder) == _get_ident():
            self._release_writer()

    def _reader(self) -> SqliteHandle:
        handle: SqliteHandle | None = getattr(self._local, "reader", None)
        if handle is None:
            if self.memory:
                # Every connection to :memory: is a separate database; share the writer.
                handle = self._writer
            else:
                conn = self._connect()
                with self._readers_lock:
                    self._readers.append(conn)
                handle = SqliteHandle(conn, self.where, self._types)
            self._local.reader = handle
        return handle

    # Autocommit data methods: writes queue for the writer, reads use this thread's reader.
    def run(self, sql: str, params: Params = None) -> RunResult:
        # The acquire inside the try: an exception can come just after it returns.
        try:
            self._acquire_writer()
            return self._writer.run(sql, params)
        finally:
            try:
                self._release_held()
            except BaseException:
                self._release_held()
                raise

    def get(self, sql: str, params: Params = None) -> Row | None:
        if self.memory:
            self._hold_memory()
            try:
                return self._writer.get(sql, params)
            finally:
                self._lock.release()
        return self._reader().get(sql, params)

    def all(self, sql: str, params: Params = None) -> list[Row]:
        if self.memory:
            self._hold_memory()
            try:
                return self._writer.all(sql, params)
            finally:
                self._lock.release()
        return self._reader().all(sql, params)

    def iter(self, sql: str, params: Params = None) -> Iterator[Row]:
        if self.memory:
            # Read whole under the lock: a half-read generator holding the one shared
            # connection would block every other thread for as long as it lives. The
            # rows are in memory already.
            yield from self.all(sql, params)
            return
        yield from self._reader().iter(sql, params)

    def _hold_memory(self) -> None:
        """The in-memory database's one connection, waited for at most the busy timeout
        (a transaction of another thread holds it), as a write would be."""
        if not self._lock.acquire(timeout=self._busy_timeout):
            raise BusyError(f"waited {self._busy_timeout:g} s for the {self.where}"
                            " (another thread's transaction holds it)")

    def exec(self, script: str) -> None:
        try:
            self._acquire_writer()
            self._writer.exec(script)
        finally:
            try:
                self._release_held()
            except BaseException:
                self._release_held()
                raise

    # Transactions.
    def begin(self, *, readonly: bool, team_id: Any = None,
              isolation: str = "serializable") -> SqliteHandle:
        # Every isolation level is met as it is: writers run one at a time and a
        # read-only transaction reads one snapshot (see Database.transaction).
        if team_id is not None:
            from storekit.backends.sqlite.dialect import scope_error

            raise scope_error()
        # Each transaction gets a handle of its own on the shared connection, spent when
        # it ends: a method kept past the block (r = tx.run) then refuses instead of
        # running on the connection another thread's transaction holds.
        # Made before anything is held: an interruption at its entry leaves nothing open.
        if readonly and not self.memory:
            handle = SqliteHandle(self._reader().conn, self.where, self._types)
            # query_only makes a write inside a read-only transaction fail, as on Postgres.
            self._execute(handle, "PRAGMA query_only=ON")
            self._execute(handle, "BEGIN DEFERRED")
            return handle
        conn = self._writer.conn
        handle = SqliteHandle(conn, self.where, self._types)
        try:
            self._acquire_writer()
            try:
                conn.execute(self._begin)
            except sqlite3.Error as exc:
                raise from_sqlite(exc, self.where) from exc
        except BaseException:
            try:
                self._release_held()
            except BaseException:
                self._release_held()
            raise
        self._in_tx = handle
        return handle

    def finish(self, handle: Any, *, commit: bool) -> None:
        conn = handle.conn
        if conn is _SPENT:
            return  # ended already (a retry after an interruption)
        try:
            if conn.in_transaction:
                try:
                    conn.execute("COMMIT" if commit else "ROLLBACK")
                except sqlite3.Error as exc:
                    raise from_sqlite(exc, self.where) from exc
        except StoreError:
            if commit and conn.in_transaction:
                self._execute(handle, "ROLLBACK")
            raise
        finally:
            if conn is self._writer.conn:
                try:
                    self._release_held()
                except BaseException:
                    self._release_held()
                    raise
            else:
                self._execute(handle, "PRAGMA query_only=OFF")
        handle.conn = _SPENT  # not in a finally: a failed end is retried by abandon()

    def abandon(self, handle: Any) -> None:
        conn = handle.conn
        if conn is _SPENT:
            return
        if conn is self._writer.conn:
            lock = self._lock
            held = (lock._owner if lock.__class__ is FairLock else self._holder)
            if held == threading.get_ident():
                try:
                    self._release_writer()  # rolls back first
                except BaseException:
                    self._release_held()
                    raise
            handle.conn = _SPENT
            return
        if conn.in_transaction:
            with contextlib.suppress(StoreError):
                self._execute(handle, "ROLLBACK")
        self._execute(handle, "PRAGMA query_only=OFF")
        handle.conn = _SPENT

    def savepoint(self, handle: Any, name: str) -> None:
        self._execute(handle, f"SAVEPOINT {name}")

    def release(self, handle: Any, name: str, *, commit: bool) -> None:
        if not commit:
            self._execute(handle, f"ROLLBACK TO SAVEPOINT {name}")
        self._execute(handle, f"RELEASE SAVEPOINT {name}")

    def _execute(self, handle: SqliteHandle, statement: str) -> None:
        try:
            handle.conn.execute(statement)
        except sqlite3.Error as exc:
            raise from_sqlite(exc, self.where) from exc

    def settings(self) -> dict[str, Any]:
        names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout", "cache_size",
                 "wal_autocheckpoint", "journal_size_limit", "page_size", "mmap_size")
        with self._lock:
            found = {n: self._writer.conn.execute(f"PRAGMA {n}").fetchone()[0] for n in names}
        if self._checkpoints is not None:
            # The write connection's own is off: storekit checkpoints (checkpoint.py).
            found["wal_autocheckpoint"] = self.options.wal_autocheckpoint
        found["begin"] = self._begin
        found["sqlite_version"] = sqlite3.sqlite_version
        found["path"] = self.path
        found["read_only"] = self.read_only or False
        return found

    def close(self) -> None:
        _live.discard(self)
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        with self._lock:
            self._writer.conn.close()
        if self._lease is not None:
            self._lease.close()
        if self._checkpoints is not None:
            self._checkpoints.close()
        if not self.memory:
            checkpoint.unregister(self.path)  # last: it may close a descriptor of the -shm
