"""SQL that deallocates a statement psycopg prepared must not break that query for every
later borrower of the pooled connection (it failed with 'prepared statement "_pg3_0" does
not exist' on every call, for good)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import storekit
from storekit import Database

QUERY = "SELECT 42 AS x WHERE 1 = ?"


@pytest.fixture
def one_conn(storekit_postgres_url: str) -> Iterator[Database]:
    db = storekit.create_database(storekit_postgres_url,
                                  pool=storekit.PoolOptions(min_size=1, max_size=1))
    yield db
    db.close()


def _prepared(db: Database) -> list[str]:
    for _ in range(8):  # past psycopg's prepare threshold (5)
        assert db.get(QUERY, (1,)) == {"x": 42}
    names = [r["name"] for r in db.all(
        "SELECT name FROM pg_prepared_statements WHERE NOT from_sql")]
    assert names  # psycopg prepared the query on the one pooled connection
    return names


@pytest.mark.parametrize("how", ["deallocate", "deallocate_all_in_do"])
def test_a_deallocated_driver_statement_does_not_reach_the_next_borrower(
        one_conn: Database, how: str) -> None:
    names = _prepared(one_conn)
    if how == "deallocate":
        for name in names:
            one_conn.run(f"DEALLOCATE {name}")
    else:
        one_conn.run("DO $$ BEGIN EXECUTE 'DEALLOCATE ALL'; END $$")
    for _ in range(8):
        assert one_conn.get(QUERY, (1,)) == {"x": 42}
        assert one_conn.all(QUERY, (1,)) == [{"x": 42}]
        assert one_conn.run("UPDATE pg_class SET relname = relname WHERE false AND 1 = ?",
                            (1,)).rowcount == 0


def test_a_transaction_heals_after_a_deallocated_driver_statement(one_conn: Database) -> None:
    names = _prepared(one_conn)
    for name in names:
        one_conn.run(f"DEALLOCATE {name}")
    with pytest.raises(storekit.StoreError), one_conn.transaction() as tx:
        tx.get(QUERY, (1,))  # the aborted transaction's ROLLBACK clears psycopg's cache
    for _ in range(8):
        assert one_conn.get(QUERY, (1,)) == {"x": 42}
