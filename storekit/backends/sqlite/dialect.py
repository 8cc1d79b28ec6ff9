"""SQLite's dialect: type vocabulary, DDL pieces, JSON paths, FTS5 search, emulated
notifications; row security is refused (CapabilityError).

Declared types start with the word storekit's converters recognise (JSON, BOOLEAN,
TIMESTAMPTZ), and those with TEXT in them get TEXT affinity, so values come back as the
same Python types as on PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from storekit.backends.sql import SqlDialect, json_path_parts
from storekit.backends.sqlite import catalog, copy, events
from storekit.errors import CapabilityError
from storekit.introspect import SchemaInfo, TableInfo
from storekit.sansio import Reader
from storekit.schema_names import check_ident, derived_name, quote_ident

if TYPE_CHECKING:
    from storekit.database import Database, Transaction
    from storekit.notify import Subscription

NOW = "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')"
LANGUAGES = {"english": "porter unicode61 remove_diacritics 0",
             "simple": "unicode61 remove_diacritics 0"}


def scope_error() -> CapabilityError:
    return CapabilityError(
        "SQLite has no row-level security: team isolation needs PostgreSQL "
        "(set DATABASE_URL to a postgresql:// URL), or filter by team in your own queries"
    )


def fts5_expression(clauses: Any) -> str:
    """The parsed query (search.parse_query) as an FTS5 MATCH expression."""
    def term(t: Any) -> str:
        return '"' + " ".join(t.words) + '"' + ("*" if t.prefix else "")

    parts = []
    for clause in clauses:
        positive = " AND ".join(term(t) for t in clause if not t.negated)
        negative = "".join(f" NOT {term(t)}" for t in clause if t.negated)
        parts.append(f"(({positive}){negative})")
    return " OR ".join(parts)


class SqliteDialect(SqlDialect):
    name = "sqlite"
    types: ClassVar[dict[str, str]] = {
        "integer": "INTEGER", "real": "REAL", "numeric": "NUMERIC", "text": "TEXT",
        "boolean": "BOOLEAN", "json": "JSON TEXT", "timestamp": "TIMESTAMP",
        "timestamptz": "TIMESTAMPTZ TEXT", "date": "DATE", "blob": "BLOB",
    }
    now_sql = NOW
    row_lock = ""  # write transactions hold the whole database from BEGIN IMMEDIATE on

    # Types and DDL.
    def kind_of(self, declared: str) -> str:
        return catalog.kind_of(declared)

    def column_type(self, kind: str, *, identity: bool) -> str:
        return "INTEGER" if identity else self.types[kind]  # a rowid alias

    def literal(self, kind: str, value: Any) -> str:
        if kind == "boolean" and value != "now":
            return str(int(bool(value)))
        return super().literal(kind, value)

    def checks(self, column: str, kind: str) -> list[str]:
        c = quote_ident(column)
        if kind == "json":
            return [f"{c} IS NULL OR json_valid({c})"]
        if kind == "boolean":
            return [f"{c} IN (0, 1)"]
        return []

    def gin_index(self, table: str, column: str, name: str, exists: str) -> str:
        raise CapabilityError(
            f"GIN indexes exist only on PostgreSQL (index on {table}.{column}); "
            "on SQLite use Index(json_path=(column, '$.key')) for the keys you query"
        )

    def drop_table(self, table: str, *, if_exists: bool) -> list[str]:
        # The FTS table is not dropped with its content table; the triggers are.
        return [f"DROP TABLE IF EXISTS {quote_ident(catalog.fts_table(table))}",
                *super().drop_table(table, if_exists=if_exists)]

    def json_expression(self, column: str, path: str, *, number: bool = False) -> str:
        json_path_parts(path)
        return f"json_extract({quote_ident(column)}, '{path}')"

    def json_key_equals(self, column: str, key: str,
                        value_json: str) -> tuple[str, tuple[str, ...]]:
        # JSON values compared as JSON: "1" is not 1, true is not 1, a missing key is not
        # null; json_each, not a path, so a key like "k.x" is never read as a path.
        col = quote_ident(column)
        return (
            f"EXISTS (SELECT 1 FROM json_each({col}) AS j WHERE j.key = ?"
            " AND replace(j.type, 'real', 'integer') = replace(json_type(?), 'real', 'integer')"
            " AND j.value IS json_extract(?, '$'))",
            (key, value_json, value_json),
        )

    # Schema reading.
    def read_tables(self) -> Reader[list[str]]:
        return catalog.read_tables()

    def read_schema(self, names: list[str] | None = None) -> Reader[SchemaInfo]:
        return catalog.read_schema(names)

    # Full-text search: an FTS5 external-content table `<table>_fts`, kept by triggers.
    def search_language(self, language: str) -> str:
        check_ident(language, "search language")  # never a quote: pasted as a literal
        if language not in LANGUAGES:
            raise CapabilityError(
                f"SQLite FTS5 stems English only (language='english' or 'simple'), not"
                f" {language!r}; PostgreSQL supports its other text search configurations"
            )
        return language

    def check_language(self, language: str) -> Reader[str]:
        return self.search_language(language)
        yield  # a reader that reads nothing

    def search_statements(self, table: str, columns: Sequence[str], language: str) -> list[str]:
        t = quote_ident(table, "table name")
        cols = [quote_ident(c, "column name") for c in columns]
        fts = quote_ident(catalog.fts_table(table))
        col_list = ", ".join(cols)
        new = ", ".join(f"new.{c}" for c in cols)
        old = ", ".join(f"old.{c}" for c in cols)
        delete = (f"INSERT INTO {fts} ({fts}, rowid, {col_list})"
                  f" VALUES ('delete', old.rowid, {old});")
        insert = f"INSERT INTO {fts} (rowid, {col_list}) VALUES (new.rowid, {new});"
        ai, ad, au = (quote_ident(derived_name(table, f"_fts_a{op}")) for op in "idu")
        return [
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {fts} USING fts5({col_list}, content={t},"
            f" content_rowid='rowid', tokenize='{LANGUAGES[language]}')",
            f"CREATE TRIGGER IF NOT EXISTS {ai} AFTER INSERT ON {t} BEGIN {insert} END",
            f"CREATE TRIGGER IF NOT EXISTS {ad} AFTER DELETE ON {t} BEGIN {delete} END",
            f"CREATE TRIGGER IF NOT EXISTS {au} AFTER UPDATE ON {t} BEGIN {delete} {insert} END",
            f"INSERT INTO {fts} ({fts}) VALUES ('rebuild')",
        ]

    def search_source(self, table: str) -> Reader[tuple[str, str]]:
        return f"{quote_ident(table)}.*", "english"
        yield

    def search_query(self, t: str, select: str, language: str, where: str | None,
                     named: bool) -> str:
        q, limit, offset = (":_sk_q", ":_sk_limit", ":_sk_offset") if named else ("?",) * 3
        fts = quote_ident(catalog.fts_table(t[1:-1]))
        # Ties in rank go by rowid, so both shapes below return the same rows.
        if not where:
            # The page is ranked inside the index, and only its rows are joined: joining
            # every match before sorting cost about as much as the search itself.
            return (
                f"SELECT {select}, s.score AS rank FROM (SELECT rowid AS rid,"
                f" -bm25({fts}) AS score FROM {fts} WHERE {fts} MATCH {q}"
                f" ORDER BY score DESC, rid LIMIT {limit} OFFSET {offset}) AS s"
                f" JOIN {t} ON {t}.rowid = s.rid ORDER BY s.score DESC, s.rid"
            )
        # A filter on the table's columns must apply before the page is cut.
        return (
            f"SELECT {select}, s.rank AS rank FROM (SELECT rowid AS rid, -bm25({fts}) AS rank"
            f" FROM {fts} WHERE {fts} MATCH {q}) AS s JOIN {t} ON {t}.rowid = s.rid"
            f" WHERE ({where}) ORDER BY s.rank DESC, s.rid LIMIT {limit} OFFSET {offset}"
        )

    def search_expression(self, clauses: Any) -> str:
        return fts5_expression(clauses)

    def rebuild_search(self, table: str) -> str:
        fts = quote_ident(catalog.fts_table(table))
        return f"INSERT INTO {fts} ({fts}) VALUES ('rebuild')"

    # Notifications: emulated with a table (events.py).
    def notify(self, db: Database, channel: str, payload: str) -> None:
        events.notify(db, channel, payload)

    def listen(self, db: Database, channels: Sequence[str],
               poll_interval: float) -> Subscription:
        return events.listen(db, channels, poll_interval)

    # Migration (copy.py).
    row_order = "rowid"  # a table without a primary key is read in insertion order
    takes_unsupported = False  # a column of a type SQLite has no kind for is refused

    def begin_copy(self) -> list[str]:
        return copy.BEGIN_COPY

    def stage_copy(self, table: str, conflict: str) -> list[str]:
        return []  # conflicts are handled by the INSERT itself

    def end_stage(self, conflict: str) -> list[str]:
        return []

    def copy_rows(self, tx: Transaction, t: TableInfo, batch: list[tuple[Any, ...]],
                  conflict: str, key_of: Any) -> None:
        copy.copy_rows(tx, t, batch, conflict, key_of)

    def after_copy(self, t: TableInfo) -> Sequence[tuple[str, Any]]:
        return copy.after_copy(t)

    def raw_reader(self, db: Database) -> sqlite3.Connection | None:
        return copy.raw_reader(db)

    # Row security: none.
    def enable_row_security(self, table: str, column: str) -> Reader[None]:
        raise scope_error()

    def create_app_role(self, name: str, password: str) -> Reader[None]:
        raise scope_error()
