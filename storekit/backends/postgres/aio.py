"""PostgreSQL for storekit.aio: psycopg's AsyncConnection and AsyncConnectionPool.

The sync backend's rules, awaited: pooled connections in autocommit with BEGIN/COMMIT
sent by storekit, serializable by default, lock_timeout from busy_timeout_ms, the scope
key registered as each connection opens, and the session reset (RESET_SESSION) before a
connection goes back to the pool when its SQL may have changed the session (session.py), a
transaction was left open, or a statement failed or was cancelled. A task cancelled
mid-statement: psycopg cancels the query on the server; storekit then rolls back and
resets, and should that be cancelled too, the connection is closed rather than returned
half reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import psycopg_pool
from psycopg.rows import dict_row

from storekit.aio_gate import Gate
from storekit.backends.base import Capabilities, PoolOptions, Row, RunResult
from storekit.backends.postgres.backend import (
    _ENDED,
    _IDLE,
    _IN_ERROR,
    _KEEP_ROWS,
    _RESETTABLE,
    _SCOPE_SCHEMAS,
    ADAPTERS,
    RESET_SESSION,
    SETTINGS_SHOWN,
    PostgresBackend,
    _cursor_names,
    check_options,
    connect_timeout,
    opening,
)
from storekit.backends.postgres.deferred import (
    ABORT,
    held_pipeline,
    interruption,
    prepared,
    prepared_many,
    reraised,
    unqueued,
)
from storekit.backends.postgres.pipeline import apipeline, apipeline_nolock
from storekit.backends.postgres.session import changes_session
from storekit.errors import (
    BAD_INPUT,
    RETRYABLE,
    DatabaseUnavailable,
    OperationalError,
    PoolTimeout,
    ProgrammingError,
    StoreError,
    ended,
    from_bad_input,
    from_psycopg,
)
from storekit.params import Params, Translated, check_params, check_sql_text, translate
from storekit.rls import REGISTER
from storekit.url import DatabaseURL


class AsyncStoreConnection(psycopg.AsyncConnection[Row]):
    """A pooled connection that remembers whether its session may have changed since the
    last reset (as the sync StoreConnection: _putconn resets only then), and keeps one
    cursor for the autocommit path, which alone has the connection to itself (a
    transaction's tasks may share theirs, so they get a cursor per statement)."""

    dirty = True  # until the first reset, assume the worst (class defaults: no __init__)
    _statement_cursor: psycopg.AsyncCursor[Row] | None = None

    @asynccontextmanager
    async def pipeline(self) -> AsyncIterator[psycopg.AsyncPipeline]:
        async with apipeline(self) as p:  # no Flush after the last Sync (pipeline.py)
            yield p

    @asynccontextmanager
    async def _pipeline_nolock(self) -> AsyncIterator[psycopg.AsyncPipeline]:
        async with apipeline_nolock(self) as p:  # executemany()'s pipeline: no Flush either
            yield p


AConn = AsyncStoreConnection
# A statement held back by a handle: (PostgreSQL SQL, values or rows, executemany).
Pending = tuple[str, Any, bool]


async def _execute(conn: AConn, sql: str, params: Params, how: str,
                   reuse: bool = False) -> Any:
    try:
        t = translate(sql, "postgres")
        values = check_params(t, params)
        if changes_session(t.sql):
            conn.dirty = True
        if reuse:
            cur = conn._statement_cursor
            if cur is None:
                cur = conn._statement_cursor = conn.cursor()
            await cur.execute(t.sql, values)
            if cur.rowcount > _KEEP_ROWS:
                conn._statement_cursor = None  # do not keep a large result alive
        else:
            cur = await conn.execute(t.sql, values)
        return await _result(cur, t, how)
    except psycopg.Error as exc:
        _failed(conn)
        raise from_psycopg(exc) from exc
    except BAD_INPUT as exc:
        raise from_bad_input(exc) from exc
    except BaseException:
        _failed(conn)  # cancelled, or interrupted: the server may have run part of it
        raise


async def _result(cur: psycopg.AsyncCursor[Row], t: Translated, how: str) -> Any:
    if how == "get":
        return await cur.fetchone()
    if how == "all":
        return await cur.fetchall()
    if t.returning and cur.description is not None:
        row = await cur.fetchone()
        return RunResult(cur.rowcount, next(iter(row.values())) if row else None)
    return RunResult(cur.rowcount, None)


async def _pipeline(conn: AConn, pending: list[Pending],
                    last: Pending | None) -> psycopg.AsyncCursor[Row] | None:
    """Send pending, then last, in one pipeline: one round trip, one Sync. After a
    statement fails the server skips the rest (a COMMIT among them never runs), and the
    first error is raised. Returns last's cursor, its results fetched."""
    cur = None
    refused: BaseException | None = None  # see deferred.ABORT
    try:
        async with held_pipeline(conn, pending, last):
            for sql, values, many in pending:
                try:
                    if many:
                        await conn.cursor().executemany(sql, values)
                    else:
                        await conn.execute(sql, values)
                except BaseException as exc:
                    if not unqueued(exc):
                        raise
                    refused = exc
                    await conn.execute(ABORT)
                    break
            else:
                if last is not None:
                    cur = conn.cursor()
                    if last[2]:
                        await cur.executemany(last[0], last[1])
                    else:
                        await cur.execute(last[0], last[1])
    except psycopg.Error as exc:
        if refused is None:
            raise
        raise reraised(refused, exc) from None
    if refused is not None:
        raise refused
    return cur


def _failed(conn: AConn) -> None:
    """A statement failed or was interrupted: reset the session when the connection is
    returned, and start the next statement on a fresh cursor."""
    conn.dirty = True
    conn._statement_cursor = None


async def _script(conn: AConn, script: str) -> None:
    try:
        if not isinstance(script, str):
            raise ProgrammingError(f"a script must be a str, not {type(script).__name__}")
        check_sql_text(script)
        if changes_session(script):
            conn.dirty = True
        await conn.execute(script)  # no parameters: the simple protocol runs many statements
    except psycopg.Error as exc:
        _failed(conn)
        raise from_psycopg(exc) from exc
    except BAD_INPUT as exc:
        raise from_bad_input(exc) from exc
    except BaseException:
        _failed(conn)
        raise


class AsyncPgHandle:
    """Data methods on one connection, held for a transaction.

    A handle from AsyncPostgresBackend.begin holds back its BEGIN (and scope settings):
    they go out in one pipeline with the transaction's first statement, so BEGIN costs no
    round trip of its own, and a transaction that runs nothing sends nothing. Statements
    given to run_deferred / run_many_deferred wait likewise for the next statement, the
    end of the savepoint, or COMMIT: a write whose result nobody reads then costs no
    round trip either (BEGIN, INSERT, COMMIT in one). Their errors are raised there, and
    a pipeline stops at the first error, so nothing after it runs and COMMIT never does."""

    __slots__ = ("conn", "failed", "implicit", "pending", "pipelined", "readonly", "unsent")

    def __init__(self, conn: AConn, readonly: bool = False,
                 pending: list[Pending] | None = None, implicit: bool = False) -> None:
        self.conn = conn
        self.readonly = readonly
        self.failed: StoreError | None = None  # see PgHandle.failed
        # Without pending (behind a transaction pooler), statements run one by one.
        self.pipelined = pending is not None
        self.pending: list[Pending] = pending or []  # translated and checked, not yet sent
        self.unsent = len(self.pending)  # how many of them open the transaction
        # Whether the opening may be left out when every statement is held back to the
        # commit: see AsyncPostgresBackend.finish.
        self.implicit = implicit

    async def _send(self, last: Pending | None) -> psycopg.AsyncCursor[Row] | None:
        pending, self.pending, self.unsent = self.pending, [], 0
        try:
            return await _pipeline(self.conn, pending, last)
        except psycopg.Error as exc:
            _failed(self.conn)
            cause = interruption(exc)  # a cancellation the pipeline's exit hid
            if cause is not None:
                raise cause from None
            self.failed = error = from_psycopg(exc)
            raise error from exc
        except BAD_INPUT as exc:  # a value psycopg cannot send (a lone surrogate)
            _failed(self.conn)
            self.failed = error = from_bad_input(exc)
            raise error from exc
        except BaseException:
            _failed(self.conn)  # cancelled: the server may have run part of it
            raise

    async def flush(self) -> None:
        """Send what is held back (one round trip); nothing to do when nothing is."""
        if self.pending:
            await self._send(None)

    async def _do(self, sql: str, params: Params, how: str) -> Any:
        if self.pending:
            t, values = prepared(self.conn, sql, params)
            cur = await self._send((t.sql, values, False))
            assert cur is not None
            return await _result(cur, t, how)
        try:
            return await _execute(self.conn, sql, params, how)
        except StoreError as exc:
            self.failed = exc
            raise

    async def run_deferred(self, sql: str, params: Params = None) -> None:
        """run() whose result nobody reads: sent with the next statement or COMMIT."""
        if not self.pipelined:
            await self.run(sql, params)
            return
        t, values = prepared(self.conn, sql, params)
        self.pending.append((t.sql, values, False))

    async def run_many_deferred(self, sql: str,
                                seq: Iterable[Sequence[Any] | Mapping[str, Any]]) -> None:
        """run_many() whose count nobody reads: sent with the next statement or COMMIT."""
        if not self.pipelined:
            await self.run_many(sql, seq)
            return
        self.pending.append(prepared_many(self.conn, sql, seq))

    async def run(self, sql: str, params: Params = None) -> RunResult:
        result: RunResult = await self._do(sql, params, "run")
        return result

    async def get(self, sql: str, params: Params = None) -> Row | None:
        row: Row | None = await self._do(sql, params, "get")
        return row

    async def all(self, sql: str, params: Params = None) -> list[Row]:
        rows: list[Row] = await self._do(sql, params, "all")
        return rows

    async def iter(self, sql: str, params: Params = None, tx: Any = None) -> AsyncIterator[Row]:
        """Stream through a server-side cursor (closed by the transaction's end)."""
        if tx is not None and tx._handle is None:
            raise ended()
        await self.flush()
        try:
            t = translate(sql, "postgres")
            values = check_params(t, params)
            if changes_session(t.sql):
                self.conn.dirty = True
            async with self.conn.cursor(name=f"storekit_{next(_cursor_names)}") as cur:
                if tx is not None:
                    tx._opened(cur)
                await cur.execute(t.sql, values)
                while True:
                    if tx is not None and tx._handle is None:
                        raise ended()
                    batch = await cur.fetchmany(2000)
                    if not batch:
                        return
                    for row in batch:
                        if tx is not None and tx._handle is None:
                            raise ended()
                        yield row
        except psycopg.Error as exc:
            _failed(self.conn)
            self.failed = error = from_psycopg(exc)
            raise error from exc
        except BAD_INPUT as exc:
            raise from_bad_input(exc) from exc

    async def run_many(self, sql: str, seq: Iterable[Sequence[Any] | Mapping[str, Any]]) -> int:
        if self.pending:
            cur = await self._send(prepared_many(self.conn, sql, seq))
            assert cur is not None
            return cur.rowcount
        try:
            t = translate(sql, "postgres")
            if changes_session(t.sql):
                self.conn.dirty = True
            async with self.conn.cursor() as cur:
                await cur.executemany(t.sql, [check_params(t, p) for p in seq])
                return cur.rowcount
        except psycopg.Error as exc:
            _failed(self.conn)
            self.failed = error = from_psycopg(exc)
            raise error from exc
        except BAD_INPUT as exc:
            raise from_bad_input(exc) from exc

    async def exec(self, script: str) -> None:
        await self.flush()  # a script goes by the simple protocol, outside any pipeline
        try:
            await _script(self.conn, script)
        except StoreError as exc:
            self.failed = exc
            raise


# The pool when create_database is given none (PoolOptions' own default is 10). One event
# loop keeps few connections busy: more only lengthen each loop iteration (the answers
# that arrived together are all handled in it) and, under SERIALIZABLE, add conflicts
# and retries. Measured and explained in docs/async.md.
POOL_MAX_SIZE = 4


class AsyncPostgresBackend:
    name = "postgres"
    _commit = "COMMIT"  # a pooled backend resets session settings first (pooler.py)

    @staticmethod
    def options_from(*, pool: PoolOptions | None, sqlite: Any,
                     busy_timeout_ms: int | None) -> PoolOptions | None:
        """The sync backend's rules, with a pool of POOL_MAX_SIZE when none is given."""
        return PostgresBackend.options_from(
            pool=pool or PoolOptions(max_size=POOL_MAX_SIZE), sqlite=sqlite,
            busy_timeout_ms=busy_timeout_ms)

    @classmethod
    async def open(cls, url: DatabaseURL, pool: PoolOptions | None) -> AsyncPostgresBackend:
        if cls is AsyncPostgresBackend and pool is not None and pool.pooler is not None:
            from storekit.backends.postgres.aio_pooler import AsyncPooledPostgresBackend

            cls = AsyncPooledPostgresBackend
        self = cls(url, pool)
        await self._start()
        return self

    _connect_kwargs: dict[str, Any] = {}  # noqa: RUF012 - psycopg connect() extras

    def __init__(self, url: DatabaseURL, pool: PoolOptions | None = None) -> None:
        self.url = url
        self.pool_options = o = pool or PoolOptions()
        check_options(url)
        self._scope_key = secrets.token_bytes(32)  # see storekit/rls.py
        self._session_settings = f"SET lock_timeout = {max(1, o.busy_timeout_ms)}"
        # None: no session of ours to reset (behind a transaction pooler).
        self._reset_session: str | None = f"{RESET_SESSION}; {self._session_settings}"
        self._conninfo = url.conninfo()
        self._kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row,
                                        "context": ADAPTERS, **connect_timeout(url, o),
                                        **self._connect_kwargs}
        # As the sync backend: the probe waits as long as a pooled connect may.
        self._probe_kwargs: dict[str, Any] = connect_timeout(url, o)  # {}: the URL's applies
        self._discarding: set[asyncio.Task[None]] = set()
        self._server_settings: dict[str, Any] = {}
        self._probe: asyncio.Future[bool] | None = None  # _reachable's, while one runs
        self._probe_ok, self._probed_at = True, float("-inf")  # the last probe's answer
        # Tasks queue here for a pooled connection (storekit/aio_gate.py).
        self._gate = Gate(self.pool_options.max_size, self.pool_options.timeout)

    async def _start(self) -> None:
        o = self.pool_options
        try:
            probe = await AsyncStoreConnection.connect(self._conninfo, **self._kwargs)
        except psycopg.Error as exc:
            raise DatabaseUnavailable(
                f"cannot connect to PostgreSQL at {self.url}: {from_psycopg(exc)}"
            ) from exc
        try:
            names = ", ".join(f"'{name}'" for name in SETTINGS_SHOWN)
            cur = await probe.execute(
                f"SELECT name, setting, unit FROM pg_settings WHERE name IN ({names})")
            self._server_settings = {
                r["name"]: r["setting"] + r["unit"] if r["unit"] else r["setting"]
                for r in await cur.fetchall()}
        except BaseException:
            await probe.close()
            raise
        # The probe becomes the pool's first connection (configured by it like any other):
        # a connect costs the server a process and both sides an authentication, and many
        # agents starting at once pay that for every connection each opens.
        backend = self

        class Connection(AsyncStoreConnection):
            @classmethod
            async def connect(cls, *args: Any, **kwargs: Any) -> Any:
                spare, backend._spare = backend._spare, None
                if spare is not None and not spare.closed:
                    return spare
                return await AsyncStoreConnection.connect(*args, **kwargs)

        self._spare: AConn | None = probe
        self._pool: psycopg_pool.AsyncConnectionPool[AConn] = psycopg_pool.AsyncConnectionPool(
            self._conninfo, kwargs=self._kwargs, min_size=o.min_size, max_size=o.max_size,
            max_idle=o.max_idle, timeout=o.timeout, reconnect_timeout=2.0,
            configure=self._configure, open=False, name="storekit-aio",
            connection_class=Connection)
        try:
            await self._pool.open(wait=o.min_size > 0, timeout=o.timeout)
        except psycopg_pool.PoolTimeout as exc:
            await self._pool.close()
            await self._close_spare()
            raise DatabaseUnavailable(f"PostgreSQL pool could not open at {self.url}") from exc
        self.capabilities = Capabilities(
            concurrent_writers=True, network=True, listen_notify="native",
            row_level_security=True, jsonb=True, full_text="tsvector",
            server_version=str(self._server_settings.get("server_version", "")))

    async def _configure(self, conn: AConn) -> None:
        """A new pooled connection: its session settings and this Database's scope key."""
        async with conn.pipeline():  # one round trip for both
            await conn.execute(self._session_settings)
            cur = await conn.execute(_SCOPE_SCHEMAS)
        schemas = [r["s"] for r in await cur.fetchall()]
        if schemas:
            calls = ", ".join(f"{s}.{REGISTER}(%s)" for s in schemas)
            await conn.execute(f"SELECT {calls}", [self._scope_key] * len(schemas))
        # Its session is what a reset would leave (the key is kept in a table, which a
        # reset does not touch): no reset round trip when it first goes back to the pool.
        conn.dirty = False

    async def _close_spare(self) -> None:
        spare, self._spare = self._spare, None
        if spare is not None:
            await spare.close()

    async def _reachable(self) -> bool:
        """Whether the server accepts a connection. The tasks waiting meanwhile share one
        probe, and a probe as recent as a second gives its answer (as the sync backend):
        a probe each would open hundreds of connections at once when many tasks wait for
        a busy pool (too many clients). Shielded: a cancelled waiter leaves it."""
        if self._probe is None or self._probe.done():
            if self._probed_at >= time.monotonic() - 1.0:
                return self._probe_ok
            self._probe = asyncio.ensure_future(self._probe_server())
        return await asyncio.shield(self._probe)

    async def _probe_server(self) -> bool:
        started = time.monotonic()
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo, **self._probe_kwargs)
        except psycopg.Error:
            ok = False
        else:
            await conn.close()
            ok = True
        self._probe_ok, self._probed_at = ok, started
        return ok

    async def _getconn(self) -> AConn:
        """As the sync backend: a down server raises DatabaseUnavailable within a second,
        a busy pool PoolTimeout after the configured timeout. Tasks queue in arrival order
        at a Gate of max_size places (storekit/aio_gate.py) rather than in the pool, so a
        long wait for a busy pool is neither given up each second nor probed."""
        timeout = self.pool_options.timeout
        gate = self._gate
        if not gate.try_acquire():
            arrived = time.monotonic()
            if not await gate.acquire():
                raise self._closed() if gate.closed else self._pool_timeout()
            if not self._probe_ok and self._probed_at >= arrived - 1.0:
                gate.release()  # a probe made while this task waited found the server down
                raise DatabaseUnavailable(f"PostgreSQL at {self.url} is not answering")
            timeout = max(0.001, timeout - (time.monotonic() - arrived))
        try:
            first = min(1.0, timeout)
            try:
                return await self._pool.getconn(timeout=first)
            except psycopg_pool.PoolTimeout:
                pass
            if not await self._reachable():
                raise DatabaseUnavailable(f"PostgreSQL at {self.url} is not answering")
            try:
                return await self._pool.getconn(timeout=max(0.001, timeout - first))
            except psycopg_pool.PoolTimeout as exc:
                raise self._pool_timeout() from exc
        except psycopg_pool.PoolClosed as exc:  # closed while this task was let through
            gate.release()
            raise self._closed() from exc
        except BaseException:
            gate.release()
            raise

    def _closed(self) -> StoreError:
        return StoreError(f"the database {self.url} is closed")  # as AsyncDatabase's

    def _pool_timeout(self) -> PoolTimeout:
        return PoolTimeout(f"no PostgreSQL connection free within "
                           f"{self.pool_options.timeout:g} s "
                           f"(max_size={self.pool_options.max_size}) at {self.url}")

    async def _putconn(self, conn: AConn) -> None:
        """Reset the session if it may have changed (conn.dirty, or a transaction left
        open: one round trip), then give the connection back. Interrupted (a second
        cancellation), the connection is closed instead, and returned by a task."""
        try:
            status = conn.pgconn.transaction_status
            if status in _RESETTABLE and (conn.dirty or status != _IDLE):
                try:
                    if status != _IDLE:
                        await conn.rollback()
                    if self._reset_session is not None:
                        await conn.execute(self._reset_session)
                    conn.dirty = False
                except psycopg.Error:
                    await conn.close()  # the pool replaces a closed connection
            await self._pool.putconn(conn)
        except BaseException:
            conn.pgconn.finish()  # half reset: nobody may borrow it
            task = asyncio.get_running_loop().create_task(self._pool.putconn(conn))
            self._discarding.add(task)
            task.add_done_callback(self._discarding.discard)
            raise
        finally:
            self._gate.release()  # the next task's connection is in the pool, or being made

    async def _autocommit(self, sql: str, params: Params, how: str) -> Any:
        conn = await self._getconn()
        try:
            return await _execute(conn, sql, params, how, reuse=True)
        finally:
            await self._putconn(conn)

    async def run(self, sql: str, params: Params = None) -> RunResult:
        result: RunResult = await self._autocommit(sql, params, "run")
        return result

    async def get(self, sql: str, params: Params = None) -> Row | None:
        row: Row | None = await self._autocommit(sql, params, "get")
        return row

    async def all(self, sql: str, params: Params = None) -> list[Row]:
        rows: list[Row] = await self._autocommit(sql, params, "all")
        return rows

    async def iter(self, sql: str, params: Params = None) -> AsyncIterator[Row]:
        # One statement on one snapshot: no anomaly to prevent, and never a conflict.
        handle = await self.begin(readonly=True, isolation="repeatable read")
        ok = False
        try:
            async for row in handle.iter(sql, params):
                yield row
            ok = True
        finally:
            await self.finish(handle, commit=ok)

    async def exec(self, script: str) -> None:
        conn = await self._getconn()
        try:
            await _script(conn, script)
        finally:
            await self._putconn(conn)

    async def begin(self, *, readonly: bool, team_id: Any = None,
                    isolation: str = "serializable") -> AsyncPgHandle:
        # BEGIN (and the scope) go out with the first statement: see AsyncPgHandle.
        held = opening(isolation, readonly, team_id, self._scope_key)
        conn = await self._getconn()
        if team_id is not None:
            conn.dirty = True  # as run() marks set_config: reset before the next borrower
        implicit = isolation == "read committed" and not readonly and team_id is None
        return AsyncPgHandle(conn, readonly, held, implicit)

    async def finish(self, handle: Any, *, commit: bool) -> None:
        try:
            if handle.unsent and (not commit or len(handle.pending) == handle.unsent):
                return  # BEGIN was never sent: there is no transaction to end
            if (commit and not handle.readonly
                    and handle.conn.info.transaction_status == _IN_ERROR):
                handle.pending = []  # they would fail too: the transaction is aborted
                await handle.exec("ROLLBACK")
                failed = handle.failed
                cls = type(failed) if isinstance(failed, RETRYABLE) else OperationalError
                raise cls(
                    "the transaction was aborted by an earlier error (caught inside the"
                    " block) and has been rolled back; nothing was committed"
                    + (f" (it was: {failed})" if failed is not None else "")) from failed
            if commit and handle.pending:
                if handle.unsent and handle.implicit:
                    # Every statement was held back to here: without BEGIN and COMMIT the
                    # pipeline up to its Sync is PostgreSQL's implicit transaction, all or
                    # nothing as well, at the session's default level, which is READ
                    # COMMITTED or stronger (a conflict there is retried as any other).
                    del handle.pending[:handle.unsent]
                    await handle._send(None)
                else:
                    await handle._send((self._commit, None, False))  # held back, COMMIT
                return
            handle.pending = []  # rolled back: what was held back never runs
            if commit:
                await handle.exec(self._commit)
            else:
                # The block's own exception (a cancellation) is the one to raise; a
                # connection that cannot roll back is dropped when it is returned.
                with contextlib.suppress(StoreError):
                    await handle.exec("ROLLBACK")
        finally:
            # The handle refuses from now on (AsyncTransaction's bound methods may be kept
            # past the block): the connection is the next borrower's. A deferred write
            # would otherwise be queued on a dead handle and silently dropped.
            conn, handle.conn = handle.conn, _ENDED
            handle.pending, handle.pipelined = [], False
            await self._putconn(conn)

    async def savepoint(self, handle: Any, name: str) -> None:
        # Through run(): what is held back (BEGIN included) goes in the same round trip,
        # and what is deferred from now on belongs to this savepoint.
        await handle.run(f"SAVEPOINT {name}")

    async def release(self, handle: Any, name: str, *, commit: bool) -> None:
        if commit and handle.pending:
            try:
                await handle.run(f"RELEASE SAVEPOINT {name}")  # after the held-back writes
                return
            except Exception:
                # One failed: undo the savepoint's work, as for an error inside the block.
                await handle.exec(f"ROLLBACK TO SAVEPOINT {name}")
                await handle.exec(f"RELEASE SAVEPOINT {name}")
                raise
        handle.pending = []  # the savepoint's held-back writes, rolled back with it
        if not commit:
            await handle.exec(f"ROLLBACK TO SAVEPOINT {name}")
        await handle.exec(f"RELEASE SAVEPOINT {name}")

    def settings(self) -> dict[str, Any]:
        o = self.pool_options
        return {**self._server_settings, "lock_timeout": f"{o.busy_timeout_ms}ms",
                "pool_min_size": o.min_size, "pool_max_size": o.max_size,
                "pool_max_idle": o.max_idle, "pool_timeout": o.timeout, "url": str(self.url)}

    async def notify(self, db: Any, channel: str, text: str) -> None:
        from storekit.backends.postgres.aio_listen import notify

        await notify(db, channel, text)

    async def listener(self, db: Any, sub: Any) -> Any:
        from storekit.backends.postgres.aio_listen import PostgresListener
        from storekit.backends.postgres.pooler import listen_conninfo

        return PostgresListener(sub, listen_conninfo(db))

    async def close(self) -> None:
        self._gate.close()  # the tasks queued for a connection get an error now
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._discarding)
        await self._pool.close()
        await self._close_spare()  # min_size=0: the pool may never have taken it
