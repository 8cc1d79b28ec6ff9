"""PostgreSQL through psycopg 3 and psycopg_pool.

Pooled connections run in autocommit; storekit sends BEGIN/COMMIT itself, so a
transaction is one borrowed connection. A returned connection is reset (RESET_SESSION)
before the pool takes it back if any SQL it ran could change the session (session.py), so
no SET, temporary table, advisory lock, open cursor or LISTEN reaches the next borrower (a
transaction left open is rolled back first). After plain statements there is nothing to
reset, and no round trip is spent on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import itertools
import os
import secrets
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

try:
    import psycopg
    import psycopg_pool
    from psycopg import adapt
    from psycopg.rows import dict_row
    from psycopg.types.json import JsonbDumper
except ImportError as exc:  # pragma: no cover - exercised in an environment without the extra
    from storekit.errors import ConfigurationError

    raise ConfigurationError(
        "PostgreSQL support needs psycopg: pip install 'storekit[postgres]'"
    ) from exc

from storekit.backends.base import (
    ISOLATION_LEVELS,
    Capabilities,
    PoolOptions,
    Refusing,
    Row,
    RunResult,
    SqliteOptions,
)
from storekit.backends.postgres import deferred
from storekit.backends.postgres.deferred import Pending
from storekit.backends.postgres.pipeline import pipeline, pipeline_nolock
from storekit.backends.postgres.rowsecurity import REGISTER, SETTING, TOKEN_SETTING, scope_token
from storekit.backends.postgres.session import changes_session
from storekit.errors import (
    BAD_INPUT,
    RETRYABLE,
    ConfigurationError,
    DatabaseUnavailable,
    OperationalError,
    PoolTimeout,
    ProgrammingError,
    StoreError,
    ended,
    from_bad_input,
    from_psycopg,
)
from storekit.params import Params, check_params, check_sql_text, to_json, translate
from storekit.url import DatabaseURL


class _StrictJsonbDumper(JsonbDumper):
    # NaN and Infinity are not JSON: refused here (ValueError) as SQLite's adaptation does.
    _dumps = to_json


# Dicts and lists are sent as jsonb; everything else keeps psycopg's own adaptation.
ADAPTERS = adapt.AdaptersMap(psycopg.adapters)
ADAPTERS.register_dumper(dict, _StrictJsonbDumper)
ADAPTERS.register_dumper(list, _StrictJsonbDumper)

SETTINGS_SHOWN = (
    "server_version", "synchronous_commit", "fsync", "full_page_writes", "wal_level",
    "shared_buffers", "max_connections", "default_transaction_isolation", "commit_delay",
    "wal_buffers", "checkpoint_timeout", "max_wal_size", "work_mem", "effective_io_concurrency",
)
_cursor_names = itertools.count()
_BEGIN = {(level, readonly): f"BEGIN ISOLATION LEVEL {level.upper()}"
          + (" READ ONLY" if readonly else "")
          for level in ISOLATION_LEVELS for readonly in (False, True)}
_IDLE = psycopg.pq.TransactionStatus.IDLE
_IN_ERROR = psycopg.pq.TransactionStatus.INERROR
_RESETTABLE = (_IDLE, psycopg.pq.TransactionStatus.INTRANS, psycopg.pq.TransactionStatus.INERROR)

# DISCARD ALL without DEALLOCATE ALL / DISCARD PLANS: psycopg's own prepared statements
# survive (the hot path keeps them), every setting goes back to its value at connection
# start (so a URL's options=-csearch_path=... stays), and the rest of the session is cleared,
# statements a caller PREPAREd in SQL included.
RESET_SESSION = ("CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *;"
                 " SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES;"
                 " DO $storekit$ DECLARE r record; BEGIN FOR r IN SELECT name FROM"
                 " pg_prepared_statements WHERE from_sql LOOP"
                 " EXECUTE 'DEALLOCATE ' || quote_ident(r.name); END LOOP; END $storekit$")
_SCOPE_SCHEMAS = (
    # Schemas where enable_row_security installed the key registration. Functions the
    # session's own role could have written are ignored: they could keep the key.
    "SELECT quote_ident(n.nspname) AS s FROM pg_proc p"
    " JOIN pg_namespace n ON n.oid = p.pronamespace"
    f" WHERE p.proname = '{REGISTER}' AND p.prosecdef"
    " AND NOT pg_has_role(session_user, p.proowner, 'USAGE')"
)


# A result larger than this many rows is not kept alive by the reused cursor.
_KEEP_ROWS = 256


class StoreConnection(psycopg.Connection[Row]):
    """A pooled connection that remembers whether its session may have changed since the
    last reset (SQL that could, per session.py, marks it; _putconn resets only then), and
    runs statements on one cursor it keeps: conn.execute() builds a cursor per statement,
    measured at about a fifth of psycopg's client time for a point select."""

    dirty = True  # until the first reset, assume the worst (class defaults: no __init__)
    _statement_cursor: psycopg.Cursor[Row] | None = None

    @contextlib.contextmanager
    def pipeline(self) -> Iterator[psycopg.Pipeline]:
        with pipeline(self) as p:  # no Flush after the last Sync (pipeline.py)
            yield p

    @contextlib.contextmanager
    def _pipeline_nolock(self) -> Iterator[psycopg.Pipeline]:
        with pipeline_nolock(self) as p:  # executemany()'s pipeline: no Flush either
            yield p

    def run_sql(self, sql: str, params: Any) -> psycopg.Cursor[Row]:
        if changes_session(sql):
            self.dirty = True
        cur = self._statement_cursor
        if cur is None:
            cur = self._statement_cursor = self.cursor()
        return cur.execute(sql, params)

    def done(self, cur: psycopg.Cursor[Row]) -> None:
        """The caller has what it needs from cur: a large result is not kept with it."""
        if cur.rowcount > _KEEP_ROWS:
            self._statement_cursor = None


