"""One error tree for both backends, and the mapping from driver errors into it.

The same failing SQL raises the same class on SQLite and PostgreSQL; the driver's
exception is kept as ``__cause__`` so nothing the driver knew is lost.
"""

from __future__ import annotations

import sqlite3
from typing import Any


class StoreError(Exception):
    """Root of every error storekit raises."""


class ConfigurationError(StoreError):
    """A URL, option or argument is wrong; nothing was sent to a database."""


class DatabaseUnavailable(StoreError):
    """The database cannot be reached or opened."""


class ProgrammingError(StoreError):
    """The SQL or its parameters are wrong."""


class OperationalError(StoreError):
    """The database failed to carry out a valid request."""


class IntegrityError(StoreError):
    """A constraint rejected the change."""


class UniqueViolation(IntegrityError):
    pass


class ForeignKeyViolation(IntegrityError):
    pass


class NotNullViolation(IntegrityError):
    pass


class CheckViolation(IntegrityError):
    pass


class BusyError(OperationalError):
    """A lock wait timed out (SQLite busy timeout, PostgreSQL lock_timeout)."""


class TransactionConflict(OperationalError):
    """The transaction conflicted with a concurrent one and was rolled back; retry it
    (Database.atomic does)."""


class SerializationFailure(TransactionConflict):
    """PostgreSQL SQLSTATE 40001: no serial order explains both transactions."""


class DeadlockDetected(TransactionConflict):
    """PostgreSQL SQLSTATE 40P01: two transactions waited for each other."""


# What a retry can get past: Database.atomic re-runs a transaction that raised one.
RETRYABLE: tuple[type[StoreError], ...] = (TransactionConflict, BusyError)


class PoolTimeout(OperationalError):
    """No pooled connection became free within the configured timeout."""


class CapabilityError(StoreError):
    """The backend cannot do what was asked; the message says what to use instead."""


# SQLite extended result codes (sqlite.org/rescode.html), checked before the message text.
_SQLITE_CODES: dict[int, type[StoreError]] = {
    5: BusyError,  # SQLITE_BUSY and its extended forms share the low byte
    6: BusyError,  # SQLITE_LOCKED
    1555: UniqueViolation,  # SQLITE_CONSTRAINT_PRIMARYKEY
    2067: UniqueViolation,  # SQLITE_CONSTRAINT_UNIQUE
    787: ForeignKeyViolation,
    1299: NotNullViolation,
    275: CheckViolation,
    8: OperationalError,  # SQLITE_READONLY
    11: DatabaseUnavailable,  # SQLITE_CORRUPT
    14: DatabaseUnavailable,  # SQLITE_CANTOPEN
    26: DatabaseUnavailable,  # SQLITE_NOTADB
    1: ProgrammingError,  # SQLITE_ERROR: syntax, missing table or column
}

_SQLITE_MESSAGES: tuple[tuple[str, type[StoreError]], ...] = (
    ("UNIQUE constraint failed", UniqueViolation),
    ("FOREIGN KEY constraint failed", ForeignKeyViolation),
    ("NOT NULL constraint failed", NotNullViolation),
    ("CHECK constraint failed", CheckViolation),
    ("database is locked", BusyError),
)

# PostgreSQL SQLSTATE codes, exact first, then by two-character class.
_PG_CODES: dict[str, type[StoreError]] = {
    "23505": UniqueViolation,
    "23503": ForeignKeyViolation,
    "23502": NotNullViolation,
    "23514": CheckViolation,
    "55P03": BusyError,  # lock_not_available (lock_timeout, NOWAIT)
    "40001": SerializationFailure,
    "40P01": DeadlockDetected,
    "57P01": DatabaseUnavailable,  # admin_shutdown
    "57P02": DatabaseUnavailable,
    "57P03": DatabaseUnavailable,  # cannot_connect_now (starting up, shutting down)
    "22P02": ProgrammingError,  # invalid_text_representation
    "22023": ProgrammingError,
    "25006": OperationalError,  # read_only_sql_transaction, as SQLITE_READONLY
}
_PG_CLASSES: dict[str, type[StoreError]] = {
    "08": DatabaseUnavailable,
    "23": IntegrityError,
    "42": ProgrammingError,
    "22": ProgrammingError,
    "28": DatabaseUnavailable,  # invalid authorization
    "3D": DatabaseUnavailable,  # invalid catalog name: the database does not exist
    "40": OperationalError,  # 40003 statement_completion_unknown must not be retried
    "53": OperationalError,  # insufficient resources
    "57": OperationalError,
}


