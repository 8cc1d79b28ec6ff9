"""atomic() and transaction edges a careless or unlucky caller reaches: a conflict caught
inside the block, odd retry counts, busy timeouts beyond what the databases can hold."""

from __future__ import annotations

import contextlib

import pytest

import storekit
from storekit import Database


def _raise_sqlstate(sqlstate: str) -> str:
    return f"DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '{sqlstate}'; END $$"


@pytest.mark.parametrize(("sqlstate", "cls"), [("40001", storekit.SerializationFailure),
                                               ("40P01", storekit.DeadlockDetected),
                                               ("55P03", storekit.BusyError)])
def test_a_caught_conflict_still_fails_the_commit_as_a_conflict(
        storekit_postgres_url: str, sqlstate: str, cls: type[storekit.StoreError]) -> None:
    """The server aborted the transaction for a reason a retry gets past; the caller caught
    the error (say, with `except StoreError: log`). The commit must raise that class, so
    the caller's retry loop, or atomic(), sees a retryable error, not a generic one."""
    with storekit.create_database(storekit_postgres_url) as db:
        db.exec("DROP TABLE IF EXISTS edges; CREATE TABLE edges (id int PRIMARY KEY, n int)")
        with pytest.raises(cls) as info, db.transaction() as tx:
            tx.run("INSERT INTO edges VALUES (1, 1)")
            with contextlib.suppress(storekit.StoreError):
                tx.exec(_raise_sqlstate(sqlstate))
        assert "nothing was committed" in str(info.value)
        assert isinstance(info.value.__cause__, cls)
        assert info.value.__cause__.__cause__ is not None  # the driver's error
        assert db.all("SELECT * FROM edges") == []

        calls: list[int] = []

        def fn(tx: storekit.Transaction) -> int:
            calls.append(1)
            tx.run("INSERT INTO edges VALUES (?, ?)", (len(calls), len(calls)))
            if len(calls) == 1:
                with contextlib.suppress(storekit.StoreError):
                    tx.exec(_raise_sqlstate(sqlstate))
            return len(calls)

        assert db.atomic(fn) == 2
        assert db.all("SELECT id FROM edges") == [{"id": 2}]
        db.exec("DROP TABLE edges")


def test_a_caught_ordinary_error_stays_operational(storekit_postgres_url: str) -> None:
    with storekit.create_database(storekit_postgres_url) as db:
        with (pytest.raises(storekit.OperationalError) as info, db.transaction() as tx,
              contextlib.suppress(storekit.StoreError)):
            tx.run("SELECT 1 / 0")
        assert not isinstance(info.value, (storekit.TransactionConflict, storekit.BusyError))


@pytest.mark.parametrize("retries", ["3", None, 1.5, True, -1])
def test_atomic_refuses_a_retry_count_that_is_not_a_count(store: Database,
                                                          retries: object) -> None:
    with pytest.raises(storekit.ConfigurationError, match="retries"):
        store.atomic(lambda tx: 1, retries=retries)  # type: ignore[arg-type]


def test_atomic_with_many_retries_keeps_retrying(store: Database,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The backoff's exponent must not overflow a float after ~1000 attempts."""
    import storekit.database

    monkeypatch.setattr(storekit.database, "RETRY_CAP_S", 0.0)  # no sleeping in the test
    calls: list[int] = []

    def fn(tx: storekit.Transaction) -> int:
        calls.append(1)
        if len(calls) <= 1100:
            raise storekit.SerializationFailure("injected")
        return len(calls)

    assert store.atomic(fn, retries=2000) == 1101


@pytest.mark.parametrize("value", [2**31, 10**12, 1.5, "100", True, -1])
def test_busy_timeout_beyond_what_the_databases_hold_is_refused(value: object) -> None:
    """Both backends keep it as a 32-bit int of ms: SQLite wrapped 2**31 to 0 ("fail at
    once"), PostgreSQL refused every connection and the pool reported an outage."""
    for make in (lambda: storekit.SqliteOptions(busy_timeout_ms=value),  # type: ignore[arg-type]
                 lambda: storekit.PoolOptions(busy_timeout_ms=value),  # type: ignore[arg-type]
                 lambda: storekit.create_memory_database(
                     busy_timeout_ms=value)):  # type: ignore[arg-type]
        with pytest.raises(storekit.ConfigurationError, match="busy_timeout_ms"):
            make()


def test_the_largest_busy_timeout_is_kept(tmp_path: object, storekit_postgres_url: str) -> None:
    most = 2**31 - 1
    with storekit.open_database(f"{tmp_path}/b.db", busy_timeout_ms=most) as db:
        assert db.get("PRAGMA busy_timeout") == {"timeout": most}
    with storekit.create_database(storekit_postgres_url, busy_timeout_ms=most) as db:
        assert db.get("SHOW lock_timeout") == {"lock_timeout": f"{most}ms"}


def test_agents_creating_the_same_table_together_all_succeed(store: Database) -> None:
    """create_table(if_not_exists=True) from several agents at start-up: on PostgreSQL the
    losers of the race failed with UniqueViolation (pg_type) although the table existed."""
    import threading

    from storekit.schema import Column, SearchSpec, Table

    errors: list[BaseException] = []
    for round_ in range(5):
        table = Table(f"race{round_}", [Column("id", "integer", primary_key=True),
                                        Column("body", "text")],
                      search=SearchSpec(["body"]))
        barrier = threading.Barrier(4)

        def create(table: Table = table, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                store.create_table(table)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=create) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        store.run(f"INSERT INTO race{round_} (id, body) VALUES (1, 'hello world')")
        assert store.search(f"race{round_}", "hello") != []
    assert errors == []
    with pytest.raises(storekit.StoreError):
        store.create_table(Table("race0", [Column("id", "integer")]), if_not_exists=False)


def test_agent_write_verify_flags_a_counter_that_differs_from_its_rows(tmp_path: object) -> None:
    """A step counter ahead of the committed result rows is as wrong as one behind."""
    from bench.harness.workloads import agent_write

    with storekit.open_database(f"{tmp_path}/v.db") as db:
        agent_write.setup(db, {})
        agent_write.prepare(db, 1, ["writer"])
        me = agent_write.agent_id(1, 0)
        for seq in range(2):
            db.run(agent_write.INSERT_RESULT, (1, me, seq, {}))
            db.run(agent_write.INSERT_LOG, (1, me, seq, "m"))
        db.run("UPDATE agents SET runs = 2 WHERE id = ?", (me,))
        assert agent_write.verify(db, 1, [])["lost"] == 0
        db.run("UPDATE agents SET runs = 3 WHERE id = ?", (me,))
        assert agent_write.verify(db, 1, [])["lost"] == 1
        db.run("UPDATE agents SET runs = 1 WHERE id = ?", (me,))
        assert agent_write.verify(db, 1, [])["lost"] == 1
