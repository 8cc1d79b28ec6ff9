"""Team isolation with PostgreSQL row-level security.

Row-level security does not apply to superusers, nor to roles with BYPASSRLS, nor (unless
FORCE is set) to the table's owner. storekit forces it on the owner too, and
`create_app_role` makes the kind of login role an application should use.

Why the scope cannot be changed from inside it: any role can set any custom setting, so
a policy that trusted `app.team_id` alone would let SQL inside a scope pick another team
(`SELECT set_config('app.team_id', '2', true)`, `SET`, `RESET`, or `COMMIT; BEGIN; ...`).
So the policy trusts a team only when `app.team_token` carries HMAC-SHA256(key, team),
where the key is 32 random bytes each Database holds in memory and never sends as SQL text:
- As the pool opens each connection, before any caller's SQL runs on it, storekit
  registers the key (a bound parameter) through `_storekit_register_scope_key`, a SECURITY
  DEFINER function that stores it for that backend in `_storekit_scope_keys`, a table only
  its owner can read or write. It refuses a second key for the same session, and any key
  for a session older than the table, so SQL can never install a key it knows. (So open the
  application's Database after the first enable_row_security: connections opened earlier
  see nothing in a scope until the pool replaces them.)
- `scope(team_id=...)` sets both settings for the transaction; the policy compares the row's
  team with `_storekit_team()`, which returns the team only if the token matches the key
  registered for this backend, and NULL (no rows) otherwise.
SQL inside a scope sees its own team's token, which is worthless for any other team. A role
that can read the key table (its owner, or a role granted it) gets NULL: it fails closed.
Session state SQL leaves behind (SET, temp tables, advisory locks) is reset by the pool
before the connection's next borrower (backends/postgres.py).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from storekit.errors import CapabilityError
from storekit.schema_names import derived_name, quote_ident

if TYPE_CHECKING:
    from storekit.database import Database

SETTING = "app.team_id"
TOKEN_SETTING = "app.team_token"
KEYS_TABLE = "_storekit_scope_keys"
REGISTER = "_storekit_register_scope_key"
TEAM = "_storekit_team"
_PRIVS = "SELECT, INSERT, UPDATE, DELETE, TRUNCATE"


def scope_token(key: bytes, team: str) -> str:
    """HMAC-SHA256 of the team under the key, as _storekit_team() computes it in SQL."""
    inner = hashlib.sha256(key + team.encode()).digest()
    return hashlib.sha256(key + inner).hexdigest()


def sqlite_scope_error() -> CapabilityError:
    return CapabilityError(
        "SQLite has no row-level security: team isolation needs PostgreSQL "
        "(set DATABASE_URL to a postgresql:// URL), or filter by team in your own queries"
    )


def _scope_objects(schema: str) -> str:
    keys = f"{schema}.{KEYS_TABLE}"
    privileged = f"has_table_privilege(session_user, '{keys}', '{_PRIVS}')"
    return f"""
CREATE TABLE IF NOT EXISTS {keys} (
  pid integer PRIMARY KEY, started timestamptz NOT NULL, key bytea NOT NULL);
REVOKE ALL ON {keys} FROM PUBLIC;
INSERT INTO {keys} VALUES (0, now(), '') ON CONFLICT (pid) DO NOTHING;  -- installed at
CREATE OR REPLACE FUNCTION {schema}.{REGISTER}(k bytea) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  started timestamptz := (SELECT backend_start FROM pg_stat_activity
                          WHERE pid = pg_backend_pid());