def sqlite_error_class(exc: sqlite3.Error) -> type[StoreError]:
    code: int | None = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        cls = _SQLITE_CODES.get(code) or _SQLITE_CODES.get(code & 0xFF)
        if cls is not None:
            return cls
    message = str(exc)
    for needle, cls in _SQLITE_MESSAGES:
        if needle in message:
            return cls
    if isinstance(exc, sqlite3.IntegrityError):
        return IntegrityError
    if isinstance(exc, (sqlite3.ProgrammingError, sqlite3.InterfaceError)):
        return ProgrammingError
    if isinstance(exc, sqlite3.OperationalError):
        syntax = "syntax error" in message or "no such" in message
        return ProgrammingError if syntax else OperationalError
    return OperationalError


def from_sqlite(exc: sqlite3.Error, where: str = "") -> StoreError:
    cls = sqlite_error_class(exc)
    message = str(exc)
    if where and cls in (BusyError, DatabaseUnavailable, OperationalError):
        message = f"{message} ({where})"
    return cls(message)


def pg_error_class(sqlstate: str | None) -> type[StoreError]:
    if not sqlstate:
        return OperationalError
    return _PG_CODES.get(sqlstate) or _PG_CLASSES.get(sqlstate[:2], OperationalError)


def from_psycopg(exc: Any, where: str = "") -> StoreError:
    """Map a psycopg error. Passwords are masked by structure (a conninfo password=...
    key, a URL's userinfo), never by searching the text for the password's value."""
    from storekit.url import mask_secrets

    sqlstate = getattr(exc, "sqlstate", None)
    name = type(exc).__name__
    if sqlstate is None and name in ("OperationalError", "InterfaceError"):
        cls: type[StoreError] = DatabaseUnavailable
    elif sqlstate is None and name in ("ProgrammingError", "DataError"):
        # Raised by psycopg before sending: a value it cannot send (NUL in text), bad SQL.
        cls = ProgrammingError
    else:
        cls = pg_error_class(sqlstate)
    message = mask_secrets(str(exc).strip())
    if where and cls is DatabaseUnavailable:
        message = f"{message} ({where})"
    return cls(message)


# What Python or a driver raises for a value it cannot take: a lone surrogate
# (UnicodeEncodeError is a ValueError), an int beyond 64 bits, an object json cannot
# encode, nesting beyond the recursion limit, a wrong argument type. Caught where the
# driver call already has its except clause, so the success path pays nothing.
BAD_INPUT: tuple[type[Exception], ...] = (TypeError, ValueError, OverflowError, RecursionError)


def from_bad_input(exc: Exception) -> ProgrammingError:
    return ProgrammingError(f"bad input: {type(exc).__name__}: {exc}")


def ended() -> StoreError:
    return StoreError("the transaction this iterator belongs to has ended; consume"
                      " tx.iter() inside its with block (or use all())")


def shown(value: object, limit: int = 80) -> str:
    """repr() of a caller's value for an error message: never raises (a __repr__ that
    raises, nesting beyond the recursion limit) and never runs long (a 10,000-character
    name), so composing the message cannot replace the error it explains."""
    try:
        text = repr(value)
    except Exception:  # whatever the caller's __repr__ raises
        return f"<{type(value).__name__} object>"
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} characters)"
