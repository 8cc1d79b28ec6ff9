"""Portable schema and JSON documents on both backends."""

from __future__ import annotations

import datetime as dt

import pytest

import storekit
from storekit import Database
from storekit.schema import Column, Index, SearchSpec, Table

AGENTS = Table(
    "agents",
    [
        Column("id", "id"),
        Column("name", "text", nullable=False, unique=True),
        Column("team_id", "integer"),
        Column("config", "json"),
        Column("active", "boolean", default=True),
        Column("score", "real"),
        Column("runs", "bigint", default=0),
        Column("avatar", "blob"),
        Column("created_at", "timestamp", default="now"),
    ],
    indexes=[Index(json_path=("config", "$.model")), Index(["team_id"])],
)
RESULTS = Table(
    "results",
    [
        Column("id", "id"),
        Column("agent_id", "integer", nullable=False, references="agents(id)",
               on_delete="CASCADE"),
        Column("body", "text"),
    ],
    search=SearchSpec(["body"]),
)


@pytest.fixture
def db(store: Database) -> Database:
    store.create_table(AGENTS)
    store.create_table(RESULTS)
    return store


def test_same_definition_creates_and_introspects(db: Database) -> None:
    assert db.tables() == ["agents", "results"]
    cols = {c.name: c for c in db.columns("agents")}
    assert cols["id"].type == "id"
    assert cols["config"].type == "json"
    assert cols["active"].type == "boolean"
    assert cols["created_at"].type == "timestamp"
    assert cols["avatar"].type == "blob"
    assert not cols["name"].nullable
    db.create_table(AGENTS)  # if_not_exists: a second call is harmless


def test_types_round_trip(db: Database) -> None:
    when = dt.datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=dt.timezone.utc)
    db.run(
        "INSERT INTO agents (name, config, active, score, runs, avatar, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        ("a", {"model": "m1", "temp": 0.5, "tools": ["x"]}, False, 1.5, 2**40, b"\x00\x01",
         when),
    )
    db.run("INSERT INTO agents (name) VALUES ('defaults')")
    row = db.get("SELECT * FROM agents WHERE name = 'a'")
    assert row is not None
    assert row["config"] == {"model": "m1", "temp": 0.5, "tools": ["x"]}
    assert row["active"] is False
    assert row["score"] == 1.5
    assert row["runs"] == 2**40
    assert bytes(row["avatar"]) == b"\x00\x01"
    assert row["created_at"] == when
    defaults = db.get("SELECT active, runs, created_at FROM agents WHERE name = 'defaults'")
    assert defaults is not None
    assert defaults["active"] is True
    assert defaults["runs"] == 0
    created = defaults["created_at"]
    assert isinstance(created, dt.datetime)
    assert created.utcoffset() == dt.timedelta(0)
    assert abs(dt.datetime.now(dt.timezone.utc) - created) < dt.timedelta(minutes=5)


def test_json_path_queries_through_the_index(db: Database) -> None:
    db.run_many("INSERT INTO agents (name, config) VALUES (?, ?)",
                [(f"a{i}", {"model": f"m{i % 3}", "limits": {"tokens": i}}) for i in range(30)])
    d = db.dialect
    rows = db.all(f"SELECT name FROM agents WHERE {d.json_get('config', '$.model')} = ?"
                  " ORDER BY id", ("m1",))
    assert [r["name"] for r in rows] == [f"a{i}" for i in range(30) if i % 3 == 1]
    big = db.all(f"SELECT name FROM agents WHERE {d.json_get_number('config', '$.limits.tokens')}"
                 " >= ? ORDER BY id", (28,))
    assert [r["name"] for r in big] == ["a28", "a29"]
    plan = db.all(("EXPLAIN QUERY PLAN " if db.backend == "sqlite" else "EXPLAIN ")
                  + f"SELECT name FROM agents WHERE {d.json_get('config', '$.model')} = 'm1'")
    assert "agents_config_model_idx" in str(plan) or db.backend == "postgres"


