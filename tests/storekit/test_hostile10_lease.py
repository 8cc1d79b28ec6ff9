"""Hostile checks of the lease thread's BUSY_LOOK_S looks (writelock.WriteLease._watch).

While nobody else queues, the thread looks at a busy turn every BUSY_LOOK_S instead of every
IDLE_S. These try what that could break: a newcomer that queues while the thread sleeps
BUSY_LOOK_S (or naps through a long transaction) and then finds the holder idle for good
(hour slices: only the idle rule can pass the turn on); several processes, threads in each,
writing in bursts with pauses around IDLE_S..BUSY_LOOK_S (never two holders, progress by
turns, not by a stalled queue); sync and aio writers of several processes with a holder
killed mid-burst (no write lost or doubled). Times are upper bounds for "must not hang".
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import storekit
from storekit.backends.sqlite import writelock
from storekit.backends.sqlite.writelock import WriteLease
from tests.storekit.test_idle_handoff_hostile import BOUND_S, HOUR_S, Asker, drawn, wait_until


@pytest.fixture
def hour_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writelock, "MAX_SLICE_S", HOUR_S)
    monkeypatch.setattr(writelock, "ROUND_S", HOUR_S)


@pytest.mark.usefixtures("hour_slices")
@pytest.mark.parametrize("held_s", [0.0, writelock.BUSY_LOOK_S * 3])
def test_a_newcomer_queuing_right_after_the_last_release_gets_the_idle_turn(
        tmp_path: Path, held_s: float) -> None:
    """The holder's last write is short (the thread sleeps BUSY_LOOK_S) or outlasts two
    looks (the thread naps until release); the newcomer queues right after the release
    and the holder never writes again: the idle rule alone must pass the turn on."""
    sidecar = str(tmp_path / "x-storekit.lock")
    holder, newcomer = WriteLease(sidecar, HOUR_S), WriteLease(sidecar, HOUR_S)
    try:
        for _ in range(20):
            assert holder.acquire(time.monotonic() + BOUND_S) is True
            time.sleep(held_s)
            holder.release()
            asker = Asker(newcomer)
            assert asker.result() is True
            wait_until(lambda: not holder._held, "the holder to mark its turn ended")
            newcomer.release(hand_over=True)
    finally:
        holder.close()
        newcomer.close()


# Writers in threads of one process, in bursts with pauses of 0.5-5 ms; a flag file
# created exclusively while the turn is held counts overlapping holders.
BURSTS = r"""
import os, sys, threading, time
from storekit.backends.sqlite.writelock import WriteLease
sidecar, flag, rounds, me = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lease = WriteLease(sidecar, 0.002, 60.0)  # stall bound past the test: progress by turns
serial = threading.Lock()  # callers of a lease are serialised (FairLock in storekit)
overlaps = stalls = 0

def writer(k):
    global overlaps, stalls
    for i in range(rounds):
        for _ in range(1 + (i + me) % 6):
            with serial:
                assert lease.acquire(time.monotonic() + 120), "no turn in 120 s"
                stalls += lease._stalled
                try:
                    fd = os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    overlaps += 1
                else:
                    os.close(fd)
                    os.unlink(flag)
                time.sleep(0)
                lease.release()
        time.sleep((0.0005, 0.001, 0.003, 0.005)[(i + k + me) % 4])

threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
lease.close()
print(overlaps, stalls, flush=True)
"""


@pytest.mark.parametrize("processes", [2, 4])
def test_bursts_with_pauses_in_several_processes_never_overlap_or_stall(
        tmp_path: Path, processes: int) -> None:
    sidecar, flag = str(tmp_path / "x-storekit.lock"), str(tmp_path / "held")
    procs = [subprocess.Popen([sys.executable, "-c", BURSTS, sidecar, flag, "60", str(me)],
                              stdout=subprocess.PIPE, text=True) for me in range(processes)]
    try:
        outs = [p.communicate(timeout=BOUND_S)[0].strip() for p in procs]
        assert [p.returncode for p in procs] == [0] * processes
        assert outs == ["0 0"] * processes
        assert drawn(sidecar) > processes  # turns changed hands
    finally:
        for p in procs:
            p.kill()
            p.communicate()


# Sync threads or aio tasks write rows and bump a counter in one transaction each, in
# bursts with short pauses; prints "started" after its first write.
ROWS = r"""
import asyncio, sys, threading, time, storekit
from storekit import aio
path, me, mode, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
SQL = ("INSERT INTO t VALUES (?)", "UPDATE c SET n = n + 1")

