"""StorekitSaver beyond LangGraph's suite: processes sharing one database, a process killed
inside a step, and hostile or unlucky input (every error a StoreError, the same on both
backends)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from langgraph.checkpoint.base import Checkpoint
from langgraph.checkpoint.base.id import uuid6

from storekit import (
    CapabilityError,
    ConfigurationError,
    Database,
    ProgrammingError,
    StoreError,
)
from storekit.langgraph import StorekitSaver

# The child processes' shared code: a checkpoint as LangGraph's loop makes one.
PRELUDE = """
import sys, time
from langgraph.checkpoint.base.id import uuid6
from storekit.langgraph import StorekitSaver

def checkpoint(step, value):
    return {"v": 1, "id": str(uuid6(clock_seq=step)), "ts": "2026-01-01T00:00:00+00:00",
            "channel_values": {"messages": value}, "channel_versions": {"messages": step + 1},
            "versions_seen": {}, "updated_channels": None}

def config(thread, parent=None):
    conf = {"thread_id": thread, "checkpoint_ns": ""}
    if parent is not None:
        conf["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
    return {"configurable": conf}

def step(saver, thread, parent, i, run):
    cp = checkpoint(i, "x" * 1000)
    meta = {"source": "loop", "step": i, "parents": {}, "run_id": run}
    stored = saver.put(config(thread, parent), cp, meta, {"messages": i + 1})
    saver.put_writes(stored, [("messages", f"w{i}"), ("__error__", "e")], f"task-{i}")
    return stored
"""

AGENT = PRELUDE + """
url, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
saver = StorekitSaver.from_url(url)
own = shared = None
for i in range(n):
    own = step(saver, name, own, i, name)
    latest = saver.get_tuple(config(name))
    assert latest.config == own, (latest.config, own)
    assert len(latest.pending_writes) == 2, latest.pending_writes
    shared = step(saver, "shared", None, i, name)
    assert len(list(saver.list(config("shared"), limit=5))) == 5 or i < 4
    print(own["configurable"]["checkpoint_id"], shared["configurable"]["checkpoint_id"],
          flush=True)
saver.close()
"""

KILLED = PRELUDE + """
url = sys.argv[1]
saver = StorekitSaver.from_url(url)
last = None
for i in range(5):
    last = step(saver, "victim", last, i, "r")
    print("ack", last["configurable"]["checkpoint_id"], flush=True)
with saver.db.transaction():
    doomed = step(saver, "victim", last, 5, "r")
    print("inside", doomed["configurable"]["checkpoint_id"], flush=True)
    time.sleep(600)
"""


def checkpoint(step: int = 0, **values: Any) -> Checkpoint:
    return {"v": 1, "id": str(uuid6(clock_seq=step)), "ts": "2026-01-01T00:00:00+00:00",
            "channel_values": values, "channel_versions": {k: 1 for k in values},
            "versions_seen": {}, "updated_channels": None}


def config(thread: Any, ns: Any = "", checkpoint_id: Any = None) -> Any:
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ns}
    if checkpoint_id is not None:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


@pytest.fixture
def saver(store: Database) -> StorekitSaver:
    s = StorekitSaver(store)
    s.setup()
    return s


def test_processes_sharing_one_database_lose_nothing(store_url: str) -> None:
    n, names = 30, [f"agent{i}" for i in range(4)]
    procs = [subprocess.Popen([sys.executable, "-c", AGENT, store_url, name, str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in names]
    acked: dict[str, list[str]] = {}
    shared: list[str] = []
    for name, proc in zip(names, procs, strict=True):
        out, err = proc.communicate(timeout=300)  # an upper bound: "must not hang"
        assert proc.returncode == 0, err
        assert "locked" not in err
        lines = [line.split() for line in out.splitlines()]
        assert len(lines) == n
        acked[name] = [own for own, _ in lines]
        shared += [s for _, s in lines]
    with StorekitSaver.from_url(store_url) as check:
        for name, ids in acked.items():
            found = list(check.list(config(name)))
            assert [t.checkpoint["id"] for t in found] == ids[::-1]  # newest first
            assert all(len(t.pending_writes or []) == 2 for t in found)
            # Each checkpoint's parent is the one put before it.
            assert [t.parent_config and t.parent_config["configurable"]["checkpoint_id"]
                    for t in found] == [*ids[::-1][1:], None]
        found_shared = {t.checkpoint["id"] for t in check.list(config("shared"))}
        assert found_shared == set(shared)
        assert len(shared) == n * len(names)


def test_process_killed_inside_a_step_leaves_acknowledged_checkpoints(store_url: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KILLED, store_url],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    acked, doomed = [], None
    try:
        for line in proc.stdout:
            word, cid = line.split()
            if word == "ack":
                acked.append(cid)
            else:
                doomed = cid
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert len(acked) == 5
    assert doomed is not None
    with StorekitSaver.from_url(store_url) as after:
        ids = [t.checkpoint["id"] for t in after.list(config("victim"))]
        assert ids == acked[::-1]  # the step in progress was rolled back whole
        latest = after.get_tuple(config("victim"))
        assert latest is not None
        assert latest.checkpoint["id"] == acked[-1]
        assert len(latest.pending_writes or []) == 2
        # Usable at once: the killed process's write lock or transaction is gone.
        stored = after.put(config("victim", checkpoint_id=acked[-1]), checkpoint(9, m="new"),
                           {"step": 5}, {"m": 1})
        after.put_writes(stored, [("m", "w")], "t")
        got = after.get_tuple(stored)
        assert got is not None
        assert got.checkpoint["channel_values"] == {"m": "new"}


HOSTILE_IDS = ["'; DROP TABLE langgraph_checkpoints; --", 'a"b', "%s", "?", ":name", "\\",
               "ünïcødé 🧵", " ", "", "a" * 512, "é" * 256, "x\ny\tz", "$.k", "*"]


@pytest.mark.parametrize("thread_id", HOSTILE_IDS)
def test_hostile_thread_ids_and_namespaces_round_trip(saver: StorekitSaver,
                                                      thread_id: str) -> None:
    ns = thread_id[:300] or "child:1|grand:2"
    stored = saver.put(config(thread_id, ns), checkpoint(k=thread_id), {"step": 1}, {"k": 1})
    saver.put_writes(stored, [(thread_id or "ch", thread_id)], thread_id[:100] or "t",
                     task_path=thread_id)
    got = saver.get_tuple(config(thread_id, ns))
    assert got is not None
    assert got.config == stored
    assert got.checkpoint["channel_values"] == {"k": thread_id}
    assert got.pending_writes == [(thread_id[:100] or "t", thread_id or "ch", thread_id)]
    assert [t.config for t in saver.list(config(thread_id, ns))] == [stored]
    other = saver.get_tuple(config("other" + thread_id[:100], ns))
    assert other is None
    saver.delete_thread(thread_id)
    assert saver.get_tuple(config(thread_id, ns)) is None


def test_int_and_uuid_thread_ids_are_stored_as_text(saver: StorekitSaver) -> None:
    stored = saver.put(config(7), checkpoint(), {}, {})
    assert stored["configurable"]["thread_id"] == "7"
    assert saver.get_tuple(config("7")) is not None


BAD_CONFIGS = {
    "nul thread": config("a\x00b"),
    "nul namespace": config("t", "child\x00"),
    "nul checkpoint id": config("t", "", "c\x00"),
    "long thread": config("a" * 513),
    "long utf8 thread": config("é" * 257),
    "long namespace": config("t", "n" * 1025),
    "lone surrogate": config("\ud800" * 200),
    "bytes thread": config(b"t"),
    "float thread": config(1.5),
    "bool thread": config(True),
    "no thread": {"configurable": {"checkpoint_ns": ""}},
    "no configurable": {},
    "not a dict": None,
}


@pytest.mark.parametrize("name", BAD_CONFIGS)
def test_bad_configs_raise_programming_error_and_write_nothing(saver: StorekitSaver,
                                                               name: str) -> None:
    bad = BAD_CONFIGS[name]
    with pytest.raises(ProgrammingError):
        saver.put(bad, checkpoint(), {}, {})
    with pytest.raises(ProgrammingError):
        saver.get_tuple(bad)
    with pytest.raises(ProgrammingError):
        saver.put_writes(bad, [("ch", 1)], "t")
    assert list(saver.list(None)) == []


def test_bad_write_arguments_write_nothing(saver: StorekitSaver) -> None:
    stored = saver.put(config("t"), checkpoint(), {}, {})
    for writes, task, path in [([("ok", 1), ("bad\x00", 2)], "t", ""),
                               ([("ok", 1)], "t\x00", ""),
                               ([("ok", 1)], "t", "p\x00"),
                               ([("ok", object())], "t", ""),
                               ([(None, 1)], "t", "")]:
        with pytest.raises(ProgrammingError):
            saver.put_writes(stored, writes, task, task_path=path)
    with pytest.raises(ProgrammingError, match="checkpoint_id"):
        saver.put_writes(config("t"), [("ok", 1)], "t")
    got = saver.get_tuple(stored)
    assert got is not None
    assert got.pending_writes == []


def test_values_round_trip_exactly_and_huge_values_fit(saver: StorekitSaver) -> None:
    huge = os.urandom(8 * 1024 * 1024)
    values = {"nul": "a\x00b", "bytes": huge, "text": "é" * 1_000_000, "nested": {"x": [1, None]}}
    stored = saver.put(config("t"), checkpoint(**values), {"step": 1}, {k: 1 for k in values})
    saver.put_writes(stored, [("big", huge), ("nul", "\x00")], "task")
    got = saver.get_tuple(stored)
    assert got is not None
    assert got.checkpoint["channel_values"] == values
    assert got.pending_writes == [("task", "big", huge), ("task", "nul", "\x00")]


def test_unserializable_values_raise_programming_error(saver: StorekitSaver) -> None:
    with pytest.raises(ProgrammingError, match="serializer") as caught:
        saver.put(config("t"), checkpoint(x=object()), {}, {"x": 1})
    assert caught.value.__cause__ is not None
    assert saver.get_tuple(config("t")) is None


def test_metadata_nul_is_removed_alike_on_both_backends(saver: StorekitSaver) -> None:
    meta = {"top": "a\x00b", "nested": {"k\x00": ["c\x00d", {"e": "\x00"}]}, "step": 1}
    stored = saver.put(config("t"), checkpoint(), meta, {})  # type: ignore[arg-type]
    got = saver.get_tuple(stored)
    assert got is not None
    assert got.metadata == {"top": "ab", "nested": {"k": ["cd", {"e": ""}]}, "step": 1}


FILTER_ROWS: list[dict[str, Any]] = [
    {"k": 1}, {"k": True}, {"k": "1"}, {"k": None}, {}, {"k": 1.0},
    {"k": {"b": 1, "a": [1, "x"]}}, {"k": [1, 2]}, {"k": False}, {"k": 0},
    {"a'b": 1, 'a"b': 2, "$.k": 3, "k.x": 4, "j": {"x": 5}},
]
FILTERS: list[tuple[dict[str, Any], set[int]]] = [
    ({"k": 1}, {0, 5}),  # 1 and 1.0 are the same JSON number (as jsonb compares them)
    ({"k": True}, {1}),
    ({"k": "1"}, {2}),
    ({"k": None}, {3}),  # null, not a missing key
    ({"k": {"a": [1, "x"], "b": 1}}, {6}),  # objects compare whatever their key order
    ({"k": [1, 2]}, {7}),
    ({"k": [2, 1]}, set()),
    ({"k": False}, {8}),
    ({"k": 0}, {9}),
    ({"a'b": 1}, {10}),
    ({'a"b': 2}, {10}),
    ({"$.k": 3}, {10}),
    ({"k.x": 4}, {10}),  # a key, never a path
    ({"j.x": 5}, set()),
    ({"k": 1, "source": "loop"}, {0, 5}),
    ({"k": 1, "source": "input"}, set()),
    ({"missing": None}, set()),
]


def test_metadata_filter_compares_json_values_alike_on_both_backends(
        saver: StorekitSaver) -> None:
    for step, extra in enumerate(FILTER_ROWS):
        saver.put(config("t"), checkpoint(step), {"step": step, "source": "loop", **extra}, {})
    for flt, expected in FILTERS:
        found = {t.metadata["step"] for t in saver.list(config("t"), filter=flt)}
        assert found == expected, flt
    for flt in ({"k": float("nan")}, {"k": object()}, {1: 1}):
        with pytest.raises(ProgrammingError):
            saver.list(config("t"), filter=flt)  # type: ignore[arg-type]


def test_list_arguments_are_checked(saver: StorekitSaver) -> None:
    saver.put(config("t"), checkpoint(), {}, {})
    for limit in (-1, "2", 1.5, True):
        with pytest.raises(ProgrammingError, match="limit"):
            saver.list(config("t"), limit=limit)  # type: ignore[arg-type]
    assert list(saver.list(config("t"), limit=0)) == []
    with pytest.raises(ProgrammingError):
        saver.list(config("t"), filter="source")  # type: ignore[arg-type]


def test_extended_methods_check_their_arguments(saver: StorekitSaver) -> None:
    stored = saver.put(config("t"), checkpoint(), {"run_id": "r"}, {})
    with pytest.raises(ConfigurationError, match="strategy"):
        saver.prune(["t"], strategy="keep_oldest")
    for call in (lambda: saver.prune("t"), lambda: saver.delete_for_runs("r")):
        with pytest.raises(ConfigurationError, match="sequence"):
            call()
    with pytest.raises(ProgrammingError):
        saver.delete_for_runs(["r\x00"])
    with pytest.raises(ProgrammingError):
        saver.copy_thread("t", "u\x00")
    with pytest.raises(ProgrammingError):
        saver.put(config("t"), checkpoint(), {"run_id": "r" * 300}, {})
    assert saver.get_tuple(config("t")) is not None
    assert saver.get_tuple(stored) is not None


def test_delete_for_runs_takes_many_ids(saver: StorekitSaver) -> None:
    for i in range(3):
        saver.put(config("t"), checkpoint(i), {"run_id": f"r{i}", "step": i}, {})
    saver.delete_for_runs([f"r{i}" for i in range(1, 1200)])  # more than one IN list
    assert [t.metadata["step"] for t in saver.list(config("t"))] == [0]


def test_prune_refuses_delta_channel_threads(saver: StorekitSaver) -> None:
    first = saver.put(config("t"), checkpoint(0), {"step": 0}, {})
    saver.put(config("t", checkpoint_id=first["configurable"]["checkpoint_id"]), checkpoint(1),
              {"step": 1, "counters_since_delta_snapshot": {"m": [1, 1]}}, {})  # type: ignore[typeddict-item]
    with pytest.raises(CapabilityError, match="DeltaChannel"):
        saver.prune(["t"])
    assert len(list(saver.list(config("t")))) == 2
    saver.prune(["t"], strategy="delete")
    assert list(saver.list(config("t"))) == []


def test_prune_keep_latest_drops_a_finished_subgraph_call(saver: StorekitSaver) -> None:
    root0 = saver.put(config("t"), checkpoint(0), {"step": 0, "parents": {}}, {})
    root0_id = root0["configurable"]["checkpoint_id"]
    saver.put(config("t", "call:1"), checkpoint(1), {"parents": {"": root0_id}}, {})
    saver.put(config("t", "keep:2"), checkpoint(2), {"parents": {}}, {})
    root1 = saver.put(config("t", checkpoint_id=root0_id), checkpoint(3), {"step": 1}, {})
    saver.prune(["t"])
    assert saver.get_tuple(config("t", "call:1")) is None  # went with the pruned root0
    assert saver.get_tuple(config("t", "keep:2")) is not None
    latest = saver.get_tuple(config("t"))
    assert latest is not None
    assert latest.config == root1
    assert latest.parent_config is None  # its parent was pruned


def test_errors_are_store_errors_and_saver_needs_a_database() -> None:
    with pytest.raises(ConfigurationError):
        StorekitSaver("sqlite:///x.db")  # type: ignore[arg-type]
    assert issubclass(ProgrammingError, StoreError)
