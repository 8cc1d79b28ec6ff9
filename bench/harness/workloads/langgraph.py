"""langgraph: each agent runs a small LangGraph graph (think -> act -> respond, a model-
latency sleep per node, about 1 KB of state) on its own thread, one graph invocation per
operation, with storekit's StorekitSaver on storekit.aio persisting every step
(durability="sync": a step's checkpoint is stored before the next step starts). Run on
sqlite-wal and postgres; the langgraph-sqlite, langgraph-sqlite-sync and
langgraph-postgres workloads run the same graph on LangGraph's own savers.

Each invocation reads the thread's latest checkpoint, then writes five checkpoints (input,
start and one per node) and each node's writes. Reported besides the invocation's latency:
steps_per_s (checkpoints stored per second), checkpoint_put_* and checkpoint_writes_*
latencies (each aput / aput_writes call, in ms), errors by type (a driver's "database is
locked" counts as busy), and lost writes: every checkpoint an agent's completed
invocation stored, read back through the saver after the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import operator
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

import storekit
from bench.harness import metrics
from bench.harness.agent import AgentContext, AgentResult, Operation, OpOutcome
from bench.harness.corpus import Corpus
from bench.harness.workloads import Workload, doc_summary
from storekit import Database, DatabaseURL

MODEL_LATENCY_S = 0.01  # per node, as a fast model call or a tool would take
NODES = ("think", "act", "respond")
STATE_BYTES = 1000  # the text a node leaves in the state


class State(TypedDict):
    draft: str
    steps: Annotated[int, operator.add]


@dataclass(frozen=True)
class Saver:
    """How one saver is opened in an agent, set up once, and read back after a run."""

    name: str
    configs: tuple[str, ...]  # the harness configs it runs on
    is_async: bool
    # (url) -> (saver, close): the agent's saver, in the agent's event loop when async.
    open: Callable[[DatabaseURL, asyncio.AbstractEventLoop], tuple[Any, Callable[[], None]]]
    reader: Callable[[DatabaseURL], contextlib.AbstractContextManager[Any]]  # a sync saver
    modules: tuple[str, ...]  # what an agent imports: warmed before the clock

    def warm(self) -> None:
        for module in ("langgraph.graph", *self.modules):
            importlib.import_module(module)


# storekit: StorekitSaver on storekit.aio, storekit's defaults (the sqlite-wal and postgres
# configs).
def _open_storekit(url: DatabaseURL, loop: asyncio.AbstractEventLoop) -> tuple[Any, Any]:
    from storekit.langgraph import StorekitSaver

    saver = loop.run_until_complete(StorekitSaver.afrom_url(url))
    return saver, lambda: loop.run_until_complete(saver.aclose())


@contextlib.contextmanager
def _read_storekit(url: DatabaseURL) -> Iterator[Any]:
    from storekit.langgraph import StorekitSaver

    with StorekitSaver.from_url(url) as saver:
        yield saver


# LangGraph's savers, opened as their documentation does (from_conn_string).
def _enter_async(cm: Any, loop: asyncio.AbstractEventLoop) -> tuple[Any, Any]:
    saver = loop.run_until_complete(cm.__aenter__())
    return saver, lambda: loop.run_until_complete(cm.__aexit__(None, None, None))


def _open_lg_sqlite(url: DatabaseURL, loop: asyncio.AbstractEventLoop) -> tuple[Any, Any]:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    return _enter_async(AsyncSqliteSaver.from_conn_string(str(url.path)), loop)


def _open_lg_sqlite_sync(url: DatabaseURL, loop: asyncio.AbstractEventLoop) -> tuple[Any, Any]:
    from langgraph.checkpoint.sqlite import SqliteSaver

    cm = SqliteSaver.from_conn_string(str(url.path))
    return cm.__enter__(), lambda: cm.__exit__(None, None, None)


def _read_lg_sqlite(url: DatabaseURL) -> contextlib.AbstractContextManager[Any]:
    from langgraph.checkpoint.sqlite import SqliteSaver

    return SqliteSaver.from_conn_string(str(url.path))


def _open_lg_postgres(url: DatabaseURL, loop: asyncio.AbstractEventLoop) -> tuple[Any, Any]:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    return _enter_async(AsyncPostgresSaver.from_conn_string(url.conninfo()), loop)


def _read_lg_postgres(url: DatabaseURL) -> contextlib.AbstractContextManager[Any]:
    from langgraph.checkpoint.postgres import PostgresSaver

    return PostgresSaver.from_conn_string(url.conninfo())


SAVERS = {s.name: s for s in (
    Saver("storekit", ("sqlite-wal", "postgres"), True, _open_storekit, _read_storekit,
          ("storekit.langgraph", "storekit.aio", "storekit.backends.sqlite.aio",
           "storekit.backends.postgres.aio")),
    Saver("langgraph-sqlite", ("sqlite-wal",), True, _open_lg_sqlite, _read_lg_sqlite,
          ("langgraph.checkpoint.sqlite", "langgraph.checkpoint.sqlite.aio")),
    Saver("langgraph-sqlite-sync", ("sqlite-wal",), False, _open_lg_sqlite_sync,
          _read_lg_sqlite, ("langgraph.checkpoint.sqlite",)),
    Saver("langgraph-postgres", ("postgres",), True, _open_lg_postgres, _read_lg_postgres,
          ("langgraph.checkpoint.postgres", "langgraph.checkpoint.postgres.aio")),
)}


def build_graph(is_async: bool, texts: list[str]) -> Any:
    """The graph every saver runs: NODES in a row, each sleeping MODEL_LATENCY_S."""
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(State)
    for i, name in enumerate(NODES):
        update = {"draft": texts[i % len(texts)], "steps": 1}
        if is_async:
            async def node(state: State, update: dict[str, Any] = update) -> dict[str, Any]:
                await asyncio.sleep(MODEL_LATENCY_S)
                return update
        else:
            def node(state: State, update: dict[str, Any] = update) -> dict[str, Any]:  # type: ignore[misc]
                time.sleep(MODEL_LATENCY_S)
                return update
        graph.add_node(name, node)
    for a, b in zip((START, *NODES), (*NODES, END), strict=True):
        graph.add_edge(a, b)
    return graph


def texts(seed: int) -> list[str]:
    corpus = Corpus(seed=seed)
    out = []
    for _ in range(8):
        text = ""
        while len(text) < STATE_BYTES:
            text += corpus.message() + ". "
        out.append(text[:STATE_BYTES])
    return out


def thread_id(run_key: int, agent: int) -> str:
    return f"run{run_key}-agent{agent}"


def roles(agents: int) -> list[str]:
    return ["writer"] * agents


def _saver_setup(saver: Saver) -> Callable[[Database, dict[str, Any]], None]:
    def setup(db: Database, scale: dict[str, Any]) -> None:
        with saver.reader(db.reveal_url()) as reader:
            reader.setup()  # the saver's own tables (and, for LangGraph's SQLite, WAL)
    return setup


def prepare(db: Database, run_key: int, roles: list[str]) -> None:
    """Nothing: each run's agents use threads named after the run."""


