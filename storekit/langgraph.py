"""storekit as LangGraph's checkpointer: one saver for SQLite and PostgreSQL.

    from storekit.langgraph import StorekitSaver
    graph = builder.compile(checkpointer=StorekitSaver.from_url())  # DATABASE_URL or a file

Needs langgraph-checkpoint (pip install 'storekit[langgraph]'); `import storekit` never
imports this module. Storage: one row per checkpoint (the whole Checkpoint serialized by the
saver's serde into a blob, the metadata as JSON) and one row per pending write, so a put is
one INSERT and get_tuple or list one SELECT. Every write runs in Database.atomic, so a
conflict or a busy lock is retried, never lost.

The async methods (aput, ...) run the sync ones in a worker thread for now; they will move
to storekit.aio.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import random
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any
from uuid import UUID

try:
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import (
        WRITES_IDX_MAP,
        BaseCheckpointSaver,
        ChannelVersions,
        Checkpoint,
        CheckpointMetadata,
        CheckpointTuple,
        get_serializable_checkpoint_metadata,
    )
    from langgraph.checkpoint.serde.base import SerializerProtocol
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "storekit.langgraph needs langgraph-checkpoint: pip install 'storekit[langgraph]'"
    ) from exc

from storekit.database import Database, Transaction, create_database
from storekit.errors import CapabilityError, ConfigurationError, ProgrammingError
from storekit.langgraph_sql import (
    CHECKPOINTS,
    COPY_CHECKPOINTS,
    COPY_WRITES,
    DELETE_NAMESPACE,
    DELETE_RUNS_CHECKPOINTS,
    DELETE_RUNS_WRITES,
    DELETE_THREAD,
    PUT,
    WRITES,
    WRITES_IGNORE,
    WRITES_UPSERT,
    select_sql,
)
from storekit.url import DatabaseURL

__all__ = ["StorekitSaver"]

# The longest key parts, in UTF-8 bytes: a writes row's index key (thread, namespace,
# checkpoint, task) then stays under PostgreSQL's B-tree entry limit (about 2.7 KB), so
# a long id fails the same way on both backends instead of on PostgreSQL only.
MAX_THREAD_ID = 512
MAX_NAMESPACE = 1024
MAX_ID = 256
PRUNE_STRATEGIES = ("keep_latest", "delete")
# Metadata keys a DeltaChannel leaves: keep_latest would cut its history (see prune).
_DELTA_KEYS = ("counters_since_delta_snapshot", "delta_writes_versioned")
_CHUNK = 500  # ids per IN (...) list


def _key(value: Any, what: str, limit: int) -> str:
    """A thread id, namespace, checkpoint or task id as the text stored for it."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, (int, UUID)) and not isinstance(value, bool):
        text = str(value)
    else:
        raise ProgrammingError(f"{what} must be a str, not {type(value).__name__}")
    if "\x00" in text:
        raise ProgrammingError(f"{what} contains a NUL character")
    if len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit:
        raise ProgrammingError(f"{what} is longer than {limit} bytes (UTF-8)")
    return text


def _text(value: Any, what: str) -> str:
    """A channel name or task path: any str without NUL (PostgreSQL text cannot hold one)."""
    if not isinstance(value, str):
        raise ProgrammingError(f"{what} must be a str, not {type(value).__name__}")
    if "\x00" in value:
        raise ProgrammingError(f"{what} contains a NUL character")
    return value