def test_gin_index_is_postgres_only(store: Database) -> None:
    table = Table("docs", [Column("id", "id"), Column("body", "json")],
                  indexes=[Index(gin="body")])
    if store.backend == "sqlite":
        with pytest.raises(storekit.CapabilityError, match="json_path"):
            store.create_table(table)
        assert "docs" not in store.tables()
    else:
        store.create_table(table)
        store.run("INSERT INTO docs (body) VALUES (?)", ({"k": "v"},))
        assert store.get("SELECT id FROM docs WHERE body @> ?", ({"k": "v"},)) == {"id": 1}


def test_upsert_and_insert_or_ignore(db: Database) -> None:
    d = db.dialect
    sql = d.upsert("agents", ["name", "team_id"], conflict=("name",))
    db.run(sql, {"name": "x", "team_id": 1})
    db.run(sql, {"name": "x", "team_id": 2})
    assert db.all("SELECT name, team_id FROM agents") == [{"name": "x", "team_id": 2}]
    ignore = d.insert_or_ignore("agents", {"name": None, "team_id": None})
    db.run(ignore, {"name": "x", "team_id": 3})
    assert db.get("SELECT team_id FROM agents WHERE name = 'x'") == {"team_id": 2}
    assert db.get(f"SELECT {d.now()} AS now") is not None


def test_foreign_keys_and_cascade(db: Database) -> None:
    agent = db.run("INSERT INTO agents (name) VALUES ('fk') RETURNING id").last_id
    db.run("INSERT INTO results (agent_id, body) VALUES (?, 'x')", (agent,))
    with pytest.raises(storekit.ForeignKeyViolation):
        db.run("INSERT INTO results (agent_id, body) VALUES (999, 'x')")
    db.run("DELETE FROM agents WHERE id = ?", (agent,))
    assert db.get("SELECT COUNT(*) AS c FROM results") == {"c": 0}


def test_json_column_rejects_invalid_json_on_both(db: Database) -> None:
    with pytest.raises((storekit.CheckViolation, storekit.ProgrammingError)):
        db.run("INSERT INTO agents (name, config) VALUES ('bad', ?)", ("{not json",))


@pytest.mark.parametrize(
    "name", ['x"; DROP TABLE agents; --', "a b", "x'--", "1abc", "", "a;b", "é"]
)
def test_hostile_identifiers_are_rejected(db: Database, name: str) -> None:
    with pytest.raises(storekit.ProgrammingError, match="invalid"):
        Table(name, [Column("id", "id")])
    with pytest.raises(storekit.ProgrammingError, match="invalid"):
        Column(name, "text")
    with pytest.raises(storekit.ProgrammingError, match="invalid"):
        db.drop_table(name)
    with pytest.raises(storekit.ProgrammingError, match="invalid"):
        db.dialect.upsert("agents", [name])
    assert "agents" in db.tables()


def test_reserved_words_are_quoted(store: Database) -> None:
    table = Table("order", [Column("id", "id"), Column("user", "text"), Column("select", "json")])
    store.create_table(table)
    store.run('INSERT INTO "order" ("user", "select") VALUES (?, ?)', ("u", {"a": 1}))
    assert store.get('SELECT "user", "select" FROM "order"') == {"user": "u", "select": {"a": 1}}
    store.drop_table("order")
    assert "order" not in store.tables()


def test_bad_definitions_are_configuration_errors() -> None:
    with pytest.raises(storekit.ConfigurationError, match="unknown type"):
        Column("x", "varchar")
    with pytest.raises(storekit.ConfigurationError, match="exactly one"):
        Index()
    with pytest.raises(storekit.ConfigurationError, match="JSON path"):
        Index(json_path=("config", "$.a'); DROP TABLE x; --"))
    with pytest.raises(storekit.ConfigurationError, match="references"):
        Column("x", "integer", references="t(a); DROP")