def _mark(conn: psycopg.Connection[Row], sql: str) -> None:
    if changes_session(sql):
        conn.dirty = True  # type: ignore[attr-defined]


# Data methods as functions of a connection: the autocommit path calls them on a
# borrowed connection without allocating a handle per call.
def pg_run(conn: StoreConnection, sql: str, params: Params = None) -> RunResult:
    try:
        t = translate(sql, "postgres")
        cur = conn.run_sql(t.sql, check_params(t, params))
        if t.returning and cur.description is not None:
            row = cur.fetchone()
            conn.done(cur)
            return RunResult(cur.rowcount, next(iter(row.values())) if row else None)
        return RunResult(cur.rowcount, None)
    except psycopg.Error as exc:
        raise from_psycopg(exc) from exc
    except BAD_INPUT as exc:
        raise from_bad_input(exc) from exc


def pg_get(conn: StoreConnection, sql: str, params: Params = None) -> Row | None:
    try:
        t = translate(sql, "postgres")
        cur = conn.run_sql(t.sql, check_params(t, params))
        row = cur.fetchone()
        conn.done(cur)
        return row
    except psycopg.Error as exc:
        raise from_psycopg(exc) from exc
    except BAD_INPUT as exc:
        raise from_bad_input(exc) from exc


def pg_all(conn: StoreConnection, sql: str, params: Params = None) -> list[Row]:
    try:
        t = translate(sql, "postgres")
        cur = conn.run_sql(t.sql, check_params(t, params))
        rows = cur.fetchall()
        conn.done(cur)
        return rows
    except psycopg.Error as exc:
        raise from_psycopg(exc) from exc
    except BAD_INPUT as exc:
        raise from_bad_input(exc) from exc


def pg_exec(conn: StoreConnection, script: str) -> None:
    try:
        if not isinstance(script, str):
            raise ProgrammingError(f"a script must be a str, not {type(script).__name__}")
        check_sql_text(script)
        # No parameters: the simple protocol runs many statements.
        conn.done(conn.run_sql(script, None))
    except psycopg.Error as exc:
        raise from_psycopg(exc) from exc
    except BAD_INPUT as exc:
        raise from_bad_input(exc) from exc


