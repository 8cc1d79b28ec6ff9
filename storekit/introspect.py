"""Read an existing database's schema, whoever created it, into one neutral model.

The model is also what the DDL generator (`schema.table_ddl`) writes from, so a table read
from one backend is created on the other by the same code that creates a `schema.Table`.
Each backend's dialect reads its catalog (`read_schema`, a sans-IO reader): SQLite's
PRAGMA table_list, table_info, foreign_key_list and index_list; PostgreSQL's
information_schema and pg_catalog for the current schema.

Portable kinds, how a value is declared, moved and compared (KINDS): integer (64-bit on
both), real, numeric, text, boolean, json, timestamp (no time zone), timestamptz, date,
blob; an identity column is an integer with `identity` set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from storekit.sansio import run_reader

if TYPE_CHECKING:
    from storekit.database import Database

KINDS = ("integer", "real", "numeric", "text", "boolean", "json", "timestamp", "timestamptz",
         "date", "blob")


@dataclass
class ColumnInfo:
    name: str
    declared: str
    kind: str
    notnull: bool = False
    default: str | None = None  # as the catalog shows it; DDL writes `ddl_default`
    identity: bool = False  # INTEGER PRIMARY KEY on SQLite, an identity/serial on Postgres
    ddl_default: str | None = None  # an SQL expression, for tables storekit defines
    checks: list[str] = field(default_factory=list)  # SQL conditions, ditto


@dataclass
class ForeignKey:
    columns: list[str]
    table: str
    ref_columns: list[str]  # empty: the referenced table's primary key
    on_delete: str | None = None
    deferred: bool = False  # DEFERRABLE INITIALLY DEFERRED (a copy loads in any row order)


@dataclass
class IndexInfo:
    name: str
    columns: list[str]
    unique: bool


@dataclass
class TableInfo:
    name: str
    columns: list[ColumnInfo]
    primary_key: list[str]
    uniques: list[list[str]] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    indexes: list[IndexInfo] = field(default_factory=list)
    search_columns: list[str] = field(default_factory=list)  # a storekit search index

    def column(self, name: str) -> ColumnInfo:
        return next(c for c in self.columns if c.name == name)


@dataclass
class SchemaInfo:
    tables: list[TableInfo]
    skipped: list[str] = field(default_factory=list)  # views, triggers: named, not moved
    unsupported: list[str] = field(default_factory=list)  # "table.column: type"


def read_schema(db: Database, names: list[str] | None = None) -> SchemaInfo:
    """Every user table (or those named) with views and triggers listed as skipped."""
    return run_reader(db, db.dialect.read_schema(names))


def fk_order(tables: list[TableInfo]) -> list[TableInfo]:
    """Referenced tables before the tables that reference them (cycles keep their order)."""
    by_name = {t.name: t for t in tables}
    done: list[TableInfo] = []
    seen: set[str] = set()

    def visit(t: TableInfo, path: set[str]) -> None:
        if t.name in seen or t.name in path:
            return
        for fk in t.foreign_keys:
            if fk.table in by_name and fk.table != t.name:
                visit(by_name[fk.table], path | {t.name})
        seen.add(t.name)
        done.append(t)

    for t in tables:
        visit(t, set())
    return done
