"""Declared-type conversion for storekit's own SQLite connections.

sqlite3's detect_types reads converters from one process-wide registry, so registering
JSON or TIMESTAMP there would change every other sqlite3 connection in the user's
process (and the stdlib's own TIMESTAMP converter fails on ISO text with a 'T'). Instead,
the declared types of a statement's result columns are read once per SQL string (a
temporary view describes them) and the few columns that need it are converted here.
A value that does not parse is returned as stored: reading never fails on data.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import date, datetime, timezone
from typing import Any

from storekit.backends.sqlite.catalog import kind_of
from storekit.params import Translated

Converters = tuple[tuple[int, Callable[[Any], Any]], ...]
_PROBE = "storekit_result_types"


def _json(v: Any) -> Any:
    if not isinstance(v, (str, bytes)):
        return v
    try:
        return json.loads(v)
    except ValueError:
        return v


def _boolean(v: Any) -> Any:
    if isinstance(v, (int, float)):
        return bool(v)
    if isinstance(v, str):
        return v.strip().lower() not in ("0", "0.0", "", "false", "f", "no", "off")
    return v


def _timestamp(v: Any) -> Any:
    """ISO-8601 with 'T' or a space, with or without an offset ('Z' too): as PostgreSQL's
    timestamp, naive unless the text names an offset."""
    if not isinstance(v, str):
        return v
    try:
        return datetime.fromisoformat(v)
    except ValueError:
        return v


def _timestamptz(v: Any) -> Any:
    value = _timestamp(v)
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)  # stored without an offset: UTC
    return value


def _date(v: Any) -> Any:
    if not isinstance(v, str):
        return v
    try:
        return date.fromisoformat(v)
    except ValueError:
        return _timestamp(v)  # a date column holding a time keeps it


_BY_KIND: dict[str, Callable[[Any], Any]] = {
    "json": _json, "boolean": _boolean, "timestamp": _timestamp,
    "timestamptz": _timestamptz, "date": _date,
}


def converters(declared: Sequence[str]) -> Converters:
    found = []
    for i, decl in enumerate(declared):
        fn = _BY_KIND.get(kind_of(decl or ""))
        if fn is not None and decl:
            found.append((i, fn))
    return tuple(found)


def probe(conn: sqlite3.Connection, t: Translated) -> Converters | None:
    """The converters of t's result columns; None when they cannot be known yet (the
    statement does not compile now, e.g. its table is created later: not cached)."""
    if not t.query or not t.probe:
        return ()
    try:
        # A read-only transaction sets query_only, which also forbids the temp schema.
        query_only = conn.execute("PRAGMA query_only").fetchone()[0]
        if query_only:
            conn.execute("PRAGMA query_only=OFF")
        try:
            conn.execute(f"CREATE TEMP VIEW {_PROBE} AS {t.probe}")
            try:
                declared = [r[0] for r in conn.execute(
                    f"SELECT type FROM pragma_table_info('{_PROBE}', 'temp')")]
            finally:
                conn.execute(f"DROP VIEW temp.{_PROBE}")
        finally:
            if query_only:
                conn.execute("PRAGMA query_only=ON")
    except sqlite3.Error:
        return None
    return converters(declared)


def convert(rows: list[Any], conv: Converters) -> list[list[Any]]:
    out = []
    for row in rows:
        values = list(row)
        for i, fn in conv:
            v = values[i]
            if v is not None:
                values[i] = fn(v)
        out.append(values)
    return out
