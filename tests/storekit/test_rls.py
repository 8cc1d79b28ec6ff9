"""Team isolation with row-level security, tested as a non-superuser application role."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator

import pytest

import storekit
from storekit import Database
from storekit.rls import create_app_role
from storekit.schema import Column, Table
from storekit.url import DatabaseURL

AGENTS = Table("agents", [Column("id", "id"), Column("team_id", "integer", nullable=False),
                          Column("name", "text")])


@pytest.fixture
def app_db(store: Database) -> Iterator[Database]:
    """The store as the owner sets it up, and a second Database logged in as the app role."""
    if store.backend != "postgres":
        pytest.skip("row-level security exists only on PostgreSQL")
    store.create_table(AGENTS)
    store.run_many("INSERT INTO agents (team_id, name) VALUES (?, ?)",
                   [(team, f"t{team}-a{i}") for team in (1, 2, 3) for i in range(5)])
    store.enable_row_security("agents")
    role = f"app_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12)
    create_app_role(store, role, password)
    url = DatabaseURL.parse(store.reveal_url().render(mask=False)).replace(username=role,
                                                                   password=password)
    app = storekit.create_database(url, pool=storekit.PoolOptions(min_size=2, max_size=4))
    try:
        yield app
    finally:
        app.close()
        store.exec(f'DROP OWNED BY "{role}"; DROP ROLE "{role}"')


def test_app_role_is_not_superuser(app_db: Database) -> None:
    row = app_db.get("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
    assert row == {"rolsuper": False, "rolbypassrls": False}


def test_outside_a_scope_nothing_is_visible_or_writable(app_db: Database) -> None:
    assert app_db.all("SELECT * FROM agents") == []
    with pytest.raises(storekit.ProgrammingError, match="row-level security"):
        app_db.run("INSERT INTO agents (team_id, name) VALUES (1, 'sneaky')")
    assert app_db.run("UPDATE agents SET name = 'x'").rowcount == 0
    assert app_db.run("DELETE FROM agents").rowcount == 0


def test_scope_sees_and_changes_only_its_team(app_db: Database) -> None:
    with app_db.scope(team_id=1) as tx:
        rows = tx.all("SELECT team_id FROM agents")
        assert {r["team_id"] for r in rows} == {1}
        assert len(rows) == 5
        # Hand-written SQL aimed at another team touches nothing.
        assert tx.run("UPDATE agents SET name = 'hijacked' WHERE team_id = 2").rowcount == 0
        assert tx.run("DELETE FROM agents WHERE team_id = 3").rowcount == 0
        with pytest.raises(storekit.ProgrammingError, match="row-level security"), \
                app_db.transaction():
            tx.run("INSERT INTO agents (team_id, name) VALUES (2, 'planted')")
        with pytest.raises(storekit.ProgrammingError, match="row-level security"), \
                app_db.transaction():
            tx.run("UPDATE agents SET team_id = 2 WHERE team_id = 1")
        tx.run("INSERT INTO agents (team_id, name) VALUES (1, 'mine')")
    with app_db.transaction(team_id=2) as tx:
        names = {r["name"] for r in tx.all("SELECT name FROM agents")}
        assert "hijacked" not in names
        assert len(names) == 5
    with app_db.scope(team_id=3) as tx:
        assert len(tx.all("SELECT * FROM agents")) == 5
    with app_db.scope(team_id=1) as tx:
        assert len(tx.all("SELECT * FROM agents")) == 6


def test_scope_does_not_leak_to_the_next_borrower(app_db: Database) -> None:
    with app_db.scope(team_id=1) as tx:
        assert tx.all("SELECT * FROM agents")
    for _ in range(8):  # every pooled connection has been through a scope by now
        assert app_db.all("SELECT * FROM agents") == []
        setting = app_db.get("SELECT current_setting('app.team_id', true) AS s")
        assert setting is not None
        assert setting["s"] in (None, "")


def test_sixteen_threads_with_different_teams_share_one_pool(app_db: Database) -> None:
    failures: list[str] = []

    def worker(team: int) -> None:
        for _ in range(25):
            with app_db.scope(team_id=team) as tx:
                teams = {r["team_id"] for r in tx.all("SELECT team_id FROM agents")}
                if teams != {team}:
                    failures.append(f"team {team} saw {teams}")

    threads = [threading.Thread(target=worker, args=(1 + n % 3,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_sqlite_refuses_row_security(tmp_path: object) -> None:
    with storekit.open_database(tmp_path / "t.db") as db:  # type: ignore[operator]
        db.create_table(AGENTS)
        with pytest.raises(storekit.CapabilityError, match="PostgreSQL"):
            db.enable_row_security("agents")
        with pytest.raises(storekit.CapabilityError, match="PostgreSQL"), db.scope(team_id=1):
            pass
        with pytest.raises(storekit.CapabilityError, match="PostgreSQL"), \
                db.transaction(team_id=1):
            pass
        with pytest.raises(storekit.CapabilityError, match="PostgreSQL"):
            create_app_role(db, "x", "y")
        assert db.get("SELECT COUNT(*) AS c FROM agents") == {"c": 0}
