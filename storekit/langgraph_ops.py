"""storekit.langgraph's operations without I/O: argument checks, the statements each write
runs, the query each read runs and the decoding of its rows. StorekitSaver's sync methods
run them on a Database and its async ones on a storekit.aio AsyncDatabase, so both paths
share every line of this module and of langgraph_sql.

A write is a Body: a generator that yields steps, ("run", sql, params), ("many", sql, rows)
or ("all", sql, params), and receives each step's result; a driver runs it inside
atomic(), which builds it again for a retry. Only an "all" step's result may be read: the
async driver on PostgreSQL holds run and many steps back until the next read or COMMIT
(one round trip per write), so what they send back then is None.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import Any
from uuid import UUID

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from storekit.dialect import Dialect
from storekit.errors import CapabilityError, ConfigurationError, ProgrammingError
from storekit.langgraph_sql import (
    COPY_CHECKPOINTS,
    COPY_WRITES,
    DELETE_NAMESPACE,
    DELETE_RUNS_CHECKPOINTS,
    DELETE_RUNS_WRITES,
    DELETE_THREAD,
    PUT,
    WRITES_IGNORE,
    WRITES_UPSERT,
    select_sql,
)
from storekit.params import to_json

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

Step = tuple[str, str, Any]
Body = Generator[Step, Any, None]
Statements = list[tuple[str, Sequence[Any]]]
Select = tuple[str, list[Any]]  # a read's SQL and parameters


def key(value: Any, what: str, limit: int) -> str:
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


def text(value: Any, what: str) -> str:
    """A channel name or task path: any str without NUL (PostgreSQL text cannot hold one)."""
    if not isinstance(value, str):
        raise ProgrammingError(f"{what} must be a str, not {type(value).__name__}")
    if "\x00" in value:
        raise ProgrammingError(f"{what} contains a NUL character")
    return value


def canonical(value: Any, what: str = "metadata") -> Any:
    """JSON as both backends store it alike: keys sorted (jsonb does not keep their order,
    so an object filter compares equal on SQLite too) and NUL removed from strings (jsonb
    cannot hold one; LangGraph already strips it from top-level metadata strings). A lone
    surrogate, which SQLite would store and PostgreSQL refuses, or nesting too deep to
    walk, is a ProgrammingError on both."""
    try:
        return _canonical(value)
    except UnicodeEncodeError as exc:
        raise ProgrammingError(f"{what} holds a string that is not valid Unicode: {exc}") from exc
    except RecursionError as exc:
        raise ProgrammingError(f"{what} is nested too deeply") from exc


def _canonical(value: Any) -> Any:
    if isinstance(value, str):
        if not value.isascii():
            value.encode("utf-8")  # raises on a lone surrogate
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {_canonical(str(k)): _canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def configurable(config: Any) -> dict[str, Any]:
    try:
        conf = config["configurable"]
    except (TypeError, KeyError):
        raise ProgrammingError("config has no 'configurable' mapping") from None
    if not isinstance(conf, dict):
        raise ProgrammingError("config['configurable'] must be a dict")
    return conf


def target(config: Any) -> tuple[str, str, str | None]:
    """(thread_id, checkpoint_ns, checkpoint_id or None) from a config."""
    conf = configurable(config)
    if conf.get("thread_id") is None:
        raise ProgrammingError("config['configurable'] has no thread_id")
    thread_id = key(conf["thread_id"], "thread_id", MAX_THREAD_ID)
    ns = key(conf.get("checkpoint_ns") or "", "checkpoint_ns", MAX_NAMESPACE)
    cid = conf.get("checkpoint_id")
    return thread_id, ns, None if cid is None else key(cid, "checkpoint_id", MAX_ID)


def dump(serde: SerializerProtocol, value: Any) -> tuple[str, bytes]:
    try:
        return serde.dumps_typed(value)
    except Exception as exc:
        raise ProgrammingError(
            f"the serializer cannot encode a {type(value).__name__}: {exc}") from exc


def ids(values: Sequence[str], what: str, limit: int) -> list[str]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ConfigurationError(
            f"{what} must be a sequence of ids, not {type(values).__name__}")
    return list(dict.fromkeys(key(v, what[:-1], limit) for v in values))


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


def _json(value: Any) -> str:
    try:
        return to_json(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ProgrammingError(f"filter value is not JSON: {exc}") from exc


# Reads: one SELECT each, so a checkpoint and its writes come from one snapshot.
def get_tuple_query(config: Any) -> Select:
    thread_id, ns, cid = target(config)
    where = ["thread_id = ?", "checkpoint_ns = ?"]
    params: list[Any] = [thread_id, ns]
    if cid is not None:
        where.append("checkpoint_id = ?")
        params.append(cid)
    return select_sql(where, limited=True), [*params, 1]


def list_query(dialect: Dialect, config: Any, filter: Any, before: Any,
               limit: Any) -> Select:
    """Checkpoints newest first. config narrows to a thread (and a namespace and a
    checkpoint when it names them); filter keeps those whose metadata has each key with an
    equal JSON value; before keeps ids below its checkpoint_id."""
    where: list[str] = []
    params: list[Any] = []
    if config is not None:
        conf = configurable(config)
        if conf.get("thread_id") is not None:
            where.append("thread_id = ?")
            params.append(key(conf["thread_id"], "thread_id", MAX_THREAD_ID))
        if conf.get("checkpoint_ns") is not None:
            where.append("checkpoint_ns = ?")
            params.append(key(conf["checkpoint_ns"], "checkpoint_ns", MAX_NAMESPACE))
        if conf.get("checkpoint_id") is not None:
            where.append("checkpoint_id = ?")
            params.append(key(conf["checkpoint_id"], "checkpoint_id", MAX_ID))
    if filter:
        if not isinstance(filter, dict):
            raise ProgrammingError(f"filter must be a dict, not {type(filter).__name__}")
        for name, value in filter.items():
            sql, values = dialect.json_key_equals(
                "metadata", text(name, "filter key"), _json(canonical(value, "filter value")))
            where.append(sql)
            params.extend(values)
    if before is not None:
        bid = configurable(before).get("checkpoint_id")
        if bid is not None:
            where.append("checkpoint_id < ?")
            params.append(key(bid, "before checkpoint_id", MAX_ID))
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                              or limit < 0):
        raise ProgrammingError(f"limit must be an int >= 0 or None, not {limit!r}")
    if limit is not None:
        params.append(limit)
    return select_sql(where, limited=limit is not None), params


def _write_sort_key(row: Any) -> tuple[str, str, int]:
    # LangGraph's writes_sort_key: the order a super-step applies its tasks' writes.
    return (row["task_path"] or "", row["task_id"], int(row["idx"]))


def decode(rows: Sequence[Any], serde: SerializerProtocol) -> list[CheckpointTuple]:
    """select_sql's rows as CheckpointTuples, each with its pending writes in order."""
    heads: list[Any] = []
    writes: dict[tuple[str, str, str], list[Any]] = {}
    for row in rows:
        if row["kind"] == 0:
            heads.append(row)
        else:
            k = (row["thread_id"], row["checkpoint_ns"], row["checkpoint_id"])
            writes.setdefault(k, []).append(row)
    loads = serde.loads_typed
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


