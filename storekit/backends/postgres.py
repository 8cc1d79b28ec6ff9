"""PostgreSQL through psycopg 3 and psycopg_pool.

Pooled connections run in autocommit; storekit sends BEGIN/COMMIT itself, so a
transaction is one borrowed connection and the pool's reset (rollback of anything left
open) guarantees nobody borrows a dirty one.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NoReturn

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

from storekit.backends.base import Capabilities, PoolOptions, Row, RunResult
from storekit.errors import DatabaseUnavailable, PoolTimeout, StoreError, from_psycopg
from storekit.params import Params, check_params, translate
from storekit.url import DatabaseURL

# Dicts and lists are sent as jsonb; everything else keeps psycopg's own adaptation.
ADAPTERS = adapt.AdaptersMap(psycopg.adapters)
ADAPTERS.register_dumper(dict, JsonbDumper)
ADAPTERS.register_dumper(list, JsonbDumper)

SETTINGS_SHOWN = (
    "server_version", "synchronous_commit", "fsync", "full_page_writes", "wal_level",
    "shared_buffers", "max_connections", "default_transaction_isolation", "commit_delay",
    "wal_buffers", "checkpoint_timeout", "max_wal_size", "work_mem", "effective_io_concurrency",
)
_cursor_names = itertools.count()


# Data methods as functions of (connection, password): the autocommit path calls them on
# a borrowed connection without allocating a handle per call.
def pg_run(conn: psycopg.Connection[Row], password: str | None, sql: str,
           params: Params = None) -> RunResult:
    t = translate(sql, "postgres")
    try:
        cur = conn.execute(t.sql, check_params(t, params))
        if t.returning and cur.description is not None:
            row = cur.fetchone()
            return RunResult(cur.rowcount, next(iter(row.values())) if row else None)
        return RunResult(cur.rowcount, None)
    except psycopg.Error as exc:
        raise from_psycopg(exc, password=password) from exc


def pg_get(conn: psycopg.Connection[Row], password: str | None, sql: str,
           params: Params = None) -> Row | None:
    t = translate(sql, "postgres")
    try:
        return conn.execute(t.sql, check_params(t, params)).fetchone()
    except psycopg.Error as exc:
        raise from_psycopg(exc, password=password) from exc


def pg_all(conn: psycopg.Connection[Row], password: str | None, sql: str,
           params: Params = None) -> list[Row]:
    t = translate(sql, "postgres")
    try:
        return conn.execute(t.sql, check_params(t, params)).fetchall()
    except psycopg.Error as exc:
        raise from_psycopg(exc, password=password) from exc


def pg_exec(conn: psycopg.Connection[Row], password: str | None, script: str) -> None:
    try:
        conn.execute(script)  # no parameters: the simple protocol runs many statements
    except psycopg.Error as exc:
        raise from_psycopg(exc, password=password) from exc


class PgHandle:
    """Data methods on one psycopg connection, held for a transaction."""

    __slots__ = ("__weakref__", "conn", "password")

    def __init__(self, conn: psycopg.Connection[Row], password: str | None) -> None:
        self.conn = conn
        self.password = password

    def run(self, sql: str, params: Params = None) -> RunResult:
        return pg_run(self.conn, self.password, sql, params)

    def get(self, sql: str, params: Params = None) -> Row | None:
        return pg_get(self.conn, self.password, sql, params)

    def all(self, sql: str, params: Params = None) -> list[Row]:
        return pg_all(self.conn, self.password, sql, params)

    def iter(self, sql: str, params: Params = None) -> Iterator[Row]:
        """Stream through a server-side cursor: memory stays flat whatever the result size."""
        t = translate(sql, "postgres")
        values = check_params(t, params)
        try:
            with self.conn.cursor(name=f"storekit_{next(_cursor_names)}") as cur:
                cur.itersize = 2000
                cur.execute(t.sql, values)
                yield from cur
        except psycopg.Error as exc:
            raise from_psycopg(exc, password=self.password) from exc

    def run_many(self, sql: str, seq: Iterable[Sequence[Any] | Mapping[str, Any]]) -> int:
        t = translate(sql, "postgres")
        try:
            with self.conn.cursor() as cur:
                cur.executemany(t.sql, (check_params(t, p) for p in seq))
                return cur.rowcount
        except psycopg.Error as exc:
            raise from_psycopg(exc, password=self.password) from exc

    def exec(self, script: str) -> None:
        pg_exec(self.conn, self.password, script)


class _Inherited:
    """Stands in, in the child of a fork, for a connection of the parent's: its socket is
    shared with the parent, so any use (even closing it) would break the parent's session."""

    def __init__(self, message: str) -> None:
        self._message = message

    def __getattr__(self, name: str) -> NoReturn:
        raise StoreError(self._message)


