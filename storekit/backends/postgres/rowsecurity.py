"""Row-level security SQL for team scopes (the why is in storekit/rls.py): the key table,
the SECURITY DEFINER functions, the policy and the application role, as sans-IO readers."""

from __future__ import annotations

import hashlib

from storekit.sansio import Reader, Script
from storekit.schema_names import derived_name, quote_ident

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


def scope_objects(schema: str) -> str:
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


def current_schema() -> Reader[str]:
    rows = yield "SELECT current_schema() AS s", None
    return quote_ident(rows[0]["s"] if rows and rows[0]["s"] else "public")


def revoke_keys_from_others(schema: str) -> Reader[None]:
    """Nobody but the owner may touch the keys: not PUBLIC, not a role granted ALL TABLES."""
    keys = f"{schema}.{KEYS_TABLE}"
    rows = yield (
        "SELECT DISTINCT g.grantee::regrole::text AS grantee FROM pg_class c,"
        " aclexplode(c.relacl) AS g WHERE c.oid = to_regclass(?) AND g.grantee <> 0"
        " AND g.grantee <> c.relowner", (keys,))
    for r in rows:
        yield Script(f"REVOKE ALL ON {keys} FROM {r['grantee']}")


def enable_row_security(table: str, column: str) -> Reader[None]:
    """Create the team policy on a table, then enable and force row-level security."""
    t, c = quote_ident(table), quote_ident(column)
    policy = quote_ident(derived_name(f"storekit_team_{table}"))
    schema = yield from current_schema()
    # The scalar subquery runs _storekit_team() once per statement, not once per row.
    check = f"{c}::text = (SELECT {schema}.{TEAM}())"
    yield Script(scope_objects(schema))
    yield from revoke_keys_from_others(schema)
    yield Script(
        f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;"
        f"ALTER TABLE {t} FORCE ROW LEVEL SECURITY;"
        f"DROP POLICY IF EXISTS {policy} ON {t};"
        f"CREATE POLICY {policy} ON {t} USING ({check}) WITH CHECK ({check});"
    )


def create_app_role(name: str, password: str) -> Reader[None]:
    role = quote_ident(name)
    exists = yield "SELECT 1 AS found FROM pg_roles WHERE rolname = ?", (name,)
    verb = "ALTER" if exists else "CREATE"
    # Utility statements take no bind parameters; the password goes in as a quoted literal.
    literal = "'" + password.replace("'", "''") + "'"
    yield Script(f"{verb} ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD {literal}")
    target = yield from current_schema()
    yield Script(
        f"GRANT USAGE ON SCHEMA {target} TO {role};"
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {target} TO {role};"
        f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {target} TO {role};"
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {target} "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role};"
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {target} "
        f"GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {role};"
    )
    found = yield "SELECT to_regclass(?) AS t", (f"{target}.{KEYS_TABLE}",)
    if found and found[0]["t"] is not None:
        yield from revoke_keys_from_others(target)