# Writes: each a Body run in atomic(), so a conflict or busy lock is retried.
def put(serde: SerializerProtocol, config: Any, checkpoint: Checkpoint,
        metadata: CheckpointMetadata) -> tuple[RunnableConfig, Statements]:
    """The config put returns and the statement that stores the checkpoint."""
    thread_id, ns, parent = target(config)
    cid = key(checkpoint.get("id") if isinstance(checkpoint, dict) else None,
              "checkpoint['id']", MAX_ID)
    if not isinstance(metadata, dict):
        raise ProgrammingError(f"metadata must be a dict, not {type(metadata).__name__}")
    meta = canonical(get_serializable_checkpoint_metadata(config, metadata))
    run_id = meta.get("run_id")
    if run_id is not None:
        run_id = key(run_id, "metadata['run_id']", MAX_ID)
    type_, data = dump(serde, checkpoint)
    stored: RunnableConfig = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                               "checkpoint_id": cid}}
    return stored, [(PUT, (thread_id, ns, cid, parent, run_id, type_, data, meta))]


def put_writes(serde: SerializerProtocol, config: Any, writes: Sequence[tuple[str, Any]],
               task_id: Any, task_path: Any) -> tuple[str, list[tuple[Any, ...]]] | None:
    """(statement, rows) storing a task's writes, or None when there are none."""
    thread_id, ns, cid = target(config)
    if cid is None:
        raise ProgrammingError("put_writes: config['configurable'] has no checkpoint_id")
    task = key(task_id, "task_id", MAX_ID)
    path = text(task_path, "task_path")
    # LangGraph passes a deque; a str or mapping would unpack into nonsense pairs.
    if isinstance(writes, (str, bytes, dict)) or not isinstance(writes, Iterable):
        raise ProgrammingError(f"writes must be a sequence of (channel, value) pairs, not "
                               f"{type(writes).__name__}")
    rows = []
    for idx, write in enumerate(writes):
        if not isinstance(write, (list, tuple)) or len(write) != 2:
            raise ProgrammingError(f"writes[{idx}] is not a (channel, value) pair")
        channel = text(write[0], "channel")
        type_, data = dump(serde, write[1])
        rows.append((thread_id, ns, cid, task, path, WRITES_IDX_MAP.get(channel, idx),
                     channel, type_, data))
    if not rows:
        return None
    # As LangGraph's savers: special channels (error, interrupt, ...) replace an earlier
    # write at their index; ordinary writes keep the first one saved.
    sql = WRITES_UPSERT if all(r[7] in WRITES_IDX_MAP for r in rows) else WRITES_IGNORE
    return sql, rows


