"""The narrow contract every backend implements.

A backend offers the data methods twice: on itself (each call borrows a connection and
commits on its own) and on a `Handle` (one connection held for a transaction). The
`Database` facade adds nothing per call but a thread-local lookup.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from storekit.params import Params
from storekit.sansio import Reader

if TYPE_CHECKING:
    from storekit.database import Database, Transaction
    from storekit.introspect import SchemaInfo, TableInfo
    from storekit.notify import Subscription

Row = dict[str, Any]


class RunResult(NamedTuple):
    rowcount: int
    last_id: Any


@dataclass(frozen=True)
class Capabilities:
    concurrent_writers: bool
    network: bool
    listen_notify: str  # "native" or "emulated"
    row_level_security: bool
    jsonb: bool
    full_text: str  # "fts5" or "tsvector"
    server_version: str


ISOLATION_LEVELS = ("serializable", "repeatable read", "read committed")


def isolation_level(name: str | None) -> str | None:
    """The canonical name of an isolation level ("read_committed" -> "read committed")."""
    if name is None:
        return None
    from storekit.errors import ConfigurationError

    level = " ".join(str(name).lower().replace("_", " ").replace("-", " ").split())
    if level not in ISOLATION_LEVELS:
        raise ConfigurationError(
            f"unknown isolation level {name!r}; allowed: {', '.join(ISOLATION_LEVELS)}")
    return level


# Both SQLite's busy_timeout and PostgreSQL's lock_timeout are 32-bit ints of milliseconds:
# a larger value is refused by the server, or wraps to 0 ("fail at once") in SQLite.
MAX_BUSY_TIMEOUT_MS = 2**31 - 1


def check_busy_timeout(owner: str, value: object) -> None:
    from storekit.errors import ConfigurationError

    if (not isinstance(value, int) or isinstance(value, bool)
            or not 0 <= value <= MAX_BUSY_TIMEOUT_MS):
        raise ConfigurationError(
            f"{owner}.busy_timeout_ms={value!r}: must be an int of milliseconds from 0 to"
            f" {MAX_BUSY_TIMEOUT_MS}")


@dataclass(frozen=True)
class PoolOptions:
    """psycopg_pool settings; the names and meaning follow psycopg_pool.ConnectionPool.

    busy_timeout_ms bounds a wait for another session's row or table lock (PostgreSQL's
    lock_timeout; BusyError when it runs out), as SqliteOptions.busy_timeout_ms bounds the
    wait for SQLite's write lock.
    """

    min_size: int = 1
    max_size: int = 10
    max_idle: float = 600.0
    timeout: float = 30.0
    # None: the URL's connect_timeout if it has one, else 5 s. A different value here and
    # in the URL is refused (ConfigurationError) rather than one silently overriding the other.
    connect_timeout: float | None = None
    busy_timeout_ms: int = 5000
    # "transaction": the URL reaches the server through a transaction pooler such as
    # PgBouncer (backends/postgres/pooler.py). listen_url: a direct URL for listen().
    pooler: str | None = None
    listen_url: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from storekit.errors import ConfigurationError

        if self.pooler not in (None, "transaction"):
            raise ConfigurationError(
                f"PoolOptions.pooler={self.pooler!r}: must be None or 'transaction'")

        if self.min_size < 0 or self.max_size < max(1, self.min_size):
            raise ConfigurationError(
                f"PoolOptions: need 0 <= min_size <= max_size and max_size >= 1, "
                f"got min_size={self.min_size}, max_size={self.max_size}"
            )
        connect_timeout = 5.0 if self.connect_timeout is None else self.connect_timeout
        if self.timeout <= 0 or connect_timeout <= 0 or self.max_idle <= 0:
            raise ConfigurationError("PoolOptions: timeout, connect_timeout, max_idle must be > 0")
        check_busy_timeout("PoolOptions", self.busy_timeout_ms)


@dataclass(frozen=True)
class SqliteOptions:
    """SQLite settings. The defaults are the ones a careful user picks for concurrent apps."""

    busy_timeout_ms: int = 5000
    journal_mode: str = "wal"
    synchronous: str = "normal"
    foreign_keys: bool = True
    begin: str = "immediate"  # "deferred" reproduces Python's stdlib default
    fair_locking: bool = True  # FIFO write-lock hand-off across threads and processes
    lock_slice_ms: float = 2.0  # with fair_locking, a process's shortest turn at writing
    cache_size_kib: int = 20_000
    wal_autocheckpoint: int = 1000
    journal_size_limit: int = 64 * 1024 * 1024
    extra_pragmas: Mapping[str, str | int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from storekit.errors import ConfigurationError

        checks = {
            "journal_mode": ("wal", "delete", "truncate", "persist", "memory", "off"),
            "synchronous": ("off", "normal", "full", "extra"),
            "begin": ("immediate", "deferred", "exclusive"),
        }
        for name, allowed in checks.items():
            value = str(getattr(self, name)).lower()
            if value not in allowed:
                raise ConfigurationError(
                    f"SqliteOptions.{name}={getattr(self, name)!r}; allowed: {', '.join(allowed)}"
                )
        check_busy_timeout("SqliteOptions", self.busy_timeout_ms)
        if not self.lock_slice_ms > 0:
            raise ConfigurationError("SqliteOptions.lock_slice_ms must be > 0")


class Handle(Protocol):
    """One connection, held for the length of a transaction."""

    def run(self, sql: str, params: Params = None) -> RunResult: ...
    def get(self, sql: str, params: Params = None) -> Row | None: ...
    def all(self, sql: str, params: Params = None) -> list[Row]: ...
    def iter(self, sql: str, params: Params = None, tx: Any = None) -> Iterator[Row]: ...
    def run_many(self, sql: str, seq: Iterable[Sequence[Any] | Mapping[str, Any]]) -> int: ...
    def run_deferred(self, sql: str, params: Params = None) -> None: ...
    def exec(self, script: str) -> None: ...


class Backend(Protocol):
    """Autocommit data methods (each call borrows a connection), and transactions."""

    name: str
    capabilities: Capabilities

    def run(self, sql: str, params: Params = None) -> RunResult: ...
    def get(self, sql: str, params: Params = None) -> Row | None: ...
    def all(self, sql: str, params: Params = None) -> list[Row]: ...
    def iter(self, sql: str, params: Params = None) -> Iterator[Row]: ...
    def exec(self, script: str) -> None: ...
    def settings(self) -> dict[str, Any]: ...
    def begin(self, *, readonly: bool, team_id: Any = None,
              isolation: str = "serializable") -> Handle: ...
    def finish(self, handle: Handle, *, commit: bool) -> None: ...
    # Roll back and release what this thread still holds of the transaction on handle;
    # repeatable, and leaves alone what was released already (it may be another's now).
    def abandon(self, handle: Handle) -> None: ...
    def savepoint(self, handle: Handle, name: str) -> None: ...
    def release(self, handle: Handle, name: str, *, commit: bool) -> None: ...
    def close(self) -> None: ...


class Dialect(Hashable, Protocol):
    """What one backend's SQL looks like: every backend branch the feature modules had.

    Methods return SQL (pure functions of their arguments), or are sans-IO readers
    (storekit.sansio) where the answer depends on the catalog, so a sync and an async
    facade share them. Type vocabulary and DDL pieces are class data and small methods,
    as peewee's backends have them.
    """

    name: str
    types: Mapping[str, str]  # portable kind (introspect.KINDS) -> native column type
    now_sql: str  # the current time as a column default / expression

    # Types and DDL.
    def kind_of(self, declared: str) -> str | None: ...
    def column_type(self, kind: str, *, identity: bool) -> str: ...
    def literal(self, kind: str, value: Any) -> str: ...
    def json_expression(self, column: str, path: str, *, number: bool = False) -> str: ...
    def json_key_equals(self, column: str, key: str,
                        value_json: str) -> tuple[str, tuple[str, ...]]: ...
    def checks(self, column: str, kind: str) -> list[str]: ...
    def gin_index(self, table: str, column: str, name: str, exists: str) -> str: ...
    def drop_table(self, table: str, *, if_exists: bool) -> list[str]: ...
    # Portable fragments (db.dialect in user code).
    def json_get(self, column: str, path: str) -> str: ...
    def json_get_number(self, column: str, path: str) -> str: ...
    def for_update(self) -> str: ...
    def now(self) -> str: ...
    def conflict_clause(self, key: Sequence[str], updates: Sequence[str]) -> str: ...
    def upsert(self, table: str, values: Sequence[str] | Mapping[str, Any], *,
               conflict: Sequence[str] = ("id",), update: Iterable[str] | None = None
               ) -> str: ...
    def insert_or_ignore(self, table: str, values: Sequence[str] | Mapping[str, Any]) -> str: ...
    # Schema reading.
    def read_tables(self) -> Reader[list[str]]: ...
    def read_schema(self, names: list[str] | None = None) -> Reader[SchemaInfo]: ...
    # Full-text search.
    def search_language(self, language: str) -> str: ...
    def check_language(self, language: str) -> Reader[str]: ...
    def search_statements(self, table: str, columns: Sequence[str],
                          language: str) -> list[str]: ...
    def search_source(self, table: str) -> Reader[tuple[str, str]]: ...
    def search_query(self, t: str, select: str, language: str, where: str | None,
                     named: bool) -> str: ...
    def search_expression(self, clauses: Any) -> str: ...
    def rebuild_search(self, table: str) -> str: ...
    # Notifications.
    def notify(self, db: Database, channel: str, payload: str) -> None: ...
    def listen(self, db: Database, channels: Sequence[str],
               poll_interval: float) -> Subscription: ...
    # Migration: copying rows in, reading a source.
    row_order: str  # the ORDER BY of a table without a key ("" = all its columns)
    takes_unsupported: bool  # a column of a type without a kind is copied as text
    def begin_copy(self) -> list[str]: ...
    def stage_copy(self, table: str, conflict: str) -> list[str]: ...
    def end_stage(self, conflict: str) -> list[str]: ...
    def copy_rows(self, tx: Transaction, t: TableInfo, batch: list[tuple[Any, ...]],
                  conflict: str, key_of: Any) -> None: ...
    def after_copy(self, t: TableInfo) -> Sequence[tuple[str, Any]]: ...
    def raw_reader(self, db: Database) -> Any: ...
    # Row security (SQLite's raises CapabilityError).
    def enable_row_security(self, table: str, column: str) -> Reader[None]: ...
    def create_app_role(self, name: str, password: str) -> Reader[None]: ...
