"""Several OS processes writing one store: no lock errors, nothing lost."""

from __future__ import annotations

import multiprocessing

import storekit

PROCESSES = 4
TRANSACTIONS = 150


def agent(url: str, agent_id: int) -> tuple[int, int]:
    """Read-then-write transactions, the pattern that fails under deferred BEGIN."""
    errors = 0
    acknowledged = 0
    with storekit.create_database(url) as db:
        for i in range(TRANSACTIONS):
            try:
                with db.transaction() as tx:
                    row = tx.get("SELECT COUNT(*) AS c FROM results WHERE agent = ?", (agent_id,))
                    assert row is not None
                    tx.run("INSERT INTO results (agent, seq, seen) VALUES (?, ?, ?)",
                           (agent_id, i, row["c"]))
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
