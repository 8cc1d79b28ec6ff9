"""Portable table definitions: one Table, the right DDL on each backend.

Column types are the portable kinds (storekit.introspect.KINDS) plus "id" (a 64-bit
identity primary key). Two spellings are kept from before the kinds were one vocabulary:
"bigint" is "integer" (64-bit on both backends), and "timestamp" in a Table means an aware
UTC time, "timestamptz" (that is what it has always created). Each backend's dialect holds
the native types (its `types`), e.g. json is JSON TEXT + CHECK(json_valid) on SQLite and
JSONB on PostgreSQL. The one DDL generator, `table_ddl`, writes from the neutral model
that the schema readers return, so migration creates its copies with it too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from storekit.backends.base import Dialect
from storekit.backends.sql import json_path_parts
from storekit.dialect import dialect_for
from storekit.errors import BAD_INPUT, ConfigurationError, IntegrityError, ProgrammingError, shown
from storekit.introspect import KINDS, ColumnInfo, ForeignKey, TableInfo
from storekit.sansio import Reader, run_reader, run_script
from storekit.schema_names import check_ident, derived_name, quote_ident

if TYPE_CHECKING:
    from storekit.database import Database

ALIASES = {"bigint": "integer", "timestamp": "timestamptz"}  # Table spellings -> kinds
TYPES = ("id", *KINDS, *ALIASES)
_SPELLING = {"timestamptz": "timestamp", "timestamp": "text"}  # kinds -> Column.type read back
_REFERENCE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\(([A-Za-z_][A-Za-z0-9_]*)\))?")
ON_DELETE = ("CASCADE", "SET NULL", "RESTRICT", "NO ACTION", "SET DEFAULT")


def _names(value: object, what: str) -> None:
    """A list or tuple of names (a str alone would be read as its characters)."""
    if not isinstance(value, (list, tuple)):
        raise ConfigurationError(f"{what} must be a list or tuple of names, not"
                                 f" {type(value).__name__}")
    for name in value:
        check_ident(name, what)


def _items(value: object, cls: type, what: str) -> None:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, cls) for v in value):
        raise ConfigurationError(f"{what} must be a list or tuple of {cls.__name__}, got"
                                 f" {shown(value)}")


def _text_or_none(value: object, what: str) -> None:
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(f"{what} must be a str or None, not {type(value).__name__}")


def _checked_definition(post_init: Any) -> Any:
    """A definition's checks compare and format the caller's values (a str subclass's
    __eq__, a sequence's __iter__): what those raise is a ConfigurationError too."""
    def checked(self: Any) -> None:
        try:
            post_init(self)
        except BAD_INPUT as exc:
            raise ConfigurationError(f"bad {type(self).__name__}: {type(exc).__name__}:"
                                     f" {exc}") from exc
    return checked
__all__ = ["Column", "Index", "SearchSpec", "Table", "json_path_parts", "table_ddl"]


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    primary_key: bool = False
    nullable: bool = True
    unique: bool = False
    default: Any = None
    references: str | None = None  # "table" or "table(column)"
    on_delete: str | None = None

    @_checked_definition
    def __post_init__(self) -> None:
        name = check_ident(self.name, "column name")
        object.__setattr__(self, "name", name)  # a plain str: a subclass's methods would run
        if not isinstance(self.type, str) or self.type not in TYPES:
            raise ConfigurationError(
                f"column {name!r}: unknown type {shown(self.type)}; use one of"
                f" {', '.join(TYPES)}"
            )
        _text_or_none(self.references, "Column.references")
        _text_or_none(self.on_delete, "Column.on_delete")
        if self.references is not None and not _REFERENCE.fullmatch(self.references):
            raise ConfigurationError(
                f"column {name!r}: references={shown(self.references)} must be 'table'"
                " or 'table(column)'"
            )
        if self.on_delete is not None and self.on_delete.upper() not in ON_DELETE:
            raise ConfigurationError(
                f"column {name!r}: on_delete must be one of {', '.join(ON_DELETE)}"
            )

    @property
    def kind(self) -> str:
        """The portable kind ("id" is an identity integer)."""
        return "integer" if self.type == "id" else ALIASES.get(self.type, self.type)


@dataclass(frozen=True)
class Index:
    """An index on columns, on a JSON path (json_path=(column, "$.a.b")) or a GIN index."""

    columns_or_expressions: Sequence[str] = ()
    unique: bool = False
    json_path: tuple[str, str] | None = None
    gin: str | None = None
    name: str | None = None

    @_checked_definition
    def __post_init__(self) -> None:
        _names(self.columns_or_expressions, "index column")
        if self.json_path is not None and not (isinstance(self.json_path, tuple)
                                               and len(self.json_path) == 2):
            raise ConfigurationError("Index json_path must be a (column, path) tuple, got"
                                     f" {shown(self.json_path)}")
        _text_or_none(self.gin, "Index.gin")
        if self.name is not None:
            check_ident(self.name, "index name")
        given = sum(bool(x) for x in (self.columns_or_expressions, self.json_path, self.gin))
        if given != 1:
            raise ConfigurationError(
                "Index takes exactly one of: columns, json_path=(column, path), gin=column"
            )
        if self.json_path:
            check_ident(self.json_path[0], "index column")
            json_path_parts(self.json_path[1])
        if self.gin:
            check_ident(self.gin, "index column")


@dataclass(frozen=True)
class SearchSpec:
    columns: Sequence[str]
    language: str = "english"

    @_checked_definition
    def __post_init__(self) -> None:
        _names(self.columns, "search column")
        if not isinstance(self.language, str):
            raise ConfigurationError("SearchSpec.language must be a str, not"
                                     f" {type(self.language).__name__}")


@dataclass(frozen=True)
class Table:
    name: str
    columns: Sequence[Column]
    indexes: Sequence[Index] = ()
    search: SearchSpec | None = None

    @_checked_definition
    def __post_init__(self) -> None:
        name = check_ident(self.name, "table name")
        object.__setattr__(self, "name", name)  # a plain str (see Column)
        _items(self.columns, Column, f"table {name!r}: columns")
        _items(self.indexes, Index, f"table {name!r}: indexes")
        if self.search is not None and not isinstance(self.search, SearchSpec):
            raise ConfigurationError(f"table {name!r}: search must be a SearchSpec or"
                                     f" None, not {type(self.search).__name__}")
        if not self.columns:
            raise ConfigurationError(f"table {name!r} has no columns")
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"table {name!r} repeats a column name")

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise ConfigurationError(f"table {self.name!r} has no column {shown(name)}")


