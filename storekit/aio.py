"""storekit.aio: the Database API for asyncio, without blocking the event loop.

The same names as storekit.Database, awaited. The facade mirrors database.py: a call
first asks whether this task is inside a transaction (a ContextVar per database, where
the sync API uses a thread-local) and joins it, else the backend runs it on its own.
URL resolution, options, placeholder translation, the error tree and masking are the
sync API's own modules; only the driver calls differ (backends/*_async.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import importlib
import random
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, Protocol, TypeVar

from storekit.backends.base import (
    Capabilities,
    PoolOptions,
    Row,
    RunResult,
    SqliteOptions,
    check_atomic,
    check_create_options,
    isolation_level,
)
from storekit.database import RETRY_BASE_S, RETRY_CAP_S
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
    from storekit.aio_notify import AsyncSubscription
    from storekit.backends.base import Dialect
    from storekit.migration import MigrationReport, Progress
    from storekit.schema import Column, Table

__all__ = [
    "AsyncDatabase",
    "AsyncTransaction",
    "create_database",
    "create_memory_database",
    "migrate",
    "open_database",
]

# Imported on first use, as database.BACKENDS: psycopg only for PostgreSQL.
ASYNC_BACKENDS = {
    "sqlite": "storekit.backends.sqlite.aio:AsyncSqliteBackend",
    "postgres": "storekit.backends.postgres.aio:AsyncPostgresBackend",
}

T = TypeVar("T")
P = ParamSpec("P")


class AsyncHandle(Protocol):
    """One connection, held for the length of a transaction."""

    async def run(self, sql: str, params: Params = None) -> RunResult: ...
    async def get(self, sql: str, params: Params = None) -> Row | None: ...
    async def all(self, sql: str, params: Params = None) -> list[Row]: ...
    def iter(self, sql: str, params: Params = None, tx: Any = None) -> AsyncIterator[Row]: ...
    async def run_many(self, sql: str,
                       seq: Iterable[Sequence[Any] | Mapping[str, Any]]) -> int: ...
    async def run_deferred(self, sql: str, params: Params = None) -> None: ...
    async def exec(self, script: str) -> None: ...


class AsyncBackend(Protocol):
    name: str
    capabilities: Capabilities

    async def run(self, sql: str, params: Params = None) -> RunResult: ...
    async def get(self, sql: str, params: Params = None) -> Row | None: ...
    async def all(self, sql: str, params: Params = None) -> list[Row]: ...
    def iter(self, sql: str, params: Params = None) -> AsyncIterator[Row]: ...
    async def exec(self, script: str) -> None: ...
    def settings(self) -> dict[str, Any]: ...
    async def begin(self, *, readonly: bool, team_id: Any = None,
                    isolation: str = "serializable") -> AsyncHandle: ...
    async def finish(self, handle: Any, *, commit: bool) -> None: ...
    async def savepoint(self, handle: Any, name: str) -> None: ...
    async def release(self, handle: Any, name: str, *, commit: bool) -> None: ...
    async def notify(self, db: Any, channel: str, text: str) -> None: ...
    async def listener(self, db: Any, sub: Any) -> Any: ...
    async def close(self) -> None: ...


def _checked(method: Callable[P, T]) -> Callable[P, T]:
    """A wrong argument type deep inside a feature method raises ProgrammingError."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except BAD_INPUT as exc:
            raise from_bad_input(exc) from exc

    return wrapper


