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
before the connection's next borrower (backends/postgres/backend.py). The SQL is in
backends/postgres/rowsecurity.py; SQLite's dialect refuses with CapabilityError.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from storekit.backends.postgres.rowsecurity import (
    KEYS_TABLE,
    REGISTER,
    SETTING,
    TEAM,
    TOKEN_SETTING,
    scope_token,
)
from storekit.sansio import run_reader

if TYPE_CHECKING:
    from storekit.database import Database

__all__ = ["KEYS_TABLE", "REGISTER", "SETTING", "TEAM", "TOKEN_SETTING", "create_app_role",
           "enable_row_security", "scope_token"]


def enable_row_security(db: Database, table: str, column: str = "team_id") -> None:
    """Create the team policy on a table, then enable and force row-level security."""
    run_reader(db, db.dialect.enable_row_security(table, column))


def create_app_role(db: Database, name: str, password: str) -> None:
    """Create (or update) a login role without SUPERUSER or BYPASSRLS, and grant it use of
    the current schema's tables and sequences (not storekit's scope keys), so row-level
    security applies to it."""
    run_reader(db, db.dialect.create_app_role(name, password))