def delete_thread(thread_id: Any) -> Statements:
    tid = key(thread_id, "thread_id", MAX_THREAD_ID)
    return [(sql, (tid,)) for sql in DELETE_THREAD]


def delete_for_runs(run_ids: Sequence[str]) -> Statements:
    statements: Statements = []
    for chunk in _chunks(ids(run_ids, "run_ids", MAX_ID)):
        marks = ", ".join("?" * len(chunk))
        statements.append((DELETE_RUNS_WRITES.format(marks=marks), chunk))
        statements.append((DELETE_RUNS_CHECKPOINTS.format(marks=marks), chunk))
    return statements


def copy_thread(source_thread_id: Any, target_thread_id: Any) -> Statements:
    src = key(source_thread_id, "source_thread_id", MAX_THREAD_ID)
    dst = key(target_thread_id, "target_thread_id", MAX_THREAD_ID)
    if src == dst:
        return []
    return [(COPY_CHECKPOINTS, (dst, src)), (COPY_WRITES, (dst, src))]


def prune(thread_ids: Sequence[str], strategy: Any) -> list[Callable[[], Body]]:
    """The transactions prune runs: one for "delete", one per thread for "keep_latest"."""
    if strategy not in PRUNE_STRATEGIES:
        raise ConfigurationError(
            f"unknown prune strategy {strategy!r}; use one of {', '.join(PRUNE_STRATEGIES)}")
    tids = ids(thread_ids, "thread_ids", MAX_THREAD_ID)
    if not tids:
        return []
    if strategy == "delete":
        statements: Statements = [(sql, (tid,)) for tid in tids for sql in DELETE_THREAD]
        return [functools.partial(each, statements)]
    return [functools.partial(keep_latest, tid) for tid in tids]


def each(statements: Statements) -> Body:
    for sql, params in statements:
        yield ("run", sql, params)


def many(sql: str, rows: list[tuple[Any, ...]]) -> Body:
    yield ("many", sql, rows)


def keep_latest(thread_id: str) -> Body:
    """One thread's keep_latest prune, on one snapshot (see StorekitSaver.prune)."""
    # Newest first, as get_tuple orders them: the first row of a namespace is its head.
    rows = yield ("all", "SELECT checkpoint_ns, checkpoint_id, metadata FROM"
                  " langgraph_checkpoints WHERE thread_id = ? ORDER BY checkpoint_id DESC",
                  (thread_id,))
    heads: dict[str, Any] = {}
    for row in rows:
        if any(k in (row["metadata"] or {}) for k in _DELTA_KEYS):
            raise CapabilityError(
                f"prune(strategy='keep_latest') cannot prune thread {thread_id!r}: it uses a "
                "DeltaChannel, whose latest value is rebuilt from older checkpoints; use "
                "strategy='delete' or leave the thread whole")
        heads.setdefault(row["checkpoint_ns"], row)
    root_ids = {r["checkpoint_id"] for r in rows if r["checkpoint_ns"] == ""}
    root_head = heads[""]["checkpoint_id"] if "" in heads else None
    for ns, head in heads.items():
        started = ((head["metadata"] or {}).get("parents") or {}).get("")
        if ":" in ns and started in root_ids and started != root_head:
            # A subgraph call whose root checkpoint is pruned goes with it.
            for sql in DELETE_NAMESPACE:
                yield ("run", sql, (thread_id, ns))
            continue
        keep = head["checkpoint_id"]
        yield ("run", "DELETE FROM langgraph_writes WHERE thread_id = ? AND checkpoint_ns = ?"
               " AND checkpoint_id IN (SELECT checkpoint_id FROM langgraph_checkpoints"
               " WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id <> ?)",
               (thread_id, ns, thread_id, ns, keep))
        yield ("run", "DELETE FROM langgraph_checkpoints WHERE thread_id = ? AND"
               " checkpoint_ns = ? AND checkpoint_id <> ?", (thread_id, ns, keep))
        yield ("run", "UPDATE langgraph_checkpoints SET parent_checkpoint_id = NULL"
               " WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
               (thread_id, ns, keep))
