"""PostgreSQL statements share one cursor per pooled connection: every call still returns
its own rows, after errors too, and a large result is not kept alive by the pool."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import storekit
from storekit import Database


@pytest.fixture
def one_conn(storekit_postgres_url: str) -> Iterator[Database]:
    db = storekit.create_database(storekit_postgres_url,
                                  pool=storekit.PoolOptions(min_size=1, max_size=1))
    yield db
    db.close()


def test_interleaved_calls_see_their_own_results(one_conn: Database) -> None:
    db = one_conn
    db.exec("DROP TABLE IF EXISTS reuse_t; CREATE TABLE reuse_t (id int PRIMARY KEY, v text)")
    try:
        for i in range(20):
            assert db.run("INSERT INTO reuse_t (id, v) VALUES (?, ?)", (i, f"v{i}")).rowcount == 1
            with pytest.raises(storekit.StoreError):
                db.run("INSERT INTO reuse_t (id, v) VALUES (?, ?)", (i, "dup"))
            assert db.get("SELECT v FROM reuse_t WHERE id = ?", (i,)) == {"v": f"v{i}"}
            assert db.get("SELECT v FROM reuse_t WHERE id = ?", (-1,)) is None
            assert len(db.all("SELECT id FROM reuse_t")) == i + 1
        with db.transaction() as tx:
            first = tx.all("SELECT id FROM reuse_t WHERE id < ? ORDER BY id", (3,))
            tx.run("UPDATE reuse_t SET v = ? WHERE id = ?", ("x", 0))
            assert first == [{"id": 0}, {"id": 1}, {"id": 2}]  # not overwritten by the update
        assert db.run("UPDATE reuse_t SET v = v RETURNING id", ()).last_id is not None
    finally:
        db.exec("DROP TABLE reuse_t")


def test_a_large_result_is_not_kept_with_the_connection(one_conn: Database) -> None:
    rows = one_conn.all("SELECT generate_series(1, 5000) AS n")
    assert len(rows) == 5000
    conn = one_conn._backend._pool.getconn()  # type: ignore[attr-defined]
    try:
        assert conn._statement_cursor is None
    finally:
        one_conn._backend._pool.putconn(conn)  # type: ignore[attr-defined]
    assert one_conn.get("SELECT 1 AS x") == {"x": 1}