BEGIN
  IF (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = session_user)
     OR {privileged} THEN
    RETURN false;  -- not isolated by row security anyway, or able to read the keys
  END IF;
  IF started < (SELECT s.started FROM {keys} AS s WHERE s.pid = 0) THEN
    -- storekit registers as it connects; a session older than this table did not, and
    -- SQL running in it must not get to choose the key.
    RAISE EXCEPTION 'this session predates storekit''s row security; reconnect'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF length(k) < 32 THEN
    RAISE EXCEPTION 'a storekit scope key has 32 bytes' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  INSERT INTO {keys} AS s VALUES (pg_backend_pid(), started, k)
    ON CONFLICT (pid) DO UPDATE SET started = excluded.started, key = excluded.key
    WHERE s.started IS DISTINCT FROM excluded.started;  -- a previous backend with this pid
  IF NOT FOUND THEN
    RAISE EXCEPTION 'this session already registered its storekit scope key'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN true;
END $$;
CREATE OR REPLACE FUNCTION {schema}.{TEAM}() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT t.team FROM (SELECT current_setting('{SETTING}', true) AS team,
                             current_setting('{TOKEN_SETTING}', true) AS token) AS t
  JOIN {keys} AS k ON k.pid = pg_backend_pid()
  WHERE t.team <> '' AND NOT {privileged}
    AND t.token = encode(sha256(k.key || sha256(k.key || convert_to(t.team, 'UTF8'))), 'hex')
$$;
"""


def _revoke_keys_from_others(db: Database, schema: str) -> None:
    """Nobody but the owner may touch the keys: not PUBLIC, not a role granted ALL TABLES."""
    keys = f"{schema}.{KEYS_TABLE}"
    rows = db.all(
        "SELECT DISTINCT g.grantee::regrole::text AS grantee FROM pg_class c,"
        " aclexplode(c.relacl) AS g WHERE c.oid = to_regclass(?) AND g.grantee <> 0"
        " AND g.grantee <> c.relowner", (keys,))
    for r in rows:
        db.exec(f"REVOKE ALL ON {keys} FROM {r['grantee']}")


def _current_schema(db: Database) -> str:
    row = db.get("SELECT current_schema() AS s")
    return quote_ident(row["s"] if row and row["s"] else "public")


def enable_row_security(db: Database, table: str, column: str = "team_id") -> None:
    """Create the team policy on a table, then enable and force row-level security."""
    if db.backend != "postgres":
        raise sqlite_scope_error()
    t, c = quote_ident(table), quote_ident(column)
    policy = quote_ident(derived_name(f"storekit_team_{table}"))
    schema = _current_schema(db)
    # The scalar subquery runs _storekit_team() once per statement, not once per row.
    check = f"{c}::text = (SELECT {schema}.{TEAM}())"
    db.exec(_scope_objects(schema))
    _revoke_keys_from_others(db, schema)
    db.exec(
        f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;"
        f"ALTER TABLE {t} FORCE ROW LEVEL SECURITY;"
        f"DROP POLICY IF EXISTS {policy} ON {t};"
        f"CREATE POLICY {policy} ON {t} USING ({check}) WITH CHECK ({check});"
    )


def create_app_role(db: Database, name: str, password: str) -> None:
    """Create (or update) a login role without SUPERUSER or BYPASSRLS, and grant it use of
    the current schema's tables and sequences (not storekit's scope keys), so row-level
    security applies to it."""
    if db.backend != "postgres":
        raise sqlite_scope_error()
    role = quote_ident(name)
    exists = db.get("SELECT 1 AS found FROM pg_roles WHERE rolname = ?", (name,))
    verb = "ALTER" if exists else "CREATE"
    # Utility statements take no bind parameters; the password goes in as a quoted literal.
    literal = "'" + password.replace("'", "''") + "'"
    db.exec(f"{verb} ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD {literal}")
    target = _current_schema(db)
    db.exec(
        f"GRANT USAGE ON SCHEMA {target} TO {role};"
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {target} TO {role};"
        f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {target} TO {role};"
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {target} "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role};"
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {target} "
        f"GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {role};"
    )
    if db.get("SELECT to_regclass(?) AS t", (f"{target}.{KEYS_TABLE}",)) not in (None,
                                                                                 {"t": None}):
        _revoke_keys_from_others(db, target)
