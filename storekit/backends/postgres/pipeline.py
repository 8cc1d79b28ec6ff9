"""psycopg's pipeline mode, without the Flush psycopg sends after a pipeline's last Sync.

The Sync already makes the server send every result, so PostgreSQL ignores that Flush;
a transaction pooler may not. PgBouncer (1.18 at least) gives the server connection back
on the Sync's ReadyForQuery and takes a Flush arriving after it for a new request: it
links a server connection to the client for it, and no ReadyForQuery ever comes to
release it. Once every server connection is held that way, every other client waits
forever.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg


def _exit_gen(self: Any) -> Any:
    """psycopg's exit sequence (_exit_gen in psycopg/_pipeline_base.py), with flush=False
    once every command, the Sync included, is sent."""
    self._enqueue_sync()
    try:
        yield from self._communicate_gen()
    finally:
        yield from self._fetch_gen(flush=bool(self.command_queue))


class Pipeline(psycopg.Pipeline):
    _exit_gen = _exit_gen


class AsyncPipeline(psycopg.AsyncPipeline):
    _exit_gen = _exit_gen


@contextmanager
def pipeline(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Pipeline]:
    """conn.pipeline() with Pipeline: psycopg's own method, but for the class."""
    with conn.lock:
        conn._check_connection_ok()
        if (current := conn._pipeline) is None:
            current = conn._pipeline = Pipeline(conn)
    try:
        with current:
            yield current
    finally:
        if current.level == 0:
            with conn.lock:
                conn._pipeline = None


@asynccontextmanager
async def apipeline(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[psycopg.AsyncPipeline]:
    """conn.pipeline() with AsyncPipeline: psycopg's own method, but for the class."""
    async with conn.lock:
        conn._check_connection_ok()
        if (current := conn._pipeline) is None:
            current = conn._pipeline = AsyncPipeline(conn)
    try:
        async with current:
            yield current
    finally:
        if current.level == 0:
            async with conn.lock:
                conn._pipeline = None


# psycopg's executemany() outside a pipeline opens one with _pipeline_nolock(), its own
# Pipeline class: the connections' overrides call these so that one has no Flush either.


@contextmanager
def pipeline_nolock(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Pipeline]:
    """conn._pipeline_nolock() (the caller holds conn.lock) with Pipeline."""
    assert not conn._pipeline
    current = conn._pipeline = Pipeline(conn, _no_lock=True)
    try:
        with current:
            yield current
    finally:
        conn._pipeline = None


@asynccontextmanager
async def apipeline_nolock(
        conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[psycopg.AsyncPipeline]:
    """conn._pipeline_nolock() (the caller holds conn.lock) with AsyncPipeline."""
    assert not conn._pipeline
    current = conn._pipeline = AsyncPipeline(conn, _no_lock=True)
    try:
        async with current:
            yield current
    finally:
        conn._pipeline = None