def pause(i):
    return 0.0005 * (i % 4) if i % 5 == 4 else 0

if mode == "sync":
    db = storekit.open_database(path, busy_timeout_ms=120_000)
    def w(k):
        for i in range(n):
            with db.transaction() as tx:
                tx.run(SQL[0], [me * 10**7 + k * 10**5 + i])
                tx.run(SQL[1])
            if k == i == 0:
                print("started", flush=True)
            time.sleep(pause(i))
    ts = [threading.Thread(target=w, args=(k,)) for k in range(3)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    db.close()
else:
    async def main():
        async with await aio.open_database(path, busy_timeout_ms=120_000) as db:
            async def w(k):
                for i in range(n):
                    async with db.transaction() as tx:
                        await tx.run(SQL[0], [me * 10**7 + k * 10**5 + i])
                        await tx.run(SQL[1])
                    if k == i == 0:
                        print("started", flush=True)
                    await asyncio.sleep(pause(i))
            await asyncio.gather(*(w(k) for k in range(12)))
    asyncio.run(main())
print("done", flush=True)
"""


def test_sync_and_aio_processes_with_a_holder_killed_mid_burst_lose_no_write(
        tmp_path: Path) -> None:
    path = str(tmp_path / "rows.db")
    with storekit.open_database(path) as db:
        db.run("CREATE TABLE t (x INTEGER PRIMARY KEY)")
        db.run("CREATE TABLE c (n INTEGER)")
        db.run("INSERT INTO c VALUES (0)")
    rounds = 80
    modes = ["sync", "aio", "aio", "sync"]
    procs = [subprocess.Popen([sys.executable, "-c", ROWS, path, str(me), mode, str(rounds)],
                              stdout=subprocess.PIPE, text=True)
             for me, mode in enumerate(modes)]
    try:
        victim = procs[-1]
        assert victim.stdout is not None
        assert victim.stdout.readline().strip() == "started"
        victim.send_signal(signal.SIGKILL)  # mid-burst, maybe holding the turn
        outs = [p.communicate(timeout=BOUND_S)[0].split() for p in procs[:-1]]
        assert [o[-1:] for o in outs] == [["done"]] * 3
        victim.communicate(timeout=BOUND_S)
    finally:
        for p in procs:
            p.kill()
            p.communicate()
    with storekit.open_database(path) as db:
        rows = db.get("SELECT COUNT(*) AS n FROM t")
        counter = db.get("SELECT n FROM c")
        # Each transaction wrote a row and bumped the counter: none lost, none doubled.
        assert rows is not None
        assert counter is not None
        # The survivors' writes all went in: 3 sync threads and 2 x 12 aio tasks.
        assert rows["n"] == counter["n"] >= (3 + 2 * 12) * rounds


def test_the_thread_sees_a_newcomer_queued_during_a_long_nap(
        tmp_path: Path, hour_slices: None) -> None:
    """A transaction outlasts the thread's looks (it naps until release) while another
    process queues; the holder's writers then go idle: the turn goes on."""
    sidecar = str(tmp_path / "x-storekit.lock")
    holder, newcomer = WriteLease(sidecar, HOUR_S), WriteLease(sidecar, HOUR_S)
    try:
        assert holder.acquire(time.monotonic() + BOUND_S) is True
        wait_until(lambda: holder._nap, "the thread to nap")
        asker = Asker(newcomer)
        wait_until(holder.others_waiting, "the newcomer to queue")
        holder.release()
        assert asker.result() is True
        newcomer.release(hand_over=True)
    finally:
        holder.close()
        newcomer.close()
