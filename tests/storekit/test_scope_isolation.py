"""A team scope cannot be changed from inside it, and pooled connections come back clean.

Run as a non-superuser application role (row-level security does not apply to superusers)
against the real server, with a pool of one connection where a test needs the next borrower
to get the very connection the previous one used.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import psycopg
import pytest

import storekit
from storekit import Database, Transaction
from storekit.rls import create_app_role
from storekit.schema import Column, Table
from storekit.url import DatabaseURL

AGENTS = Table("agents", [Column("id", "id"), Column("team_id", "integer", nullable=False),
                          Column("name", "text")])
AppFactory = Callable[..., Database]


@pytest.fixture
def owner(store: Database) -> Database:
    if store.backend != "postgres":
        pytest.skip("row-level security exists only on PostgreSQL")
    store.create_table(AGENTS)
    store.run_many("INSERT INTO agents (team_id, name) VALUES (?, ?)",
                   [(team, f"t{team}-a{i}") for team in (1, 2, 3) for i in range(3)])
    store.enable_row_security("agents")
    return store


@pytest.fixture
def app_url(owner: Database) -> Iterator[str]:
    role = f"app_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12)
    create_app_role(owner, role, password)
    url = DatabaseURL.parse(owner.reveal_url().render(mask=False)).replace(username=role,
                                                                   password=password)
    yield url.render(mask=False)
    owner.exec(f'DROP OWNED BY "{role}"; DROP ROLE "{role}"')


@pytest.fixture
def make_app(app_url: str) -> Iterator[AppFactory]:
    opened: list[Database] = []

    def make(size: int = 1) -> Database:
        db = storekit.create_database(
            app_url, pool=storekit.PoolOptions(min_size=1, max_size=size))
        opened.append(db)
        return db

    yield make
    for db in opened:
        db.close()


def teams(tx: Transaction | Database) -> set[int]:
    return {r["team_id"] for r in tx.all("SELECT team_id FROM agents")}


TOKEN = "current_setting('app.team_token', true)"
# Each tries, from inside team 1's scope, to see another team's rows or to leave team 1's
# scope behind for the next borrower of the connection.
BYPASSES = {
    "set_config local": ["SELECT set_config('app.team_id', '2', true)"],
    "set_config session": ["SELECT set_config('app.team_id', '2', false)"],
    "SET": ["SET app.team_id = '2'"],
    "SET LOCAL": ["SET LOCAL app.team_id = '2'"],
    "RESET": ["RESET app.team_id"],
    "RESET ALL": ["RESET ALL"],
    "token copied to another team": [
        f"SELECT set_config('app.team_token', {TOKEN}, false), "
        "set_config('app.team_id', '2', false)"],
    "team kept for the next borrower": ["SELECT set_config('app.team_id', '1', false)"],
    "scope kept for the next borrower": [
        f"SELECT set_config('app.team_token', {TOKEN}, false), "
        "set_config('app.team_id', '1', false)"],
    "forged token": ["SET app.team_id = '2'", "SET app.team_token = '" + "0" * 64 + "'"],
    "own key registered": ["SELECT _storekit_register_scope_key('\\x" + "00" * 32 + "')"],
    "commit and a new transaction": [
        "COMMIT", "BEGIN", "SELECT set_config('app.team_id', '2', true)"],
    "savepoint": ["SAVEPOINT s1", "SELECT set_config('app.team_id', '2', true)",
                  "RELEASE SAVEPOINT s1"],
    "role switch": ["SET ROLE NONE", "SET SESSION AUTHORIZATION DEFAULT",
                    "SELECT set_config('app.team_id', '2', true)"],
}


@pytest.mark.parametrize("bypass", list(BYPASSES))
def test_sql_inside_a_scope_cannot_reach_another_team(owner: Database, make_app: AppFactory,
                                                      bypass: str) -> None:
    app = make_app()  # one pooled connection: every borrower below gets the same one
    seen: set[int] = set()
    with pytest.raises(storekit.StoreError) if "register" in bypass else _nothing(), \
            app.scope(team_id=1) as tx:
        assert teams(tx) == {1}
        for statement in BYPASSES[bypass]:
            tx.exec(statement)
            seen |= teams(tx)
        # In a savepoint, so the refused insert does not abort the scope's transaction.
        with pytest.raises(storekit.ProgrammingError, match="row-level security"), \
                app.transaction():
            tx.run("INSERT INTO agents (team_id, name) VALUES (2, 'planted')")
    assert seen <= {1}
    assert owner.all("SELECT name FROM agents WHERE name = 'planted'") == []
    # The same pooled connection, next borrower: neither the team nor a setting leaked.
    assert app.all("SELECT * FROM agents") == []
    assert app.get("SELECT current_setting('app.team_id', true) AS t,"
                   f" {TOKEN} AS k") in ({"t": "", "k": ""}, {"t": None, "k": None})
    with app.scope(team_id=3) as tx:
        assert teams(tx) == {3}


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_savepoint_rolled_back_restores_the_scope(make_app: AppFactory) -> None:
    app = make_app()
    with app.scope(team_id=1) as tx:
        with app.transaction():  # a SAVEPOINT
            tx.exec("SELECT set_config('app.team_id', '2', true)")
            assert teams(tx) == set()
            with pytest.raises(storekit.ProgrammingError), app.transaction():
                tx.exec("SELECT 1/0")
        assert teams(tx) == set()  # changed for the rest of the transaction: sees nothing
    with app.scope(team_id=1) as tx:
        tx.exec("SAVEPOINT manual; SELECT set_config('app.team_id', '2', true)")
        tx.exec("ROLLBACK TO SAVEPOINT manual")
        assert teams(tx) == {1}


def test_nested_scopes_cannot_change_team(make_app: AppFactory) -> None:
    app = make_app()
    with app.scope(team_id=1) as tx:
        with pytest.raises(storekit.ConfigurationError, match="team scope"), \
                app.scope(team_id=2):
            pass
        with app.scope(team_id=1) as inner:  # the same team nests as a savepoint
            assert teams(inner) == {1}
        assert teams(tx) == {1}
    with app.transaction():
        with pytest.raises(storekit.ConfigurationError, match="team scope"), \
                app.scope(team_id=2):
            pass
        assert teams(app) == set()


def test_unscoped_sql_cannot_choose_a_team(make_app: AppFactory) -> None:
    app = make_app()
    assert app.get("SELECT set_config('app.team_id', '1', false) AS s") == {"s": "1"}
    assert teams(app) == set()
    with pytest.raises(storekit.StoreError, match="already registered"):
        app.get("SELECT _storekit_register_scope_key(?) AS r", (b"\x01" * 32,))
    with pytest.raises(storekit.StoreError, match="permission denied"):
        app.all("SELECT * FROM _storekit_scope_keys")
    with pytest.raises(storekit.StoreError, match="permission denied"):
        app.run("DELETE FROM _storekit_scope_keys")


def test_a_session_older_than_row_security_cannot_register_a_key(store: Database) -> None:
    """A connection opened before enable_row_security was not registered as it connected;
    SQL on it must not get to register a key it knows and forge tokens with it."""
    if store.backend != "postgres":
        pytest.skip("row-level security exists only on PostgreSQL")
    from storekit.rls import scope_token

    store.create_table(AGENTS)
    store.run("INSERT INTO agents (team_id, name) VALUES (2, 'secret')")
    role, password = f"app_{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    create_app_role(store, role, password)
    url = DatabaseURL.parse(store.reveal_url().render(mask=False)).replace(username=role,
                                                                   password=password)
    early = psycopg.connect(url.conninfo(), autocommit=True)
    try:
        store.enable_row_security("agents")
        key = b"\x02" * 32
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="predates"):
            early.execute("SELECT _storekit_register_scope_key(%s)", [key])
        early.execute("SELECT set_config('app.team_id', '2', false),"
                      " set_config('app.team_token', %s, false)", [scope_token(key, "2")])
        assert early.execute("SELECT count(*) FROM agents").fetchone() == (0,)
    finally:
        early.close()
        store.exec(f'DROP OWNED BY "{role}"; DROP ROLE "{role}"')


def test_a_scope_works_on_every_pooled_connection(make_app: AppFactory) -> None:
    app = make_app(size=4)
    for team in (1, 2, 3) * 8:
        with app.scope(team_id=team) as tx:
            assert teams(tx) == {team}
            tx.exec("SET app.team_id = '1'")  # left behind in the session on purpose
        assert teams(app) == set()


def test_a_role_that_can_read_the_keys_gets_nothing(owner: Database, app_url: str,
                                                    make_app: AppFactory) -> None:
    """Granting the app role the key table (e.g. GRANT ... ON ALL TABLES) fails closed."""
    role = DatabaseURL.parse(app_url).username
    owner.exec(f'GRANT SELECT ON _storekit_scope_keys TO "{role}"')
    app = make_app()
    with app.scope(team_id=1) as tx:
        assert teams(tx) == set()
    owner.exec(f'REVOKE ALL ON _storekit_scope_keys FROM "{role}"')


@pytest.fixture
def one_conn(store_url: str) -> Iterator[Database]:
    """A Database whose pool has one connection, so each call reuses the previous one's."""
    if store_url.startswith("sqlite"):
        pytest.skip("a PostgreSQL pool")
    db = storekit.create_database(store_url, pool=storekit.PoolOptions(min_size=1, max_size=1))
    try:
        yield db
    finally:
        db.close()


