"""Several OS processes writing one store: no lock errors, nothing lost."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
from pathlib import Path

import storekit

PROCESSES = 4
TRANSACTIONS = 150
# Retries without a practical bound: the number of conflicts depends on the machine's load;
# the property (every step acknowledged once, nothing lost, no lock error) does not.
UNBOUNDED = 1_000_000


def agent(url: str, agent_id: int) -> tuple[int, int]:
    """Read-then-write transactions, the pattern that fails under deferred BEGIN."""
    errors = 0
    acknowledged = 0
    with storekit.create_database(url) as db:
        def step(tx: storekit.Transaction, i: int) -> None:
            row = tx.get("SELECT COUNT(*) AS c FROM results WHERE agent = ?", (agent_id,))
            assert row is not None
            tx.run("INSERT INTO results (agent, seq, seen) VALUES (?, ?, ?)",
                   (agent_id, i, row["c"]))

        for i in range(TRANSACTIONS):
            try:
                # SERIALIZABLE on PostgreSQL can report a conflict here (its predicate locks
                # cover index pages, not rows): atomic() re-runs the step.
                db.atomic(step, i, retries=UNBOUNDED)
                acknowledged += 1
            except storekit.StoreError:
                errors += 1
    return acknowledged, errors


def test_processes_do_read_then_write_without_lock_errors(store_url: str) -> None:
    with storekit.create_database(store_url) as db:
        db.exec("CREATE TABLE results (agent INTEGER, seq INTEGER, seen INTEGER,"
                " PRIMARY KEY (agent, seq))")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(PROCESSES) as pool:
        outcomes = pool.starmap(agent, [(store_url, n) for n in range(PROCESSES)])
    assert [errors for _, errors in outcomes] == [0] * PROCESSES
    assert sum(ack for ack, _ in outcomes) == PROCESSES * TRANSACTIONS
    with storekit.create_database(store_url) as db:
        rows = db.all("SELECT agent, seq, seen FROM results ORDER BY agent, seq")
        if db.backend == "sqlite":
            assert db.get("PRAGMA integrity_check") == {"integrity_check": "ok"}
    assert len(rows) == PROCESSES * TRANSACTIONS
    # Each agent read its own count before writing: seen must run 0, 1, 2, ... per agent.
    for n in range(PROCESSES):
        assert [r["seen"] for r in rows if r["agent"] == n] == list(range(TRANSACTIONS))



def open_fresh(path: str, start: multiprocessing.synchronize.Barrier,
               out: multiprocessing.Queue[str], rounds: int) -> None:
    """Open a file at the same moment as the others, write once, close.

    The first rounds race to create each file; later ones open it while another
    process's close (the last connection checkpoints and removes the WAL) is under way.
    """
    try:
        for r in range(rounds):
            start.wait(60)
            with storekit.create_database(f"sqlite:///{path}.{r % 3}") as db:
                db.exec("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
                db.run("INSERT INTO t VALUES (?)", (r,))
        out.put("ok")
    except Exception as exc:
        start.abort()  # the others would wait at the barrier for ever
        out.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    # Switching a fresh file to WAL needs an exclusive lock, and SQLite answers a
    # second process racing for it with "database is locked" without waiting.
    rounds, procs = 60, 6
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(procs)
    out: multiprocessing.Queue[str] = ctx.Queue()
    path = str(tmp_path / "fresh.db")
    workers = [ctx.Process(target=open_fresh, args=(path, start, out, rounds))
               for _ in range(procs)]
    for w in workers:
        w.start()
    outcomes = [out.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(10)
    assert outcomes == ["ok"] * procs
    for r in range(3):
        with storekit.open_database(f"{path}.{r}") as db:
            assert db.get("SELECT COUNT(*) AS n FROM t") == {"n": procs * rounds // 3}
            assert db.get("PRAGMA journal_mode") == {"journal_mode": "wal"}
