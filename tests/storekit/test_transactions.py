"""Same code, same result: serializable transactions, typed conflicts, atomic() retries."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import storekit
from storekit import Database

WORKERS, STEPS = 4, 50
# Retries without a practical bound: how many conflicts a run meets depends on the machine's
# load, the property does not (no lost update, every acknowledged increment present).
UNBOUNDED = 1_000_000


def _counter(db: Database) -> None:
    db.exec("CREATE TABLE counters (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
    db.run("INSERT INTO counters (id, n) VALUES (1, 0)")


def _increment(tx: storekit.Transaction) -> None:
    n = tx.get("SELECT n FROM counters WHERE id = ?", (1,))["n"]  # type: ignore[index]
    tx.run("UPDATE counters SET n = ? WHERE id = ?", (n + 1, 1))


def _plain(db: Database, outcomes: Counter[str]) -> None:
    for _ in range(STEPS):
        try:
            with db.transaction() as tx:
                _increment(tx)
        except (storekit.TransactionConflict, storekit.BusyError) as exc:
            outcomes[type(exc).__name__] += 1
        else:
            outcomes["committed"] += 1


def _threads(target: Any, *args: Any) -> None:
    threads = [threading.Thread(target=target, args=args) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_atomic_counter_threads_loses_nothing(store: Database) -> None:
    _counter(store)

    acked: list[None] = []

    def work() -> None:
        for _ in range(STEPS):
            store.atomic(_increment, retries=UNBOUNDED)
            acked.append(None)

    _threads(work)
    assert len(acked) == WORKERS * STEPS
    assert store.get("SELECT n FROM counters")["n"] == WORKERS * STEPS  # type: ignore[index]


def test_plain_transactions_fail_loudly_never_silently(store: Database) -> None:
    _counter(store)
    outcomes: Counter[str] = Counter()
    _threads(_plain, store, outcomes)
    final = store.get("SELECT n FROM counters")["n"]  # type: ignore[index]
    assert sum(outcomes.values()) == WORKERS * STEPS
    assert final == outcomes["committed"], outcomes


def test_read_committed_is_the_callers_choice(store: Database, store_url: str) -> None:
    """The weaker level is available; at it the same code may lose updates silently."""
    _counter(store)
    outcomes: Counter[str] = Counter()
    with storekit.create_database(store_url, isolation="read committed") as weak:
        _threads(_plain, weak, outcomes)
        final = weak.get("SELECT n FROM counters")["n"]  # type: ignore[index]
    assert outcomes["committed"] == WORKERS * STEPS  # no conflict is ever raised
    if store.backend == "sqlite":
        assert final == WORKERS * STEPS  # every level is serializable there
    else:
        assert final <= WORKERS * STEPS


PROCESS = """
import sys, storekit
db = storekit.create_database(sys.argv[1])
mode = sys.argv[2]
def inc(tx):
    n = tx.get("SELECT n FROM counters WHERE id = ?", (1,))["n"]
    tx.run("UPDATE counters SET n = ? WHERE id = ?", (n + 1, 1))
committed = failed = 0
for _ in range(int(sys.argv[3])):
    if mode == "atomic":
        db.atomic(inc, retries=int(sys.argv[4]))
        committed += 1
        continue
    try:
        with db.transaction() as tx:
            inc(tx)
    except (storekit.TransactionConflict, storekit.BusyError):
        failed += 1
    else:
        committed += 1
