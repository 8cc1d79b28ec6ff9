"""Feature logic that must read before it decides, written once for any driver.

A reader is a generator that yields queries and receives their rows, returning its result
(the model is psycopg's `generators.py`). It does no I/O itself, so the sync facade drives
it with `run_reader(db, ...)` and an asyncio facade with a loop of `await ex.all(...)`:

    gen = dialect.read_schema()
    try:
        query = next(gen)
        while True:
            if isinstance(query, Script):
                await ex.exec(query)
                query = gen.send([])
            else:
                query = gen.send(await ex.all(*query))
    except StopIteration as done:
        result = done.value
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
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


def run_script(ex: Executor, statements: Sequence[str]) -> None:
    for statement in statements:
        ex.exec(statement)
