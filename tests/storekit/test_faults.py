"""Faults with real processes and servers: kills, restarts, exhaustion, locks, bad files."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import storekit
from tests.helpers import start_holder

WRITER = """
import sys, storekit
db = storekit.open_database(sys.argv[1])
name = sys.argv[2]
seq = 0
errors = 0
deadline = float(sys.argv[3]) if len(sys.argv) > 3 else None
import time
while deadline is None or time.time() < deadline:
    try:
        with db.transaction() as tx:
            tx.get("SELECT COUNT(*) AS c FROM acks WHERE writer = ?", (name,))
            tx.run("INSERT INTO acks (writer, seq, pad) VALUES (?, ?, ?)", (name, seq, "x" * 500))
    except storekit.StoreError as exc:
        errors += 1
        print("ERROR", type(exc).__name__, exc, flush=True)
        continue
    print(seq, flush=True)  # printed only after the commit returned: acknowledged
    seq += 1
print("DONE", errors, flush=True)
"""


def test_sigkill_mid_transaction_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "kill.db"
    with storekit.open_database(path) as db:
        db.exec("CREATE TABLE acks (writer TEXT, seq INTEGER, pad TEXT, PRIMARY KEY (writer, seq))")
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    deadline = time.time() + 600
    steady = [subprocess.Popen([sys.executable, str(script), str(path), f"steady{i}",
                                str(deadline)], stdout=subprocess.PIPE, text=True)
              for i in range(2)]
    rng = random.Random(7)
    acked: dict[str, set[int]] = {}
    try:
        for k in range(50):
            name = f"victim{k}"
            proc = subprocess.Popen([sys.executable, str(script), str(path), name],
                                    stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            first = proc.stdout.readline()  # wait until it has committed at least once
            assert first.strip() == "0", first
            time.sleep(rng.uniform(0.0, 0.05))
            proc.send_signal(signal.SIGKILL)
            rest, _ = proc.communicate()
            lines = [first, *rest.splitlines()]
            acked[name] = {int(x) for x in lines if x.strip().isdigit()}
    finally:
        for p in steady:
            p.terminate()
    outputs = [p.communicate()[0] for p in steady]
    with storekit.open_database(path) as db:
        assert db.get("PRAGMA integrity_check") == {"integrity_check": "ok"}
        for name, seqs in acked.items():
            found = {r["seq"] for r in db.all("SELECT seq FROM acks WHERE writer = ?", (name,))}
            assert seqs <= found, f"{name} lost {sorted(seqs - found)[:5]}"
        for i, out in enumerate(outputs):
            assert "ERROR" not in out, out[-500:]
            seqs = {int(x) for x in out.splitlines() if x.strip().isdigit()}
            assert seqs, "steady writer made no progress"
            found = {r["seq"] for r in db.all("SELECT seq FROM acks WHERE writer = ?",
                                              (f"steady{i}",))}
            assert seqs <= found


def test_postgres_restart_during_a_workload(storekit_postgres_server: Any) -> None:
    if not hasattr(storekit_postgres_server, "stop"):
        pytest.skip("needs a local server this test can restart")
    server = storekit_postgres_server
    db = storekit.create_database(server.url, pool=storekit.PoolOptions(min_size=2, max_size=4,
                                                                       timeout=10))
    db.exec("DROP TABLE IF EXISTS outage; CREATE TABLE outage (id bigint PRIMARY KEY)")
    acked: list[int] = []
    errors: list[tuple[float, str]] = []
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            started = time.monotonic()
            try:
                db.run("INSERT INTO outage (id) VALUES (?)", (n,))
                acked.append(n)
            except storekit.DatabaseUnavailable as exc:
                errors.append((time.monotonic() - started, str(exc)))
                time.sleep(0.05)
            except storekit.StoreError as exc:  # anything else is a failure of this test
                errors.append((-1.0, f"{type(exc).__name__}: {exc}"))

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.5)
        server.stop()
        time.sleep(1.5)
        during = len(acked)
        server.start()
        back = time.monotonic()
        while len(acked) == during and time.monotonic() - back < 15:
            time.sleep(0.05)
        recovered_after = time.monotonic() - back
        time.sleep(0.3)
    finally:
        stop.set()
        t.join(30)
    assert errors, "the outage was not noticed"
    assert all(took >= 0 for took, _ in errors), errors[:3]
    assert max(took for took, _ in errors) < 5, "a call hung instead of failing promptly"
    assert all("***" in msg or "@" not in msg for _, msg in errors)
    assert recovered_after < 5, f"the pool took {recovered_after:.1f} s to recover"
    rows = {r["id"] for r in db.all("SELECT id FROM outage")}
    assert set(acked) <= rows
    db.close()


def test_pool_exhaustion_times_out_and_dirty_connections_are_reset(store_url: str) -> None:
    if store_url.startswith("sqlite"):
        pytest.skip("connection pools are PostgreSQL's")
    db = storekit.create_database(store_url, pool=storekit.PoolOptions(min_size=1, max_size=2,
                                                                      timeout=0.5))
    db.exec("CREATE TABLE dirty (x int)")
    held = [db._backend.begin(readonly=False) for _ in range(2)]
    started = time.monotonic()
    with pytest.raises(storekit.PoolTimeout, match=r"0\.5 s"):
        db.get("SELECT 1 AS one")
    assert 0.4 < time.monotonic() - started < 5
    # Hand one back mid-transaction, with an uncommitted row: the pool must roll it back.
    held[0].run("INSERT INTO dirty VALUES (1)")
    db._backend._pool.putconn(held[0].conn)  # type: ignore[attr-defined]
    db._backend.finish(held[1], commit=False)
    for _ in range(4):
        row = db.get("SELECT COUNT(*) AS c, now() = statement_timestamp() AS fresh FROM dirty")
        assert row == {"c": 0, "fresh": True}  # no open transaction left behind
    db.close()


EXCLUSIVE_HOLDER = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN EXCLUSIVE")
c.execute("INSERT INTO t VALUES (1)")
print("holding", flush=True)
time.sleep(30)
"""