def _resynced(conn: psycopg.Connection[Row], exc: StoreError) -> bool:
    """A statement psycopg prepared on this connection is gone (SQL sent DEALLOCATE, maybe
    from a DO block, and psycopg could not see it): every later use of that query on this
    pooled connection would fail, for whoever borrows it. Drop psycopg's cache with
    DEALLOCATE ALL (psycopg clears its own on that command) and say the statement may be
    sent again: it failed before it ran. Inside a transaction the ROLLBACK that ends the
    aborted transaction clears psycopg's cache the same way."""
    cause = exc.__cause__
    if (getattr(cause, "sqlstate", None) != "26000" or '"_pg3_' not in str(cause)
            or conn.info.transaction_status != _IDLE):
        return False
    try:
        conn.execute("DEALLOCATE ALL")
    except psycopg.Error:
        return False
    return True


def opening(isolation: str, readonly: bool, team_id: Any, scope_key: Any) -> list[Pending]:
    """What opens a transaction, held back until its first statement (sync and aio):
    BEGIN at its level, then the team scope's settings."""
    held: list[Pending] = [(_BEGIN[isolation, readonly], None, False)]
    if team_id is not None:
        try:
            team = str(team_id)
            if "\0" in team:
                raise ValueError("a NUL character")  # libpq would cut the text there
            token = scope_token(scope_key, team)
        except BAD_INPUT as exc:  # a lone surrogate, a __str__ that raises
            raise ProgrammingError(
                f"team_id must be text PostgreSQL can store: {type(exc).__name__}: {exc}"
            ) from exc
        held.append((f"SELECT set_config('{SETTING}', %s, true),"
                     f" set_config('{TOKEN_SETTING}', %s, true)", (team, token), False))
    return held