def _canonical(value: Any) -> Any:
    """JSON as both backends store it alike: keys sorted (jsonb does not keep their order,
    so an object filter compares equal on SQLite too) and NUL removed from strings (jsonb
    cannot hold one; LangGraph already strips it from top-level metadata strings)."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {_canonical(str(k)): _canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def _configurable(config: Any) -> dict[str, Any]:
    try:
        conf = config["configurable"]
    except (TypeError, KeyError):
        raise ProgrammingError("config has no 'configurable' mapping") from None
    if not isinstance(conf, dict):
        raise ProgrammingError("config['configurable'] must be a dict")
    return conf


def _target(config: Any) -> tuple[str, str, str | None]:
    """(thread_id, checkpoint_ns, checkpoint_id or None) from a config."""
    conf = _configurable(config)
    if conf.get("thread_id") is None:
        raise ProgrammingError("config['configurable'] has no thread_id")
    thread_id = _key(conf["thread_id"], "thread_id", MAX_THREAD_ID)
    ns = _key(conf.get("checkpoint_ns") or "", "checkpoint_ns", MAX_NAMESPACE)
    cid = conf.get("checkpoint_id")
    return thread_id, ns, None if cid is None else _key(cid, "checkpoint_id", MAX_ID)


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _write_sort_key(row: Any) -> tuple[str, str, int]:
    # LangGraph's writes_sort_key: the order a super-step applies its tasks' writes.
    return (row["task_path"] or "", row["task_id"], int(row["idx"]))


class StorekitSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer on a storekit Database (SQLite or PostgreSQL)."""

    def __init__(self, db: Database, *, serde: SerializerProtocol | None = None) -> None:
        if not isinstance(db, Database):
            raise ConfigurationError(
                f"StorekitSaver needs a storekit Database, not {type(db).__name__}")
        super().__init__(serde=serde)
        self._db = db
        self._owns_db = False
        self._ready = False

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

    @property
    def db(self) -> Database:
        return self._db

    def setup(self) -> None:
        """Create the saver's tables and indexes if they do not exist (safe to repeat, and
        from several processes at once). The other methods call it on first use."""
        self._db.create_table(CHECKPOINTS)
        self._db.create_table(WRITES)
        self._ready = True

    def close(self) -> None:
        """Close the Database if from_url opened it (one passed in stays open)."""
        if self._owns_db:
            self._db.close()

    def __enter__(self) -> StorekitSaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Reads: one SELECT each, so a checkpoint and its writes come from one snapshot.
    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        thread_id, ns, cid = _target(config)
        where = ["thread_id = ?", "checkpoint_ns = ?"]
        params: builtins.list[Any] = [thread_id, ns]
        if cid is not None:
            where.append("checkpoint_id = ?")
            params.append(cid)
        found = self._select(where, params, 1)
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
        where: builtins.list[str] = []
        params: builtins.list[Any] = []
        if config is not None:
            conf = _configurable(config)
            if conf.get("thread_id") is not None:
                where.append("thread_id = ?")
                params.append(_key(conf["thread_id"], "thread_id", MAX_THREAD_ID))
            if conf.get("checkpoint_ns") is not None:
                where.append("checkpoint_ns = ?")
                params.append(_key(conf["checkpoint_ns"], "checkpoint_ns", MAX_NAMESPACE))
            if conf.get("checkpoint_id") is not None:
                where.append("checkpoint_id = ?")
                params.append(_key(conf["checkpoint_id"], "checkpoint_id", MAX_ID))
        if filter:
            if not isinstance(filter, dict):
                raise ProgrammingError(f"filter must be a dict, not {type(filter).__name__}")
            for name, value in filter.items():
                sql, values = self._db.dialect.json_key_equals(
                    "metadata", _text(name, "filter key"), self._json(_canonical(value)))
                where.append(sql)
                params.extend(values)
        if before is not None:
            bid = _configurable(before).get("checkpoint_id")
            if bid is not None:
                where.append("checkpoint_id < ?")
                params.append(_key(bid, "before checkpoint_id", MAX_ID))
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                                  or limit < 0):
            raise ProgrammingError(f"limit must be an int >= 0 or None, not {limit!r}")
        return iter(self._select(where, params, limit))

    def _select(self, where: builtins.list[str], params: builtins.list[Any],
                limit: int | None) -> builtins.list[CheckpointTuple]:
        self._ensure()
        if limit is not None:
            params = [*params, limit]
        rows = self._db.all(select_sql(where, limited=limit is not None), params)
        heads: builtins.list[Any] = []
        writes: dict[tuple[str, str, str], builtins.list[Any]] = {}
        for row in rows:
            if row["kind"] == 0:
                heads.append(row)
            else:
                key = (row["thread_id"], row["checkpoint_ns"], row["checkpoint_id"])
                writes.setdefault(key, []).append(row)
        loads = self.serde.loads_typed
        out = []
        for h in heads:
            thread_id, ns, cid = h["thread_id"], h["checkpoint_ns"], h["checkpoint_id"]
            pending = sorted(writes.get((thread_id, ns, cid), ()), key=_write_sort_key)
            parent = h["parent_checkpoint_id"]
            out.append(CheckpointTuple(
                {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                  "checkpoint_id": cid}},
                loads((h["type"], bytes(h["data"]))),
                h["metadata"],
                ({"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                   "checkpoint_id": parent}} if parent else None),
                [(w["task_id"], w["channel"], loads((w["type"], bytes(w["data"]))))
                 for w in pending],
            ))
        return out

    # Writes: each in Database.atomic, so a conflict or busy lock is retried.
    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        thread_id, ns, parent = _target(config)
        cid = _key(checkpoint.get("id") if isinstance(checkpoint, dict) else None,
                   "checkpoint['id']", MAX_ID)
        meta = _canonical(get_serializable_checkpoint_metadata(config, metadata))
        run_id = meta.get("run_id")
        if run_id is not None:
            run_id = _key(run_id, "metadata['run_id']", MAX_ID)
        type_, data = self._dump(checkpoint)
        self._ensure()
        self._db.atomic(_run, PUT, (thread_id, ns, cid, parent, run_id, type_, data, meta))
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                 "checkpoint_id": cid}}

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        thread_id, ns, cid = _target(config)
        if cid is None:
            raise ProgrammingError("put_writes: config['configurable'] has no checkpoint_id")
        task = _key(task_id, "task_id", MAX_ID)
        path = _text(task_path, "task_path")
        rows = []
        for idx, (channel, value) in enumerate(writes):
            type_, data = self._dump(value)
            rows.append((thread_id, ns, cid, task, path,
                         WRITES_IDX_MAP.get(channel, idx), _text(channel, "channel"),
                         type_, data))
        if not rows:
            return
        # As LangGraph's savers: special channels (error, interrupt, ...) replace an
        # earlier write at their index; ordinary writes keep the first one saved.
        sql = WRITES_UPSERT if all(w[0] in WRITES_IDX_MAP for w in writes) else WRITES_IGNORE
        self._ensure()
        self._db.atomic(_run_many, sql, rows)

    def delete_thread(self, thread_id: str) -> None:
        tid = _key(thread_id, "thread_id", MAX_THREAD_ID)
        self._ensure()
        self._db.atomic(_run_each, [(sql, (tid,)) for sql in DELETE_THREAD])

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints whose metadata names one of run_ids, with their writes,
        in one transaction."""
        ids = self._ids(run_ids, "run_ids", MAX_ID)
        if not ids:
            return
        statements: builtins.list[tuple[str, Sequence[Any]]] = []
        for chunk in _chunks(ids):
            marks = _marks(len(chunk))
            statements.append((DELETE_RUNS_WRITES.format(marks=marks), chunk))
            statements.append((DELETE_RUNS_CHECKPOINTS.format(marks=marks), chunk))
        self._ensure()
        self._db.atomic(_run_each, statements)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint (all namespaces, parents kept) and pending write of one
        thread to another, in one transaction; rows the target already has stay."""
        src = _key(source_thread_id, "source_thread_id", MAX_THREAD_ID)
        dst = _key(target_thread_id, "target_thread_id", MAX_THREAD_ID)
        if src == dst:
            return
        self._ensure()
        self._db.atomic(_run_each, [(COPY_CHECKPOINTS, (dst, src)), (COPY_WRITES, (dst, src))])

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """"delete" removes the threads whole, in one transaction. "keep_latest" keeps each
        namespace's latest checkpoint with its pending writes and deletes the rest (the
        kept one is left without a parent), one transaction per thread, as
        langgraph-checkpoint-postgres does: a subgraph call's namespace (with a ":") goes
        with the root checkpoint it started from once that one is saved and not kept.
        keep_latest refuses (CapabilityError) a thread that uses a DeltaChannel, whose
        values are rebuilt from older checkpoints."""
        if strategy not in PRUNE_STRATEGIES:
            raise ConfigurationError(
                f"unknown prune strategy {strategy!r}; use one of {', '.join(PRUNE_STRATEGIES)}")
        ids = self._ids(thread_ids, "thread_ids", MAX_THREAD_ID)
        if not ids:
            return
        self._ensure()
        if strategy == "delete":
            self._db.atomic(_run_each, [(sql, (tid,)) for tid in ids for sql in DELETE_THREAD])
            return
        for tid in ids:
            self._db.atomic(_keep_latest, tid)

    # The async methods: the sync ones in a worker thread until storekit.aio serves them.
    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        found = await asyncio.to_thread(
            lambda: list(self.list(config, filter=filter, before=before, limit=limit)))
        for item in found:
            yield item

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint,
                   metadata: CheckpointMetadata, new_versions: ChannelVersions) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                          task_id: str, task_path: str = "") -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(lambda: self.prune(thread_ids, strategy=strategy))

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

    def _dump(self, value: Any) -> tuple[str, bytes]:
        try:
            return self.serde.dumps_typed(value)
        except Exception as exc:
            raise ProgrammingError(
                f"the serializer cannot encode a {type(value).__name__}: {exc}") from exc

    @staticmethod
    def _json(value: Any) -> str:
        try:
            return json.dumps(value, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise ProgrammingError(f"filter value is not JSON: {exc}") from exc

    @staticmethod
    def _ids(values: Sequence[str], what: str, limit: int) -> builtins.list[str]:
        if isinstance(values, (str, bytes)):
            raise ConfigurationError(
                f"{what} must be a sequence of ids, not one {type(values).__name__}")
        return list(dict.fromkeys(_key(v, what[:-1], limit) for v in values))


def _run(tx: Transaction, sql: str, params: Sequence[Any]) -> None:
    tx.run(sql, params)


def _run_many(tx: Transaction, sql: str, rows: list[tuple[Any, ...]]) -> None:
    tx.run_many(sql, rows)


def _run_each(tx: Transaction, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
    for sql, params in statements:
        tx.run(sql, params)


def _keep_latest(tx: Transaction, thread_id: str) -> None:
    """One thread's keep_latest prune, on one snapshot (see StorekitSaver.prune)."""
    # Newest first, as get_tuple orders them: the first row of a namespace is its head.
    rows = tx.all("SELECT checkpoint_ns, checkpoint_id, metadata FROM langgraph_checkpoints"
                  " WHERE thread_id = ? ORDER BY checkpoint_id DESC", (thread_id,))
    heads: dict[str, Any] = {}
    for row in rows:
        if any(k in (row["metadata"] or {}) for k in _DELTA_KEYS):
            raise CapabilityError(
                f"prune(strategy='keep_latest') cannot prune thread {thread_id!r}: it uses a "
                "DeltaChannel, whose latest value is rebuilt from older checkpoints; use "
                "strategy='delete' or leave the thread whole")
        ns = row["checkpoint_ns"]
        heads.setdefault(ns, row)
    root_ids = {r["checkpoint_id"] for r in rows if r["checkpoint_ns"] == ""}
    root_head = heads[""]["checkpoint_id"] if "" in heads else None
    for ns, head in heads.items():
        started = ((head["metadata"] or {}).get("parents") or {}).get("")
        if ":" in ns and started in root_ids and started != root_head:
            # A subgraph call whose root checkpoint is pruned goes with it.
            for sql in DELETE_NAMESPACE:
                tx.run(sql, (thread_id, ns))
            continue
        keep = head["checkpoint_id"]
        tx.run("DELETE FROM langgraph_writes WHERE thread_id = ? AND checkpoint_ns = ? AND"
               " checkpoint_id IN (SELECT checkpoint_id FROM langgraph_checkpoints"
               " WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id <> ?)",
               (thread_id, ns, thread_id, ns, keep))
        tx.run("DELETE FROM langgraph_checkpoints WHERE thread_id = ? AND checkpoint_ns = ?"
               " AND checkpoint_id <> ?", (thread_id, ns, keep))
        tx.run("UPDATE langgraph_checkpoints SET parent_checkpoint_id = NULL"
               " WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
               (thread_id, ns, keep))
