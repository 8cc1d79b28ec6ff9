"""storekit.aio behind a transaction pooler: PoolOptions(pooler="transaction").

The rules of the sync PooledPostgresBackend (storekit/backends/postgres/pooler.py),
awaited: no automatic prepared statements, lock_timeout per transaction (SET LOCAL; an
autocommit statement is BEGIN; SET LOCAL; statement; COMMIT in one pipeline), no session
settings, each statement, transaction and script ending with RESET ALL; RESET ROLE,
row-security scopes refused, listen() only through listen_url.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import psycopg

from storekit.backends.base import PoolOptions, Row, RunResult
from storekit.backends.postgres.aio import (
    AConn,
    AsyncPgHandle,
    AsyncPostgresBackend,
    _script,
)
from storekit.backends.postgres.backend import _BEGIN, _IDLE
from storekit.backends.postgres.deferred import interruption
from storekit.backends.postgres.pooler import (
    _IN_TRANSACTION_BLOCK,
    RESET,
    TRANSACTION,
    _scope_refused,
    check_listen_url,
)
from storekit.errors import BAD_INPUT, StoreError, from_bad_input, from_psycopg
from storekit.params import Params, check_params, translate
from storekit.url import DatabaseURL


class AsyncPooledPostgresBackend(AsyncPostgresBackend):
    """AsyncPostgresBackend for a URL that reaches the server through a transaction pooler."""

    _connect_kwargs: dict[str, Any] = {"prepare_threshold": None}  # noqa: RUF012
    _commit = f"{RESET}; COMMIT"

    def __init__(self, url: DatabaseURL, pool: PoolOptions | None = None) -> None:
        options = pool or PoolOptions()
        check_listen_url(options)
        super().__init__(url, options)
        self._reset_session = None
        self._set_local = f"SET LOCAL lock_timeout = {max(1, options.busy_timeout_ms)}"
        self._begin = {key: f"{sql}; {self._set_local}" for key, sql in _BEGIN.items()}

    async def _start(self) -> None:
        await super()._start()
        self.capabilities = dataclasses.replace(self.capabilities, row_level_security=False)

    async def _configure(self, conn: AConn) -> None:
        pass  # a session setting would reach whichever client gets the server next

    async def _autocommit(self, sql: str, params: Params, how: str) -> Any:
        conn = await self._getconn()
        try:
            t = translate(sql, "postgres")
            values = check_params(t, params)
            async with conn.pipeline():
                await conn.execute("BEGIN")
                await conn.execute(self._set_local)
                cur = await conn.execute(t.sql, values)
                await conn.execute("RESET ALL")
                await conn.execute("RESET ROLE")
                await conn.execute("COMMIT")
            if how == "get":
                return await cur.fetchone()
            if how == "all":
                return await cur.fetchall()
            if t.returning and cur.description is not None:
                row: Row | None = await cur.fetchone()
                return RunResult(cur.rowcount, next(iter(row.values())) if row else None)
            return RunResult(cur.rowcount, None)
        except psycopg.Error as exc:
            cause = interruption(exc)  # what the pipeline's exit hid (pipeline.py)
            if cause is not None:
                await conn.close()  # left in pipeline mode: the pool replaces it
                raise cause from None
            raise from_psycopg(exc) from exc
        except BAD_INPUT as exc:
            raise from_bad_input(exc) from exc
        finally:
            await self._putconn(conn)

    async def begin(self, *, readonly: bool, team_id: Any = None,
                    isolation: str = "serializable") -> AsyncPgHandle:
        if team_id is not None:
            raise _scope_refused(self.url)
        conn = await self._getconn()
        handle = AsyncPgHandle(conn, readonly)
        try:
            await handle.exec(self._begin[isolation, readonly])
        except BaseException:
            await self._putconn(conn)
            raise
        return handle

    async def exec(self, script: str) -> None:
        conn = await self._getconn()
        try:
            if not isinstance(script, str):
                await _script(conn, script)  # raises its ProgrammingError
            try:
                await _script(conn, f"{script}\n;{RESET}")  # as the sync exec(), pooler.py
            except StoreError as exc:
                if getattr(exc.__cause__, "sqlstate", None) != _IN_TRANSACTION_BLOCK:
                    raise
                if conn.pgconn.transaction_status != _IDLE:
                    await conn.rollback()
                await _script(conn, script)
        finally:
            await self._putconn(conn)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "pooler": TRANSACTION}