class PgHandle:
    """Data methods on one psycopg connection, held for a transaction.

    A handle from PostgresBackend.begin holds back its BEGIN (and scope settings): they go
    out in one pipeline with the transaction's first statement, so BEGIN costs no round
    trip of its own, and a transaction that runs nothing sends nothing. Writes given to
    run_deferred / run_many_deferred wait likewise for the next statement, the end of the
    savepoint, or COMMIT. Their errors are raised there; a pipeline stops at the first
    error, so nothing after it runs and COMMIT never does. Without pending (behind a
    transaction pooler) every statement runs at once."""

    __slots__ = ("__weakref__", "conn", "failed", "pending", "pipelined", "readonly", "unsent")

    def __init__(self, conn: StoreConnection, readonly: bool = False,
                 pending: list[Pending] | None = None) -> None:
        self.conn = conn
        self.readonly = readonly
        # The last error a statement raised: if the caller caught a conflict or lock
        # timeout and the transaction ends aborted, COMMIT raises its class, so atomic()
        # still retries. (A try costs nothing on the success path.)
        self.failed: StoreError | None = None
        self.pipelined = pending is not None
        self.pending: list[Pending] = pending or []  # translated and checked, not yet sent
        self.unsent = len(self.pending)  # how many of them open the transaction

    def _send(self, last: Pending | None) -> psycopg.Cursor[Row] | None:
        pending, self.pending, self.unsent = self.pending, [], 0
        try:
            return deferred.send(self.conn, pending, last)
        except psycopg.Error as exc:
            cause = deferred.interruption(exc)
            if cause is not None:
                self.conn.dirty = True  # the connection is closed when given back
                if isinstance(cause, BAD_INPUT):
                    raise from_bad_input(cause) from cause
                raise cause from None
            self.failed = error = from_psycopg(exc)
            raise error from exc
        except BAD_INPUT as exc:  # a value psycopg cannot send (a lone surrogate)
            self.conn.dirty = True
            self.failed = error = from_bad_input(exc)
            raise error from exc
        except BaseException:
            self.conn.dirty = True  # interrupted: the server may have run part of it
            raise

    def flush(self) -> None:
        """Send what is held back (one round trip); nothing to do when nothing is."""
        if self.pending:
            self._send(None)

    def _held(self, sql: str, params: Params, how: str) -> Any:
        t, values = deferred.prepared(self.conn, sql, params)
        cur = self._send((t.sql, values, False))
        assert cur is not None
        return deferred.result(cur, t, how)

    def run(self, sql: str, params: Params = None) -> RunResult:
        if self.pending:
            result: RunResult = self._held(sql, params, "run")
            return result
        try:
            return pg_run(self.conn, sql, params)
        except StoreError as exc:
            self.failed = exc
            raise

    def get(self, sql: str, params: Params = None) -> Row | None:
        if self.pending:
            row: Row | None = self._held(sql, params, "get")
            return row
        try:
            return pg_get(self.conn, sql, params)
        except StoreError as exc:
            self.failed = exc
            raise

    def all(self, sql: str, params: Params = None) -> list[Row]:
        if self.pending:
            rows: list[Row] = self._held(sql, params, "all")
            return rows
        try:
            return pg_all(self.conn, sql, params)
        except StoreError as exc:
            self.failed = exc
            raise

    def run_deferred(self, sql: str, params: Params = None) -> None:
        """run() whose result nobody reads: sent with the next statement or COMMIT."""
        if not self.pipelined:
            self.run(sql, params)
            return
        t, values = deferred.prepared(self.conn, sql, params)
        self.pending.append((t.sql, values, False))

    def run_many_deferred(self, sql: str,
                          seq: Iterable[Sequence[Any] | Mapping[str, Any]]) -> None:
        """run_many() whose count nobody reads: sent with the next statement or COMMIT."""
        if not self.pipelined:
            self.run_many(sql, seq)
            return
        self.pending.append(deferred.prepared_many(self.conn, sql, seq))

    def iter(self, sql: str, params: Params = None, tx: Any = None) -> Iterator[Row]:
        """Stream through a server-side cursor: memory stays flat whatever the result size.

        With tx (the Transaction it was called on), each step first checks the transaction
        is still open: after it ends the connection is back in the pool, someone else's."""
        if tx is not None and tx._handle is None:
            raise ended()
        self.flush()
        try:
            t = translate(sql, "postgres")
            values = check_params(t, params)
            _mark(self.conn, t.sql)
            with self.conn.cursor(name=f"storekit_{next(_cursor_names)}") as cur:
                if tx is not None:
                    tx._opened(cur)  # closed when the transaction ends, while still its own
                cur.execute(t.sql, values)
                while True:
                    if tx is not None and tx._handle is None:
                        raise ended()
                    batch = cur.fetchmany(2000)
                    if not batch:
                        return
                    for row in batch:
                        if tx is not None and tx._handle is None:
                            raise ended()
                        yield row
        except psycopg.Error as exc:
            self.failed = error = from_psycopg(exc)
            raise error from exc
        except BAD_INPUT as exc:
            raise from_bad_input(exc) from exc

    def run_many(self, sql: str, seq: Iterable[Sequence[Any] | Mapping[str, Any]]) -> int:
        if self.pending:
            cur = self._send(deferred.prepared_many(self.conn, sql, seq))
            assert cur is not None
            return cur.rowcount
        try:
            t = translate(sql, "postgres")
            _mark(self.conn, t.sql)
            with self.conn.cursor() as cur:
                cur.executemany(t.sql, (check_params(t, p) for p in seq))
                return cur.rowcount
        except psycopg.Error as exc:
            self.failed = error = from_psycopg(exc)
            raise error from exc
        except BAD_INPUT as exc:
            raise from_bad_input(exc) from exc

    def exec(self, script: str) -> None:
        self.flush()  # a script goes by the simple protocol, outside any pipeline
        try:
            pg_exec(self.conn, script)
        except StoreError as exc:
            self.failed = exc
            raise


def check_options(url: DatabaseURL) -> None:
    """Every URL option must be a keyword of the libpq in use; refuse any other by name."""
    known = {opt.keyword.decode() for opt in psycopg.pq.Conninfo.get_defaults()}
    for key in url.options:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigurationError(
                f"unknown PostgreSQL URL option {key!r} in {url}{hint}; options are "
                "libpq's connection parameters"
            )


