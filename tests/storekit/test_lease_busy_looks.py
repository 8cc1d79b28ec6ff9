"""The lease's thread and writers that commit back to back in one process.

Each time the thread wakes it takes the GIL from the writers. While another process
queues it must look at the turn every IDLE_S (to pass on a turn the writers stop using);
while none does, a look every BUSY_LOOK_S is enough. Looking every IDLE_S regardless
woke it about 2,000 times a second during a write burst, and those wake-ups cost a
storekit write transaction more time than its Python code.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from storekit.backends.sqlite import writelock
from storekit.backends.sqlite.writelock import WriteLease
from tests.storekit.test_idle_handoff_hostile import BOUND_S, HOUR_S, Asker, wakeups

BURST_S = 1.0


def _burst(lease: WriteLease, seconds: float) -> int:
    """acquire/release back to back, as writers committing one after another; the sleep
    gives up the GIL as a statement does in SQLite."""
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert lease.acquire(time.monotonic() + BOUND_S) is True
        time.sleep(0)
        lease.release()
        n += 1
    return n


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="Linux /proc")
def test_a_write_burst_nobody_queues_behind_does_not_wake_the_thread_each_idle_s(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writelock, "MAX_SLICE_S", HOUR_S)
    monkeypatch.setattr(writelock, "ROUND_S", HOUR_S)
    lease = WriteLease(str(tmp_path / "x-storekit.lock"), HOUR_S)
    try:
        start = wakeups(lease._thread)
        _burst(lease, BURST_S)
        woke = wakeups(lease._thread) - start
        # At most one look per BUSY_LOOK_S, and one after the burst; every IDLE_S would be
        # four times that. (A loaded machine wakes the thread late, never early.)
        ceiling = BURST_S / writelock.BUSY_LOOK_S * 2
        assert woke < ceiling < BURST_S / writelock.IDLE_S / 2, woke
    finally:
        lease.close()


def test_a_process_queuing_during_a_burst_gets_the_turn_once_it_stops(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices of an hour: only the idle rule can pass the turn on, and it must see the
    newcomer that queued while the thread looked every BUSY_LOOK_S."""
    monkeypatch.setattr(writelock, "MAX_SLICE_S", HOUR_S)
    monkeypatch.setattr(writelock, "ROUND_S", HOUR_S)
    sidecar = str(tmp_path / "x-storekit.lock")
    busy, other = WriteLease(sidecar, HOUR_S), WriteLease(sidecar, HOUR_S)
    try:
        assert busy.acquire(time.monotonic() + BOUND_S) is True
        busy.release()
        stop = threading.Event()

        def write_until_stopped() -> None:
            while not stop.is_set():
                _burst(busy, 0.01)

        bursts = threading.Thread(target=write_until_stopped)
        bursts.start()
        try:
            asker = Asker(other)
            while not busy.others_waiting():
                time.sleep(0.001)
        finally:
            stop.set()
            bursts.join(BOUND_S)
        assert asker.result() is True  # the burst is over: its turn goes on
        other.release(hand_over=True)
    finally:
        busy.close()
        other.close()
