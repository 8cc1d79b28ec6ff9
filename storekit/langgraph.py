"""storekit as LangGraph's checkpointer: one saver for SQLite and PostgreSQL.

    from storekit.langgraph import StorekitSaver
    graph = builder.compile(checkpointer=StorekitSaver.from_url())  # DATABASE_URL or a file
    # or, for graph.ainvoke / astream, on storekit.aio:
    graph = builder.compile(checkpointer=await StorekitSaver.afrom_url())

Needs langgraph-checkpoint (pip install 'storekit[langgraph]'); `import storekit` never
imports this module. Storage: one row per checkpoint (the whole Checkpoint serialized by the
saver's serde into a blob, the metadata as JSON) and one row per pending write, so a put is
one INSERT and get_tuple or list one SELECT. Every write runs in atomic(), so a conflict or
a busy lock is retried, never lost.

A saver built on a Database serves the sync methods (put, get_tuple, ...) and runs its
async ones in a worker thread; one built on a storekit.aio AsyncDatabase serves the async
methods on the event loop, and its sync methods work from other threads while that loop
runs (as LangGraph's async savers do). Both run the same statements and decoding
(langgraph_ops, langgraph_sql).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

try:
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import (
        BaseCheckpointSaver,
        ChannelVersions,
        Checkpoint,
        CheckpointMetadata,
        CheckpointTuple,
    )
    from langgraph.checkpoint.serde.base import SerializerProtocol
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "storekit.langgraph needs langgraph-checkpoint: pip install 'storekit[langgraph]'"
    ) from exc

from storekit import aio
from storekit import langgraph_ops as ops
from storekit.aio import AsyncDatabase, AsyncTransaction
from storekit.database import Database, Transaction, create_database
from storekit.dialect import Dialect, dialect_for
from storekit.errors import ConfigurationError, IntegrityError, ProgrammingError
from storekit.langgraph_ops import MAX_ID, MAX_NAMESPACE, MAX_THREAD_ID, PRUNE_STRATEGIES
from storekit.langgraph_sql import CHECKPOINTS, WRITES
from storekit.sansio import Reader, Script
from storekit.schema import Table, plan_create_table
from storekit.url import DatabaseURL

__all__ = ["MAX_ID", "MAX_NAMESPACE", "MAX_THREAD_ID", "PRUNE_STRATEGIES", "StorekitSaver"]

T = TypeVar("T")


class StorekitSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer on a storekit Database or AsyncDatabase (SQLite or
    PostgreSQL)."""

    def __init__(self, db: Database | AsyncDatabase, *,
                 serde: SerializerProtocol | None = None) -> None:
        if not isinstance(db, (Database, AsyncDatabase)):
            raise ConfigurationError(
                "StorekitSaver needs a storekit Database or storekit.aio AsyncDatabase, "
                f"not {type(db).__name__}")
        super().__init__(serde=serde)
        self._db = db
        self._sync = db if isinstance(db, Database) else None
        self._adb = db if isinstance(db, AsyncDatabase) else None
        self._dialect: Dialect = (db.dialect if isinstance(db, Database)
                                  else dialect_for(db.backend))
        self._owns_db = False
        self._ready = False
        # The loop an AsyncDatabase serves: sync calls from other threads run there.
        self._loop: asyncio.AbstractEventLoop | None = None
        if self._adb is not None:
            with contextlib.suppress(RuntimeError):
                self._loop = asyncio.get_running_loop()

    @classmethod
    def from_url(cls, url: str | DatabaseURL | None = None, *,
                 serde: SerializerProtocol | None = None) -> StorekitSaver:
        """A saver on its own Database, opened by create_database's rules (the argument,
        else STOREKIT_DATABASE_URL, else DATABASE_URL, else ./storekit.db), set up.
        close() (or a with block) closes that Database."""
        db = create_database(url)
        try:
            saver = cls(db, serde=serde)
            saver.setup()
        except BaseException:
            db.close()
            raise
        saver._owns_db = True
        return saver

    @classmethod
    async def afrom_url(cls, url: str | DatabaseURL | None = None, *,
                        serde: SerializerProtocol | None = None) -> StorekitSaver:
        """from_url on storekit.aio: a saver on its own AsyncDatabase, set up. aclose()
        (or an async with block) closes it."""
        db = await aio.create_database(url)
        try:
            saver = cls(db, serde=serde)
            await saver.asetup()
        except BaseException:
            await db.close()
            raise
        saver._owns_db = True
        return saver

    @property
    def db(self) -> Database | AsyncDatabase:
        return self._db

    def setup(self) -> None:
        """Create the saver's tables and indexes if they do not exist (safe to repeat, and
        from several processes at once). The other methods call it on first use."""
        if self._sync is None:
            return self._blocking(self.asetup)
        self._sync.create_table(CHECKPOINTS)
        self._sync.create_table(WRITES)
        self._ready = True
        return None

    async def asetup(self) -> None:
        """setup() for async code."""
        if self._adb is None:
            return await asyncio.to_thread(self.setup)
        self._loop = asyncio.get_running_loop()
        # One catalog read for both tables: every agent's saver runs this as it opens.
        existing = await _read(self._adb, self._dialect.read_tables())
        for table in (CHECKPOINTS, WRITES):
            if table.name not in existing:
                await _create_table(self._adb, self._dialect, table)
        self._ready = True
        return None

    def close(self) -> None:
        """Close the database if from_url or afrom_url opened it (one passed in stays open)."""
        if self._sync is None:
            if self._owns_db and self._adb is not None and not self._adb.closed:
                self._blocking(self.aclose)
        elif self._owns_db:
            self._sync.close()

    async def aclose(self) -> None:
        if self._adb is None:
            return await asyncio.to_thread(self.close)
        if self._owns_db:
            await self._adb.close()
        return None

    def __enter__(self) -> StorekitSaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> StorekitSaver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # Reads.
    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        if self._sync is None:
            return self._blocking(self.aget_tuple, config)
        sql, params = ops.get_tuple_query(config)
        self._ensure()
        found = ops.decode(self._sync.all(sql, params), self.serde)
        return found[0] if found else None

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        if self._adb is None:
            return await asyncio.to_thread(self.get_tuple, config)
        sql, params = ops.get_tuple_query(config)
        await self._aensure()
        found = ops.decode(await self._adb.all(sql, params), self.serde)
        return found[0] if found else None

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first. config narrows to a thread (and a namespace and a
        checkpoint when it names them); filter keeps those whose metadata has each key
        with an equal JSON value; before keeps ids below its checkpoint_id."""
        if self._sync is None:
            return iter(self._blocking(self._alist_all, config, filter, before, limit))
        sql, params = ops.list_query(self._dialect, config, filter, before, limit)
        self._ensure()
        return iter(ops.decode(self._sync.all(sql, params), self.serde))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for item in await self._alist_all(config, filter, before, limit):
            yield item

    async def _alist_all(self, config: RunnableConfig | None, filter: Any, before: Any,
                         limit: Any) -> builtins.list[CheckpointTuple]:
        if self._adb is None:
            return await asyncio.to_thread(
                lambda: builtins.list(self.list(config, filter=filter, before=before,
                                                limit=limit)))
        sql, params = ops.list_query(self._dialect, config, filter, before, limit)
        await self._aensure()
        return ops.decode(await self._adb.all(sql, params), self.serde)

    # Writes: each in atomic(), so a conflict or busy lock is retried.
    def put(self, config: RunnableConfig, checkpoint: Checkpoint,
            metadata: CheckpointMetadata, new_versions: ChannelVersions) -> RunnableConfig:
        if self._sync is None:
            return self._blocking(self.aput, config, checkpoint, metadata, new_versions)
        stored, statements = ops.put(self.serde, config, checkpoint, metadata)
        self._write(ops.each, statements, upsert=True)
        return stored

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint,
                   metadata: CheckpointMetadata, new_versions: ChannelVersions) -> RunnableConfig:
        if self._adb is None:
            return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)
        stored, statements = ops.put(self.serde, config, checkpoint, metadata)
        await self._awrite(ops.each, statements, upsert=True)
        return stored

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                   task_id: str, task_path: str = "") -> None:
        if self._sync is None:
            return self._blocking(self.aput_writes, config, writes, task_id, task_path)
        batch = ops.put_writes(self.serde, config, writes, task_id, task_path)
        if batch is not None:
            self._write(ops.many, *batch, upsert=True)
        return None

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                          task_id: str, task_path: str = "") -> None:
        if self._adb is None:
            return await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)
        batch = ops.put_writes(self.serde, config, writes, task_id, task_path)
        if batch is not None:
            await self._awrite(ops.many, *batch, upsert=True)
        return None

    def delete_thread(self, thread_id: str) -> None:
        if self._sync is None:
            return self._blocking(self.adelete_thread, thread_id)
        self._write(ops.each, ops.delete_thread(thread_id))
        return None

    async def adelete_thread(self, thread_id: str) -> None:
        if self._adb is None:
            return await asyncio.to_thread(self.delete_thread, thread_id)
        await self._awrite(ops.each, ops.delete_thread(thread_id))
        return None

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints whose metadata names one of run_ids, with their writes,
        in one transaction."""
        if self._sync is None:
            return self._blocking(self.adelete_for_runs, run_ids)
        statements = ops.delete_for_runs(run_ids)
        if statements:
            self._write(ops.each, statements)
        return None

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        if self._adb is None:
            return await asyncio.to_thread(self.delete_for_runs, run_ids)
        statements = ops.delete_for_runs(run_ids)
        if statements:
            await self._awrite(ops.each, statements)
        return None

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint (all namespaces, parents kept) and pending write of one
        thread to another, in one transaction; rows the target already has stay."""
        if self._sync is None:
            return self._blocking(self.acopy_thread, source_thread_id, target_thread_id)
        statements = ops.copy_thread(source_thread_id, target_thread_id)
        if statements:
            self._write(ops.each, statements)
        return None

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        if self._adb is None:
            return await asyncio.to_thread(self.copy_thread, source_thread_id,
                                           target_thread_id)
        statements = ops.copy_thread(source_thread_id, target_thread_id)
        if statements:
            await self._awrite(ops.each, statements)
        return None

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """"delete" removes the threads whole, in one transaction. "keep_latest" keeps each
        namespace's latest checkpoint with its pending writes and deletes the rest (the
        kept one is left without a parent), one transaction per thread, as
        langgraph-checkpoint-postgres does: a subgraph call's namespace (with a ":") goes
        with the root checkpoint it started from once that one is saved and not kept.
        keep_latest refuses (CapabilityError) a thread that uses a DeltaChannel, whose
        values are rebuilt from older checkpoints."""
        if self._sync is None:
            return self._blocking(self._aprune, thread_ids, strategy)
        for body in ops.prune(thread_ids, strategy):
            self._write(body)
        return None

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._aprune(thread_ids, strategy)

    async def _aprune(self, thread_ids: Sequence[str], strategy: str) -> None:
        if self._adb is None:
            return await asyncio.to_thread(lambda: self.prune(thread_ids, strategy=strategy))
        for body in ops.prune(thread_ids, strategy):
            await self._awrite(body)
        return None

    def get_next_version(self, current: str | None, channel: None) -> str:
        # LangGraph's SQL savers' format: a zero-padded counter, then a random fraction.
        if current is None:
            n = 0
        elif isinstance(current, int):
            n = current
        else:
            n = int(current.split(".")[0])
        return f"{n + 1:032}.{random.random():016}"

    # Helpers.
    def _ensure(self) -> None:
        if not self._ready:
            self.setup()

    async def _aensure(self) -> None:
        if not self._ready:
            await self.asetup()

    def _write(self, make: Callable[..., ops.Body], *args: Any, upsert: bool = False) -> None:
        assert self._sync is not None
        self._ensure()
        self._sync.atomic(_drive, make, args, isolation=self._isolation(upsert, self._sync))

    async def _awrite(self, make: Callable[..., ops.Body], *args: Any,
                      upsert: bool = False) -> None:
        assert self._adb is not None
        await self._aensure()
        await self._adb.atomic(_adrive, make, args, isolation=self._isolation(upsert, self._adb))

    def _isolation(self, upsert: bool, db: Database | AsyncDatabase) -> str | None:
        """READ COMMITTED for put and put_writes, else the database's level.

        Safe because their statements only upsert rows by their full key (INSERT ... ON
        CONFLICT on the unique index) with values computed before the transaction: no
        statement reads data another one depends on, so there is no read-modify-write to
        lose. On PostgreSQL concurrent writers of one key queue on its row lock and the
        later one sees the committed row (DO UPDATE overwrites it, DO NOTHING keeps it),
        the outcome of running them one after the other, and the transaction still makes
        a put_writes batch all or nothing. SERIALIZABLE would add predicate locks on the
        key index's pages, whose false conflicts between unrelated threads cost retries
        under load. (SQLite runs one writer at a time: every level is serializable there.)
        The other writes (deletes, copy_thread, prune, which read what they delete or
        copy) keep the database's level; inside a caller's transaction its level holds
        (a nested transaction cannot change it)."""
        if upsert and not db.in_transaction:
            return "read committed"
        return None

    def _blocking(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """A sync call on a saver built on an AsyncDatabase: run on its loop from another
        thread; from the loop's own thread it would block the loop it waits for."""
        loop = self._loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop or not loop.is_running():
            raise ConfigurationError(
                "this StorekitSaver is built on a storekit.aio AsyncDatabase: await its "
                "async methods (aput, aget_tuple, ...; graph.ainvoke), or call the sync ones "
                "from another thread while its event loop runs, or build it on a Database")
        future = asyncio.run_coroutine_threadsafe(_awaited(fn(*args)), loop)
        return future.result()


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _drive(tx: Transaction, make: Callable[..., ops.Body], args: Sequence[Any]) -> None:
    """Run a write's steps in a sync transaction."""
    body = make(*args)
    try:
        step = next(body)
        while True:
            kind, sql, params = step
            if kind == "all":
                result: Any = tx.all(sql, params)
            elif kind == "many":
                result = tx.run_many(sql, params)
            else:
                result = tx.run(sql, params)
            step = body.send(result)
    except StopIteration:
        return


