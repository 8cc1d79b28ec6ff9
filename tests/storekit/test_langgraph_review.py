"""StorekitSaver against langgraph-checkpoint-sqlite's SqliteSaver: real graphs (interrupts
and resume, subgraphs, Send) and the same saver calls on both, outputs compared."""

from __future__ import annotations

import operator
import sqlite3
from typing import Annotated, Any

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send, interrupt
from typing_extensions import TypedDict

from storekit import ConfigurationError, Database, ProgrammingError
from storekit.langgraph import StorekitSaver


class State(TypedDict):
    items: Annotated[list[str], operator.add]
    n: int


def _graph() -> Any:
    sub = StateGraph(State)
    sub.add_node("inner", lambda s: {"items": ["inner"]})
    sub.add_node("ask", lambda s: {"items": [f"answer:{interrupt('question?')}"]})
    sub.add_edge(START, "inner")
    sub.add_edge("inner", "ask")
    sub.add_edge("ask", END)

    g = StateGraph(State)
    g.add_node("fan", lambda s: {"items": ["fan"]})
    g.add_node("work", lambda s: {"items": [f"work{s['n']}"]})
    g.add_node("sub", sub.compile())
    g.add_edge(START, "fan")
    g.add_conditional_edges("fan", lambda s: [Send("work", {"items": [], "n": i})
                                              for i in range(3)])
    g.add_edge("work", "sub")
    g.add_edge("sub", END)
    return g


def _history(saver: Any) -> list[Any]:
    graph = _graph().compile(checkpointer=saver)
    cfg: Any = {"configurable": {"thread_id": "t"}}
    graph.invoke({"items": [], "n": 0}, cfg)
    first = graph.get_state(cfg, subgraphs=True)
    graph.invoke(Command(resume="yes"), cfg)
    out = []
    for snap in [first, *graph.get_state_history(cfg)]:
        out.append((snap.values, snap.next, snap.metadata.get("step") if snap.metadata else None,
                    snap.metadata.get("source") if snap.metadata else None,
                    [(t.name, [i.value for i in t.interrupts]) for t in snap.tasks]))
    return out


def test_graph_history_matches_sqlite_saver(store: Database, tmp_path: Any) -> None:
    mine = StorekitSaver(store)
    theirs = SqliteSaver(sqlite3.connect(tmp_path / "lg.db", check_same_thread=False))
    assert _history(mine) == _history(theirs)


# Hostile input found in review: each a StoreError, alike on both backends, nothing written.
def _cp(step: int = 0) -> Any:
    from langgraph.checkpoint.base.id import uuid6
    return {"v": 4, "id": str(uuid6(clock_seq=step)), "ts": "2026-01-01T00:00:00+00:00",
            "channel_values": {"x": step}, "channel_versions": {}, "versions_seen": {},
            "updated_channels": None}


def _cfg(thread: str, checkpoint_id: str | None = None) -> Any:
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def _deep(n: int) -> Any:
    value: Any = 1
    for _ in range(n):
        value = [value]
    return value


@pytest.fixture
def saver(store: Database) -> StorekitSaver:
    s = StorekitSaver(store)
    s.setup()
    return s


@pytest.mark.parametrize("metadata", [None, [1], "meta", {"d": _deep(5000)},
                                      {"d": "lone \ud800 surrogate"}, {"\udcff": 1},
                                      {"d": {"k": ["x\udfff"]}}])
def test_bad_metadata_raises_programming_error_and_writes_nothing(
        saver: StorekitSaver, metadata: Any) -> None:
    with pytest.raises(ProgrammingError):
        saver.put(_cfg("t"), _cp(), metadata, {})
    assert saver.get_tuple(_cfg("t")) is None


@pytest.mark.parametrize("value", [_deep(5000), "lone \ud800", {"k": "\udc80"}])
def test_bad_filter_values_raise_programming_error(saver: StorekitSaver, value: Any) -> None:
    with pytest.raises(ProgrammingError):
        list(saver.list(None, filter={"k": value}))


@pytest.mark.parametrize("writes", [5, None, [("a",)], [("a", 1, 2)], ["ab"], [5],
                                    [([1], 2)], [({"c": 1}, 2)]])
def test_malformed_writes_raise_programming_error_and_write_nothing(
        saver: StorekitSaver, writes: Any) -> None:
    stored = saver.put(_cfg("t"), _cp(), {}, {})
    with pytest.raises(ProgrammingError):
        saver.put_writes(stored, writes, "task")
    found = saver.get_tuple(stored)
    assert found is not None
    assert found.pending_writes == []


@pytest.mark.parametrize("ids", [None, 5, object()])
def test_extended_methods_refuse_non_sequences(saver: StorekitSaver, ids: Any) -> None:
    saver.put(_cfg("t"), _cp(), {"run_id": "r"}, {})
    for call in (lambda: saver.prune(ids), lambda: saver.delete_for_runs(ids)):
        with pytest.raises(ConfigurationError, match="sequence"):
            call()
    assert saver.get_tuple(_cfg("t")) is not None


def test_setup_from_many_processes_at_once_succeeds(store_url: str) -> None:
    import subprocess
    import sys
    code = ("import sys; from storekit.langgraph import StorekitSaver\n"
            "s = StorekitSaver.from_url(sys.argv[1]); s.close(); print('ok')\n")
    children = [subprocess.Popen([sys.executable, "-c", code, store_url],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(6)]
    for child in children:
        out, err = child.communicate(timeout=120)
        assert out.strip() == "ok", err


def test_from_url_errors_mask_the_password(storekit_postgres_url: str) -> None:
    from storekit import StoreError
    from storekit.url import DatabaseURL
    url = DatabaseURL.parse(storekit_postgres_url)
    bad = storekit_postgres_url.replace(f":{url.password}@", ":s3cret-pw@") \
        if url.password else storekit_postgres_url.replace("@", ":s3cret-pw@", 1)
    with pytest.raises(StoreError) as info:
        StorekitSaver.from_url(bad)
    assert "s3cret-pw" not in str(info.value)
    assert "s3cret-pw" not in repr(info.value)
    assert info.value.__cause__ is not None
