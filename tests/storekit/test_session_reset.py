"""The pooled-connection reset runs only after SQL that may change the session, and always
after it: whichever way a caller changed its session, the next borrower starts clean."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

import storekit
from storekit import Database
from storekit.backends.postgres.session import changes_session

PLAIN = [
    "SELECT 1",
    "SELECT id, name FROM items WHERE id = $1",
    "INSERT INTO sink (name, n) VALUES ($1, $2)",
    'INSERT INTO "Sink" (name) VALUES ($1) RETURNING id',
    "UPDATE agents SET status = $1, runs = runs + 1 WHERE id = $2",
    "DELETE FROM t WHERE id IN (SELECT id FROM u WHERE n > $1)",
    "INSERT INTO t (a) VALUES ($1) ON CONFLICT (a) DO UPDATE SET a = excluded.a",
    "WITH x AS (SELECT count(*) AS n FROM t) SELECT coalesce(n, 0) FROM x",
    "BEGIN ISOLATION LEVEL SERIALIZABLE", "COMMIT", "ROLLBACK", "SAVEPOINT storekit_sp_1",
    "RELEASE SAVEPOINT storekit_sp_1", "ROLLBACK TO SAVEPOINT storekit_sp_1",
    "SELECT id, ts_rank(v, websearch_to_tsquery('english', $1)) AS r FROM c",
]
SESSION = [
    "SET search_path = pg_catalog", "set role app", "RESET ALL", "SET SESSION AUTHORIZATION x",
    "SELECT set_config('search_path', 'pg_catalog', false)",
    "SELECT pg_catalog.set_config('x.y', '1', false)", "LISTEN ch", "UNLISTEN *",
    "PREPARE p AS SELECT 1", "DEALLOCATE ALL", "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
    "CREATE TEMP TABLE t (x int)", "CREATE TABLE pg_temp.t (x int)",
    "SELECT 1 INTO TEMPORARY t", "SELECT pg_advisory_lock(1)", "SELECT nextval('s')",
    "SELECT my_function()", 'SELECT "my_function"()', "SELECT app.count(x) FROM t",
    "SELECT ƒ(1)", "DO $$ BEGIN PERFORM 1; END $$", "CALL proc()", "DISCARD ALL",
    "LOAD 'x'", "SELECT 1; SET role app", "-- SELECT\nSET role app", "/* x */ SET role app",
    "(SELECT 1)", "ALTER TABLE t ADD COLUMN x int",
]


@pytest.mark.parametrize("sql", PLAIN)
def test_plain_sql_leaves_the_session_as_it_was(sql: str) -> None:
    assert changes_session(sql) is False


@pytest.mark.parametrize("sql", SESSION)
def test_sql_that_may_change_the_session_is_reset(sql: str) -> None:
    assert changes_session(sql) is True


@pytest.fixture
def one_conn(storekit_postgres_url: str) -> Iterator[Database]:
    """One pooled connection, so every call reuses the previous caller's session."""
    db = storekit.create_database(storekit_postgres_url,
                                  pool=storekit.PoolOptions(min_size=1, max_size=1))
    db.exec("DROP FUNCTION IF EXISTS storekit_test_set_path();"
            " CREATE FUNCTION storekit_test_set_path() RETURNS int LANGUAGE sql AS"
            " $$ SELECT set_config('search_path', 'pg_catalog', false); SELECT 1 $$")
    try:
        yield db
    finally:
        db.exec("DROP FUNCTION IF EXISTS storekit_test_set_path()")
        db.close()


def _state(db: Database) -> dict[str, object]:
    row = db.get("SELECT current_setting('search_path') AS path, current_user AS who,"
                 " (SELECT count(*) FROM pg_listening_channels()) AS listening,"
                 " (SELECT count(*) FROM pg_prepared_statements WHERE from_sql) AS prepared,"
                 " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                 "  AND pid = pg_backend_pid()) AS locks")
    assert row is not None
    return row


def _tx_connection(db: Database) -> None:
    with db.transaction() as tx:
        tx.connection.execute("SET search_path = pg_catalog")  # storekit never sees it


DIRTY: dict[str, Callable[[Database], object]] = {
    "run set_config": lambda db: db.run("SELECT set_config('search_path', 'pg_catalog', false)"),
    "get a function that sets": lambda db: db.get("SELECT storekit_test_set_path() AS x"),
    "all advisory lock": lambda db: db.all("SELECT pg_advisory_lock(11)"),
    "exec SET": lambda db: db.exec("SET search_path = pg_catalog"),
    "exec LISTEN": lambda db: db.exec("LISTEN storekit_test_channel"),
    "exec PREPARE": lambda db: db.exec("PREPARE storekit_test_p AS SELECT 1"),
    "tx set_config": lambda db: db.atomic(lambda tx: tx.get(
        "SELECT set_config('search_path', 'pg_catalog', false) AS x")),
    "iter set_config": lambda db: list(db.iter(
        "SELECT set_config('search_path', 'pg_catalog', false) AS x")),
    "tx.connection": _tx_connection,
    "SET ROLE": lambda db: db.exec("SET ROLE pg_monitor"),
}


@pytest.mark.parametrize("how", list(DIRTY))
def test_a_caller_that_changes_the_session_is_still_reset(one_conn: Database, how: str) -> None:
    clean = _state(one_conn)
    assert clean["listening"] == clean["prepared"] == clean["locks"] == 0
    DIRTY[how](one_conn)
    assert _state(one_conn) == clean


def test_plain_statements_skip_the_reset(one_conn: Database) -> None:
    """After a plain INSERT the session is handed on as it is (the reset would have cleared
    lastval(): DISCARD SEQUENCES), so no round trip was spent resetting it."""
    one_conn.exec("CREATE TEMP TABLE IF NOT EXISTS x (a int)")  # dirty: reset after this
    one_conn.exec("DROP TABLE IF EXISTS storekit_test_seq;"
                  " CREATE TABLE storekit_test_seq (id bigserial PRIMARY KEY, n int)")
    one_conn.run("INSERT INTO storekit_test_seq (n) VALUES (?)", (1,))
    row = one_conn.get("SELECT lastval() AS v")
    assert row == {"v": 1}
    one_conn.exec("DROP TABLE storekit_test_seq")
