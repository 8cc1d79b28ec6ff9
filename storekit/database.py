"""Database and Transaction: the facade users hold.

Per call, the facade adds one thread-local lookup (is this thread inside a transaction?)
and forwards to the backend. Everything else (translation, adaptation) lives in the
backend's handle and is cached per SQL string.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

from storekit.backends.base import (
    Backend,
    Capabilities,
    Handle,
    PoolOptions,
    Refusing,
    Row,
    RunResult,
    SqliteOptions,
    check_atomic,
    check_create_options,
    isolation_level,
)
from storekit.errors import (
    BAD_INPUT,
    RETRYABLE,
    ConfigurationError,
    StoreError,
    from_bad_input,
    shown,
)
from storekit.params import Params
from storekit.url import DatabaseURL, file_url, resolve_url

if TYPE_CHECKING:
    from storekit.backends.base import Dialect
    from storekit.notify import Subscription
    from storekit.schema import Column, Table

# Imported on first use, so psycopg is loaded only when a PostgreSQL URL is opened.
BACKENDS = {
    "sqlite": "storekit.backends.sqlite.backend:SqliteBackend",
    "postgres": "storekit.backends.postgres.backend:PostgresBackend",
}


def _load_backend(name: str) -> type[Any]:
    module_name, _, class_name = BACKENDS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("psycopg"):
            raise ConfigurationError(
                "PostgreSQL support needs psycopg: pip install 'storekit[postgres]'"
            ) from exc
        raise
    cls: type[Any] = getattr(module, class_name)
    return cls


T = TypeVar("T")
# atomic()'s backoff before re-run n: a random wait up to min(CAP, BASE * 2**n) ("full
# jitter"), so transactions that collided once do not collide again in lockstep.
RETRY_BASE_S = 0.002
RETRY_CAP_S = 0.2
P = ParamSpec("P")
R = TypeVar("R")


def _checked(method: Callable[P, R]) -> Callable[P, R]:
    """A wrong argument type or value deep inside a feature method (a table name that is an
    int, a limit that is a str) raises ProgrammingError with the original as __cause__."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except BAD_INPUT as exc:
            raise from_bad_input(exc) from exc

    return wrapper


class _Local(threading.local):
    # A class default makes "no transaction" a plain attribute hit, not a failed lookup.
    tx: Transaction | None = None


class _Closed:
    """Stands in for the backend after close(), so a closed Database costs no per-call check."""

    def __init__(self, url: str) -> None:
        self._url = url

    def __getattr__(self, name: str) -> NoReturn:
        raise StoreError(f"the database {self._url} is closed")


# Is a transaction's with statement still running? Python runs a pending signal handler
# at the first instruction of any function, __exit__ included: if it raises there, none
# of __exit__ runs and the exception leaves the with statement. So the answer cannot come
# from __exit__. It comes from the interpreter instead: a with statement looks __exit__ up
# on the instance (before __enter__) and keeps what it got on its frame's value stack
# until the statement is over, however it ends. _ExitSlot hands it a fresh
# partial(_exit, tx), whose only strong reference is that stack slot (a frame kept in a
# traceback keeps its locals, never its value stack, and _exit's frame holds tx, not the
# partial); the transaction holds a weak reference to it. Dead reference: the statement is
# over, and the transaction must never be joined again; the reference's callback (at once,
# in this thread) and, failing that, this thread's next call roll it back (_discard_dead).


class _Gone:
    """Weak-referenceable; an instance nobody keeps dies at once."""


_ENDED: weakref.ref[Any] = weakref.ref(_Gone())  # dereferences to None: over
_KEPT = _Gone()
# A transaction entered without a with statement (tx.__enter__(), ExitStack): it ends only
# when its __exit__ is called, as before.
_UNGUARDED: weakref.ref[Any] = weakref.ref(_KEPT)
_NOT_ACTIVE: Any = Refusing("the transaction is not active; use it inside its with block")


class _Token(weakref.ref):  # type: ignore[type-arg]
    __slots__ = ("tx",)
    tx: Transaction


