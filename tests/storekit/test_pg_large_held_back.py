"""Held-back statements whose values are large go one round trip each, not in a pipeline
(a pipeline carrying large values can leave client and server each waiting for the other:
psycopg issue 685), and keep the pipeline's rules: what fails leaves nothing written."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import storekit
from storekit import IntegrityError, ProgrammingError
from storekit.backends.postgres.deferred import PIPELINE_MAX_BYTES
from tests.storekit.test_pg_deferred import TripCounter, count, pg, relay  # noqa: F401

pytestmark = [pytest.mark.postgres]

BIG = "x" * (PIPELINE_MAX_BYTES + 1)


@pytest.fixture
def wide(pg: storekit.Database) -> Iterator[str]:  # noqa: F811
    name = f"wide_{uuid.uuid4().hex[:8]}"
    pg.exec(f"CREATE TABLE {name} (id int PRIMARY KEY, v text NOT NULL, doc jsonb)")
    yield name
    pg.exec(f"DROP TABLE {name}")


def test_large_values_go_one_statement_per_round_trip(
        relay: tuple[storekit.Database, TripCounter], wide: str) -> None:  # noqa: F811
    db, counter = relay
    db.get("SELECT 1 AS x")  # the connection's first reset is done

    def step(tx: storekit.Transaction, v: str, doc: object) -> None:
        tx.run_deferred(f"INSERT INTO {wide} (id, v) VALUES (1, ?)", (v,))
        tx.run_deferred(f"INSERT INTO {wide} (id, v, doc) VALUES (2, 'b', ?)", (doc,))

    before = counter.trips
    db.atomic(step, "small", {"k": "small"})
    assert counter.trips - before == 1  # BEGIN, both writes and COMMIT in one pipeline
    db.run(f"DELETE FROM {wide}")
    before = counter.trips
    db.atomic(step, BIG, {"k": "small"})
    assert counter.trips - before == 4  # BEGIN, each write, COMMIT
    db.run(f"DELETE FROM {wide}")
    before = counter.trips
    db.atomic(step, "small", {"k": BIG})  # a large JSON document counts too
    assert counter.trips - before == 4
    row = db.get(f"SELECT length(doc->>'k') AS n FROM {wide} WHERE id = 2")
    assert row == {"n": len(BIG)}


def test_a_failing_large_held_back_write_leaves_nothing(pg: storekit.Database,  # noqa: F811
                                                        wide: str) -> None:
    def body(tx: storekit.Transaction) -> None:
        tx.run_deferred(f"INSERT INTO {wide} (id, v) VALUES (1, ?)", (BIG,))
        tx.run_deferred(f"INSERT INTO {wide} (id, v) VALUES (1, ?)", (BIG,))

    with pytest.raises(IntegrityError) as caught:
        pg.atomic(body)
    assert caught.value.__cause__ is not None
    assert count(pg, wide) == 0


def test_a_refused_value_after_a_large_one_commits_nothing(pg: storekit.Database,  # noqa: F811
                                                           wide: str) -> None:
    def body(tx: storekit.Transaction) -> None:
        tx.run_deferred(f"INSERT INTO {wide} (id, v) VALUES (1, ?)", (BIG,))
        tx.run_deferred(f"INSERT INTO {wide} (id, v) VALUES (2, ?)", ("\ud800",))

    with pytest.raises(ProgrammingError):
        pg.atomic(body)
    assert count(pg, wide) == 0
    pg.run(f"INSERT INTO {wide} (id, v) VALUES (3, ?)", (BIG,))
    assert count(pg, wide) == 1
