"""Migration SQLite <-> PostgreSQL of a database storekit did not create, verified."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import storekit
from storekit.migration import MigrationError, migrate

DDL = """
CREATE TABLE teams (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created DATETIME);
CREATE TABLE agents (
  id INTEGER PRIMARY KEY,
  team_id INTEGER REFERENCES teams(id) ON DELETE CASCADE,
  name TEXT,
  config JSON,
  active BOOLEAN,
  avatar BLOB,
  score REAL,
  budget NUMERIC,
  seen_at TIMESTAMP
);
CREATE TABLE memberships (
  team_id INTEGER NOT NULL REFERENCES teams(id),
  agent_id INTEGER NOT NULL REFERENCES agents(id),
  role TEXT,
  PRIMARY KEY (team_id, agent_id)
);
CREATE INDEX agents_team ON agents (team_id);
CREATE VIEW active_agents AS SELECT * FROM agents WHERE active = 1;
CREATE TRIGGER agents_touch AFTER UPDATE ON agents BEGIN SELECT 1; END;
"""
N_AGENTS = 3000


def build_source(path: Path) -> None:
    """Plain sqlite3, the way an app that never heard of storekit would have done it."""
    conn = sqlite3.connect(path)
    conn.executescript(DDL)
    conn.executemany("INSERT INTO teams (id, name, created) VALUES (?, ?, ?)",
                     [(i, f"team {i} ✓", f"2026-0{1 + i % 9}-0{1 + i % 9} 10:00:0{i % 10}")
                      for i in range(1, 21)])
    rows = []
    for i in range(1, N_AGENTS + 1):
        rows.append((
            i, 1 + i % 20 if i % 11 else None, f"agent-{i} 名前 😀" if i % 7 else None,
            json.dumps({"model": f"m{i % 5}", "temp": i / 100, "tools": ["a", "b"][: i % 3]})
            if i % 13 else None,
            i % 2 if i % 17 else None, bytes([i % 256, 0, 255]) * (i % 4) if i % 5 else None,
            i * 0.25 if i % 3 else None, f"{i}.50" if i % 4 else None,
            f"2026-11-{1 + i % 28:02d} 0{i % 10}:15:00" if i % 6 else None))
    conn.executemany("INSERT INTO agents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.executemany("INSERT INTO memberships VALUES (?, ?, ?)",
                     [(1 + i % 20, i, "lead" if i % 10 == 0 else "member")
                      for i in range(1, N_AGENTS + 1)])
    conn.commit()
    conn.close()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    build_source(path)
    return path


@pytest.fixture
def pg_url(storekit_postgres_url: str) -> object:
    from storekit.testing import isolated_schema

    with isolated_schema(storekit_postgres_url, prefix="mig") as url:
        yield url


def test_sqlite_to_postgres_verifies(source: Path, pg_url: str) -> None:
    report = migrate(f"sqlite:///{source}", pg_url)
    assert report.ok, report
    assert {t.name: t.target_rows for t in report.tables} == {
        "teams": 20, "agents": N_AGENTS, "memberships": N_AGENTS}
    assert [t.name for t in report.tables].index("teams") < [
        t.name for t in report.tables].index("agents")
    assert sorted(report.not_migrated) == ["trigger agents_touch", "view active_agents"]
    with storekit.create_database(pg_url) as pg:
        types = {r["column_name"]: r["data_type"] for r in pg.all(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = 'agents'")}
        assert types["config"] == "jsonb"
        assert types["active"] == "boolean"
        assert types["avatar"] == "bytea"
        assert types["budget"] == "numeric"
        row = pg.get("SELECT config, active, avatar FROM agents WHERE id = 2")
        assert row is not None
        assert row["config"]["model"] == "m2"
        assert row["active"] is False
        assert bytes(row["avatar"]) == bytes([2, 0, 255]) * 2
        # Identity sequence set past the copied keys: the next insert works.
        new = pg.run("INSERT INTO agents (name) VALUES ('new') RETURNING id").last_id
        assert new == N_AGENTS + 1
        with pytest.raises(storekit.ForeignKeyViolation):
            pg.run("INSERT INTO memberships VALUES (999, 1, 'x')")


def test_round_trip_gives_identical_checksums(source: Path, pg_url: str, tmp_path: Path) -> None:
    there = migrate(f"sqlite:///{source}", pg_url)
    back_path = tmp_path / "back.db"
    back = migrate(pg_url, f"sqlite:///{back_path}")
    assert there.ok
    assert back.ok
    first = {t.name: t.source_checksum for t in there.tables}
    last = {t.name: t.target_checksum for t in back.tables}
    assert first == last
    conn = sqlite3.connect(back_path)
    assert conn.execute("SELECT COUNT(*) FROM agents").fetchone() == (N_AGENTS,)
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()


def test_second_run_with_replace_or_ignore_adds_nothing(source: Path, pg_url: str) -> None:
    assert migrate(f"sqlite:///{source}", pg_url).ok
    for mode in ("replace", "ignore"):
        again = migrate(f"sqlite:///{source}", pg_url, on_conflict=mode)
        assert again.ok, mode
        assert {t.name: t.target_rows for t in again.tables}["agents"] == N_AGENTS
    with pytest.raises(MigrationError, match=r"teams.*\(id\)=\(1\)") as info:
        migrate(f"sqlite:///{source}", pg_url, on_conflict="error")
    assert not info.value.report.ok


def test_replace_updates_changed_rows(source: Path, pg_url: str) -> None:
    assert migrate(f"sqlite:///{source}", pg_url).ok
    conn = sqlite3.connect(source)
    conn.execute("UPDATE agents SET name = 'renamed' WHERE id = 5")
    conn.commit()
    conn.close()
    report = migrate(f"sqlite:///{source}", pg_url, on_conflict="replace")
    assert report.ok
    with storekit.create_database(pg_url) as pg:
        assert pg.get("SELECT name FROM agents WHERE id = 5") == {"name": "renamed"}


def test_corrupted_json_aborts_and_leaves_target_unchanged(source: Path, pg_url: str) -> None:
    conn = sqlite3.connect(source)
    conn.execute("UPDATE agents SET config = '{\"model\": broken' WHERE id = 2345")
    conn.commit()
    conn.close()
    with pytest.raises(MigrationError, match=r"agents.*2345") as info:
        migrate(f"sqlite:///{source}", pg_url)
    assert info.value.report.error is not None
    with storekit.create_database(pg_url) as pg:
        assert pg.tables() == []


def test_a_planted_mismatch_is_caught(source: Path, pg_url: str) -> None:
    assert migrate(f"sqlite:///{source}", pg_url).ok
    with storekit.create_database(pg_url) as pg:
        pg.run("UPDATE agents SET score = score + 1 WHERE id = 43")
    report = migrate(f"sqlite:///{source}", pg_url, on_conflict="ignore")
    assert not report.ok
    agents = next(t for t in report.tables if t.name == "agents")
    assert agents.differing_keys == [43]
    assert next(t for t in report.tables if t.name == "teams").verified


def test_search_tables_become_the_target_search_index(tmp_path: Path, pg_url: str) -> None:
    from storekit.schema import Column, SearchSpec, Table

    path = tmp_path / "chat.db"
    with storekit.open_database(path) as db:
        db.create_table(Table("chat", [Column("id", "id"), Column("content", "text")],
                              search=SearchSpec(["content"])))
        db.run_many("INSERT INTO chat (content) VALUES (?)",
                    [("deploying the server",), ("cache warm",)])
    report = migrate(f"sqlite:///{path}", pg_url)
    assert report.ok
    assert [t.name for t in report.tables] == ["chat"]
    with storekit.create_database(pg_url) as pg:
        assert pg.tables() == ["chat"]
        assert [r["content"] for r in pg.search("chat", "deploy")] == ["deploying the server"]


def test_unsupported_types_reported_before_data_moves(pg_url: str, tmp_path: Path) -> None:
    with storekit.create_database(pg_url) as pg:
        pg.exec("CREATE TABLE odd (id int PRIMARY KEY, tags text[], span interval)")
        pg.run("INSERT INTO odd VALUES (1, '{a}', '1 day')")
    target = tmp_path / "odd.db"
    with pytest.raises(storekit.ConfigurationError, match=r"odd\.tags.*odd\.span"):
        migrate(pg_url, f"sqlite:///{target}")
    with storekit.open_database(target) as db:
        assert db.tables() == []


def test_cli_migrate_exit_codes_and_no_password(source: Path, pg_url: str) -> None:
    password = storekit.DatabaseURL.parse(pg_url).password
    assert password
    ok = subprocess.run([sys.executable, "-m", "storekit", "migrate", f"sqlite:///{source}",
                         pg_url, "--tables", "teams"], capture_output=True, text=True,
                        check=False)
    assert ok.returncode == 0, ok.stderr
    assert "all tables verified" in ok.stdout
    assert "copying teams: 0/" in ok.stderr  # line progress where stderr is no terminal
    assert "(100%)" in ok.stderr
    assert password not in ok.stdout + ok.stderr
    again = subprocess.run([sys.executable, "-m", "storekit", "migrate", f"sqlite:///{source}",
                            pg_url, "--tables", "teams"], capture_output=True, text=True,
                           check=False)
    assert again.returncode == 1
    assert "already exists" in again.stderr
    assert password not in again.stdout + again.stderr
    bad = subprocess.run([sys.executable, "-m", "storekit", "migrate", f"sqlite:///{source}",
                          pg_url, "--tables", "nope"], capture_output=True, text=True,
                         check=False)
    assert bad.returncode == 2
    assert "no table nope" in bad.stderr


def test_line_progress_prints_first_and_last_lines_and_throttles_the_rest(
        capsys: pytest.CaptureFixture[str]) -> None:
    from storekit.__main__ import _line_progress

    update = _line_progress(every_s=3600)
    for done in (0, 10, 20, 30):
        update("logs", done, 30)
    update("logs", 30, 30)  # a repeated final call prints nothing more
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["copying logs: 0/30 rows (0%)", "copying logs: 30/30 rows (100%)"]
