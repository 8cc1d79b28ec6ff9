"""Migration into and out of SQLite: values as SQLite stores them, batched inserts, and a
converter-free read-only connection for reading a source."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import urllib.parse
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from storekit.errors import StoreError
from storekit.schema_names import quote_ident

if TYPE_CHECKING:
    from storekit.database import Database, Transaction
    from storekit.introspect import TableInfo

BEGIN_COPY = ["PRAGMA defer_foreign_keys = ON"]


def to_sqlite(kind: str, v: Any) -> Any:
    if v is None:
        return None
    if kind == "json":
        return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
    if kind == "boolean":
        return int(bool(v))
    if kind in ("timestamp", "timestamptz", "date"):
        if isinstance(v, dt.datetime) and v.tzinfo:
            v = v.astimezone(dt.timezone.utc)
        return v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v
    if kind == "numeric" and isinstance(v, Decimal):
        return str(v)
    if isinstance(v, memoryview):
        return bytes(v)
    return v


def raw_reader(db: Database) -> sqlite3.Connection:
    """A plain connection without declared-type converters: a broken JSON value must reach
    the target (and be reported there), not fail while being read."""
    path = urllib.parse.quote(db.reveal_url().database)
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def copy_rows(tx: Transaction, t: TableInfo, batch: list[tuple[Any, ...]], conflict: str,
              key_of: Any) -> None:
    kinds = [c.kind for c in t.columns]
    cols = ", ".join(quote_ident(c.name) for c in t.columns)
    marks = ", ".join("?" for _ in t.columns)
    sql = f"INSERT INTO {quote_ident(t.name)} ({cols}) VALUES ({marks}){conflict}"
    rows = [tuple(to_sqlite(k, v) for k, v in zip(kinds, row, strict=True)) for row in batch]
    try:
        tx.run_many(sql, rows)
    except StoreError as exc:
        # Find the first offending row: one insert at a time under a savepoint.
        for original, row in zip(batch, rows, strict=True):
            try:
                with tx.database.transaction() as sub:
                    sub.run(sql, row)
            except StoreError as row_exc:
                raise type(row_exc)(
                    f"table {t.name}, row with key {key_of(t, original)!r}: {row_exc}"
                ) from exc
        raise


def after_copy(t: TableInfo) -> Sequence[tuple[str, Any]]:
    return ()  # a rowid alias continues past the largest key by itself
