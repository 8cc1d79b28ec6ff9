"""Feature logic that must read before it decides, written once for any driver.

A reader is a generator that yields queries and receives their rows, returning its result
(the model is psycopg's `generators.py`). It does no I/O itself, so the sync facade drives
it with `run_reader(db, ...)` and storekit.aio with `await run_reader_async(db, ...)`,
the same loop with each query awaited.
"""

from __future__ import annotations

from collections.abc import Awaitable, Generator, Sequence
from typing import Any, Protocol, TypeVar

from storekit.params import Params

Row = dict[str, Any]


class Script(str):
    """A script to run (exec) rather than a query to read: the reader receives []."""

    __slots__ = ()


Query = tuple[str, Params] | Script
T = TypeVar("T")
Reader = Generator[Query, list[Row], T]


class Executor(Protocol):
    """What feature logic needs of a Database, a Transaction or an async equivalent."""

    def all(self, sql: str, params: Params = None) -> list[Row]: ...
    def exec(self, script: str) -> None: ...


def run_reader(ex: Executor, reader: Reader[T]) -> T:
    """Drive a reader on a synchronous executor."""
    try:
        query = next(reader)
        while True:
            if isinstance(query, Script):
                ex.exec(query)
                query = reader.send([])
            else:
                query = reader.send(ex.all(*query))
    except StopIteration as done:
        result: T = done.value
        return result


class AsyncExecutor(Protocol):
    """What feature logic needs of an AsyncDatabase or an AsyncTransaction."""

    def all(self, sql: str, params: Params = None) -> Awaitable[list[Row]]: ...
    def exec(self, script: str) -> Awaitable[None]: ...


async def run_reader_async(ex: AsyncExecutor, reader: Reader[T]) -> T:
    """Drive a reader on an asyncio executor: run_reader with each query awaited."""
    try:
        query = next(reader)
        while True:
            if isinstance(query, Script):
                await ex.exec(query)
                query = reader.send([])
            else:
                query = reader.send(await ex.all(*query))
    except StopIteration as done:
        result: T = done.value
        return result


async def run_script_async(ex: AsyncExecutor, statements: Sequence[str]) -> None:
    for statement in statements:
        await ex.exec(statement)


def run_script(ex: Executor, statements: Sequence[str]) -> None:
    for statement in statements:
        ex.exec(statement)
