"""Checkpoints under fair hand-off: read from the real wal-index, and the WAL restarts."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import storekit
from storekit import aio
from storekit.backends.sqlite import checkpoint
from storekit.backends.sqlite.checkpoint import Checkpointer
from tests.helpers import start_holder


def _wal_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE t (x TEXT)")
    return conn


def test_due_follows_the_frames_sqlite_wrote_and_copied_back(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    conn = _wal_db(path)
    checkpoint.register(str(path))
    checkpoints = Checkpointer(str(path), 20, lambda: sqlite3.connect(path))
    try:
        for _ in range(5):
            conn.execute("INSERT INTO t VALUES (?)", ("x" * 3000,))
        assert not checkpoints.due()  # a handful of frames
        while _mx_frame(path) < 25:  # past the threshold, short of the restart size
            conn.execute("INSERT INTO t VALUES (?)", ("x" * 3000,))
        assert checkpoints.due()
        checkpoints.run(in_turn=False)
        assert checkpoints.runs == 1
        assert not checkpoints.due()  # every frame copied back
        assert not checkpoints.tail_pending  # the WAL is still short: it may keep growing
    finally:
        checkpoints.close()
        conn.close()
        checkpoint.unregister(str(path))


def test_the_tail_is_asked_for_once_the_wal_is_long_enough_to_restart(tmp_path: Path) -> None:
    path = tmp_path / "long.db"
    conn = _wal_db(path)
    checkpoint.register(str(path))
    checkpoints = Checkpointer(str(path), 5, lambda: sqlite3.connect(path))
    restart = 5 * checkpoint.RESTART_AFTER
    try:
        while _mx_frame(path) < restart - 10:
            conn.execute("INSERT INTO t VALUES (?)", ("x" * 3000,))
        checkpoints.run(in_turn=False)
        assert not checkpoints.tail_pending
        # The next write restarts the WAL (nobody wrote during that checkpoint); it then
        # grows past the restart size.
        while _mx_frame(path) < restart:
            conn.execute("INSERT INTO t VALUES (?)", ("x" * 3000,))
        checkpoints.run(in_turn=False)
        assert checkpoints.tail_pending
        holder = start_holder(CHECKPOINTING, str(path) + "-shm")
        try:
            checkpoints.run(in_turn=True)  # SQLITE_BUSY: another process is checkpointing
            assert checkpoints.tail_pending  # so the next turn asks again
        finally:
            holder.kill()
            holder.communicate()
        checkpoints.run(in_turn=True)
        assert not checkpoints.tail_pending
    finally:
        checkpoints.close()
        conn.close()
        checkpoint.unregister(str(path))


# Holds the wal-index's checkpointer lock (byte 121 of the -shm file, sqlite.org/walformat.html)
# as a checkpoint in another process would. POSIX locks belong to a process, so it has to be
# another one.
CHECKPOINTING = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 121)
print("holding", flush=True)
time.sleep(60)
"""


def test_a_fresh_file_is_not_due(tmp_path: Path) -> None:
    checkpoints = Checkpointer(str(tmp_path / "none.db"), 1, lambda: sqlite3.connect(":memory:"))
    assert not checkpoints.due()
    checkpoints.close()


def _mx_frame(path: Path) -> int:
    return int.from_bytes(Path(str(path) + "-shm").read_bytes()[16:20], sys.byteorder)


def test_the_tail_checkpoint_lets_the_next_commit_restart_the_wal(tmp_path: Path) -> None:
    """What the design relies on: frames written during an outside-the-turn checkpoint
    keep the WAL growing until a checkpoint copies them too."""
    path = tmp_path / "tail.db"
    conn = _wal_db(path)
    checkpoint.register(str(path))
    checkpoints = Checkpointer(str(path), 10, lambda: sqlite3.connect(path))
    try:
        for _ in range(20):
            conn.execute("INSERT INTO t VALUES (?)", ("x" * 3000,))
        checkpoints.run(in_turn=False)  # the bulk
        for _ in range(3):  # others write meanwhile
            conn.execute("INSERT INTO t VALUES (?)", ("y" * 3000,))
        grown = _mx_frame(path)
        conn.execute("INSERT INTO t VALUES ('z')")
        assert _mx_frame(path) > grown  # appended: the WAL did not restart
        checkpoints.run(in_turn=True)  # the tail
        conn.execute("INSERT INTO t VALUES ('z')")
        assert _mx_frame(path) < grown  # restarted from the beginning
    finally:
        checkpoints.close()
        conn.close()
        checkpoint.unregister(str(path))