def test_session_state_does_not_reach_the_next_borrower(one_conn: Database) -> None:
    db = one_conn
    before = db.get("SELECT pg_backend_pid() AS pid, current_schema() AS schema,"
                    " current_setting('statement_timeout') AS timeout")
    assert before is not None
    db.exec("SET search_path = pg_catalog; SET statement_timeout = '5min';"
            " SET app.team_id = '3'; CREATE TEMP TABLE leftover (x int);"
            " LISTEN leaked_channel; SELECT pg_advisory_lock(42)")
    with db.transaction() as tx:
        tx.exec("SET work_mem = '77MB'; DECLARE held CURSOR WITH HOLD FOR SELECT 1")
    after = db.get("SELECT pg_backend_pid() AS pid, current_schema() AS schema,"
                   " current_setting('statement_timeout') AS timeout")
    assert after == before  # the same connection, with the URL's search_path back
    assert db.get("SELECT current_setting('app.team_id', true) AS t,"
                  " current_setting('work_mem') AS w,"
                  " to_regclass('pg_temp.leftover') AS temp,"
                  " (SELECT count(*) FROM pg_listening_channels()) AS listening,"
                  " (SELECT count(*) FROM pg_cursors) AS cursors,"
                  " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                  "  AND pid = pg_backend_pid()) AS locks") == {
        "t": "", "w": "4MB", "temp": None, "listening": 0, "cursors": 0, "locks": 0}


