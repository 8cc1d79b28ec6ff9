"""storekit: one synchronous API over SQLite and PostgreSQL for multi-agent apps."""

from typing import TYPE_CHECKING, Any

from storekit.backends.base import Capabilities, PoolOptions, RunResult, SqliteOptions
from storekit.database import (
    Database,
    Transaction,
    create_database,
    create_memory_database,
    open_database,
)
from storekit.errors import (
    BusyError,
    CapabilityError,
    CheckViolation,
    ConfigurationError,
    DatabaseUnavailable,
    DeadlockDetected,
    ForeignKeyViolation,
    IntegrityError,
    NotNullViolation,
    OperationalError,
    PoolTimeout,
    ProgrammingError,
    SerializationFailure,
    StoreError,
    TransactionConflict,
    UniqueViolation,
)
from storekit.url import DatabaseURL

if TYPE_CHECKING:
    from storekit.migration import MigrationError, MigrationReport, migrate

# Migration is rarely used and a quarter of the import time: loaded on first access.
_LAZY = {"migrate", "MigrationError", "MigrationReport"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from storekit import migration

        return getattr(migration, name)
    raise AttributeError(f"module 'storekit' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "BusyError",
    "Capabilities",
    "CapabilityError",
    "CheckViolation",
    "ConfigurationError",
    "Database",
    "DatabaseURL",
    "DatabaseUnavailable",
    "DeadlockDetected",
    "ForeignKeyViolation",
    "IntegrityError",
    "MigrationError",
    "MigrationReport",
    "NotNullViolation",
    "OperationalError",
    "PoolOptions",
    "PoolTimeout",
    "ProgrammingError",
    "RunResult",
    "SerializationFailure",
    "SqliteOptions",
    "StoreError",
    "Transaction",
    "TransactionConflict",
    "UniqueViolation",
    "__version__",
    "create_database",
    "create_memory_database",
    "migrate",
    "open_database",
]