def _checked_async(
        method: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """_checked for a coroutine method: the same ProgrammingError for a wrong argument."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except BAD_INPUT as exc:
            raise from_bad_input(exc) from exc

    return wrapper


class _Closed:
    def __init__(self, url: str) -> None:
        self._url = url

    def __getattr__(self, name: str) -> NoReturn:
        raise StoreError(f"the database {self._url} is closed")


class AsyncTransaction:
    """A unit of work on one connection, for one task. Nested use becomes a SAVEPOINT."""

    # Class defaults, as Transaction's: the constructor stores only what the caller chose.
    _handle: AsyncHandle | None = None
    _savepoint: str | None = None
    _outer: AsyncTransaction | None = None
    _task: asyncio.Task[Any] | None = None
    _cursors: list[Any] | None = None  # of iter() generators not yet finished

    def __init__(self, db: AsyncDatabase, readonly: bool, team_id: Any,
                 isolation: str | None) -> None:
        self._db = db
        self._readonly = readonly
        self._team_id = team_id
        self._isolation = isolation

    async def __aenter__(self) -> AsyncTransaction:
        db = self._db
        if self._handle is not None:
            raise StoreError("this transaction is already active; create a new one")
        outer = db._joined()
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
            assert outer._handle is not None
            db._savepoints += 1
            name = f"storekit_sp_{db._savepoints}"
            await db._backend.savepoint(outer._handle, name)
            self._isolation, self._team_id = outer._isolation, outer._team_id
            self._savepoint, self._handle = name, outer._handle
        else:
            self._savepoint = None  # it may have been a savepoint the last time it was used
            if self._isolation is None:
                self._isolation = db.isolation
            self._handle = await db._backend.begin(
                readonly=self._readonly, team_id=self._team_id, isolation=self._isolation)
        self._outer = outer
        self._task = asyncio.current_task()
        db._tx.set(self)
        # The handle's methods on the instance, as the sync Transaction does: tx.run(...)
        # is then the handle's coroutine at once. __aexit__ takes them away again. Not a
        # savepoint's: its handle outlives its block (the outer transaction's), so a
        # method kept past the block would still run there.
        if outer is None:
            h = self._handle
            self.run, self.get, self.all = h.run, h.get, h.all  # type: ignore[method-assign]
            self.run_many = h.run_many  # type: ignore[method-assign]
            self.run_deferred, self.exec = h.run_deferred, h.exec  # type: ignore[method-assign]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        db = self._db
        db._tx.set(self._outer)
        handle = self._handle
        if handle is None:
            raise StoreError("the transaction is not active; use it inside its with block")
        self._handle = None  # iter() generators check this before touching the connection
        try:  # noqa: SIM105 - back to the methods that refuse
            del self.run, self.get, self.all, self.run_many, self.run_deferred, self.exec
        except AttributeError:
            pass
        commit = exc_type is None
        try:
            if self._cursors is not None:
                await self._close_cursors()
        except BaseException:
            commit = False
            raise
        finally:
            # A cancelled task rolls back here: the backends finish without giving the
            # connection away half-done even if this await is cancelled again.
            if self._savepoint is not None:
                await db._backend.release(handle, self._savepoint, commit=commit)
            else:
                await db._backend.finish(handle, commit=commit)

    def _opened(self, cursor: Any) -> None:
        if self._cursors is None:
            self._cursors = []
        self._cursors.append(cursor)

    async def _close_cursors(self) -> None:
        cursors, self._cursors = self._cursors or [], None
        for cursor in cursors:
            # The transaction must still end; a broken connection shows at COMMIT/ROLLBACK.
            with contextlib.suppress(Exception):
                result = cursor.close()
                if isinstance(result, Awaitable):
                    await result

    def _h(self) -> AsyncHandle:
        if self._handle is None:
            raise StoreError("the transaction is not active; use it inside its with block")
        return self._handle

    @property
    def team_id(self) -> Any:
        return self._team_id

    @property
    def isolation(self) -> str | None:
        return self._isolation

    # Plain functions returning the handle's coroutine: no coroutine of their own per
    # statement (a frame more to create and resume; 1,000 tasks make it a cache miss).
    def run(self, sql: str, params: Params = None) -> Coroutine[Any, Any, RunResult]:
        return self._h().run(sql, params)

    def get(self, sql: str, params: Params = None) -> Coroutine[Any, Any, Row | None]:
        return self._h().get(sql, params)

    def all(self, sql: str, params: Params = None) -> Coroutine[Any, Any, list[Row]]:
        return self._h().all(sql, params)

    def iter(self, sql: str, params: Params = None) -> AsyncIterator[Row]:
        """Rows lazily; consuming them after the transaction ended raises StoreError."""
        return self._h().iter(sql, params, self)

    async def run_many(self, sql: str, seq: Iterable[Sequence[Any] | Mapping[str, Any]]) -> int:
        return await self._h().run_many(sql, seq)

    async def run_deferred(self, sql: str, params: Params = None) -> None:
        """Transaction.run_deferred: on PostgreSQL sent with the next statement or COMMIT."""
        await self._h().run_deferred(sql, params)

    async def exec(self, script: str) -> None:
        await self._h().exec(script)


class AsyncDatabase:
    """One store, shared safely by the tasks of an event loop."""

    def __init__(self, url: DatabaseURL, backend: AsyncBackend,
                 isolation: str = "serializable") -> None:
        self._url = url
        self._backend: AsyncBackend = backend
        self.isolation = isolation_level(isolation) or "serializable"
        self._tx: contextvars.ContextVar[AsyncTransaction | None] = contextvars.ContextVar(
            "storekit_aio_tx", default=None)
        self._savepoints = 0
        self._dialect: Dialect | None = None

    @property
    def backend(self) -> str:
        return self._url.backend

    @property
    def dialect(self) -> Dialect:
        """This backend's SQL, as Database.dialect (the same object)."""
        if self._dialect is None:
            from storekit.dialect import dialect_for

            self._dialect = dialect_for(self.backend)
        return self._dialect

    @property
    def in_transaction(self) -> bool:
        """Whether this task is inside a transaction of this database."""
        return self._joined() is not None

    @property
    def url(self) -> str:
        return str(self._url)

    def reveal_url(self) -> DatabaseURL:
        """The URL with its secrets, for the caller who owns them (as Database.reveal_url)."""
        return self._url

    @property
    def capabilities(self) -> Capabilities:
        return self._backend.capabilities

    @property
    def settings(self) -> dict[str, Any]:
        return self._backend.settings()

    @property
    def closed(self) -> bool:
        return isinstance(self._backend, _Closed)

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<storekit.aio.AsyncDatabase {self.backend} {self.url}{state}>"

    def _joined(self) -> AsyncTransaction | None:
        """This task's transaction. A task started inside one inherits the ContextVar but
        not the transaction: it works on its own, as another thread does in the sync API."""
        tx = self._tx.get()
        if tx is not None and tx._task is not asyncio.current_task():
            return None
        return tx

    # Data methods: inside a transaction of this task, they join it.
    # Coroutines, not functions returning one: which transaction a call joins is decided
    # by the task that awaits it (asyncio.create_task(db.run(...)) works on its own).
    async def run(self, sql: str, params: Params = None) -> RunResult:
        tx = self._joined()
        return await (tx or self._backend).run(sql, params)

    async def get(self, sql: str, params: Params = None) -> Row | None:
        tx = self._joined()
        return await (tx or self._backend).get(sql, params)

    async def all(self, sql: str, params: Params = None) -> list[Row]:
        tx = self._joined()
        return await (tx or self._backend).all(sql, params)

    def iter(self, sql: str, params: Params = None) -> AsyncIterator[Row]:
        tx = self._joined()
        return (tx or self._backend).iter(sql, params)

    async def run_many(self, sql: str, seq: Iterable[Sequence[Any] | Mapping[str, Any]]) -> int:
        """All rows in one transaction: a batch commits whole or not at all."""
        tx = self._joined()
        if tx is not None:
            return await tx.run_many(sql, seq)
        async with self.transaction() as batch:
            return await batch.run_many(sql, seq)

    async def exec(self, script: str) -> None:
        tx = self._joined()
        await (tx or self._backend).exec(script)

    @_checked
    def transaction(self, *, readonly: bool = False, team_id: Any = None,
                    isolation: str | None = None) -> AsyncTransaction:
        """`async with db.transaction() as tx:` commits on normal exit and rolls back on an
        exception or cancellation. The rules are Database.transaction's."""
        self._backend.capabilities  # noqa: B018 - raises on a closed database
        if isolation is not None:
            isolation = isolation_level(isolation)
        if readonly is not False and readonly is not True:
            raise ConfigurationError(f"readonly must be True or False, not {shown(readonly)}")
        return AsyncTransaction(self, readonly, team_id, isolation)

    @_checked
    def scope(self, *, team_id: Any) -> AsyncTransaction:
        """A transaction in which row-level security sees only this team's rows."""
        return self.transaction(team_id=team_id)

    async def atomic(
        self,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        retries: int = 10,
        isolation: str | None = None,
        readonly: bool = False,
        team_id: Any = None,
        **kwargs: Any,
    ) -> T:
        """Run `await fn(tx, *args, **kwargs)` in a transaction and return its result,
        running it again after TransactionConflict or BusyError: Database.atomic's rules."""
        retries = check_atomic(fn, retries)
        if self._joined() is not None:
            async with self.transaction(readonly=readonly, team_id=team_id,
                                        isolation=isolation) as tx:
                return await fn(tx, *args, **kwargs)
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self.transaction(readonly=readonly, team_id=team_id,
                                            isolation=isolation) as tx:
                    return await fn(tx, *args, **kwargs)
            except RETRYABLE as exc:
                if attempt > retries:
                    exc.args = (f"{exc} (gave up after {attempt} attempts)", *exc.args[1:])
                    raise
            await asyncio.sleep(
                random.uniform(0, min(RETRY_CAP_S, RETRY_BASE_S * 2.0 ** min(attempt, 32))))

    # Schema, search and row security: storekit.aio_features, over the sync API's SQL.
    @_checked_async
    async def create_table(self, table: Table, *, if_not_exists: bool = True) -> None:
        from storekit.aio_features import create_table

        await create_table(self, table, if_not_exists=if_not_exists)

    @_checked_async
    async def drop_table(self, name: str, *, if_exists: bool = True) -> None:
        from storekit.aio_features import drop_table

        await drop_table(self, name, if_exists=if_exists)

    @_checked
    def schema_sql(self, table: Table) -> str:
        """The DDL create_table runs. Not awaited: it reads nothing from the database."""
        from storekit.schema import schema_sql

        return schema_sql(self.dialect, table)

    @_checked_async
    async def tables(self) -> list[str]:
        from storekit.aio_features import tables

        return await tables(self)

    @_checked_async
    async def columns(self, name: str) -> list[Column]:
        from storekit.aio_features import columns

        return await columns(self, name)

    @_checked_async
    async def enable_search(self, table: str, columns: Sequence[str], *,
                            language: str = "english") -> None:
        from storekit.aio_features import enable_search

        await enable_search(self, table, columns, language=language)

    @_checked_async
    async def search(
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
        """Rows best first, ranks relative to the page's best match (as Database.search)."""
        from storekit.search import scale_ranks

        sql, values = await self.search_sql(table, query, limit=limit, offset=offset,
                                            where=where, params=params, columns=columns)
        return [] if sql is None else scale_ranks(await self.all(sql, values))

    @_checked_async
    async def search_sql(
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
        """Awaited: the first call for a table reads its searchable columns."""
        from storekit.aio_features import search_sql

        return await search_sql(self, table, query, limit=limit, offset=offset, where=where,
                                params=params, columns=columns)

    @_checked_async
    async def rebuild_search(self, table: str) -> None:
        from storekit.aio_features import rebuild_search

        await rebuild_search(self, table)

    @_checked_async
    async def enable_row_security(self, table: str, column: str = "team_id") -> None:
        from storekit.aio_features import enable_row_security

        await enable_row_security(self, table, column)

    # Notifications: storekit.aio_notify.
    async def notify(self, channel: str, payload: str | Mapping[str, Any] = "") -> None:
        from storekit.aio_notify import notify

        try:
            await notify(self, channel, payload)
        except BAD_INPUT as exc:
            raise from_bad_input(exc) from exc

    @_checked
    def listen(self, *channels: str, poll_interval: float = 0.02) -> AsyncSubscription:
        """`async with db.listen("ch") as sub:` then `async for note in sub` or
        `await sub.get(timeout=...)`."""
        from storekit.aio_notify import listen

        self._backend.capabilities  # noqa: B018 - raises on a closed database
        return listen(self, channels, poll_interval=poll_interval)

    # Lifecycle.
    async def close(self) -> None:
        if not self.closed:
            backend = self._backend
            self._backend = _Closed(self.url)  # type: ignore[assignment]
            await backend.close()

    async def __aenter__(self) -> AsyncDatabase:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _load_backend(name: str) -> type[Any]:
    module_name, _, class_name = ASYNC_BACKENDS[name].partition(":")
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


async def create_database(
    url: str | DatabaseURL | None = None,
    *,
    pool: PoolOptions | None = None,
    sqlite: SqliteOptions | None = None,
    isolation: str = "serializable",
    busy_timeout_ms: int | None = None,
) -> AsyncDatabase:
    """Open the database a URL names: the argument, else STOREKIT_DATABASE_URL, else
    DATABASE_URL, else the SQLite file ./storekit.db (storekit.create_database's rules)."""
    level = isolation_level(isolation) or "serializable"
    check_create_options(pool, sqlite)
    parsed = resolve_url(url)
    backend_cls = _load_backend(parsed.backend)
    options = backend_cls.options_from(pool=pool, sqlite=sqlite,
                                       busy_timeout_ms=busy_timeout_ms)
    backend = await backend_cls.open(parsed, options)
    return AsyncDatabase(parsed, backend, level)


async def open_database(path: str | Any, *, sqlite: SqliteOptions | None = None,
                        isolation: str = "serializable",
                        busy_timeout_ms: int | None = None) -> AsyncDatabase:
    """Open (or create) a SQLite file; missing parent folders are created."""
    return await create_database(file_url(path), sqlite=sqlite,
                                 isolation=isolation, busy_timeout_ms=busy_timeout_ms)


async def create_memory_database(*, sqlite: SqliteOptions | None = None,
                                 isolation: str = "serializable",
                                 busy_timeout_ms: int | None = None) -> AsyncDatabase:
    """A private in-memory SQLite database; it never touches the disk."""
    return await create_database(DatabaseURL("sqlite", database=":memory:"), sqlite=sqlite,
                                 isolation=isolation, busy_timeout_ms=busy_timeout_ms)


async def migrate(
    source: AsyncDatabase | str | DatabaseURL,
    target: AsyncDatabase | str | DatabaseURL,
    *,
    tables: Sequence[str] | None = None,
    on_conflict: str = "error",
    verify: bool = True,
    batch_size: int = 5000,
    progress: Progress | None = None,
) -> MigrationReport:
    """storekit.migrate, awaited: the copy runs in a worker thread (aio_features.migrate)."""
    from storekit.aio_features import migrate as run

    return await run(source, target, tables=tables, on_conflict=on_conflict, verify=verify,
                     batch_size=batch_size, progress=progress)