def test_exclusive_lock_from_another_process_gives_busy_error(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    with storekit.open_database(path) as db:
        db.exec("CREATE TABLE t (x)")
    holder = start_holder(EXCLUSIVE_HOLDER, path)
    try:
        with storekit.open_database(path, sqlite=storekit.SqliteOptions(busy_timeout_ms=300)) as db:
            started = time.monotonic()
            with pytest.raises(storekit.BusyError, match=str(path)):
                db.run("INSERT INTO t VALUES (2)")
            assert 0.25 < time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.communicate()


def test_not_a_database_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("this is not a database\n" * 100)
    with pytest.raises(storekit.DatabaseUnavailable, match=str(path)):
        storekit.open_database(path)


def test_truncated_database_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "truncated.db"
    with storekit.open_database(path, sqlite=storekit.SqliteOptions(journal_mode="delete")) as db:
        db.exec("CREATE TABLE t (x TEXT)")
        db.run_many("INSERT INTO t VALUES (?)", [("x" * 200,) for _ in range(2000)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(storekit.StoreError, match=str(path)) as info, \
            storekit.open_database(path) as db:
        db.all("SELECT * FROM t")
    assert isinstance(info.value, (storekit.DatabaseUnavailable, storekit.OperationalError))
    assert info.value.__cause__ is not None


def test_missing_parent_on_a_read_only_path() -> None:
    path = Path("/proc/storekit-test/sub/agentos.db")
    with pytest.raises(storekit.DatabaseUnavailable, match="/proc/storekit-test/sub"):
        storekit.open_database(path)


@pytest.fixture
def read_only_folder() -> Any:
    """A read-only tmpfs: root ignores file permissions, not a read-only mount."""
    folder = Path(tempfile.mkdtemp())
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(folder)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)
    folder.rmdir()


def test_read_only_folder_names_the_path(read_only_folder: Path) -> None:
    path = read_only_folder / "app.db"
    with pytest.raises(storekit.DatabaseUnavailable, match=str(path)) as info:
        storekit.open_database(path)
    assert info.value.__cause__ is not None
    missing = read_only_folder / "missing" / "app.db"
    with pytest.raises(storekit.DatabaseUnavailable, match=str(missing.parent)):
        storekit.open_database(missing)


def test_wal_stays_bounded_after_a_long_reader(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    limit = 1024 * 1024
    options = storekit.SqliteOptions(journal_size_limit=limit, wal_autocheckpoint=200)
    wal = Path(str(path) + "-wal")
    with storekit.open_database(path, sqlite=options) as db:
        db.exec("CREATE TABLE t (x TEXT)")
        db.run("INSERT INTO t VALUES ('seed')")
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM t").fetchone()  # holds a snapshot
        for _ in range(40):
            db.run_many("INSERT INTO t VALUES (?)", [("x" * 1000,) for _ in range(100)])
        grown = wal.stat().st_size
        reader.execute("COMMIT")
        reader.close()
        for _ in range(5):  # a few more commits let the checkpoint finish and the WAL reset
            db.run_many("INSERT INTO t VALUES (?)", [("y" * 100,) for _ in range(50)])
        settled = wal.stat().st_size
    assert grown > 3 * limit, f"the reader did not pin the WAL (size {grown})"
    assert settled <= limit, f"WAL still {settled} bytes after the reader finished"


def test_harness_records_a_postgres_outage(storekit_postgres_server: Any, tmp_path: Path) -> None:
    """The server restarts mid-run: the run completes, counts the failures, loses nothing."""
    if not hasattr(storekit_postgres_server, "stop"):
        pytest.skip("needs a local server this test can restart")
    from bench.harness.configs import CONFIGS
    from bench.harness.runner import Plan, Runner, RunSpec, summarise

    server = storekit_postgres_server
    plan = Plan(workloads=["agent-write"], configs=[CONFIGS["postgres"]], agents=[2],
                duration=4.0, warmup=0.2, repetitions=1, corpus=0, workers="threads")
    runner = Runner(plan, server.url, tmp_path)

    def outage() -> None:
        time.sleep(1.5)
        server.stop()
        time.sleep(1.0)
        server.start()

    t = threading.Thread(target=outage)
    t.start()
    try:
        outcome = runner.run_one(RunSpec("agent-write", "postgres", 2, 0))
    finally:
        t.join()
        runner.close()
    rows = {r["metric"]: r["value"] for r in summarise(outcome, plan.duration)[0]
            if r["op"] == "all"}
    assert rows["errors_total"] > 0
    assert rows["errors_unavailable"] + rows["errors_timeout"] + rows["errors_other"] > 0
    assert rows["lost_writes"] == 0
    assert rows["acked_writes"] > 0