def table_info(dialect: Dialect, table: Table) -> TableInfo:
    """A Table in the neutral model, with its defaults and checks as the dialect writes them."""
    columns, pk, uniques, fks = [], [], [], []
    for c in table.columns:
        kind, identity = c.kind, c.type == "id"
        columns.append(ColumnInfo(
            c.name, dialect.column_type(kind, identity=identity), kind,
            notnull=not c.nullable and not identity, identity=identity,
            ddl_default=None if c.default is None else dialect.literal(kind, c.default),
            checks=dialect.checks(c.name, kind)))
        if identity or c.primary_key:
            pk.append(c.name)
        if c.unique:
            uniques.append([c.name])
        if c.references:
            m = _REFERENCE.fullmatch(c.references)
            assert m is not None
            fks.append(ForeignKey([c.name], m.group(1), [m.group(2)] if m.group(2) else [],
                                  c.on_delete.upper() if c.on_delete else None))
    return TableInfo(table.name, columns, pk, uniques, fks)


def table_ddl(dialect: Dialect, t: TableInfo, *, if_not_exists: bool = True) -> str:
    """CREATE TABLE for the neutral model: the one DDL generator (schema and migration)."""
    quoted = ", ".join
    parts = []
    for c in t.columns:
        col = f"{quote_ident(c.name)} {dialect.column_type(c.kind, identity=c.identity)}"
        if c.notnull and not c.identity:
            col += " NOT NULL"
        if c.ddl_default is not None:
            col += f" DEFAULT {c.ddl_default}"
        col += "".join(f" CHECK ({check})" for check in c.checks)
        parts.append(col)
    if t.primary_key:
        parts.append(f"PRIMARY KEY ({quoted(quote_ident(c) for c in t.primary_key)})")
    parts += [f"UNIQUE ({quoted(quote_ident(c) for c in u)})" for u in t.uniques]
    for fk in t.foreign_keys:
        ref = (f"FOREIGN KEY ({quoted(quote_ident(c) for c in fk.columns)}) REFERENCES "
               f"{quote_ident(fk.table)}")
        if fk.ref_columns:
            ref += f" ({quoted(quote_ident(c) for c in fk.ref_columns)})"
        if fk.on_delete:
            ref += f" ON DELETE {fk.on_delete}"
        if fk.deferred:
            ref += " DEFERRABLE INITIALLY DEFERRED"
        parts.append(ref)
    body = ",\n  ".join(parts)
    exists = " IF NOT EXISTS" if if_not_exists else ""
    return f"CREATE TABLE{exists} {quote_ident(t.name)} (\n  {body}\n)"


