"""StorekitSaver on storekit.aio: processes each running asyncio tasks on one database, a
process killed inside a step, the sync methods of an async saver, and bad input through
the async methods (every error a StoreError, nothing written)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from storekit import ConfigurationError, ProgrammingError, aio
from storekit.langgraph import StorekitSaver
from tests.storekit.test_langgraph import BAD_CONFIGS, PRELUDE, checkpoint, config

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


APRELUDE = PRELUDE + """
import asyncio

async def astep(saver, thread, parent, i, run):
    cp = checkpoint(i, "x" * 1000)
    meta = {"source": "loop", "step": i, "parents": {}, "run_id": run}
    stored = await saver.aput(config(thread, parent), cp, meta, {"messages": i + 1})
    await saver.aput_writes(stored, [("messages", f"w{i}"), ("__error__", "e")], f"task-{i}")
    return stored
"""

# One process, `tasks` agents as asyncio tasks on one saver: each reads its latest
# checkpoint back after every step (reads between writes, as a graph does) and also
# writes to a thread all agents share.
AGENTS = APRELUDE + """
url, proc, tasks, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

async def agent(saver, name):
    own = None
    for i in range(n):
        own = await astep(saver, name, own, i, name)
        latest = await saver.aget_tuple(config(name))
        assert latest.config == own, (latest.config, own)
        assert len(latest.pending_writes) == 2, latest.pending_writes
        shared = await astep(saver, "shared", None, i, name)
        found = [t async for t in saver.alist(config("shared"), limit=3)]
        assert found, "the shared thread is empty"
        print(name, own["configurable"]["checkpoint_id"],
              shared["configurable"]["checkpoint_id"], flush=True)

async def main():
    async with await StorekitSaver.afrom_url(url) as saver:
        await asyncio.gather(*(agent(saver, f"{proc}-{t}") for t in range(tasks)))

asyncio.run(main())
"""

KILLED = APRELUDE + """
url = sys.argv[1]