def _timed(calls: list[float], fn: Any, acked: list[str] | None = None) -> Any:
    """fn with each call's latency appended to calls (and each stored id to acked)."""
    clock = time.perf_counter
    if asyncio.iscoroutinefunction(fn):
        async def atimed(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            out = await fn(*args, **kwargs)
            calls.append(clock() - t0)
            if acked is not None:
                acked.append(out["configurable"]["checkpoint_id"])
            return out
        return atimed

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = clock()
        out = fn(*args, **kwargs)
        calls.append(clock() - t0)
        if acked is not None:
            acked.append(out["configurable"]["checkpoint_id"])
        return out
    return timed


def _operation(saver: Saver) -> Callable[[Database, AgentContext], Operation]:
    def operation(db: Database, ctx: AgentContext) -> Operation:
        loop = asyncio.new_event_loop()
        checkpointer, close = saver.open(db.reveal_url(), loop)
        puts: list[float] = []
        writes: list[float] = []
        stored: list[str] = []
        # LangGraph calls the saver through these attributes: timing them times every
        # checkpoint write of any saver alike.
        for name, calls, ack in (("put", puts, stored), ("put_writes", writes, None)):
            attr = f"a{name}" if saver.is_async else name
            setattr(checkpointer, attr, _timed(calls, getattr(checkpointer, attr), ack))
        graph = build_graph(saver.is_async, texts(ctx.seed)).compile(checkpointer=checkpointer)
        me = thread_id(ctx.run_key, ctx.agent)
        config = {"configurable": {"thread_id": me}}

        def op(seq: int) -> OpOutcome:
            del puts[:], writes[:], stored[:]
            start = {"draft": f"turn {seq}", "steps": 0}
            try:
                if saver.is_async:
                    loop.run_until_complete(graph.ainvoke(start, config, durability="sync"))
                else:
                    graph.invoke(start, config, durability="sync")
            except storekit.StoreError:
                raise
            except Exception as exc:  # a LangGraph saver's driver error, counted by type
                raise storekit.StoreError(f"{type(exc).__name__}: {exc}") from exc
            return OpOutcome("invoke", ack=(me, tuple(stored)),
                             extra=(tuple(puts), tuple(writes), ctx.duration))

        def closing() -> None:
            with contextlib.suppress(Exception):
                close()
            loop.close()

        # The agent's saver and loop close when the harness drops the operation (its
        # worker process runs other runs next).
        weakref.finalize(op, closing)
        return op
    return operation


def _verify(saver: Saver) -> Callable[[Database, int, list[AgentResult]], dict[str, Any]]:
    def verify(db: Database, run_key: int, results: list[AgentResult]) -> dict[str, Any]:
        acked: dict[str, set[str]] = {}
        for r in results:
            for me, ids in r.acked:
                acked.setdefault(me, set()).update(ids)
        lost: list[tuple[str, str]] = []
        with saver.reader(db.reveal_url()) as reader:
            for me, ids in acked.items():
                found = {t.config["configurable"]["checkpoint_id"]
                         for t in reader.list({"configurable": {"thread_id": me}})}
                lost += [(me, cid) for cid in sorted(ids - found)]
        total = sum(len(ids) for ids in acked.values())
        return {"acked": total, "lost": len(lost),
                "detail": f"missing checkpoints {lost[:5]}" if lost else ""}
    return verify


def extra_metrics(results: list[AgentResult]) -> dict[str, float]:
    """Checkpoints stored per second and the latency of each checkpoint write, in ms."""
    puts = [t for r in results for extra in r.extras for t in extra[0]]
    writes = [t for r in results for extra in r.extras for t in extra[1]]
    durations = [extra[2] for r in results for extra in r.extras]
    out = {"steps_per_s": len(puts) / durations[0] if durations else 0.0}
    for name, values in (("checkpoint_put", puts), ("checkpoint_writes", writes)):
        summary = metrics.latency_summary(values)
        for stat in ("p50", "p99", "max"):
            out[f"{name}_{stat}_ms"] = summary[stat] * 1000
    return out


def workload_for(saver_name: str, doc: str | None) -> Workload:
    """The langgraph workload on one saver (the langgraph_* modules declare the others)."""
    saver = SAVERS[saver_name]
    return Workload(
        name="langgraph" if saver_name == "storekit" else saver_name,
        summary=doc_summary(doc), main_op="invoke", roles=roles, setup=_saver_setup(saver),
        prepare=prepare, operation=_operation(saver), verify=_verify(saver),
        extra_metrics=extra_metrics, default=False, configs=saver.configs, warm=saver.warm,
    )


WORKLOAD = workload_for("storekit", __doc__)