def index_ddl(table: str, name: str, expressions: Sequence[str], *, unique: bool = False,
              if_not_exists: bool = True) -> str:
    exists = " IF NOT EXISTS" if if_not_exists else ""
    return (f"CREATE {'UNIQUE ' if unique else ''}INDEX{exists} {quote_ident(name)}"
            f" ON {quote_ident(table)} ({', '.join(expressions)})")


def _index_sql(dialect: Dialect, table: Table, index: Index, if_not_exists: bool) -> str:
    if index.gin:
        table.column(index.gin)
        name = index.name or derived_name(f"{table.name}_{index.gin}", "_gin")
        return dialect.gin_index(table.name, index.gin, name,
                                 " IF NOT EXISTS" if if_not_exists else "")
    if index.json_path:
        column, path = index.json_path
        table.column(column)
        key = "_".join(json_path_parts(path))
        name = index.name or derived_name(f"{table.name}_{column}_{key}", "_idx")
        expressions = [dialect.json_get(column, path)]
    else:
        for column in index.columns_or_expressions:
            table.column(column)
        name = index.name or derived_name(
            f"{table.name}_{'_'.join(index.columns_or_expressions)}", "_idx")
        expressions = [quote_ident(c) for c in index.columns_or_expressions]
    return index_ddl(table.name, name, expressions, unique=index.unique,
                     if_not_exists=if_not_exists)


def schema_statements(dialect: Dialect | str, table: Table, *,
                      if_not_exists: bool = True) -> list[str]:
    d = dialect_for(dialect) if isinstance(dialect, str) else dialect
    if not isinstance(table, Table):
        raise ProgrammingError(f"expected a storekit.schema.Table, not {type(table).__name__}")
    statements = [table_ddl(d, table_info(d, table), if_not_exists=if_not_exists)]
    statements += [_index_sql(d, table, i, if_not_exists) for i in table.indexes]
    if table.search is not None:
        from storekit.search import search_statements

        for column in table.search.columns:
            table.column(column)
        statements += search_statements(d, table.name, table.search.columns,
                                        table.search.language)
    return statements


def schema_sql(dialect: Dialect | str, table: Table) -> str:
    return ";\n".join(schema_statements(dialect, table)) + ";"


def plan_create_table(dialect: Dialect, table: Table, *,
                      if_not_exists: bool = True) -> Reader[list[str]]:
    """The statements create_table runs ([] when the table exists), as a sans-IO reader."""
    statements = schema_statements(dialect, table, if_not_exists=if_not_exists)
    if table.search is not None:
        yield from dialect.check_language(table.search.language)
    if if_not_exists and table.name in (yield from dialect.read_tables()):
        return []  # search triggers and indexes already exist with the table
    return statements


def create_table(db: Database, table: Table, *, if_not_exists: bool = True) -> None:
    statements = run_reader(db, plan_create_table(db.dialect, table,
                                                  if_not_exists=if_not_exists))
    if not statements:
        return
    try:
        with db.transaction() as tx:
            run_script(tx, statements)
    except (IntegrityError, ProgrammingError):
        # Agents starting together all create the table: on PostgreSQL the losers of
        # that race fail (duplicate pg_type row, 42P07) even with IF NOT EXISTS. The
        # winner created the table with its indexes in one transaction, so it is whole.
        if not if_not_exists or db.in_transaction or table.name not in tables(db):
            raise


def drop_table(db: Database, name: str, *, if_exists: bool = True) -> None:
    check_ident(name, "table name")
    with db.transaction() as tx:
        run_script(tx, db.dialect.drop_table(name, if_exists=if_exists))


def tables(db: Database) -> list[str]:
    """User tables, without SQLite internals, FTS shadow tables or storekit's own tables."""
    return run_reader(db, db.dialect.read_tables())


def read_columns(dialect: Dialect, name: str) -> Reader[list[Column]]:
    """A table's columns as portable Column objects (the schema reader's view of them)."""
    check_ident(name, "table name")
    info = yield from dialect.read_schema([name])
    if not info.tables:
        return []
    t = info.tables[0]
    out = []
    for c in t.columns:
        spelling = "id" if c.identity else _SPELLING.get(c.kind, c.kind)
        key = c.name in t.primary_key
        out.append(Column(c.name, spelling, primary_key=key,
                          nullable=not c.notnull and not key))
    return out


def columns(db: Database, name: str) -> list[Column]:
    return run_reader(db, read_columns(db.dialect, name))