def connect_timeout(url: DatabaseURL, pool: PoolOptions) -> dict[str, int]:
    """psycopg's connect_timeout argument: PoolOptions.connect_timeout, else none (the URL's
    connect_timeout then applies), else 5 s. Two different values are refused."""
    text = url.options.get("connect_timeout")
    if text is not None:
        try:
            in_url = int(text)
        except ValueError:
            raise ConfigurationError(
                f"URL option connect_timeout={text!r} is not a whole number of seconds"
            ) from None
        if pool.connect_timeout is None:
            return {}
        if pool.connect_timeout != in_url:
            raise ConfigurationError(
                f"connect_timeout is {in_url} in the URL but {pool.connect_timeout:g} in "
                "PoolOptions; set it in one place"
            )
    seconds = 5.0 if pool.connect_timeout is None else pool.connect_timeout
    return {"connect_timeout": max(1, round(seconds))}


# A transaction's connection once it went back to the pool: any use raises StoreError.
_ENDED = Refusing("the transaction has ended; its connection is back in the pool")


class _PoolAfterFork:
    """The pool of a Database inherited by fork(), opened in the child on first use."""

    def __init__(self, backend: PostgresBackend) -> None:
        self._backend = backend
        self._lock = threading.Lock()
        self._opened = False

    def getconn(self, timeout: float | None = None) -> StoreConnection:
        with self._lock:
            if not self._opened:
                self._opened = True
                pool = self._backend._new_pool()
                pool.open(wait=False)
                self._backend._pool = pool
        return self._backend._pool.getconn(timeout=timeout)

    def close(self) -> None:
        pass


# Every open backend and its open transactions, to reset in the child of a fork; and the
# parent's pools, kept but never used, closed or collected there (see _after_fork).
_live: weakref.WeakSet[PostgresBackend] = weakref.WeakSet()
_set_aside: list[object] = []