print(committed, failed)
db.close()
"""


@pytest.mark.parametrize("mode", ["atomic", "plain"])
def test_counter_processes(store_url: str, tmp_path: Path, mode: str) -> None:
    with storekit.create_database(store_url) as db:
        _counter(db)
    script = tmp_path / "inc.py"
    script.write_text(PROCESS)
    procs = [subprocess.Popen([sys.executable, str(script), store_url, mode, str(STEPS),
                               str(UNBOUNDED)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(WORKERS)]
    committed = failed = 0
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        c, f = map(int, out.split())
        committed, failed = committed + c, failed + f
    with storekit.create_database(store_url) as db:
        final = db.get("SELECT n FROM counters")["n"]  # type: ignore[index]
    assert committed + failed == WORKERS * STEPS
    assert final == committed
    if mode == "atomic":
        assert final == WORKERS * STEPS


def test_write_skew_cannot_commit_twice(store: Database) -> None:
    """Two doctors on call; each goes off call if the other is on. One must stay on."""
    store.exec("CREATE TABLE doctors (name TEXT PRIMARY KEY, on_call INTEGER NOT NULL)")
    store.run_many("INSERT INTO doctors VALUES (?, ?)", [("alice", 1), ("bob", 1)])
    both_read = threading.Barrier(2, timeout=2)
    outcomes: list[str] = []

    def leave(me: str, other: str) -> None:
        try:
            with store.transaction() as tx:
                row = tx.get("SELECT on_call FROM doctors WHERE name = ?", (other,))
                # On SQLite the other is still waiting at BEGIN IMMEDIATE: the wait breaks.
                with contextlib.suppress(threading.BrokenBarrierError):
                    both_read.wait()
                if row and row["on_call"]:
                    tx.run("UPDATE doctors SET on_call = 0 WHERE name = ?", (me,))
            outcomes.append("committed")
        except (storekit.TransactionConflict, storekit.BusyError) as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=leave, args=pair)
               for pair in (("alice", "bob"), ("bob", "alice"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    on_call = store.get("SELECT SUM(on_call) AS n FROM doctors")["n"]  # type: ignore[index]
    assert on_call >= 1, outcomes


def test_conflicts_are_typed(storekit_postgres_url: str) -> None:
    assert issubclass(storekit.SerializationFailure, storekit.TransactionConflict)
    assert issubclass(storekit.DeadlockDetected, storekit.TransactionConflict)
    assert issubclass(storekit.TransactionConflict, storekit.StoreError)
    with storekit.create_database(storekit_postgres_url) as db:
        for sqlstate, cls in (("40001", storekit.SerializationFailure),
                              ("40P01", storekit.DeadlockDetected),
                              ("55P03", storekit.BusyError)):
            with pytest.raises(cls) as info:
                db.exec(f"DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '{sqlstate}'; END $$")
            assert info.value.__cause__ is not None


def test_postgres_transactions_are_serializable_by_default(storekit_postgres_url: str) -> None:
    with storekit.create_database(storekit_postgres_url) as db:
        def level(**kw: Any) -> str:
            with db.transaction(**kw) as tx:
                return tx.get("SHOW transaction_isolation")["transaction_isolation"]  # type: ignore[index]

        assert level() == "serializable"
        assert level(readonly=True) == "serializable"
        assert level(isolation="read committed") == "read committed"
        assert level(isolation="REPEATABLE_READ") == "repeatable read"
    with storekit.create_database(storekit_postgres_url, isolation="read committed") as db, \
            db.transaction() as tx:
        assert tx.isolation == "read committed"
        row = tx.get("SHOW transaction_isolation")
        assert row == {"transaction_isolation": "read committed"}


def test_isolation_names_are_checked(store: Database) -> None:
    with pytest.raises(storekit.ConfigurationError, match="snapshot"):
        store.transaction(isolation="snapshot")
    with pytest.raises(storekit.ConfigurationError, match="isolation"):
        storekit.create_database(store.url if store.backend == "sqlite" else "sqlite://:memory:",
                                 isolation="chaos")
    with store.transaction(isolation="read committed") as tx:
        assert tx.isolation == "read committed"


def test_nesting_rules(store: Database) -> None:
    store.exec("CREATE TABLE t (x INTEGER)")
    with store.transaction():
        with pytest.raises(storekit.ConfigurationError, match="read-only"), \
                store.transaction(readonly=True):
            pass
        with pytest.raises(storekit.ConfigurationError, match="isolation"), \
                store.transaction(isolation="read committed"):
            pass
        with store.transaction(isolation="serializable") as inner:  # the same level is fine
            inner.run("INSERT INTO t VALUES (1)")
    assert store.get("SELECT COUNT(*) AS n FROM t")["n"] == 1  # type: ignore[index]


def test_atomic_returns_retries_and_gives_up(store: Database) -> None:
    store.exec("CREATE TABLE t (x INTEGER)")
    calls: list[int] = []

    def flaky(tx: storekit.Transaction, value: int, *, fail: int) -> int:
        calls.append(value)
        tx.run("INSERT INTO t VALUES (?)", (value,))
        if len(calls) <= fail:
            raise storekit.SerializationFailure("injected conflict")
        return value * 2

    assert store.atomic(flaky, 21, fail=2) == 42
    assert len(calls) == 3
    assert store.all("SELECT x FROM t") == [{"x": 21}]  # the failed attempts rolled back
    calls.clear()
    with pytest.raises(storekit.SerializationFailure, match="after 3 attempts"):
        store.atomic(flaky, 1, fail=99, retries=2)
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(ZeroDivisionError):  # anything else is not retried
        store.atomic(lambda tx: 1 / 0)
    with pytest.raises(storekit.ConfigurationError):
        store.atomic(flaky, 1, fail=0, retries=-1)


def test_atomic_inside_a_transaction_runs_once_as_a_savepoint(store: Database) -> None:
    store.exec("CREATE TABLE t (x INTEGER)")
    calls: list[int] = []

    def conflict(tx: storekit.Transaction) -> None:
        calls.append(1)
        tx.run("INSERT INTO t VALUES (2)")
        raise storekit.SerializationFailure("injected")

    with store.transaction() as tx:
        tx.run("INSERT INTO t VALUES (1)")
        with pytest.raises(storekit.SerializationFailure):
            store.atomic(conflict)
    assert calls == [1]
    assert store.all("SELECT x FROM t") == [{"x": 1}]


def test_blocked_postgres_update_raises_busy(storekit_postgres_url: str) -> None:
    with storekit.create_database(storekit_postgres_url, busy_timeout_ms=1000) as db:
        db.exec("DROP TABLE IF EXISTS locked; CREATE TABLE locked (id int PRIMARY KEY, v int);"
                "INSERT INTO locked VALUES (1, 0)")
        with db.transaction() as holder:
            holder.run("UPDATE locked SET v = 1 WHERE id = 1")
            tries: list[None] = []

            def once(tx: storekit.Transaction) -> None:
                tries.append(None)
                tx.run("UPDATE locked SET v = 3 WHERE id = 1")

            for attempt in (lambda: db.run("UPDATE locked SET v = 2 WHERE id = 1"),
                            lambda: db.atomic(once, retries=0)):
                result: list[BaseException] = []

                def blocked(attempt: Any = attempt, result: list[BaseException] = result) -> None:
                    try:
                        attempt()
                    except BaseException as exc:
                        result.append(exc)

                t0 = time.monotonic()
                worker = threading.Thread(target=blocked)
                worker.start()
                worker.join(timeout=30)
                elapsed = time.monotonic() - t0
                assert not worker.is_alive()
                assert isinstance(result[0], storekit.BusyError), result
                assert isinstance(result[0].__cause__, Exception)
                # It waited the 1 s asked for (a lock wait is never shorter) and not the 5 s
                # default; how much longer than 1 s depends on the machine's load. That
                # retries=0 means one attempt is counted, not timed.
                assert 0.9 <= elapsed < 5.0
            assert len(tries) == 1
        assert db.get("SELECT v FROM locked")["v"] == 1  # type: ignore[index]
        db.exec("DROP TABLE locked")


def test_for_update_runs_on_both(store: Database) -> None:
    _counter(store)
    with store.transaction(isolation="read committed") as tx:
        row = tx.get("SELECT n FROM counters WHERE id = ?" + store.dialect.for_update(), (1,))
        assert row == {"n": 0}


def test_lock_timeout_survives_a_session_reset(storekit_postgres_url: str) -> None:
    """A caller's SET lock_timeout is undone when the connection goes back to the pool,
    and storekit's own bound comes back with it."""
    pool = storekit.PoolOptions(min_size=1, max_size=1)
    with storekit.create_database(storekit_postgres_url, pool=pool, busy_timeout_ms=300) as db:
        db.run("SET lock_timeout = 0")  # would wait forever if it stayed
        assert db.get("SHOW lock_timeout") == {"lock_timeout": "300ms"}
