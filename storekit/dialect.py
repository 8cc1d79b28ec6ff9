"""Portable SQL fragments: a query written with them runs unchanged on both backends."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from storekit.schema import SQLITE_NOW, json_expression
from storekit.schema_names import quote_ident


class Dialect:
    def __init__(self, backend: str) -> None:
        self.backend = backend

    def json_get(self, column: str, path: str) -> str:
        """The value at a JSON path as text: the same expression Index(json_path=...) indexes."""
        return json_expression(self.backend, column, path)

    def json_get_number(self, column: str, path: str) -> str:
        return json_expression(self.backend, column, path, number=True)

    def for_update(self) -> str:
        """A row lock to append to a SELECT: " FOR UPDATE" on PostgreSQL; nothing on SQLite,
        whose write transactions hold the whole database from BEGIN IMMEDIATE on."""
        return "" if self.backend == "sqlite" else " FOR UPDATE"

    def now(self) -> str:
        return SQLITE_NOW if self.backend == "sqlite" else "now()"

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
        head = self._insert(table, names)
        target = ", ".join(quote_ident(c) for c in conflict)
        if not updates:
            return f"{head} ON CONFLICT ({target}) DO NOTHING"
        sets = ", ".join(f"{quote_ident(c)} = excluded.{quote_ident(c)}" for c in updates)
        return f"{head} ON CONFLICT ({target}) DO UPDATE SET {sets}"

    def insert_or_ignore(self, table: str, values: Sequence[str] | Mapping[str, Any]) -> str:
        return f"{self._insert(table, list(values))} ON CONFLICT DO NOTHING"

    @staticmethod
    def _insert(table: str, names: list[str]) -> str:
        cols = ", ".join(quote_ident(c) for c in names)
        placeholders = ", ".join(":" + c for c in names)
        return f"INSERT INTO {quote_ident(table)} ({cols}) VALUES ({placeholders})"
