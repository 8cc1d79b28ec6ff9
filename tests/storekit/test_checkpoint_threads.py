"""The sync API on SQLite: a WAL checkpoint due while another thread of the process waits
for the writer runs outside the turn, in the committing thread, and the waiting threads
write meanwhile (a PASSIVE checkpoint does not block writers).

The first checkpoint outside the turn is held by an event, so whether the others commit
meanwhile is decided by the code, not by the machine's speed. Checkpoints in the turn
(nobody waiting) run as usual.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import storekit
from storekit import SqliteOptions
from storekit.backends.sqlite.checkpoint import Checkpointer

WAIT_S = 20.0  # a guard against hanging only


def test_threads_commit_while_one_copies_the_wal_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started, let_go = threading.Event(), threading.Event()
    run = Checkpointer.run

    def held_run(self: Checkpointer, *, in_turn: bool) -> None:
        if not in_turn and not started.is_set():
            started.set()
            let_go.wait(WAIT_S)
        run(self, in_turn=in_turn)

    monkeypatch.setattr(Checkpointer, "run", held_run)
    db = storekit.create_database(f"sqlite:///{tmp_path / 'c.db'}",
                                  sqlite=SqliteOptions(wal_autocheckpoint=10))
    db.exec("CREATE TABLE t (k INTEGER PRIMARY KEY, w INT, v TEXT)")
    committed: list[int] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            while not stop.is_set():
                with db.transaction() as tx:
                    rid = tx.run("INSERT INTO t (w, v) VALUES (?, ?)", (w, "x" * 2000)).last_id
                committed.append(rid)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    try:
        assert started.wait(WAIT_S), "no checkpoint ran outside the turn"
        during = len(committed)
        deadline = time.monotonic() + WAIT_S
        while len(committed) < during + 100 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert len(committed) >= during + 100, "the others did not write meanwhile"
        assert not let_go.is_set()
    finally:
        let_go.set()
        stop.set()
        for t in threads:
            t.join(WAIT_S)
    assert not errors
    rows = db.all("SELECT k FROM t ORDER BY k")
    assert [r["k"] for r in rows] == sorted(committed)
    assert db.get("PRAGMA integrity_check") == {"integrity_check": "ok"}
    db.close()
