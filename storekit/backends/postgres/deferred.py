"""Statements a sync transaction holds back and sends in one round trip (PgHandle):
its BEGIN, until the first statement, and writes given to run_deferred, until the next
statement or COMMIT. The async path does the same with psycopg's async pipeline (aio.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg

from storekit.backends.base import Row, RunResult
from storekit.backends.postgres.session import changes_session
from storekit.errors import BAD_INPUT, from_bad_input
from storekit.params import Params, Translated, check_params, to_json, translate

Pending = tuple[str, Any, bool]  # translated SQL, checked values, executemany


def prepared(conn: Any, sql: str, params: Params) -> tuple[Translated, Any]:
    """sql translated and params checked before anything is sent (ProgrammingError).
    conn is a sync or async connection: only its `dirty` mark is set."""
    try:
        t = translate(sql, "postgres")
        values = check_params(t, params)
    except BAD_INPUT as exc:
        raise from_bad_input(exc) from exc
    if changes_session(t.sql):
        conn.dirty = True
    return t, values


def prepared_many(conn: Any, sql: str,
                  seq: Iterable[Sequence[Any] | Mapping[str, Any]]) -> Pending:
    try:
        t = translate(sql, "postgres")
        rows = [check_params(t, p) for p in seq]
    except BAD_INPUT as exc:
        raise from_bad_input(exc) from exc
    if changes_session(t.sql):
        conn.dirty = True
    return t.sql, rows, True


# Queued in place of a held-back statement that could not be queued (a value psycopg
# refuses, an interruption): the server aborts the transaction there, so neither the
# statements before it (PostgreSQL's implicit transaction would commit them at the Sync)
# nor a later COMMIT can commit part of what was held back. Its error is the caller's
# concern only through the exception it stands for.
ABORT = ("SELECT CAST('storekit: a held-back statement could not be sent;"
         " the transaction is aborted' AS int)")


def unqueued(exc: BaseException) -> bool:
    """Whether exc, raised while queuing, is the client's (the server's errors abort
    the transaction themselves)."""
    return getattr(exc, "sqlstate", None) is None


def reraised(refused: BaseException, exc: psycopg.Error | None) -> BaseException:
    """What send raises once the pipeline ended after refused: an earlier statement's
    server error if there was one, else refused itself."""
    if exc is None or "storekit: a held-back statement" in str(exc):
        return refused
    return exc


# Past this many bytes of values, statements are sent one at a time, not in a pipeline:
# a pipeline carrying large values can leave client and server each waiting for the
# other (psycopg issue 685), and one round trip more is nothing beside the transfer.
PIPELINE_MAX_BYTES = 256 * 1024


def _size(values: Any, many: bool) -> int:
    total = 0
    for row in values if many else (values,):
        if row is None:
            continue
        for v in row.values() if isinstance(row, Mapping) else row:
            if isinstance(v, (str, bytes, bytearray, memoryview)):
                total += len(v)
            elif isinstance(v, (dict, list)):
                total += len(to_json(v))
    return total


def held_pipeline(conn: Any, pending: list[Pending], last: Pending | None) -> Any:
    """conn.pipeline(), or a context that does nothing when the values are large (see
    PIPELINE_MAX_BYTES); conn is a sync or async connection."""
    size = 0
    for _, values, many in (*pending, last) if last is not None else pending:
        size += _size(values, many)
        if size > PIPELINE_MAX_BYTES:
            return contextlib.nullcontext()
    return conn.pipeline()


def send(conn: psycopg.Connection[Row], pending: list[Pending],
         last: Pending | None) -> psycopg.Cursor[Row] | None:
    """pending, then last, in one pipeline: one round trip, one Sync. After a statement
    fails the server skips the rest (a COMMIT among them never runs) and psycopg raises
    the first error. Returns last's cursor, its results fetched."""
    cur = None
    refused: BaseException | None = None
    try:
        with held_pipeline(conn, pending, last):
            for sql, values, many in pending:
                try:
                    if many:
                        conn.cursor().executemany(sql, values)
                    else:
                        conn.execute(sql, values)
                except BaseException as exc:
                    if not unqueued(exc):
                        raise
                    refused = exc
                    conn.execute(ABORT)
                    break
            else:
                if last is not None:
                    cur = conn.cursor()
                    if last[2]:
                        cur.executemany(last[0], last[1])
                    else:
                        cur.execute(last[0], last[1])
    except psycopg.Error as exc:
        if refused is None:
            raise
        raise reraised(refused, exc) from None
    if refused is not None:
        raise refused
    return cur


def result(cur: psycopg.Cursor[Row], t: Translated, how: str) -> Any:
    if how == "get":
        return cur.fetchone()
    if how == "all":
        return cur.fetchall()
    if t.returning and cur.description is not None:
        row = cur.fetchone()
        return RunResult(cur.rowcount, next(iter(row.values())) if row else None)
    return RunResult(cur.rowcount, None)


def interruption(exc: psycopg.Error) -> BaseException | None:
    """What exc hides, if it was raised because something interrupted a pipeline: an
    exception raised into psycopg's pipeline exit (a signal handler, a task's
    cancellation) makes its cleanup fail with "cannot exit pipeline mode while busy",
    which replaces it, so the interruption would reach the caller as a database error.
    A server's error has no such context."""
    seen = exc.__context__
    for _ in range(4):
        if seen is None:
            return None
        if not isinstance(seen, psycopg.Error):
            return seen
        seen = seen.__context__
    return None
