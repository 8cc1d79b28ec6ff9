"""PostgreSQL through psycopg 3 and psycopg_pool.

Pooled connections run in autocommit; storekit sends BEGIN/COMMIT itself, so a
transaction is one borrowed connection and the pool's reset (rollback of anything left
open) guarantees nobody borrows a dirty one.
"""

from __future__ import annotations

import functools
import itertools
import json
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

from storekit.backends.base import Capabilities, PoolOptions, Row, RunResult
from storekit.errors import (
    BAD_INPUT,
    DatabaseUnavailable,
    OperationalError,
    PoolTimeout,
    ProgrammingError,
    ended,
    from_bad_input,
    from_psycopg,
)
from storekit.params import Params, check_params, check_sql_text, translate
from storekit.url import DatabaseURL


class _StrictJsonbDumper(JsonbDumper):
    # NaN and Infinity are not JSON: refused here (ValueError) as SQLite's adaptation does.
    _dumps = functools.partial(json.dumps, allow_nan=False)


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
_IN_ERROR = psycopg.pq.TransactionStatus.INERROR


# Data methods as functions of (connection, password): the autocommit path calls them on
# a borrowed connection without allocating a handle per call.
def pg_run(conn: psycopg.Connection[Row], password: str | None, sql: str,
           params: Params = None) -> RunResult:
    try:
        t = translate(sql, "postgres")
        cur = conn.execute(t.sql, check_params(t, params))
        if t.returning and cur.description is not None:
            row = cur.fetchone()
            return RunResult(cur.rowcount, next(iter(row.values())) if row else None)
        return RunResult(cur.rowcount, None)
    except psycopg.Error as exc:
        raise from_psycopg(exc, password=password) from exc
    except BAD_INPUT as exc:
        raise from_bad_input(exc) from exc


def pg_get(conn: psycopg.Connection[Row], password: str | None, sql: str,
           params: Params = None) -> Row | None:
    try:
        t = translate(sql, "postgres")
        return conn.execute(t.sql, check_params(t, params)).fetchone()
    except psycopg.Error as exc:
        raise from_psycopg(exc, password=password) from exc
    except BAD_INPUT as exc:
        raise from_bad_input(exc) from exc


def pg_all(conn: psycopg.Connection[Row], password: str | None, sql: str,
           params: Params = None) -> list[Row]:
    try:
        t = translate(sql, "postgres")
        return conn.execute(t.sql, check_params(t, params)).fetchall()
    except psycopg.Error as exc:
        raise from_psycopg(exc, password=password) from exc
    except BAD_INPUT as exc:
        raise from_bad_input(exc) from exc


def pg_exec(conn: psycopg.Connection[Row], password: str | None, script: str) -> None:
    try:
        if not isinstance(script, str):
            raise ProgrammingError(f"a script must be a str, not {type(script).__name__}")
        check_sql_text(script)
        conn.execute(script)  # no parameters: the simple protocol runs many statements
    except psycopg.Error as exc:
        raise from_psycopg(exc, password=password) from exc
    except BAD_INPUT as exc:
        raise from_bad_input(exc) from exc


class PgHandle:
    """Data methods on one psycopg connection, held for a transaction."""

    __slots__ = ("conn", "password", "readonly")

    def __init__(self, conn: psycopg.Connection[Row], password: str | None,
                 readonly: bool = False) -> None:
        self.conn = conn
        self.password = password
        self.readonly = readonly

    def run(self, sql: str, params: Params = None) -> RunResult:
        return pg_run(self.conn, self.password, sql, params)

    def get(self, sql: str, params: Params = None) -> Row | None:
        return pg_get(self.conn, self.password, sql, params)

    def all(self, sql: str, params: Params = None) -> list[Row]:
        return pg_all(self.conn, self.password, sql, params)

    def iter(self, sql: str, params: Params = None, tx: Any = None) -> Iterator[Row]:
        """Stream through a server-side cursor: memory stays flat whatever the result size.

        With tx (the Transaction it was called on), each step first checks the transaction
        is still open: after it ends the connection is back in the pool, someone else's."""
        if tx is not None and tx._handle is None:
            raise ended()
        try:
            t = translate(sql, "postgres")
            values = check_params(t, params)
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
            raise from_psycopg(exc, password=self.password) from exc
        except BAD_INPUT as exc:
            raise from_bad_input(exc) from exc

    def run_many(self, sql: str, seq: Iterable[Sequence[Any] | Mapping[str, Any]]) -> int:
        try:
            t = translate(sql, "postgres")
            with self.conn.cursor() as cur:
                cur.executemany(t.sql, (check_params(t, p) for p in seq))
                return cur.rowcount
        except psycopg.Error as exc:
            raise from_psycopg(exc, password=self.password) from exc
        except BAD_INPUT as exc:
            raise from_bad_input(exc) from exc

    def exec(self, script: str) -> None:
        pg_exec(self.conn, self.password, script)


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
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[Row]] = (
            psycopg_pool.ConnectionPool(
                conninfo,
                kwargs={**kwargs, "connect_timeout": max(1, round(o.connect_timeout))},
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
        )
        try:
            self._pool.open(wait=o.min_size > 0, timeout=o.timeout)
        except psycopg_pool.PoolTimeout as exc:
            self._pool.close()
            raise DatabaseUnavailable(f"PostgreSQL pool could not open at {url}") from exc
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
        handle = PgHandle(conn, self.password, readonly)
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
            if (commit and not handle.readonly
                    and handle.conn.info.transaction_status == _IN_ERROR):
                # COMMIT of an aborted transaction is a silent ROLLBACK: say so instead
                # (a read-only one had nothing to commit).
                handle.exec("ROLLBACK")
                raise OperationalError(
                    "the transaction was aborted by an earlier error (caught inside the"
                    " block) and has been rolled back; nothing was committed")
            handle.exec("COMMIT" if commit else "ROLLBACK")
        finally:
            # putconn rolls back a connection left in a transaction and drops a broken one.
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
        self._pool.close()