def _statement_over(ref: _Token) -> None:
    """The partial a with statement held died: roll back its transaction now if its
    __exit__ did not end it (it never ran, or was interrupted)."""
    tx = ref.tx
    if tx._open is not None or tx._db._local.tx is tx:
        tx._alive = _ENDED
        tx._db._discard_dead()


class _ExitSlot:
    """Transaction.__exit__ (see the comment above _Gone)."""

    def __get__(self, tx: Transaction | None, owner: Any = None) -> Any:
        if tx is None:
            return _exit  # looked up on the class (contextlib.ExitStack): unguarded
        token = functools.partial(_exit, tx)
        ref = _Token(token, _statement_over)
        ref.tx = tx
        tx._armed = ref
        return token


def _exit(tx: Transaction, exc_type: type[BaseException] | None,
          exc: BaseException | None, tb: TracebackType | None) -> None:
    # Until the first call, nothing here can be interrupted (no call, no loop): whatever
    # comes later, the transaction is already out of reach (never joined, its bound
    # methods gone) and stays registered, dead, until _end has released it.
    ref = tx._alive  # a frame in a traceback keeps it, and with it the callback, armed
    tx._alive = _ENDED
    handle = tx._handle
    if handle is None:
        raise StoreError("the transaction is not active; use it inside its with block")
    tx._handle = None  # iter() generators check this before touching the connection
    # Not contextlib.suppress: its __enter__ is a call, where a signal handler can raise.
    tx._do = _NOT_ACTIVE  # the class's data methods refuse from here on
    try:  # noqa: SIM105
        del tx.run, tx.get  # back to the class's
    except AttributeError:
        pass
    commit = exc_type is None
    # The transaction ends whatever interrupts the bookkeeping (a signal handler
    # raising): rolled back then, and the interruption propagates.
    try:
        if tx._cursors is not None:
            tx._close_cursors()
    except BaseException:
        commit = False
        raise
    finally:
        tx._end(commit)
    del ref  # ended: the callback is no longer needed (it dies with this frame)
    # Never swallow: returning None re-raises the caller's exception after rollback.


