"""The narrow contract every backend implements.

A backend offers the data methods twice: on itself (each call borrows a connection and
commits on its own) and on a `Handle` (one connection held for a transaction). The
`Database` facade adds nothing per call but a thread-local lookup.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, Protocol

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
    from storekit.errors import ConfigurationError, shown

    # str.lower, not str(name): a str subclass's __str__ is the caller's code.
    level = (" ".join(str.lower(name).replace("_", " ").replace("-", " ").split())
             if isinstance(name, str) else None)
    if level not in ISOLATION_LEVELS:
        raise ConfigurationError(
            f"unknown isolation level {shown(name)}; allowed: {', '.join(ISOLATION_LEVELS)}")
    return level


# Both SQLite's busy_timeout and PostgreSQL's lock_timeout are 32-bit ints of milliseconds:
# a larger value is refused by the server, or wraps to 0 ("fail at once") in SQLite.
MAX_BUSY_TIMEOUT_MS = 2**31 - 1


def check_busy_timeout(owner: str, value: object) -> None:
    check_int(f"{owner}.busy_timeout_ms", value, 0, MAX_BUSY_TIMEOUT_MS, "of milliseconds ")


# The options are checked once, as they are made, so nothing later (a pragma, the pool's
# scheduler thread, a wait) meets a value of the wrong type or out of range.
MAX_INT64 = 2**63 - 1
MAX_SECONDS = threading.TIMEOUT_MAX  # the longest wait Python's locks and events accept


def check_int(what: str, value: object, low: int, high: int, unit: str = "") -> None:
    _check(what, value, isinstance(value, int) and not isinstance(value, bool)
           and (lambda: low <= value <= high),
           f"must be an int {unit}from {low} to {high}")


def check_seconds(what: str, value: object) -> None:
    """A positive, finite number of seconds (or milliseconds) a wait can take."""
    _check(what, value, isinstance(value, (int, float)) and not isinstance(value, bool)
           and (lambda: 0 < value <= MAX_SECONDS),  # NaN fails the comparison too
           f"must be a number greater than 0 and at most {MAX_SECONDS:g}")


def _check(what: str, value: object, ok: Any, rule: str) -> None:
    """Raise ConfigurationError unless ok (a bool, or a callable that compares the value:
    a subclass's comparison is the caller's code and may raise)."""
    from storekit.errors import BAD_INPUT, ConfigurationError, shown

    try:
        if ok is not False and (ok is True or ok()):
            return
        cause = None
    except BAD_INPUT as exc:
        cause = exc
    raise ConfigurationError(f"{what}={shown(value)}: {rule}") from cause


def check_choice(what: str, value: object, allowed: Sequence[str]) -> None:
    from storekit.errors import ConfigurationError, shown

    if not isinstance(value, str) or str.lower(value) not in allowed:
        raise ConfigurationError(f"{what}={shown(value)}; allowed: {', '.join(allowed)}")


def check_bool(what: str, value: object) -> None:
    from storekit.errors import ConfigurationError, shown

    if not isinstance(value, bool):
        raise ConfigurationError(f"{what}={shown(value)}: must be True or False")


class Refusing:
    """Stands in for a connection that must not be used any more (a transaction's, once
    it ended; a parent's, in the child of a fork): any use raises StoreError(message)."""

    def __init__(self, message: str) -> None:
        self._message = message

    def __getattr__(self, name: str) -> NoReturn:
        from storekit.errors import StoreError

        raise StoreError(self._message)


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
        from storekit.errors import ConfigurationError, shown

        if not (self.pooler is None or (isinstance(self.pooler, str)
                                        and str.__eq__(self.pooler, "transaction"))):
            raise ConfigurationError(
                f"PoolOptions.pooler={shown(self.pooler)}: must be None or 'transaction'")
        if self.listen_url is not None and not isinstance(self.listen_url, str):
            from storekit.url import DatabaseURL

            if not isinstance(self.listen_url, DatabaseURL):
                raise ConfigurationError("PoolOptions.listen_url must be a URL (str) or None,"
                                         f" not {type(self.listen_url).__name__}")
        check_int("PoolOptions.min_size", self.min_size, 0, 2**31 - 1)
        check_int("PoolOptions.max_size", self.max_size, 1, 2**31 - 1)
        if self.max_size < self.min_size:
            raise ConfigurationError(
                f"PoolOptions: need 0 <= min_size <= max_size and max_size >= 1, "
                f"got min_size={self.min_size}, max_size={self.max_size}"
            )
        check_seconds("PoolOptions.timeout", self.timeout)
        check_seconds("PoolOptions.max_idle", self.max_idle)
        if self.connect_timeout is not None:
            check_seconds("PoolOptions.connect_timeout", self.connect_timeout)
        check_busy_timeout("PoolOptions", self.busy_timeout_ms)


_PRAGMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?")
_PRAGMA_VALUE = re.compile(r"[A-Za-z0-9_.+-]{1,100}|'[^'\x00]{0,1000}'")


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
        from storekit.errors import ConfigurationError, shown

        checks = {
            "journal_mode": ("wal", "delete", "truncate", "persist", "memory", "off"),
            "synchronous": ("off", "normal", "full", "extra"),
            "begin": ("immediate", "deferred", "exclusive"),
        }
        for name, allowed in checks.items():
            check_choice(f"SqliteOptions.{name}", getattr(self, name), allowed)
        check_busy_timeout("SqliteOptions", self.busy_timeout_ms)
        check_bool("SqliteOptions.foreign_keys", self.foreign_keys)
        check_bool("SqliteOptions.fair_locking", self.fair_locking)
        check_seconds("SqliteOptions.lock_slice_ms", self.lock_slice_ms)
        # Each is one PRAGMA's integer; cache_size_kib is negated into cache_size.
        check_int("SqliteOptions.cache_size_kib", self.cache_size_kib, -MAX_INT64, MAX_INT64)
        check_int("SqliteOptions.wal_autocheckpoint", self.wal_autocheckpoint, -MAX_INT64,
                  MAX_INT64)
        check_int("SqliteOptions.journal_size_limit", self.journal_size_limit, -MAX_INT64,
                  MAX_INT64)
        if not isinstance(self.extra_pragmas, Mapping):
            raise ConfigurationError("SqliteOptions.extra_pragmas must be a mapping of pragma"
                                     f" names to values, not {type(self.extra_pragmas).__name__}")
        for key, value in self.extra_pragmas.items():
            # Each becomes the text "PRAGMA key=value": a name, and a value of one token.
            if not (isinstance(key, str) and _PRAGMA_NAME.fullmatch(key)):
                raise ConfigurationError(f"SqliteOptions.extra_pragmas: {shown(key)} is not a"
                                         " pragma name")
            if not ((type(value) is int and -MAX_INT64 <= value <= MAX_INT64)
                    or (isinstance(value, str) and _PRAGMA_VALUE.fullmatch(value))):
                raise ConfigurationError(
                    f"SqliteOptions.extra_pragmas[{key!r}]={shown(value)}: must be a 64-bit int"
                    " or a str of letters, digits, _ . + - or one 'quoted' string")


def check_create_options(pool: object, sqlite: object) -> None:
    """create_database's pool= and sqlite= (sync and async): the option objects or None."""
    from storekit.errors import ConfigurationError

    for name, value, cls in (("pool", pool, PoolOptions), ("sqlite", sqlite, SqliteOptions)):
        if value is not None and not isinstance(value, cls):
            raise ConfigurationError(f"{name}= must be a storekit.{cls.__name__} or None, not"
                                     f" {type(value).__name__}")


def check_atomic(fn: object, retries: object) -> int:
    """atomic()'s arguments (sync and async), checked before the first attempt; the number
    of retries as a plain int, the one atomic() counts against."""
    if type(retries) is int and retries >= 0 and callable(fn):
        return retries  # every call: the common case without an import statement
    from storekit.errors import ConfigurationError, ProgrammingError, shown

    if not callable(fn):
        raise ProgrammingError(f"atomic() needs a function to run, not {type(fn).__name__}")
    # An int subclass's comparisons are the caller's code (one could raise, or never let
    # `attempt > retries` be true): its value, as a plain int, is what counts.
    count = int.__index__(retries) if issubclass(type(retries), int) else -1  # type: ignore[arg-type]
    if count < 0 or isinstance(retries, bool):
        raise ConfigurationError(f"atomic(retries={shown(retries)}): must be an int >= 0")
    return count


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
