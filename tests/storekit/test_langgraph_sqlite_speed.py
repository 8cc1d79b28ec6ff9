"""What storekit's LangGraph saver on SQLite needed to keep up with LangGraph's own saver:
a process whose agents are waiting (a model call, a sleep) gives its cross-process write
turn to the next process instead of idling through its slice, and a put_writes' few rows
run on the event loop. Progress is asserted by coordinated steps; times are upper bounds.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import storekit
from storekit import aio
from storekit.backends.sqlite import writelock
from storekit.backends.sqlite.aio import MANY_ON_LOOP_ROWS
from storekit.backends.sqlite.writelock import WriteLease
from tests.helpers import wal_file

HOUR_S = 3600.0

# Wrote once, then stays open and idle (until told) with a slice an hour long: only the
# idle rule can end its turn before that.
IDLE_WITH_LONG_SLICE = """
import sys, storekit
from storekit.backends.sqlite import writelock
writelock.MAX_SLICE_S = writelock.ROUND_S = 3600.0
db = storekit.open_database(sys.argv[1], sqlite=storekit.SqliteOptions(lock_slice_ms=3_600_000))
db.run("INSERT INTO t VALUES (1)")
print("holding", flush=True)
sys.stdin.readline()
db.run("INSERT INTO t VALUES (2)")
print("wrote", flush=True)
"""


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return wal_file(tmp_path / "lg.db")


@pytest.fixture
def long_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices of an hour in this process: a turn can only end early by being idle."""
    monkeypatch.setattr(writelock, "MAX_SLICE_S", HOUR_S)
    monkeypatch.setattr(writelock, "ROUND_S", HOUR_S)


def test_an_idle_process_hands_its_turn_to_one_that_queues(db_path: Path) -> None:
    idle = subprocess.Popen([sys.executable, "-c", IDLE_WITH_LONG_SLICE, str(db_path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    lease = WriteLease(str(db_path) + "-storekit.lock", 0.002)  # no stall: the turn or nothing
    try:
        assert idle.stdout is not None
        assert idle.stdin is not None
        assert idle.stdout.readline().strip() == "holding"
        # Its slice has an hour to run; the turn comes because nobody there uses it.
        assert lease.acquire(time.monotonic() + 60) is True
        assert idle.poll() is None
        lease.release(hand_over=True)
        idle.stdin.write("go\n")  # and it can write again: it queued behind this lease
        idle.stdin.flush()
        assert idle.stdout.readline().strip() == "wrote"
    finally:
        lease.close()
        idle.kill()
        idle.communicate()


def test_a_turn_in_use_is_not_handed_over(db_path: Path, long_slices: None) -> None:
    sidecar = str(db_path) + "-storekit.lock"
    busy, other = WriteLease(sidecar, HOUR_S), WriteLease(sidecar, HOUR_S)
    try:
        assert busy.acquire(time.monotonic() + 60) is True  # in use until released
        assert other.acquire(time.monotonic() + 0.2) is False
        got: list[bool] = []
        waiter = threading.Thread(target=lambda: got.append(
            other.acquire(time.monotonic() + 60)))
        waiter.start()
        while not busy.others_waiting():  # the other has queued behind the busy turn
            time.sleep(0.001)
        assert got == []
        busy.release()  # idle now, and someone waits: the turn moves on
        waiter.join(120)
        assert got == [True]
        other.release(hand_over=True)
    finally:
        busy.close()
        other.close()


def test_a_lone_idle_process_keeps_its_turn(db_path: Path, long_slices: None) -> None:
    sidecar = Path(str(db_path) + "-storekit.lock")
    lease = WriteLease(str(sidecar), HOUR_S)
    try:
        assert lease.acquire(time.monotonic() + 60) is True
        lease.release()
        drawn = int.from_bytes(sidecar.read_bytes()[:8], "little")
        time.sleep(50 * writelock.IDLE_S)  # idle, with nobody queued
        assert lease.acquire(time.monotonic()) is True  # a deadline of now: a turn it holds
        lease.release()
        assert int.from_bytes(sidecar.read_bytes()[:8], "little") == drawn
    finally:
        lease.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.parametrize("rows", [3, MANY_ON_LOOP_ROWS + 1])
async def test_run_many_in_a_transaction_is_all_or_nothing(db_path: Path, rows: int) -> None:
    """A few rows run on the loop, more in the writer's thread: the same outcome."""
    async with await aio.open_database(db_path) as db:
        await db.exec("CREATE TABLE u (id INTEGER PRIMARY KEY)")
        async with db.transaction() as tx:
            await tx.run("INSERT INTO u VALUES (0)")
            batch = [(i,) for i in range(1, rows)] + [(1,)]  # the last row is a duplicate
            with pytest.raises(storekit.IntegrityError):
                await tx.run_many("INSERT INTO u VALUES (?)", batch)
            assert await tx.get("SELECT COUNT(*) AS n FROM u") == {"n": 1}
            assert await tx.run_many("INSERT INTO u VALUES (?)", batch[:-1]) == rows - 1
        assert await db.get("SELECT COUNT(*) AS n FROM u") == {"n": rows}