class Transaction:
    """A unit of work on one connection. Nested use becomes a SAVEPOINT."""

    __exit__ = _ExitSlot()
    # Class defaults: a transaction is made per unit of work, so its constructor stores
    # only what the caller chose.
    _handle: Handle | None = None
    _savepoint: str | None = None
    _outer: Transaction | None = None
    _cursors: list[Any] | None = None  # of iter() generators not yet finished
    _armed: _Token | None = None  # set by _ExitSlot just before __enter__
    _alive: weakref.ref[Any] = _ENDED
    _open: Any = None  # the handle until COMMIT/ROLLBACK and its release are done
    _do: Handle = _NOT_ACTIVE  # the handle while the with block runs: the data methods' target

    def __init__(self, db: Database, readonly: bool, team_id: Any,
                 isolation: str | None) -> None:
        self._db = db
        self._readonly = readonly
        self._team_id = team_id
        self._isolation = isolation

    def __enter__(self) -> Transaction:
        db = self._db
        alive: weakref.ref[Any] = self._armed or _UNGUARDED
        self._armed = None
        outer = db._local.tx
        if outer is not None and outer._alive() is None:
            outer = db._discard_dead()  # never nest inside a transaction that is over
        if outer is not None:
            if self._team_id is not None and self._team_id != outer._team_id:
                raise ConfigurationError("a nested transaction cannot change the team scope")
            if self._readonly and not outer._readonly:
                raise ConfigurationError(
                    "a read-only transaction cannot nest inside a write transaction: its "
                    "writes would not be refused")
            if self._isolation is not None and self._isolation != outer._isolation:
                raise ConfigurationError(
                    f"a nested transaction cannot change the isolation level "
                    f"({outer._isolation} -> {self._isolation})")
            self._isolation = outer._isolation
            assert outer._handle is not None
            handle = outer._handle
            self._team_id = outer._team_id
            db._savepoints += 1
            self._savepoint = f"storekit_sp_{db._savepoints}"
            db._backend.savepoint(handle, self._savepoint)
        else:
            self._savepoint = None  # it may have been a savepoint the last time it was used
            if self._isolation is None:
                self._isolation = db.isolation
            handle = db._backend.begin(readonly=self._readonly, team_id=self._team_id,
                                       isolation=self._isolation)
        # From the return above to `return self` nothing can be interrupted (no call):
        # the transaction is registered together with what ends it.
        self._open = self._handle = handle
        self._outer = outer
        self._alive = alive
        db._local.tx = self
        self._do = handle
        if outer is None:
            # The two most used methods are the handle's own: tx.run() is then one call,
            # not two. Not a savepoint's: its handle outlives its block (the outer
            # transaction's), so a method kept past the block would still run there.
            self.run, self.get = handle.run, handle.get  # type: ignore[method-assign]
        return self

    def _end(self, commit: bool) -> None:
        """Commit or roll back, release what the transaction holds, unregister it. If this
        is interrupted, the transaction stays registered (dead) and is rolled back later."""
        db = self._db
        handle = self._open
        if handle is not None:
            if self._savepoint is not None:
                db._backend.release(handle, self._savepoint, commit=commit)
            elif commit:
                db._backend.finish(handle, commit=True)
            else:
                db._backend.abandon(handle)
            self._open = None
        if db._local.tx is self:
            db._local.tx = self._outer

    def _opened(self, cursor: Any) -> None:
        """An iter() generator of this transaction opened cursor; it is closed at the end,
        while the connection is still this transaction's (a PostgreSQL cursor closed
        later, by the garbage collector, would send CLOSE on another borrower's connection)."""
        if self._cursors is None:
            self._cursors = []
        self._cursors.append(cursor)

    def _close_cursors(self) -> None:
        cursors, self._cursors = self._cursors or [], None
        for cursor in cursors:
            # The transaction must still end; a broken connection shows at COMMIT/ROLLBACK.
            with contextlib.suppress(Exception):
                cursor.close()

    def _h(self) -> Handle:
        if self._handle is None:
            raise StoreError("the transaction is not active; use it inside its with block")
        return self._handle

    @property
    def team_id(self) -> Any:
        return self._team_id

    @property
    def database(self) -> Database:
        return self._db

    @property
    def connection(self) -> Any:
        """The driver's connection this transaction runs on (a sqlite3.Connection or a
        psycopg.Connection), for what storekit does not wrap, such as COPY. The caller's
        responsibility: use it only inside the transaction, and leave it as found (no
        COMMIT, ROLLBACK, SET or LISTEN); storekit's errors and guarantees do not cover it."""
        handle = self._h()
        flush = getattr(handle, "flush", None)
        if flush is not None:
            flush()  # PostgreSQL: BEGIN and held-back writes go out before the caller's SQL
        conn = handle.conn  # type: ignore[attr-defined]
        if hasattr(conn, "dirty"):
            conn.dirty = True  # PostgreSQL: SQL storekit did not see; reset it when returned
        return conn

    @property
    def isolation(self) -> str | None:
        """The level this transaction runs at (known once it has begun)."""
        return self._isolation

    def run(self, sql: str, params: Params = None) -> RunResult:
        return self._do.run(sql, params)

    def get(self, sql: str, params: Params = None) -> Row | None:
        return self._do.get(sql, params)

    def all(self, sql: str, params: Params = None) -> list[Row]:
        return self._do.all(sql, params)

    def iter(self, sql: str, params: Params = None) -> Iterator[Row]:
        """Rows lazily; consuming them after the transaction ended raises StoreError."""
        return self._do.iter(sql, params, self)

    def run_many(self, sql: str, seq: Iterable[Sequence[Any] | Mapping[str, Any]]) -> int:
        return self._do.run_many(sql, seq)

    def run_deferred(self, sql: str, params: Params = None) -> None:
        """run() for a write whose result is not needed. On PostgreSQL it is sent with the
        transaction's next statement, or with COMMIT: no round trip of its own (an
        agent's log line and result rows commit in one). Its error, if any, is raised
        there instead of here. On SQLite, and behind a transaction pooler, it runs now."""
        self._do.run_deferred(sql, params)

    def exec(self, script: str) -> None:
        self._do.exec(script)


