"""Team isolation with PostgreSQL row-level security.

Row-level security does not apply to superusers, nor to roles with BYPASSRLS, nor (unless
FORCE is set) to the table's owner. storekit forces it on the owner too, and
`create_app_role` makes the kind of login role an application should use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from storekit.errors import CapabilityError
from storekit.schema_names import derived_name, quote_ident

if TYPE_CHECKING:
    from storekit.database import Database

SETTING = "app.team_id"


def sqlite_scope_error() -> CapabilityError:
    return CapabilityError(
        "SQLite has no row-level security: team isolation needs PostgreSQL "
        "(set DATABASE_URL to a postgresql:// URL), or filter by team in your own queries"
    )


def enable_row_security(db: Database, table: str, column: str = "team_id") -> None:
    """Create the team policy on a table, then enable and force row-level security."""
    if db.backend != "postgres":
        raise sqlite_scope_error()
    t, c = quote_ident(table), quote_ident(column)
    policy = quote_ident(derived_name(f"storekit_team_{table}"))
    # NULLIF turns an unset setting ('' after a scope ends) into NULL, which matches no row.
    check = f"{c}::text = NULLIF(current_setting('{SETTING}', true), '')"
    db.exec(
        f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;"
        f"ALTER TABLE {t} FORCE ROW LEVEL SECURITY;"
        f"DROP POLICY IF EXISTS {policy} ON {t};"
        f"CREATE POLICY {policy} ON {t} USING ({check}) WITH CHECK ({check});"
    )


def create_app_role(db: Database, name: str, password: str) -> None:
    """Create (or update) a login role without SUPERUSER or BYPASSRLS, and grant it use of
    the current schema's tables and sequences, so row-level security applies to it."""
    if db.backend != "postgres":
        raise sqlite_scope_error()
    role = quote_ident(name)
    exists = db.get("SELECT 1 AS found FROM pg_roles WHERE rolname = ?", (name,))
    verb = "ALTER" if exists else "CREATE"
    # Utility statements take no bind parameters; the password goes in as a quoted literal.
    literal = "'" + password.replace("'", "''") + "'"
    db.exec(f"{verb} ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD {literal}")
    schema = db.get("SELECT current_schema() AS s")
    target = quote_ident(schema["s"] if schema else "public")
    db.exec(
        f"GRANT USAGE ON SCHEMA {target} TO {role};"
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {target} TO {role};"
        f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {target} TO {role};"
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {target} "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role};"
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {target} "
        f"GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {role};"
    )