QUEUED = """
import sys
from storekit.backends.sqlite.writelock import TicketQueue
q = TicketQueue(sys.argv[1])
q.wait_turn()
q.end_turn()
"""
PAGES = 10  # wal_autocheckpoint of the Database under test


class TailScene:
    """What the tail is for, each step fixed by locks and the data, not by timing.

    The WAL restarts only once a checkpoint has copied every frame in it. A checkpoint run
    outside the turn leaves the frames written meanwhile; on a WAL long enough to restart,
    the process copies that short tail at its next turn. If another process is
    checkpointing then, the tail must be asked for again, not dropped: dropped, nothing
    copies those frames until a whole threshold more is written, and under contention
    the WAL kept growing (docs/checkpoints.md). Here another process queues for the turn
    (so the checkpoint runs outside it), a reader's snapshot keeps it from copying the
    last frames (as writes made meanwhile would), and a third process holds the
    checkpointer lock (as its checkpoint would).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sidecar = Path(str(path) + "-storekit.lock")
        self.plain = _wal_db(path)  # runs no checkpoints
        self.reader = sqlite3.connect(path, isolation_level=None)
        self.options = storekit.SqliteOptions(wal_autocheckpoint=PAGES)
        self.pinned = self.grown = 0  # frames: pinned by the reader; before a write
        self.queued: subprocess.Popen[bytes] | None = None
        self.holder: subprocess.Popen[str] | None = None

    def long_wal_pinned(self) -> None:
        """A WAL long enough to restart, its frames held by a reader's snapshot."""
        while _mx_frame(self.path) < PAGES * checkpoint.RESTART_AFTER:
            self.plain.execute("INSERT INTO t VALUES (?)", ("x" * 3000,))
        self.reader.execute("BEGIN")
        self.reader.execute("SELECT COUNT(*) FROM t").fetchone()
        self.pinned = _mx_frame(self.path)

    def queue_another_process(self) -> None:
        """Call during this process's turn: returns once another process waits for it."""
        drawn = _tickets_drawn(self.sidecar)
        self.queued = subprocess.Popen([sys.executable, "-c", QUEUED, str(self.sidecar)])
        deadline = time.monotonic() + 60  # must not hang; not a speed requirement
        while _tickets_drawn(self.sidecar) == drawn:
            assert time.monotonic() < deadline, "the other process never queued"
            time.sleep(0.005)

    def tail_left(self) -> None:
        """After the commit that handed the turn over: the outside checkpoint copied only
        the reader's frames, so the WAL cannot restart until a checkpoint copies the rest."""
        assert self.queued is not None
        assert self.queued.wait(60) == 0
        self.reader.execute("COMMIT")
        shm = Path(str(self.path) + "-shm").read_bytes()
        backfilled = int.from_bytes(shm[96:100], sys.byteorder)  # WalCkptInfo.nBackfill
        assert backfilled == self.pinned < _mx_frame(self.path)
        self.holder = start_holder(CHECKPOINTING, str(self.path) + "-shm")
        self.grown = _mx_frame(self.path)

    def tail_found_busy(self) -> None:
        """After a write while another process held the checkpointer lock."""
        assert _mx_frame(self.path) > self.grown  # appended: nothing could be copied
        self.release_holder()
        self.grown = _mx_frame(self.path)

    def restarted(self) -> None:
        """After the next write: its turn copied the tail first, so the WAL restarted."""
        assert _mx_frame(self.path) < self.grown, "the WAL did not restart: tail dropped"

    def release_holder(self) -> None:
        if self.holder is not None:
            self.holder.kill()
            self.holder.communicate()
            self.holder = None

    def close(self) -> None:
        self.release_holder()
        self.reader.close()
        self.plain.close()