def test_a_role_switch_does_not_reach_the_next_borrower(one_conn: Database,
                                                         app_url: str) -> None:
    role = DatabaseURL.parse(app_url).username
    user = one_conn.get("SELECT current_user AS u")
    one_conn.exec(f'SET ROLE "{role}"')
    assert one_conn.get("SELECT current_user AS u") == user
    one_conn.exec(f'SET SESSION AUTHORIZATION "{role}"')
    assert one_conn.get("SELECT current_user AS u, session_user AS s") == {
        "u": user["u"] if user else None, "s": user["u"] if user else None}


def test_a_transaction_left_open_by_sql_is_rolled_back_and_reset(one_conn: Database) -> None:
    one_conn.exec("BEGIN; SET app.team_id = '3'; SELECT pg_advisory_lock(7);"
                  " SET SESSION statement_timeout = '5min'")
    assert one_conn.get("SELECT current_setting('app.team_id', true) AS t,"
                        " current_setting('statement_timeout') AS s,"
                        " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                        "  AND pid = pg_backend_pid()) AS locks") == {
        "t": "", "s": "0", "locks": 0}


def test_prepared_statements_survive_the_reset(one_conn: Database) -> None:
    """The reset keeps psycopg's prepared statements: the hot path stays prepared."""
    for _ in range(10):
        one_conn.get("SELECT 1 + ? AS x", (1,))
    row = one_conn.get("SELECT count(*) AS n FROM pg_prepared_statements"
                       " WHERE statement LIKE 'SELECT 1 + $1%'")
    assert row == {"n": 1}
