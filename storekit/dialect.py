"""Each backend's dialect, by name: imported on first use, like the backends themselves.

`db.dialect` is the open Database's; `dialect_for("postgres")` works without a server
(schema_sql() shows PostgreSQL's DDL from anywhere). The Protocol is backends.base.Dialect.
"""

from __future__ import annotations

import importlib
from functools import cache

from storekit.backends.base import Dialect

DIALECTS = {
    "sqlite": "storekit.backends.sqlite.dialect:SqliteDialect",
    "postgres": "storekit.backends.postgres.dialect:PostgresDialect",
}


@cache
def dialect_for(backend: str) -> Dialect:
    module_name, _, class_name = DIALECTS[backend].partition(":")
    dialect: Dialect = getattr(importlib.import_module(module_name), class_name)()
    return dialect


__all__ = ["DIALECTS", "Dialect", "dialect_for"]