async def main():
    saver = await StorekitSaver.afrom_url(url)
    last = None
    for i in range(5):
        last = await astep(saver, "victim", last, i, "r")
        print("ack", last["configurable"]["checkpoint_id"], flush=True)
    async with saver.db.transaction():
        doomed = await astep(saver, "victim", last, 5, "r")
        print("inside", doomed["configurable"]["checkpoint_id"], flush=True)
        await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_processes_of_async_tasks_on_one_sqlite_file_lose_nothing(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    procs, tasks, n = 4, 5, 12
    children = [subprocess.Popen([sys.executable, "-c", AGENTS, url, f"p{p}", str(tasks),
                                  str(n)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for p in range(procs)]
    acked: dict[str, list[str]] = {}
    shared: list[str] = []
    for child in children:
        out, err = await asyncio.to_thread(child.communicate, timeout=300)  # "must not hang"
        assert child.returncode == 0, err
        assert "locked" not in err
        for line in out.splitlines():
            name, own, other = line.split()
            acked.setdefault(name, []).append(own)
            shared.append(other)
    assert len(acked) == procs * tasks
    async with await StorekitSaver.afrom_url(url) as check:
        for name, ids in acked.items():
            found = [t async for t in check.alist(config(name))]
            assert [t.checkpoint["id"] for t in found] == ids[::-1]  # newest first
            assert all(len(t.pending_writes or []) == 2 for t in found)
            assert [t.parent_config and t.parent_config["configurable"]["checkpoint_id"]
                    for t in found] == [*ids[::-1][1:], None]
        found_shared = {t.checkpoint["id"] async for t in check.alist(config("shared"))}
        assert found_shared == set(shared)
        assert len(shared) == procs * tasks * n


async def test_process_killed_inside_an_async_step_leaves_acknowledged_checkpoints(
        store_url: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KILLED, store_url],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    acked: list[str] = []
    doomed = None
    try:
        while (line := await asyncio.to_thread(proc.stdout.readline)):
            word, cid = line.split()
            if word == "ack":
                acked.append(cid)
            else:
                doomed = cid
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.communicate, timeout=60)
    assert len(acked) == 5
    assert doomed is not None
    async with await StorekitSaver.afrom_url(store_url) as after:
        ids = [t.checkpoint["id"] async for t in after.alist(config("victim"))]
        assert ids == acked[::-1]  # the step in progress was rolled back whole
        latest = await after.aget_tuple(config("victim"))
        assert latest is not None
        assert len(latest.pending_writes or []) == 2
        # Usable at once: the killed process's write lock or transaction is gone.
        stored = await after.aput(config("victim", checkpoint_id=acked[-1]),
                                  checkpoint(9, m="new"), {"step": 5}, {"m": 1})
        await after.aput_writes(stored, [("m", "w")], "t")
        got = await after.aget_tuple(stored)
        assert got is not None
        assert got.checkpoint["channel_values"] == {"m": "new"}
        assert got.pending_writes == [("t", "m", "w")]


@pytest.fixture
async def asaver(store_url: str) -> Any:
    db = await aio.create_database(store_url)
    try:
        saver = StorekitSaver(db)
        await saver.asetup()
        yield saver
    finally:
        await db.close()


@pytest.mark.parametrize("name", BAD_CONFIGS)
async def test_bad_configs_through_async_methods_raise_and_write_nothing(
        asaver: StorekitSaver, name: str) -> None:
    bad = BAD_CONFIGS[name]
    with pytest.raises(ProgrammingError):
        await asaver.aput(bad, checkpoint(), {}, {})
    with pytest.raises(ProgrammingError):
        await asaver.aget_tuple(bad)
    with pytest.raises(ProgrammingError):
        await asaver.aput_writes(bad, [("ch", 1)], "t")
    assert [t async for t in asaver.alist(None)] == []


async def test_async_write_arguments_are_checked_before_anything_is_written(
        asaver: StorekitSaver) -> None:
    stored = await asaver.aput(config("t"), checkpoint(), {"run_id": "r"}, {})
    for writes, task in [([("ok", 1), ("bad\x00", 2)], "t"), ([("ok", object())], "t"),
                         ([("ok", 1)], "t\x00")]:
        with pytest.raises(ProgrammingError):
            await asaver.aput_writes(stored, writes, task)
    with pytest.raises(ProgrammingError, match="serializer"):
        await asaver.aput(config("u"), checkpoint(x=object()), {}, {"x": 1})
    with pytest.raises(ConfigurationError, match="strategy"):
        await asaver.aprune(["t"], strategy="keep_oldest")
    with pytest.raises(ConfigurationError, match="sequence"):
        await asaver.adelete_for_runs("r")
    with pytest.raises(ProgrammingError, match="limit"):
        [t async for t in asaver.alist(config("t"), limit=-1)]
    got = await asaver.aget_tuple(stored)
    assert got is not None
    assert got.pending_writes == []
    assert await asaver.aget_tuple(config("u")) is None


async def test_sync_methods_of_an_async_saver_run_on_its_loop_from_other_threads(
        asaver: StorekitSaver) -> None:
    with pytest.raises(ConfigurationError, match="async methods"):
        asaver.get_tuple(config("t"))  # on the loop's own thread it would block the loop
    done = threading.Event()

    def from_a_thread() -> list[Any]:
        stored = asaver.put(config("t"), checkpoint(), {"step": 1}, {})
        asaver.put_writes(stored, [("m", 1)], "task")
        got = asaver.get_tuple(stored)
        found = list(asaver.list(config("t")))
        asaver.prune(["t"], strategy="delete")
        done.set()
        return [got, found]

    got, found = await asyncio.to_thread(from_a_thread)
    assert done.is_set()
    assert got.pending_writes == [("task", "m", 1)]
    assert [t.config for t in found] == [got.config]
    assert await asaver.aget_tuple(config("t")) is None


def test_async_saver_without_its_loop_refuses_sync_calls(tmp_path: Path) -> None:
    saver = asyncio.run(_closed_loop_saver(tmp_path / "x.db"))
    with pytest.raises(ConfigurationError, match="async methods"):
        saver.put(config("t"), checkpoint(), {}, {})


async def _closed_loop_saver(path: Path) -> StorekitSaver:
    async with await StorekitSaver.afrom_url(f"sqlite:///{path}") as saver:
        await saver.aput(config("t"), checkpoint(), {}, {})
    return saver


async def test_afrom_url_follows_create_database_rules(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STOREKIT_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    async with await StorekitSaver.afrom_url() as saver:
        assert saver.db.backend == "sqlite"
        stored = await saver.aput(config("t"), checkpoint(), {}, {})
    assert (tmp_path / "storekit.db").exists()
    with StorekitSaver.from_url() as sync_saver:  # the same file, through the sync path
        got = sync_saver.get_tuple(stored)
        assert got is not None
    with pytest.raises(ConfigurationError):
        StorekitSaver(object())  # type: ignore[arg-type]
