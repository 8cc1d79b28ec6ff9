"""SQL both backends write alike: the parts of a dialect they share (the ON CONFLICT
clause, upserts, literals). Each backend's dialect subclasses it and overrides the rest."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from storekit.errors import ConfigurationError, shown
from storekit.schema_names import quote_ident

_JSON_PATH = re.compile(r"\$((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])+)")
_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def json_path_parts(path: str) -> list[str]:
    """'$.a.b[0]' -> ['a', 'b', '0']; anything else is rejected, so a path never carries SQL."""
    if not isinstance(path, str) or not _JSON_PATH.fullmatch(path):
        raise ConfigurationError(
            f"unsupported JSON path {shown(path)}: use $.key, $.key.sub or $.key[0] "
            "(keys: letters, digits, underscore)"
        )
    return [m.group(1) or m.group(2) for m in _PATH_PART.finditer(path)]


class SqlDialect:
    name: ClassVar[str]
    types: ClassVar[Mapping[str, str]]
    now_sql: ClassVar[str]
    row_lock: ClassVar[str] = ""

    def __repr__(self) -> str:
        return f"<storekit dialect {self.name}>"

    # Types and DDL.
    def column_type(self, kind: str, *, identity: bool) -> str:
        return self.types[kind]

    def literal(self, kind: str, value: Any) -> str:
        """A column default as SQL ("now" is the current time)."""
        if value == "now":
            return f"({self.now_sql})"
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if isinstance(value, (int, float)) and not (isinstance(value, float)
                                                    and not math.isfinite(value)):
            return repr(value)  # NaN and infinity have no literal: refused below
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        if isinstance(value, str):
            return "'" + value.replace("'", "''") + "'"
        raise ConfigurationError(f"unsupported default {shown(value)}")

    def checks(self, column: str, kind: str) -> list[str]:
        return []

    def drop_table(self, table: str, *, if_exists: bool) -> list[str]:
        return [f"DROP TABLE{' IF EXISTS' if if_exists else ''} {quote_ident(table)}"]

    # Portable fragments.
    def json_expression(self, column: str, path: str, *, number: bool = False) -> str:
        raise NotImplementedError

    def json_get(self, column: str, path: str) -> str:
        """The value at a JSON path as text: the same expression Index(json_path=...) indexes."""
        return self.json_expression(column, path)

    def json_get_number(self, column: str, path: str) -> str:
        return self.json_expression(column, path, number=True)

    def for_update(self) -> str:
        return self.row_lock

    def now(self) -> str:
        return self.now_sql

    def conflict_clause(self, key: Sequence[str], updates: Sequence[str]) -> str:
        """" ON CONFLICT (key) DO UPDATE SET ..." (DO NOTHING without updates); both
        backends spell it alike (SQLite >= 3.24)."""
        target = ", ".join(quote_ident(c) for c in key)
        if not updates:
            return f" ON CONFLICT ({target}) DO NOTHING"
        sets = ", ".join(f"{quote_ident(c)} = excluded.{quote_ident(c)}" for c in updates)
        return f" ON CONFLICT ({target}) DO UPDATE SET {sets}"

    def upsert(
        self,
        table: str,
        values: Sequence[str] | Mapping[str, Any],
        *,
        conflict: Sequence[str] = ("id",),
        update: Iterable[str] | None = None,
    ) -> str:
        """INSERT ... ON CONFLICT (...) DO UPDATE with :name placeholders for `values`."""
        names = list(values)
        updates = [c for c in (update if update is not None else names) if c not in conflict]
        return self._insert(table, names) + self.conflict_clause(conflict, updates)

    def insert_or_ignore(self, table: str, values: Sequence[str] | Mapping[str, Any]) -> str:
        return f"{self._insert(table, list(values))} ON CONFLICT DO NOTHING"

    @staticmethod
    def _insert(table: str, names: list[str]) -> str:
        cols = ", ".join(quote_ident(c) for c in names)
        placeholders = ", ".join(":" + c for c in names)
        return f"INSERT INTO {quote_ident(table)} ({cols}) VALUES ({placeholders})"
