"""PostgreSQL behind a transaction pooler (PgBouncer pool_mode=transaction, or a managed
equivalent): PoolOptions(pooler="transaction").

Each transaction, and each autocommit statement, may run on a different server
connection, shared with other clients. So nothing may rely on session state:
- psycopg's automatic prepared statements are off (prepare_threshold=None): a statement
  prepared on one server connection is missing, or is another client's, on the next.
- lock_timeout is set per transaction (SET LOCAL), never per session: an autocommit
  statement is sent as BEGIN; SET LOCAL; the statement; COMMIT in one pipeline (one
  round trip), a transaction gets SET LOCAL with its BEGIN.
- No session reset on return: there is no session of ours to reset (and it would cost a
  round trip per call).
- Row-security scopes are refused (CapabilityError): their key is registered per server
  session (storekit/rls.py), which a pooler shares with clients that could choose it.
- LISTEN cannot work (the server connection goes back to the pool after the statement):
  listen() needs PoolOptions.listen_url, a direct URL, or raises CapabilityError.
- Session settings a client changes (SET, set_config(..., false), SET ROLE) would stay on
  the server connection for whichever client gets it next: every statement, transaction
  and exec() script ends with RESET ALL; RESET ROLE on the same server connection (in the
  same pipeline or query message, so no extra round trip). A script PostgreSQL refuses
  in a transaction block (VACUUM, CREATE INDEX CONCURRENTLY) is a single statement and
  is sent again alone.
A script given to exec() runs under the server's lock_timeout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg

from storekit.backends.base import PoolOptions, Row, RunResult
from storekit.backends.postgres.backend import (
    _BEGIN,
    _IDLE,
    PgHandle,
    PostgresBackend,
    StoreConnection,
    check_options,
    pg_exec,
)
from storekit.backends.postgres.deferred import interruption
from storekit.errors import (
    BAD_INPUT,
    CapabilityError,
    ConfigurationError,
    StoreError,
    from_bad_input,
    from_psycopg,
)
from storekit.params import Params, check_params, translate
from storekit.url import DatabaseURL

if TYPE_CHECKING:
    from storekit.aio import AsyncDatabase
    from storekit.database import Database

TRANSACTION = "transaction"
RESET = "RESET ALL; RESET ROLE"  # role is not in ALL; transaction_* settings are kept
_IN_TRANSACTION_BLOCK = "25001"  # active_sql_transaction: refused inside a block
POOLERS = (None, TRANSACTION)


def check_listen_url(pool: PoolOptions) -> DatabaseURL | None:
    if pool.listen_url is None:
        return None
    try:
        url = DatabaseURL.parse(pool.listen_url)
    except Exception as exc:
        raise ConfigurationError(f"PoolOptions.listen_url: {exc}") from exc
    if url.backend != "postgres":
        raise ConfigurationError(
            f"PoolOptions.listen_url={url}: must be a postgresql:// URL (a direct one)")
    check_options(url)
    return url


def listen_conninfo(db: Database | AsyncDatabase) -> str:
    """The connection string listen() uses: listen_url if set, else the Database's own
    URL, unless that goes through a transaction pooler, where LISTEN cannot work."""
    pool = getattr(db._backend, "pool_options", None)
    listen_url = None if pool is None else check_listen_url(pool)
    if listen_url is not None:
        return listen_url.conninfo()
    if pool is not None and pool.pooler == TRANSACTION:
        raise CapabilityError(
            f"listen() cannot work through a transaction pooler ({db.url}): the server"
            " connection that ran LISTEN goes back to the pool after the statement. Set"
            " PoolOptions(listen_url=...) to a direct URL of the same database (not"
            " through the pooler); notify() works through the pooler as it is")
    return db.reveal_url().conninfo()


def _scope_refused(url: DatabaseURL) -> CapabilityError:
    return CapabilityError(
        f"row-security scopes (team_id=...) need a server session of storekit's own, which"
        f" a transaction pooler does not give ({url}): the scope key is registered per"
        " server session (storekit/rls.py). Open the Database for scoped work on a direct"
        " URL, or a pooler in session mode (PoolOptions(pooler=None))")


class PooledPostgresBackend(PostgresBackend):
    """PostgresBackend for a URL that reaches the server through a transaction pooler."""

    _connect_kwargs: dict[str, Any] = {"prepare_threshold": None}  # noqa: RUF012
    _commit = f"{RESET}; COMMIT"

    def __init__(self, url: DatabaseURL, pool: PoolOptions | None = None) -> None:
        options = pool or PoolOptions()
        check_listen_url(options)
        super().__init__(url, options)
        self._set_local = f"SET LOCAL lock_timeout = {max(1, options.busy_timeout_ms)}"
        self._begin = {key: f"{sql}; {self._set_local}" for key, sql in _BEGIN.items()}
        self.capabilities = type(self.capabilities)(**{
            **self.capabilities.__dict__, "row_level_security": False})

    def _configure(self, conn: psycopg.Connection[Row]) -> None:
        pass  # a session setting would reach whichever client gets the server next

    def _putconn(self, conn: StoreConnection) -> None:
        if conn.pgconn.transaction_status != _IDLE:
            try:
                conn.rollback()  # also ends a transaction left open or broken
            except psycopg.Error:
                conn.close()  # the pool replaces a closed connection
        self._pool.putconn(conn)

    def _call(self, kind: str, sql: str, params: Params) -> Any:
        conn = self._getconn()
        try:
            t = translate(sql, "postgres")
            values = check_params(t, params)
            with conn.pipeline():
                conn.execute("BEGIN")
                conn.execute(self._set_local)
                cur = conn.execute(t.sql, values)
                conn.execute("RESET ALL")
                conn.execute("RESET ROLE")
                conn.execute("COMMIT")
            if kind == "get":
                return cur.fetchone()
            if kind == "all":
                return cur.fetchall()
            if t.returning and cur.description is not None:
                row = cur.fetchone()
                return RunResult(cur.rowcount, next(iter(row.values())) if row else None)
            return RunResult(cur.rowcount, None)
        except psycopg.Error as exc:
            cause = interruption(exc)  # what the pipeline's exit hid (pipeline.py)
            if cause is not None:
                conn.close()  # left in pipeline mode: the pool replaces it
                raise cause from None
            raise from_psycopg(exc) from exc
        except BAD_INPUT as exc:
            raise from_bad_input(exc) from exc
        finally:
            self._putconn(conn)

    def run(self, sql: str, params: Params = None) -> RunResult:
        result: RunResult = self._call("run", sql, params)
        return result

    def get(self, sql: str, params: Params = None) -> Row | None:
        row: Row | None = self._call("get", sql, params)
        return row

    def all(self, sql: str, params: Params = None) -> list[Row]:
        rows: list[Row] = self._call("all", sql, params)
        return rows

    def begin(self, *, readonly: bool, team_id: Any = None,
              isolation: str = "serializable") -> PgHandle:
        if team_id is not None:
            raise _scope_refused(self.url)
        conn = self._getconn()
        handle = PgHandle(conn, readonly)
        self._handles.add(handle)
        try:
            handle.exec(self._begin[isolation, readonly])
        except BaseException:
            self._putconn(conn)
            raise
        return handle

    def exec(self, script: str) -> None:
        conn = self._getconn()
        try:
            if not isinstance(script, str):
                pg_exec(conn, script)  # raises its ProgrammingError
            try:
                # One query message: PgBouncer hands the server on only after all of it.
                # The newline ends a trailing -- comment.
                pg_exec(conn, f"{script}\n;{RESET}")
            except StoreError as exc:
                if getattr(exc.__cause__, "sqlstate", None) != _IN_TRANSACTION_BLOCK:
                    raise
                if conn.pgconn.transaction_status != _IDLE:
                    conn.rollback()
                pg_exec(conn, script)  # it ran nothing: the block was refused whole
        finally:
            self._putconn(conn)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "pooler": TRANSACTION}
