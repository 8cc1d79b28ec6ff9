"""WAL checkpoints, mostly outside the fair write turn.

Under fair hand-off, SQLite's automatic checkpoint would run inside the committer's turn
and stop every writer. So writers that take turns switch it off and, after each write
transaction, compare the WAL's length with the frames already checkpointed (read from the
wal-index header in `-shm`); past the threshold they checkpoint (PASSIVE) outside the turn
when another process waits, else in it, and copy the short tail left behind at a later
turn so the WAL can restart. Design and measurements: docs/checkpoints.md.
"""

from __future__ import annotations

import mmap
import os
import sqlite3
import struct
import threading
from collections.abc import Callable

# WalIndexHdr.mxFrame (frames in the WAL, offset 16) and WalCkptInfo.nBackfillAttempted
# (frames a checkpoint has started copying back, offset 128), native byte order, read in
# one call. Counting from the attempt rather than from the frames already copied keeps
# other writers from asking again while a checkpoint is still running.
_MX_FRAME = 16
_SPAN = struct.Struct("=I108xI")
_HEADER = 136  # two WalIndexHdr copies and the WalCkptInfo
RESTART_AFTER = 4  # thresholds of frames in the WAL before the in-turn tail restarts it


class Checkpointer:
    """Decides when the WAL needs a checkpoint and runs it without holding the write turn."""

    def __init__(self, path: str, pages: int, connect: Callable[[], sqlite3.Connection]) -> None:
        self._shm_path = shm_path(path)
        self._pages = pages
        self._restart_frames = pages * RESTART_AFTER
        self._connect = connect
        self._header: mmap.mmap | None = None  # the wal-index header, mapped read-only
        self._conn: sqlite3.Connection | None = None
        self._running = threading.Lock()  # one checkpoint per process at a time
        # A checkpoint ran outside the turn on a WAL long enough to restart: finish it in one.
        self.tail_pending = False
        # A reader's snapshot kept the last checkpoint from copying the WAL back: until
        # the WAL restarts, more checkpoints copy little, so they are not worth a hand-off.
        self.blocked = False
        self._frames = 0
        self.runs = 0

    def due(self) -> bool:
        """True when at least `pages` frames of the WAL are not yet being copied back."""
        if self._header is None:
            self._header = _attach(self._shm_path)
            if self._header is None:
                return False
        frames, attempted = _SPAN.unpack_from(self._header, _MX_FRAME)
        if frames < self._frames:
            self.blocked = False  # the WAL restarted
        self._frames = frames
        return int(frames) - int(attempted) >= self._pages

    def run(self, *, in_turn: bool) -> None:
        """A PASSIVE checkpoint; skipped if another thread of this process is running one.

        Errors are swallowed like those of SQLite's own automatic checkpoint: the commit
        that asked for it has already succeeded, and the next commit asks again. That
        includes failing to open the checkpoint connection (EMFILE: out of descriptors).
        """
        if not self._running.acquire(blocking=False):
            return
        try:
            if self._conn is None:
                self._conn = self._connect()
            busy, frames, copied = self._conn.execute(
                "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.runs += 1
            if busy:
                return  # another process is checkpointing: ask again at the next turn
            self.tail_pending = not in_turn and frames >= self._restart_frames
            self.blocked = frames - copied >= self._pages
        except Exception:  # see the docstring: never fail a write that committed
            pass
        finally:
            self._running.release()

    def after_fork(self, set_aside: list[sqlite3.Connection]) -> None:
        """In the child of os.fork(): a fresh lock; the connection is reopened when next
        needed, the old one closed unless a checkpoint was running in another thread
        (then it is set aside: closing would wait for that thread). The map stays valid."""
        busy = not self._running.acquire(blocking=False)
        self._running = threading.Lock()
        conn, self._conn = self._conn, None
        if conn is not None:
            if busy:
                set_aside.append(conn)
            else:
                conn.close()

    def close(self) -> None:
        """Close the checkpoint connection; the map stays until unregister()."""
        with self._running:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._header = None


# One read-only map of each -shm file per process. Closing any descriptor of a file drops
# all POSIX locks the process holds on it, SQLite's included (its shared "DMS" lock keeps
# other processes from truncating the file, and its WAL read and write locks keep writers
# apart). So every file-backed storekit Database registers its file, whether it maps the
# header or not, and the descriptor is closed only after the last of them has closed its
# connections. (A connection opened on the same file outside storekit, in the same process,
# would still lose its locks at that moment: SQLite's documented POSIX-lock hazard.) SQLite
# truncates the file only when nobody holds the DMS lock, so reading the map while a
# connection of this process is open cannot fault.
_users: dict[str, int] = {}  # -shm path -> registered Databases
_maps: dict[str, tuple[mmap.mmap | None, int]] = {}  # -shm path -> (map, descriptor)
_maps_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _maps_lock
    _maps_lock = threading.Lock()  # another thread may have held it at the fork


os.register_at_fork(after_in_child=_after_fork_in_child)


def shm_path(db_path: str) -> str:
    return os.path.realpath(db_path) + "-shm"  # one entry per file, however named


def register(db_path: str) -> None:
    with _maps_lock:
        key = shm_path(db_path)
        _users[key] = _users.get(key, 0) + 1


def unregister(db_path: str) -> None:
    """Call after the Database's connections are closed."""
    with _maps_lock:
        key = shm_path(db_path)
        _users[key] -= 1
        if _users[key]:
            return
        del _users[key]
        view, fd = _maps.pop(key, (None, -1))
    if view is not None:
        view.close()
    if fd >= 0:
        os.close(fd)


def _attach(path: str) -> mmap.mmap | None:
    with _maps_lock:
        view, fd = _maps.get(path, (None, -1))
        if view is not None:
            return view
        if fd < 0:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                return None  # not created yet: nothing written through the WAL
        if os.fstat(fd).st_size >= _HEADER:
            view = mmap.mmap(fd, _HEADER, access=mmap.ACCESS_READ)
        _maps[path] = (view, fd)  # a short file is being set up: keep the descriptor
        return view