class Database:
    """One store, shared safely by the threads of a process."""

    def __init__(self, url: DatabaseURL, backend: Backend,
                 isolation: str = "serializable") -> None:
        self._url = url
        self._backend: Backend = backend
        self.isolation = isolation_level(isolation) or "serializable"
        self._local = _Local()
        self._savepoints = 0
        self._dialect: Dialect | None = None

    # Identity and settings.
    @property
    def backend(self) -> str:
        return self._url.backend

    @property
    def url(self) -> str:
        """The URL with its password masked (safe to print or log)."""
        return str(self._url)

    def reveal_url(self) -> DatabaseURL:
        """The URL as given, password and secret options included, for the caller who
        owns it (to open another Database, or a raw driver connection). Never log it;
        `url` and repr() mask the secrets. `reveal_url().render(mask=False)` is the text."""
        return self._url

    @property
    def in_transaction(self) -> bool:
        """Whether this thread is inside a transaction of this Database."""
        return self._local.tx is not None

    @property
    def capabilities(self) -> Capabilities:
        return self._backend.capabilities

    @property
    def settings(self) -> dict[str, Any]:
        return self._backend.settings()

    @property
    def closed(self) -> bool:
        return isinstance(self._backend, _Closed)

    @property
    def dialect(self) -> Dialect:
        """This backend's SQL (backends.base.Dialect): portable fragments such as json_get,
        upsert and for_update for user queries, and what the feature modules ask for."""
        if self._dialect is None:
            from storekit.dialect import dialect_for

            self._dialect = dialect_for(self.backend)
        return self._dialect

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<storekit.Database {self.backend} {self.url}{state}>"

    # Data methods: inside a transaction on this thread, they join it, unless its with
    # statement is over (its __exit__ never ran): then it is rolled back first.
    def run(self, sql: str, params: Params = None) -> RunResult:
        tx = self._local.tx
        if tx is not None and tx._alive() is None:
            tx = self._discard_dead()
        return (tx or self._backend).run(sql, params)

    def get(self, sql: str, params: Params = None) -> Row | None:
        tx = self._local.tx
        if tx is not None and tx._alive() is None:
            tx = self._discard_dead()
        return (tx or self._backend).get(sql, params)

    def all(self, sql: str, params: Params = None) -> list[Row]:
        tx = self._local.tx
        if tx is not None and tx._alive() is None:
            tx = self._discard_dead()
        return (tx or self._backend).all(sql, params)

    def iter(self, sql: str, params: Params = None) -> Iterator[Row]:
        tx = self._local.tx
        if tx is not None and tx._alive() is None:
            tx = self._discard_dead()
        return (tx or self._backend).iter(sql, params)

    def run_many(self, sql: str, seq: Iterable[Sequence[Any] | Mapping[str, Any]]) -> int:
        """All rows in one transaction: a batch commits whole or not at all."""
        tx = self._local.tx
        if tx is not None and tx._alive() is None:
            tx = self._discard_dead()
        if tx is not None:
            return tx.run_many(sql, seq)
        with self.transaction() as batch:
            return batch.run_many(sql, seq)

    def exec(self, script: str) -> None:
        tx = self._local.tx
        if tx is not None and tx._alive() is None:
            tx = self._discard_dead()
        (tx or self._backend).exec(script)

    def _discard_dead(self) -> Transaction | None:
        """Roll back and unregister this thread's transactions whose with statement is
        over; return the innermost one still running, if any. Each step can be repeated:
        if it is interrupted, the next call goes on from where it stopped."""
        while True:
            tx = self._local.tx
            if tx is None or tx._alive() is not None:
                return tx
            tx._alive = _ENDED
            tx._handle = None
            tx._do = _NOT_ACTIVE
            try:  # noqa: SIM105 (as in _exit)
                del tx.run, tx.get
            except AttributeError:
                pass
            try:
                if tx._cursors is not None:
                    tx._close_cursors()
            finally:
                try:
                    tx._end(commit=False)
                except StoreError:
                    # Rolling back a dead savepoint can fail (already released): its
                    # outer transaction still ends, and refuses to commit if aborted.
                    tx._open = None
                    if self._local.tx is tx:
                        self._local.tx = tx._outer

    def transaction(self, *, readonly: bool = False, team_id: Any = None,
                    isolation: str | None = None) -> Transaction:
        """Commit on normal exit, roll back and re-raise on an exception; nest with SAVEPOINTs.

        isolation is "serializable" (the default, see create_database), "repeatable read"
        or "read committed". On PostgreSQL it is the transaction's level; a conflict at
        the two higher levels raises TransactionConflict (retry it, or use atomic()). On
        SQLite every level is already met: write transactions run one at a time (BEGIN
        IMMEDIATE) and a read-only one reads a single snapshot, so the name is only checked.
        A nested transaction keeps its outer one's level and cannot be read-only inside a
        write transaction.
        """
        self._backend.capabilities  # noqa: B018 - raises on a closed database
        if isolation is not None:
            isolation = isolation_level(isolation)
        if readonly is not False and readonly is not True:
            raise ConfigurationError(f"readonly must be True or False, not {shown(readonly)}")
        return Transaction(self, readonly, team_id, isolation)

    def atomic(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        retries: int = 10,
        isolation: str | None = None,
        readonly: bool = False,
        team_id: Any = None,
        **kwargs: Any,
    ) -> T:
        """Run fn(tx, *args, **kwargs) in a transaction and return its result, running it
        again (up to `retries` more times, after a jittered exponential backoff) when it
        fails with TransactionConflict or BusyError.

        fn must be safe to run again: everything it wrote was rolled back. A conflict fn
        caught itself still counts (on PostgreSQL the aborted transaction's commit raises
        its class). Inside another transaction it runs once, as a savepoint, and a conflict
        propagates: the outermost atomic() is the one that retries. The last error is raised with
        the number of attempts in its message. A BusyError attempt can wait a whole busy
        timeout, so the worst case is (retries + 1) busy timeouts.
        """
        retries = check_atomic(fn, retries)
        tx = self._local.tx
        if tx is not None and tx._alive() is None:
            tx = self._discard_dead()
        if tx is not None:
            with self.transaction(readonly=readonly, team_id=team_id,
                                  isolation=isolation) as tx:
                return fn(tx, *args, **kwargs)
        attempt = 0
        while True:
            attempt += 1
            try:
                with self.transaction(readonly=readonly, team_id=team_id,
                                      isolation=isolation) as tx:
                    return fn(tx, *args, **kwargs)
            except RETRYABLE as exc:
                if attempt > retries:
                    # The same exception, so its class and driver cause stay as they were.
                    exc.args = (f"{exc} (gave up after {attempt} attempts)", *exc.args[1:])
                    raise
            # The exponent is capped: 2.0 ** 1024 overflows a float (retries can be huge).
            time.sleep(random.uniform(0, min(RETRY_CAP_S, RETRY_BASE_S * 2.0 ** min(attempt, 32))))

    @_checked
    def scope(self, *, team_id: Any) -> Transaction:
        """A transaction in which row-level security sees only this team's rows."""
        return self.transaction(team_id=team_id)

    # Schema, search, notifications and row security live in their own modules.
    @_checked
    def create_table(self, table: Table, *, if_not_exists: bool = True) -> None:
        from storekit.schema import create_table

        create_table(self, table, if_not_exists=if_not_exists)

    @_checked
    def drop_table(self, name: str, *, if_exists: bool = True) -> None:
        from storekit.schema import drop_table

        drop_table(self, name, if_exists=if_exists)

    @_checked
    def schema_sql(self, table: Table) -> str:
        from storekit.schema import schema_sql

        return schema_sql(self.dialect, table)

    @_checked
    def tables(self) -> list[str]:
        from storekit.schema import tables

        return tables(self)

    @_checked
    def columns(self, name: str) -> list[Column]:
        from storekit.schema import columns

        return columns(self, name)

    @_checked
    def enable_search(
        self, table: str, columns: Sequence[str], *, language: str = "english"
    ) -> None:
        from storekit.search import enable_search

        enable_search(self, table, columns, language=language)

    @_checked
    def search(
        self,
        table: str,
        query: str,
        *,
        limit: int = 20,
        offset: int = 0,
        where: str | None = None,
        params: Params = None,
        columns: Sequence[str] | None = None,
    ) -> list[Row]:
        """Rows best first; each row's "rank" is its relevance relative to the page's best
        match, 1.0 down to 0.001 (storekit.search.scale_ranks), on both backends."""
        sql, values = self.search_sql(table, query, limit=limit, offset=offset, where=where,
                                      params=params, columns=columns)
        if sql is None:
            return []
        from storekit.search import scale_ranks

        return scale_ranks(self.all(sql, values))

    @_checked
    def search_sql(
        self,
        table: str,
        query: str,
        *,
        limit: int = 20,
        offset: int = 0,
        where: str | None = None,
        params: Params = None,
        columns: Sequence[str] | None = None,
    ) -> tuple[str | None, Sequence[Any] | Mapping[str, Any]]:
        from storekit.search import search_sql

        return search_sql(self, table, query, limit=limit, offset=offset, where=where,
                          params=params, columns=columns)

    @_checked
    def rebuild_search(self, table: str) -> None:
        from storekit.search import rebuild_search

        rebuild_search(self, table)

    @_checked
    def notify(self, channel: str, payload: str | Mapping[str, Any] = "") -> None:
        from storekit.notify import notify

        notify(self, channel, payload)

    @_checked
    def listen(self, *channels: str, poll_interval: float = 0.02) -> Subscription:
        from storekit.notify import listen

        return listen(self, channels, poll_interval=poll_interval)

    @_checked
    def enable_row_security(self, table: str, column: str = "team_id") -> None:
        from storekit.rls import enable_row_security

        enable_row_security(self, table, column)

    # Lifecycle.
    def close(self) -> None:
        """Close the connections. A transaction of this thread still open is rolled back
        first; its with block then ends with StoreError. Closing twice is harmless."""
        if not self.closed:
            # This thread's transactions are rolled back first, as storekit.aio's are: the
            # backend's close waits for the connections and write lock they hold.
            tx = self._local.tx
            while tx is not None:
                tx._alive = _ENDED  # over: its with block then ends with StoreError
                tx = tx._outer
            self._discard_dead()
            backend = self._backend
            self._backend = _Closed(self.url)  # type: ignore[assignment]
            backend.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_database(
    url: str | DatabaseURL | None = None,
    *,
    pool: PoolOptions | None = None,
    sqlite: SqliteOptions | None = None,
    isolation: str = "serializable",
    busy_timeout_ms: int | None = None,
) -> Database:
    """Open the database a URL names: the argument, else STOREKIT_DATABASE_URL, else
    DATABASE_URL, else the SQLite file ./storekit.db.

    isolation is the default level of this Database's transactions (see
    Database.transaction). busy_timeout_ms, for either backend, bounds a wait for another
    writer's lock before BusyError; it overrides the value in `pool` or `sqlite` (both
    default to 5000).
    """
    level = isolation_level(isolation) or "serializable"
    check_create_options(pool, sqlite)
    parsed = resolve_url(url)
    backend_cls = _load_backend(parsed.backend)
    backend = backend_cls.from_options(parsed, pool=pool, sqlite=sqlite,
                                       busy_timeout_ms=busy_timeout_ms)
    return Database(parsed, backend, level)


def open_database(path: str | Any, *, sqlite: SqliteOptions | None = None,
                  isolation: str = "serializable",
                  busy_timeout_ms: int | None = None) -> Database:
    """Open (or create) a SQLite file; missing parent folders are created."""
    return create_database(file_url(path), sqlite=sqlite,
                           isolation=isolation, busy_timeout_ms=busy_timeout_ms)


def create_memory_database(*, sqlite: SqliteOptions | None = None,
                           isolation: str = "serializable",
                           busy_timeout_ms: int | None = None) -> Database:
    """A private in-memory SQLite database; it never touches the disk."""
    return create_database(DatabaseURL("sqlite", database=":memory:"), sqlite=sqlite,
                           isolation=isolation, busy_timeout_ms=busy_timeout_ms)