class _PoolAfterFork:
    """The pool of a Database inherited by fork(), opened in the child on first use."""

    def __init__(self, backend: PostgresBackend) -> None:
        self._backend = backend
        self._lock = threading.Lock()
        self._opened = False

    def getconn(self, timeout: float | None = None) -> psycopg.Connection[Row]:
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

    def __init__(self, url: DatabaseURL, pool: PoolOptions | None = None) -> None:
        self.url = url
        self.pool_options = pool or PoolOptions()
        self.password = url.password
        conninfo = self._conninfo = url.conninfo()
        kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row,
                                  "context": ADAPTERS}
        o = self.pool_options
        # Connect once directly: a wrong host or password gets the server's own reason.
        try:
            probe = psycopg.connect(conninfo, connect_timeout=max(1, round(o.connect_timeout)),
                                    **kwargs)
        except psycopg.Error as exc:
            raise DatabaseUnavailable(
                f"cannot connect to PostgreSQL at {url}: "
                f"{from_psycopg(exc, password=self.password)}"
            ) from None  # the driver's message may carry the conninfo; it is scrubbed above
        with probe:
            self._server_settings = self._read_settings(probe)
        self._pool_kwargs = kwargs
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[Row]] = self._new_pool()
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

    def _new_pool(self) -> psycopg_pool.ConnectionPool[psycopg.Connection[Row]]:
        o = self.pool_options
        return psycopg_pool.ConnectionPool(
            self._conninfo,
            kwargs={**self._pool_kwargs, "connect_timeout": max(1, round(o.connect_timeout))},
            min_size=o.min_size,
            max_size=o.max_size,
            max_idle=o.max_idle,
            timeout=o.timeout,
            # Give up a failing reconnection after 2 s: the next request then starts
            # a fresh attempt at once instead of waiting out a long backoff.
            reconnect_timeout=2.0,
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
            handle.conn = _Inherited(message)  # type: ignore[assignment]

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
        try:
            psycopg.connect(self._conninfo, connect_timeout=1).close()
        except psycopg.Error:
            return False
        return True

    def _getconn(self) -> psycopg.Connection[Row]:
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

    # Autocommit data methods: each borrows a pooled connection for one statement;
    # putconn() drops a connection the statement found broken.
    def run(self, sql: str, params: Params = None) -> RunResult:
        conn = self._getconn()
        try:
            return pg_run(conn, self.password, sql, params)
        finally:
            self._pool.putconn(conn)

    def get(self, sql: str, params: Params = None) -> Row | None:
        conn = self._getconn()
        try:
            return pg_get(conn, self.password, sql, params)
        finally:
            self._pool.putconn(conn)

    def all(self, sql: str, params: Params = None) -> list[Row]:
        conn = self._getconn()
        try:
            return pg_all(conn, self.password, sql, params)
        finally:
            self._pool.putconn(conn)

    def iter(self, sql: str, params: Params = None) -> Iterator[Row]:
        handle = self.begin(readonly=True)
        ok = False
        try:
            yield from handle.iter(sql, params)
            ok = True
        finally:
            self.finish(handle, commit=ok)

    def exec(self, script: str) -> None:
        conn = self._getconn()
        try:
            pg_exec(conn, self.password, script)
        finally:
            self._pool.putconn(conn)

    # Transactions.
    def begin(self, *, readonly: bool, team_id: Any = None) -> PgHandle:
        conn = self._getconn()
        handle = PgHandle(conn, self.password)
        self._handles.add(handle)
        try:
            handle.exec(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if readonly else "BEGIN"
            )
            if team_id is not None:
                handle.get("SELECT set_config('app.team_id', ?, true)", (str(team_id),))
        except BaseException:
            self._pool.putconn(conn)
            raise
        return handle

    def finish(self, handle: Any, *, commit: bool) -> None:
        try:
            handle.exec("COMMIT" if commit else "ROLLBACK")
        finally:
            # putconn rolls back a connection left in a transaction and drops a broken one.
            if not isinstance(handle.conn, _Inherited):
                self._pool.putconn(handle.conn)

    def savepoint(self, handle: Any, name: str) -> None:
        handle.exec(f"SAVEPOINT {name}")

    def release(self, handle: Any, name: str, *, commit: bool) -> None:
        if not commit:
            handle.exec(f"ROLLBACK TO SAVEPOINT {name}")
        handle.exec(f"RELEASE SAVEPOINT {name}")

    def settings(self) -> dict[str, Any]:
        o = self.pool_options
        return {**self._server_settings, "pool_min_size": o.min_size,
                "pool_max_size": o.max_size, "pool_max_idle": o.max_idle,
                "pool_timeout": o.timeout, "url": str(self.url)}

    def close(self) -> None:
        _live.discard(self)
        self._pool.close()