def _after_fork_in_child() -> None:
    for backend in list(_live):
        # One Database that fails to reset must not keep the others from being reset.
        with contextlib.suppress(Exception):
            backend._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class PostgresBackend:
    name = "postgres"
    _connect_kwargs: dict[str, Any] = {}  # noqa: RUF012 - psycopg.connect() extras
    _commit = "COMMIT"  # a pooled backend resets session settings first (pooler.py)

    def __new__(cls, url: DatabaseURL, pool: PoolOptions | None = None) -> PostgresBackend:
        if cls is PostgresBackend and pool is not None and pool.pooler == "transaction":
            from storekit.backends.postgres.pooler import PooledPostgresBackend

            cls = PooledPostgresBackend
        return super().__new__(cls)

    @classmethod
    def from_options(cls, url: DatabaseURL, *, pool: PoolOptions | None,
                     sqlite: SqliteOptions | None, busy_timeout_ms: int | None
                     ) -> PostgresBackend:
        return cls(url, cls.options_from(pool=pool, sqlite=sqlite,
                                         busy_timeout_ms=busy_timeout_ms))

    @staticmethod
    def options_from(*, pool: PoolOptions | None, sqlite: SqliteOptions | None,
                     busy_timeout_ms: int | None) -> PoolOptions | None:
        """create_database's options (sync and async): sqlite= is SQLite's, refused."""
        if sqlite is not None:
            raise ConfigurationError("sqlite= applies to SQLite; this URL is PostgreSQL")
        if busy_timeout_ms is not None:
            pool = dataclasses.replace(pool or PoolOptions(), busy_timeout_ms=busy_timeout_ms)
        return pool

    def __init__(self, url: DatabaseURL, pool: PoolOptions | None = None) -> None:
        self.url = url
        self.pool_options = o = pool or PoolOptions()
        check_options(url)
        # Team scopes: a key SQL never sees (storekit/rls.py), registered as each connects.
        self._scope_key = secrets.token_bytes(32)
        self._probe_lock = threading.Lock()  # _reachable: one probe at a time
        self._probe_ok, self._probed_at = True, float("-inf")
        # A lock wait ends in BusyError after the busy timeout, as on SQLite (where 0 means
        # "fail at once": 1 ms here). Set on every new connection and again after a reset.
        self._session_settings = (
            f"SET lock_timeout = {max(1, self.pool_options.busy_timeout_ms)}")
        self._reset_session = f"{RESET_SESSION}; {self._session_settings}"
        conninfo = self._conninfo = url.conninfo()
        kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row,
                                  "context": ADAPTERS, **connect_timeout(url, o),
                                  **self._connect_kwargs}
        # The reachability probe waits as long as a pooled connect may: a loaded machine can
        # take seconds to fork a backend, and that is not a server that is down.
        self._probe_kwargs: dict[str, Any] = connect_timeout(url, o)  # {}: the URL's applies
        # Connect once directly: a wrong host or password gets the server's own reason.
        try:
            probe = psycopg.connect(conninfo, **kwargs)
        except psycopg.Error as exc:
            # The conninfo is key/value built by DatabaseURL, so libpq's messages cannot
            # quote it back; from_psycopg masks any password=... by structure anyway.
            raise DatabaseUnavailable(
                f"cannot connect to PostgreSQL at {url}: {from_psycopg(exc)}"
            ) from exc
        with probe:
            self._server_settings = self._read_settings(probe)
        self._pool_kwargs = kwargs
        self._pool: psycopg_pool.ConnectionPool[StoreConnection] = self._new_pool()
        self._handles: weakref.WeakSet[PgHandle] = weakref.WeakSet()  # open transactions
        try:
            self._pool.open(wait=o.min_size > 0, timeout=o.timeout)
        except psycopg_pool.PoolTimeout as exc:
            self._pool.close()
            raise DatabaseUnavailable(f"PostgreSQL pool could not open at {url}") from exc
        _live.add(self)
        version = str(self._server_settings.get("server_version", ""))
        self.capabilities = Capabilities(
            concurrent_writers=True,
            network=True,
            listen_notify="native",
            row_level_security=True,
            jsonb=True,
            full_text="tsvector",
            server_version=version,
        )

    def _new_pool(self) -> psycopg_pool.ConnectionPool[StoreConnection]:
        o = self.pool_options
        return psycopg_pool.ConnectionPool(
            self._conninfo,
            kwargs=self._pool_kwargs,
            min_size=o.min_size,
            max_size=o.max_size,
            max_idle=o.max_idle,
            timeout=o.timeout,
            # Give up a failing reconnection after 2 s: the next request then starts
            # a fresh attempt at once instead of waiting out a long backoff.
            reconnect_timeout=2.0,
            configure=self._configure,
            connection_class=StoreConnection,
            open=False,
            name="storekit",
        )

    def _after_fork(self) -> None:
        """In the child of os.fork(): the pool's connections share their sockets with the
        parent and its worker threads did not survive, so the child gets a pool of its own,
        opened on first use. The parent's is kept but never touched (closing a connection
        would end the parent's session), and a transaction that was open at the fork
        raises StoreError in the child."""
        _set_aside.append(self._pool)
        self._pool = _PoolAfterFork(self)  # type: ignore[assignment]
        message = (f"a PostgreSQL transaction open at fork() cannot be used in the child"
                   f" ({self.url}): its connection belongs to the parent")
        for handle in list(self._handles):
            _set_aside.append(handle.conn)
            handle.conn = Refusing(message)  # type: ignore[assignment]

    def _configure(self, conn: psycopg.Connection[Row]) -> None:
        """A new pooled connection, before anyone borrows it: its session settings, and
        this Database's scope key."""
        conn.execute(self._session_settings)
        self._register_scope_key(conn)

    def _register_scope_key(self, conn: psycopg.Connection[Row]) -> None:
        """Before anyone borrows a new connection: store this Database's scope key for its
        backend in every schema where enable_row_security installed one (rowsecurity.py)."""
        schemas = [r["s"] for r in conn.execute(_SCOPE_SCHEMAS).fetchall()]
        if schemas:
            calls = ", ".join(f"{s}.{REGISTER}(%s)" for s in schemas)
            conn.execute(f"SELECT {calls}", [self._scope_key] * len(schemas))

    @staticmethod
    def _read_settings(conn: psycopg.Connection[Row]) -> dict[str, Any]:
        names = ", ".join(f"'{name}'" for name in SETTINGS_SHOWN)
        rows = conn.execute(
            f"SELECT name, setting, unit FROM pg_settings WHERE name IN ({names})"
        ).fetchall()
        return {r["name"]: r["setting"] + (r["unit"] or "") if r["unit"] not in (None, "")
                else r["setting"] for r in rows}

    def _pool_timeout(self) -> PoolTimeout:
        return PoolTimeout(
            f"no PostgreSQL connection free within {self.pool_options.timeout:g} s "
            f"(max_size={self.pool_options.max_size}) at {self.url}"
        )

    def _reachable(self) -> bool:
        """Whether the server accepts a connection. One probe at a time, its answer shared
        with the threads that waited for it: a thread each would open hundreds of
        connections at once when many wait for a busy pool (too many clients)."""
        asked = time.monotonic()
        with self._probe_lock:
            if self._probed_at >= asked - 1.0:  # a probe as recent as this wait: its answer
                return self._probe_ok
            started = time.monotonic()
            try:
                psycopg.connect(self._conninfo, **self._probe_kwargs).close()
                ok = True
            except psycopg.Error:
                ok = False
            self._probe_ok, self._probed_at = ok, started
            return ok

    def _getconn(self) -> StoreConnection:
        """A pooled connection. If none comes within a second, tell a server that is down
        (DatabaseUnavailable, at once) from a pool that is busy (PoolTimeout, after the
        configured timeout)."""
        timeout = self.pool_options.timeout
        first = min(1.0, timeout)
        try:
            return self._pool.getconn(timeout=first)
        except psycopg_pool.PoolTimeout:
            pass
        if not self._reachable():
            raise DatabaseUnavailable(f"PostgreSQL at {self.url} is not answering")
        try:
            return self._pool.getconn(timeout=max(0.001, timeout - first))
        except psycopg_pool.PoolTimeout as exc:
            raise self._pool_timeout() from exc

    def _putconn(self, conn: StoreConnection) -> None:
        """Reset the session in the caller's thread (one round trip) if it may have changed
        (conn.dirty, or a transaction left open), then hand the connection back.
        psycopg_pool's own reset= callback would run it on a worker thread: measured, that
        thread hand-off cost more than the round trip."""
        clean = False
        try:
            status = conn.pgconn.transaction_status
            if status == _IDLE and not conn.dirty:
                clean = True
            elif status in _RESETTABLE:
                if status != _IDLE:
                    # A transaction left open (BEGIN sent as SQL): a rollback undoes its
                    # SETs, but not a session advisory lock it took.
                    conn.rollback()
                conn.execute(self._reset_session)
                conn.dirty = False
                clean = True
        except psycopg.Error:
            pass
        finally:
            # Whatever interrupted the reset (an error, a signal handler raising), the
            # connection goes back: closed unless clean (the pool replaces a closed one).
            if not clean:
                conn.close()
            self._pool.putconn(conn)

    # Autocommit data methods: each borrows a pooled connection for one statement;
    # putconn() drops a connection the statement found broken.
    def run(self, sql: str, params: Params = None) -> RunResult:
        conn = self._getconn()
        try:
            return pg_run(conn, sql, params)
        except StoreError as exc:
            if not _resynced(conn, exc):
                raise
            return pg_run(conn, sql, params)
        finally:
            self._putconn(conn)

    def get(self, sql: str, params: Params = None) -> Row | None:
        conn = self._getconn()
        try:
            return pg_get(conn, sql, params)
        except StoreError as exc:
            if not _resynced(conn, exc):
                raise
            return pg_get(conn, sql, params)
        finally:
            self._putconn(conn)

    def all(self, sql: str, params: Params = None) -> list[Row]:
        conn = self._getconn()
        try:
            return pg_all(conn, sql, params)
        except StoreError as exc:
            if not _resynced(conn, exc):
                raise
            return pg_all(conn, sql, params)
        finally:
            self._putconn(conn)

    def iter(self, sql: str, params: Params = None) -> Iterator[Row]:
        # One statement on one snapshot: no anomaly to prevent, and never a conflict.
        handle = self.begin(readonly=True, isolation="repeatable read")
        ok = False
        try:
            yield from handle.iter(sql, params)
            ok = True
        finally:
            self.finish(handle, commit=ok)

    def exec(self, script: str) -> None:
        conn = self._getconn()
        try:
            pg_exec(conn, script)
        finally:
            self._putconn(conn)

    # Transactions.
    def begin(self, *, readonly: bool, team_id: Any = None,
              isolation: str = "serializable") -> PgHandle:
        # BEGIN (and the scope) go out with the first statement: see PgHandle.
        held = opening(isolation, readonly, team_id, self._scope_key)
        conn = self._getconn()
        if team_id is not None:
            conn.dirty = True  # as run() marks set_config: reset before the next borrower
        handle = PgHandle(conn, readonly, held)
        self._handles.add(handle)
        return handle

    def finish(self, handle: Any, *, commit: bool) -> None:
        try:
            if handle.unsent and (not commit or len(handle.pending) == handle.unsent):
                return  # BEGIN was never sent: there is no transaction to end
            if (commit and not handle.readonly
                    and handle.conn.info.transaction_status == _IN_ERROR):
                # COMMIT of an aborted transaction is a silent ROLLBACK: say so instead
                # (a read-only one had nothing to commit).
                handle.pending = []  # they would fail too: the transaction is aborted
                handle.exec("ROLLBACK")
                # If a conflict or lock timeout aborted it, raise that class (with it as
                # __cause__): the caller's retry, or atomic(), must see a retryable error.
                failed = handle.failed
                cls = type(failed) if isinstance(failed, RETRYABLE) else OperationalError
                raise cls(
                    "the transaction was aborted by an earlier error (caught inside the"
                    " block) and has been rolled back; nothing was committed"
                    + (f" (it was: {failed})" if failed is not None else "")) from failed
            if commit and handle.pending:
                handle._send((self._commit, None, False))  # what is held back, then COMMIT
                return
            handle.pending = []  # rolled back: what was held back never runs
            handle.exec(self._commit if commit else "ROLLBACK")
        finally:
            self.abandon(handle)

    def abandon(self, handle: Any) -> None:
        conn = handle.conn
        if not isinstance(conn, Refusing):
            handle.conn = _ENDED  # first: the connection is never handed back twice
            handle.pending = []  # a held-back write of a transaction rolled back never runs
            handle.pipelined = False  # a kept run_deferred runs (and refuses), not queued
            # putconn rolls back a connection left in a transaction and drops a broken one.
            self._putconn(conn)

    def savepoint(self, handle: Any, name: str) -> None:
        # Through run(): what is held back (BEGIN included) goes in the same round trip,
        # and what is deferred from now on belongs to this savepoint.
        handle.run(f"SAVEPOINT {name}")

    def release(self, handle: Any, name: str, *, commit: bool) -> None:
        if commit and handle.pending:
            try:
                handle.run(f"RELEASE SAVEPOINT {name}")  # after the held-back writes
                return
            except Exception:
                # One failed: undo the savepoint's work, as for an error inside the block.
                # The savepoint stays: the transaction, left registered by the error,
                # rolls back to it and releases it next (Transaction._end).
                handle.exec(f"ROLLBACK TO SAVEPOINT {name}")
                raise
        handle.pending = []  # the savepoint's held-back writes, rolled back with it
        if not commit:
            handle.exec(f"ROLLBACK TO SAVEPOINT {name}")
        handle.exec(f"RELEASE SAVEPOINT {name}")

    def settings(self) -> dict[str, Any]:
        o = self.pool_options
        return {**self._server_settings, "lock_timeout": f"{o.busy_timeout_ms}ms",
                "pool_min_size": o.min_size,
                "pool_max_size": o.max_size, "pool_max_idle": o.max_idle,
                "pool_timeout": o.timeout, "url": str(self.url)}

    def close(self) -> None:
        _live.discard(self)
        self._pool.close()
