"""storekit through a real PgBouncer in transaction pooling mode (PoolOptions(pooler=...)).

The test PgBouncer keeps 2 server connections per database, so clients share them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from storekit import (
    BusyError,
    CapabilityError,
    ConfigurationError,
    Database,
    IntegrityError,
    PoolOptions,
    StoreError,
    TransactionConflict,
    create_database,
)
from storekit.testing import PgBouncer
from storekit.url import DatabaseURL

pytestmark = pytest.mark.postgres
HANG = 60.0  # a guard against hanging only
POOLED = PoolOptions(pooler="transaction", max_size=8)


@pytest.fixture
def url(storekit_pgbouncer_url: str) -> str:
    return storekit_pgbouncer_url


@pytest.fixture
def direct(storekit_pgbouncer: PgBouncer, url: str) -> str:
    return storekit_pgbouncer.direct_url_for(DatabaseURL.parse(url).database)


@pytest.fixture
def db(url: str) -> Iterator[Database]:
    database = create_database(url, pool=POOLED)
    database.exec("CREATE TABLE t (id serial PRIMARY KEY, k text UNIQUE, n int NOT NULL DEFAULT 0,"
                  " doc jsonb)")
    yield database
    database.close()


def _threads(n: int, target: Any, *args: Any) -> list[BaseException]:
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            target(i, *args)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG)
        assert not t.is_alive()
    return errors


def test_data_methods_repeated_from_many_threads(db: Database) -> None:
    # Repeated statements are where psycopg would prepare them (after 5 uses); through a
    # pooler the next use lands on another server connection, without it or with another
    # client's statement of the same name.
    def work(i: int) -> None:
        for j in range(12):
            key = f"{i}-{j}"
            rid = db.run("INSERT INTO t (k, doc) VALUES (?, ?) RETURNING id",
                         (key, {"i": i, "j": j})).last_id
            assert db.get("SELECT k, doc FROM t WHERE id = ?", (rid,)) == {
                "k": key, "doc": {"i": i, "j": j}}
            assert db.get("SELECT ?::int + 1 AS x", (j,)) == {"x": j + 1}
            assert len(db.all("SELECT id FROM t WHERE k LIKE ?", (f"{i}-%",))) == j + 1

    assert _threads(6, work) == []
    assert db.get("SELECT count(*) AS c FROM t") == {"c": 72}
    assert [r["k"] for r in db.iter("SELECT k FROM t WHERE k LIKE '0-%' ORDER BY id")] == [
        f"0-{j}" for j in range(12)]


def test_two_databases_sharing_server_connections_get_their_own_results(
        url: str, db: Database) -> None:
    other = create_database(url, pool=POOLED)
    try:
        def work(i: int) -> None:
            mine = db if i % 2 else other
            for j in range(20):
                if i % 2:
                    assert mine.get("SELECT ?::int AS a", (j,)) == {"a": j}
                else:
                    assert mine.get("SELECT ?::text AS b", (str(j),)) == {"b": str(j)}

        assert _threads(6, work) == []
    finally:
        other.close()


def test_transactions_and_savepoints(db: Database) -> None:
    with db.transaction() as tx:
        tx.run("INSERT INTO t (k) VALUES ('a')")
        with pytest.raises(IntegrityError), db.transaction() as inner:
            inner.run("INSERT INTO t (k) VALUES ('b')")
            inner.run("INSERT INTO t (k) VALUES ('a')")
        tx.run("INSERT INTO t (k) VALUES ('c')")
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.run("INSERT INTO t (k) VALUES ('d')")
        raise RuntimeError
    assert [r["k"] for r in db.all("SELECT k FROM t ORDER BY k")] == ["a", "c"]


def test_serializable_conflict_is_raised(url: str, db: Database) -> None:
    db.run("INSERT INTO t (k, n) VALUES ('x', 0)")
    other = create_database(url, pool=POOLED)
    try:
        with pytest.raises(TransactionConflict), other.transaction() as b:
            b.get("SELECT n FROM t WHERE k = 'x'")
            with db.transaction() as a:
                a.get("SELECT n FROM t WHERE k = 'x'")
                a.run("UPDATE t SET n = n + 1 WHERE k = 'x'")
            b.run("UPDATE t SET n = n + 10 WHERE k = 'x'")
    finally:
        other.close()
    assert db.get("SELECT n FROM t WHERE k = 'x'") == {"n": 1}


def test_atomic_from_many_threads_loses_no_update(db: Database) -> None:
    db.run("INSERT INTO t (k, n) VALUES ('c', 0)")

    def bump(tx: Any) -> None:
        row = tx.get("SELECT n FROM t WHERE k = 'c'")
        tx.run("UPDATE t SET n = ? WHERE k = 'c'", (row["n"] + 1,))

    def work(i: int) -> None:
        for _ in range(10):
            db.atomic(bump, retries=1000)

    assert _threads(8, work) == []
    assert db.get("SELECT n FROM t WHERE k = 'c'") == {"n": 80}


def test_many_threads_share_few_server_connections(db: Database, direct: str) -> None:
    def work(i: int) -> None:
        for j in range(15):
            with db.transaction() as tx:
                tx.run("INSERT INTO t (k) VALUES (?)", (f"{i}/{j}",))

    assert _threads(16, work) == []
    assert db.get("SELECT count(*) AS c FROM t") == {"c": 240}
    name = DatabaseURL.parse(direct).database
    with psycopg.connect(direct, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                           [name]).fetchone()
    assert row is not None
    assert row[0] <= 3  # PgBouncer's 2, and this one


def _poison_lock_timeout(url: str) -> psycopg.Connection[Any]:
    """A client that sets lock_timeout=0 (wait forever) for its whole session: through the
    pooler, that setting stays on a shared server connection."""
    conn = psycopg.connect(url, autocommit=True, prepare_threshold=None)
    conn.execute("SET lock_timeout = 0")
    return conn


@pytest.mark.parametrize("in_transaction", [False, True])
def test_lock_timeout_is_honoured_whatever_the_server_connection(
        url: str, db: Database, in_transaction: bool) -> None:
    db.run("INSERT INTO t (k) VALUES ('row')")
    waiter = create_database(url, pool=PoolOptions(pooler="transaction", busy_timeout_ms=200))
    outcome: list[BaseException | None] = []

    def wait_for_lock() -> None:
        try:
            if in_transaction:
                with waiter.transaction() as tx:
                    tx.run("UPDATE t SET n = 2 WHERE k = 'row'")
            else:
                waiter.run("UPDATE t SET n = 2 WHERE k = 'row'")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    try:
        with db.transaction() as holder:  # one of the two server connections
            holder.run("UPDATE t SET n = 1 WHERE k = 'row'")
            poisoned = _poison_lock_timeout(url)  # the other one
            thread = threading.Thread(target=wait_for_lock)
            thread.start()
            thread.join(HANG)
            hung = thread.is_alive()
        thread.join(HANG)
        poisoned.close()
    finally:
        waiter.close()
    assert not hung, "the lock wait ignored busy_timeout_ms"
    assert len(outcome) == 1
    assert isinstance(outcome[0], BusyError)
    assert isinstance(outcome[0].__cause__, psycopg.Error)


def test_row_security_scopes_are_refused_not_leaked(db: Database) -> None:
    db.exec("CREATE TABLE notes (id serial PRIMARY KEY, team_id int, body text)")
    db.enable_row_security("notes")
    db.run("INSERT INTO notes (team_id, body) VALUES (1, 'one'), (2, 'two')")
    assert db.capabilities.row_level_security is False
    with pytest.raises(CapabilityError, match="pooler"), db.scope(team_id=1) as tx:
        tx.all("SELECT body FROM notes")
    with pytest.raises(CapabilityError, match="pooler"):
        db.atomic(lambda tx: tx.all("SELECT body FROM notes"), team_id=2)
    # Nothing was left behind: the next transactions see no team setting.
    for _ in range(4):
        assert db.get("SELECT current_setting('app.team_id', true) AS t") in (
            {"t": None}, {"t": ""})


def test_listen_needs_a_direct_url(db: Database, url: str, direct: str) -> None:
    with pytest.raises(CapabilityError, match="listen_url"):
        db.listen("jobs")
    listener = create_database(url, pool=PoolOptions(pooler="transaction", listen_url=direct))
    try:
        with listener.listen("jobs") as sub:
            db.notify("jobs", "through the pooler")
            with db.transaction() as tx:
                tx.run("SELECT pg_notify('jobs', 'in a transaction')")
            got = [sub.get(timeout=HANG), sub.get(timeout=HANG)]
        assert [n.payload for n in got if n] == ["through the pooler", "in a transaction"]
    finally:
        listener.close()


def test_errors_are_store_errors_with_the_driver_cause(db: Database, url: str) -> None:
    db.run("INSERT INTO t (k) VALUES ('dup')")
    with pytest.raises(IntegrityError) as info:
        db.run("INSERT INTO t (k) VALUES ('dup')")
    assert isinstance(info.value.__cause__, psycopg.Error)
    with pytest.raises(StoreError) as info:
        db.get("SELECT nope FROM t")
    assert isinstance(info.value.__cause__, psycopg.Error)
    # The connection is clean afterwards for the next statement.
    assert db.get("SELECT count(*) AS c FROM t") == {"c": 1}


def test_options_are_checked_and_passwords_masked(url: str) -> None:
    secret = DatabaseURL.parse(url).password
    assert secret
    with pytest.raises(ConfigurationError, match="pooler"):
        PoolOptions(pooler="statement")
    options = PoolOptions(pooler="transaction", listen_url=url)
    assert secret not in repr(options)
    with pytest.raises(ConfigurationError) as info:
        create_database(url, pool=PoolOptions(pooler="transaction", listen_url="sqlite:///x"))
    assert secret not in str(info.value)
    bad = str(DatabaseURL.parse(url).replace(query=(("nonsense", "1"),)).render(mask=False))
    with pytest.raises(ConfigurationError) as info:
        create_database(url, pool=PoolOptions(pooler="transaction", listen_url=bad))
    assert secret not in str(info.value)
    db = create_database(url, pool=PoolOptions(pooler="transaction"))
    try:
        assert db.settings["pooler"] == "transaction"
        assert secret not in repr(db.settings)
    finally:
        db.close()