async def _adrive(tx: AsyncTransaction, make: Callable[..., ops.Body],
                  args: Sequence[Any]) -> None:
    """_drive on storekit.aio. Where the connection can hold statements back (PostgreSQL:
    AsyncPgHandle.run_deferred), run and many steps, whose results no Body reads, are
    sent with the next read or with COMMIT: BEGIN, a put's INSERT and COMMIT then go in
    one round trip, and a failure in any of them still rolls back the whole write (the
    error is raised by the commit, and atomic() retries a conflict)."""
    body = make(*args)
    handle = tx._h()
    run = getattr(handle, "run_deferred", None) or tx.run
    run_many = getattr(handle, "run_many_deferred", None) or tx.run_many
    try:
        step = next(body)
        while True:
            kind, sql, params = step
            if kind == "all":
                result: Any = await tx.all(sql, params)
            elif kind == "many":
                result = await run_many(sql, params)
            else:
                result = await run(sql, params)
            step = body.send(result)
    except StopIteration:
        return


async def _read(db: AsyncDatabase, reader: Reader[T]) -> T:
    """Drive a storekit.sansio reader on an AsyncDatabase."""
    try:
        query = next(reader)
        while True:
            if isinstance(query, Script):
                await db.exec(query)
                query = reader.send([])
            else:
                query = reader.send(await db.all(*query))
    except StopIteration as done:
        result: T = done.value
        return result


async def _create_table(db: AsyncDatabase, dialect: Dialect, table: Table) -> None:
    """storekit.schema.create_table on storekit.aio (the same plan and the same race rule)."""
    statements = await _read(db, plan_create_table(dialect, table))
    if not statements:
        return
    try:
        async with db.transaction() as tx:
            for statement in statements:
                await tx.exec(statement)
    except (IntegrityError, ProgrammingError):
        # Savers starting together all create the table: on PostgreSQL the losers of that
        # race fail (duplicate pg_type row) even with IF NOT EXISTS; the winner's is whole.
        if table.name not in await _read(db, dialect.read_tables()):
            raise