def test_a_tail_that_finds_another_process_checkpointing_runs_at_the_next_turn(
        tmp_path: Path) -> None:
    scene = TailScene(tmp_path / "tail.db")
    try:
        with storekit.open_database(scene.path, sqlite=scene.options) as db:
            scene.long_wal_pinned()
            with db.transaction() as tx:
                tx.run("INSERT INTO t VALUES ('mine')")
                scene.queue_another_process()
            scene.tail_left()
            db.run("INSERT INTO t VALUES ('busy')")
            scene.tail_found_busy()
            db.run("INSERT INTO t VALUES ('next')")
            scene.restarted()
            assert db.get("SELECT COUNT(*) AS n FROM t WHERE length(x) < 5") == {"n": 3}
    finally:
        scene.close()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_storekit_aio_runs_a_tail_found_busy_at_the_next_turn_too(
        tmp_path: Path, anyio_backend: str) -> None:
    scene = TailScene(tmp_path / "tail.db")
    try:
        async with await aio.open_database(scene.path, sqlite=scene.options) as db:
            scene.long_wal_pinned()
            async with db.transaction() as tx:
                await tx.run("INSERT INTO t VALUES ('mine')")
                scene.queue_another_process()
            scene.tail_left()
            await db.run("INSERT INTO t VALUES ('busy')")
            scene.tail_found_busy()
            await db.run("INSERT INTO t VALUES ('next')")
            scene.restarted()
            assert await db.get("SELECT COUNT(*) AS n FROM t WHERE length(x) < 5") == {"n": 3}
    finally:
        scene.close()


def _tickets_drawn(sidecar: Path) -> int:
    raw = sidecar.read_bytes()[:8] if sidecar.exists() else b""
    return int.from_bytes(raw, "little")


def test_exclusive_locking_mode_keeps_sqlites_own_checkpoint(tmp_path: Path) -> None:
    options = storekit.SqliteOptions(wal_autocheckpoint=20,
                                     extra_pragmas={"locking_mode": "EXCLUSIVE"})
    path = tmp_path / "exclusive.db"
    with storekit.open_database(path, sqlite=options) as db:
        db.exec("CREATE TABLE t (x TEXT)")
        for _ in range(200):
            db.run("INSERT INTO t VALUES (?)", ("x" * 3000,))
        assert db.settings["wal_autocheckpoint"] == 20
        # SQLite's own checkpoint kept restarting the WAL: far below 200 pages of frames.
        assert Path(str(path) + "-wal").stat().st_size < 100 * 4096


PROBE = """
import fcntl, struct, sys
with open(sys.argv[1], "rb") as f:
    # SQLite's "DMS" byte of the -shm file: a shared lock while any connection uses it.
    probe = struct.pack("hhqqi", fcntl.F_WRLCK, 0, 128, 1, 0)
    kind = struct.unpack("hhqqi", fcntl.fcntl(f, fcntl.F_GETLK, probe))[0]
print("locked" if kind != fcntl.F_UNLCK else "free")
"""


def _dms(path: Path) -> str:
    shm = str(path) + "-shm"
    return subprocess.run([sys.executable, "-c", PROBE, shm], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.parametrize("second_fair", [True, False])
def test_closing_one_database_keeps_sqlites_locks_for_another(tmp_path: Path,
                                                              second_fair: bool) -> None:
    """Closing any descriptor of the -shm file drops the process's POSIX locks on it,
    SQLite's included: the wal-index map must not close one while a connection is open."""
    path = tmp_path / "two.db"
    _wal_db(path).close()
    first = storekit.open_database(path)
    second = storekit.open_database(tmp_path / "." / "two.db",  # another spelling
                                    sqlite=storekit.SqliteOptions(fair_locking=second_fair))
    for db in (first, second):
        db.run("INSERT INTO t VALUES ('x')")  # each maps the wal-index header
    assert _dms(path) == "locked"
    first.close()
    assert _dms(path) == "locked"  # still held for the second Database's connections
    second.run("INSERT INTO t VALUES ('y')")
    assert second.get("SELECT COUNT(*) AS n FROM t") == {"n": 3}
    second.close()


def test_a_checkpoint_held_back_by_a_reader_is_marked_blocked_until_the_wal_restarts(
        tmp_path: Path) -> None:
    path = tmp_path / "pinned.db"
    conn = _wal_db(path)
    checkpoint.register(str(path))
    checkpoints = Checkpointer(str(path), 10, lambda: sqlite3.connect(path))
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("INSERT INTO t VALUES ('seed')")
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM t").fetchone()  # a snapshot pins the WAL
        for _ in range(20):
            conn.execute("INSERT INTO t VALUES (?)", ("x" * 3000,))
        assert checkpoints.due()
        checkpoints.run(in_turn=False)
        assert checkpoints.blocked  # nothing past the reader's snapshot could be copied
        reader.execute("COMMIT")
        checkpoints.run(in_turn=True)  # now everything is copied back
        assert not checkpoints.blocked
        conn.execute("INSERT INTO t VALUES ('restart')")  # the WAL starts over
        assert not checkpoints.due()
    finally:
        reader.close()
        checkpoints.close()
        conn.close()
        checkpoint.unregister(str(path))
