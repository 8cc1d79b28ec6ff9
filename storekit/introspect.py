"""Read an existing database's schema, whoever created it, into one neutral model.

SQLite: PRAGMA table_list, table_info, foreign_key_list, index_list and index_info, plus
sqlite_master for views and triggers. PostgreSQL: information_schema and pg_catalog for the
current schema. The model records each column's declared type and the portable kind the
migration maps it through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from storekit.search import fts_table

if TYPE_CHECKING:
    from storekit.database import Database

# Portable kinds, how a value is moved and compared: integer, real, numeric, text,
# boolean, json, timestamp, timestamptz, date, blob.


@dataclass
class ColumnInfo:
    name: str
    declared: str
    kind: str
    notnull: bool = False
    default: str | None = None
    identity: bool = False  # INTEGER PRIMARY KEY on SQLite, an identity/serial on Postgres


@dataclass
class ForeignKey:
    columns: list[str]
    table: str
    ref_columns: list[str]
    on_delete: str | None = None


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


def sqlite_kind(declared: str) -> str:
    """SQLite's declared type to a portable kind, following its affinity rules, with the
    common names for JSON, booleans and times recognised first."""
    d = declared.upper()
    first = re.split(r"[\s(]", d, maxsplit=1)[0] if d else ""
    if first in ("JSON", "JSONB"):
        return "json"
    if first.startswith("BOOL"):
        return "boolean"
    if first in ("TIMESTAMPTZ",) or "WITH TIME ZONE" in d:
        return "timestamptz"
    if first in ("TIMESTAMP", "DATETIME"):
        return "timestamp"
    if first == "DATE":
        return "date"
    if "INT" in d:
        return "integer"
    if any(s in d for s in ("CHAR", "CLOB", "TEXT")):
        return "text"
    if "BLOB" in d or not d:
        return "blob" if "BLOB" in d else "text"
    if any(s in d for s in ("REAL", "FLOA", "DOUB")):
        return "real"
    return "numeric"


_PG_KINDS = {
    "smallint": "integer", "integer": "integer", "bigint": "integer", "real": "real",
    "double precision": "real", "numeric": "numeric", "text": "text",
    "character varying": "text", "character": "text", "boolean": "boolean", "jsonb": "json",
    "json": "json", "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz", "date": "date", "bytea": "blob",
    "uuid": "text",
}


def read_sqlite(db: Database) -> SchemaInfo:
    info = SchemaInfo([])
    master = db.all("SELECT type, name, tbl_name, sql FROM sqlite_master")
    fts = {r["name"] for r in master if r["type"] == "table"
           and (r["sql"] or "").upper().startswith("CREATE VIRTUAL TABLE")}
    shadow = {r["name"] for r in db.all(
        "SELECT name FROM pragma_table_list WHERE type IN ('shadow', 'virtual')")}
    for r in master:
        if r["type"] == "view":
            info.skipped.append(f"view {r['name']}")
        elif r["type"] == "trigger" and not r["name"].endswith(("_fts_ai", "_fts_ad", "_fts_au")):
            info.skipped.append(f"trigger {r['name']}")
    names = [r["name"] for r in db.all(
        "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table'"
        " AND name NOT LIKE 'sqlite!_%' ESCAPE '!' ORDER BY name")
        if r["name"] not in shadow | fts and not r["name"].startswith("_storekit")]
    for name in names:
        cols = db.all("SELECT * FROM pragma_table_info(?) ORDER BY cid", (name,))
        pk = [c["name"] for c in sorted((c for c in cols if c["pk"]), key=lambda c: c["pk"])]
        columns = []
        for c in cols:
            kind = sqlite_kind(c["type"] or "")
            identity = pk == [c["name"]] and (c["type"] or "").upper() == "INTEGER"
            columns.append(ColumnInfo(c["name"], c["type"] or "", kind, bool(c["notnull"]),
                                      c["dflt_value"], identity))
        table = TableInfo(name, columns, pk)
        for group in _group(db.all("SELECT * FROM pragma_foreign_key_list(?)", (name,)),
                            "id").values():
            group.sort(key=lambda r: r["seq"])
            ref_cols = [g["to"] for g in group]
            if any(c is None for c in ref_cols):  # REFERENCES t without columns: its key
                ref_cols = [c["name"] for c in db.all(
                    "SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk",
                    (group[0]["table"],))]
            on_delete = group[0]["on_delete"]
            table.foreign_keys.append(ForeignKey(
                [g["from"] for g in group], group[0]["table"], ref_cols,
                None if on_delete == "NO ACTION" else on_delete))
        for idx in db.all("SELECT * FROM pragma_index_list(?)", (name,)):
            idx_cols = [r["name"] for r in db.all(
                "SELECT name FROM pragma_index_info(?) ORDER BY seqno", (idx["name"],))]
            if idx["origin"] == "pk" or any(c is None for c in idx_cols):
                continue  # the primary key, or an expression index (reported below)
            if idx["origin"] == "u":
                table.uniques.append(idx_cols)
            else:
                table.indexes.append(IndexInfo(idx["name"], idx_cols, bool(idx["unique"])))
        fts_name = fts_table(name)
        if fts_name in fts:
            table.search_columns = [c["name"] for c in db.all(
                "SELECT name FROM pragma_table_info(?)", (fts_name,))]
        info.tables.append(table)
    return info


def read_postgres(db: Database) -> SchemaInfo:
    info = SchemaInfo([])
    for r in db.all("SELECT table_name FROM information_schema.views"
                    " WHERE table_schema = current_schema()"):
        info.skipped.append(f"view {r['table_name']}")
    for r in db.all("SELECT DISTINCT trigger_name FROM information_schema.triggers"
                    " WHERE trigger_schema = current_schema()"):
        info.skipped.append(f"trigger {r['trigger_name']}")
    names = [r["table_name"] for r in db.all(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        " AND table_type = 'BASE TABLE' ORDER BY table_name")
        if not r["table_name"].startswith("_storekit")]
    for name in names:
        cols = db.all(
            "SELECT column_name, data_type, is_nullable, column_default, is_identity,"
            " is_generated FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
            (name,))
        columns = []
        search: list[str] = []
        for c in cols:
            if c["is_generated"] == "ALWAYS":
                if c["column_name"] == "_search":
                    search = _search_sources(db, name)
                continue
            kind = _PG_KINDS.get(c["data_type"])
            if kind is None:
                info.unsupported.append(f"{name}.{c['column_name']}: {c['data_type']}")
                kind = "text"
            default = c["column_default"]
            identity = c["is_identity"] == "YES" or (default or "").startswith("nextval(")
            columns.append(ColumnInfo(c["column_name"], c["data_type"], kind,
                                      c["is_nullable"] == "NO",
                                      None if identity else default, identity))
        cons = db.all(
            "SELECT con.conname, con.contype, con.confdeltype,"
            " (SELECT array_to_json(array_agg(a.attname ORDER BY k.ord)) FROM unnest(con.conkey)"
            "   WITH ORDINALITY k(att, ord) JOIN pg_attribute a"
            "   ON a.attrelid = con.conrelid AND a.attnum = k.att) AS cols,"
            " (SELECT array_to_json(array_agg(a.attname ORDER BY k.ord)) FROM unnest(con.confkey)"
            "   WITH ORDINALITY k(att, ord) JOIN pg_attribute a"
            "   ON a.attrelid = con.confrelid AND a.attnum = k.att) AS refcols,"
            " con.confrelid::regclass::text AS reftable"
            " FROM pg_constraint con WHERE con.conrelid = to_regclass(?)"
            " ORDER BY con.conname", (f'"{name}"',))
        pk: list[str] = []
        table = TableInfo(name, columns, pk)
        actions = {"c": "CASCADE", "n": "SET NULL", "r": "RESTRICT", "d": "SET DEFAULT"}
        for con in cons:
            if con["contype"] == "p":
                pk.extend(con["cols"])
            elif con["contype"] == "u":
                table.uniques.append(con["cols"])
            elif con["contype"] == "f":
                table.foreign_keys.append(ForeignKey(con["cols"], con["reftable"].strip('"'),
                                                     con["refcols"],
                                                     actions.get(con["confdeltype"])))
        for idx in db.all(
            "SELECT i.relname AS name, ix.indisunique AS uniq,"
            " (SELECT array_to_json(array_agg(a.attname ORDER BY k.ord)) FROM unnest(ix.indkey)"
            "   WITH ORDINALITY k(att, ord) LEFT JOIN pg_attribute a"
            "   ON a.attrelid = ix.indrelid AND a.attnum = k.att) AS cols"
            " FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid"
            " WHERE ix.indrelid = to_regclass(?) AND NOT ix.indisprimary"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = ix.indexrelid)",
            (f'"{name}"',),
        ):
            cols_ = idx["cols"] or []
            if cols_ and all(cols_) and "_search" not in cols_:
                table.indexes.append(IndexInfo(idx["name"], cols_, idx["uniq"]))
        table.search_columns = search
        info.tables.append(table)
    return info


def _search_sources(db: Database, table: str) -> list[str]:
    row = db.get(
        "SELECT pg_get_expr(d.adbin, d.adrelid) AS expr FROM pg_attrdef d"
        " JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum"
        " WHERE d.adrelid = to_regclass(?) AND a.attname = '_search'", (f'"{table}"',))
    expr = row["expr"] if row else ""
    return re.findall(r'COALESCE\("?([A-Za-z_][A-Za-z0-9_]*)"?', expr, flags=re.I)


def _group(rows: list[dict[str, Any]], key: str) -> dict[Any, list[dict[str, Any]]]:
    out: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r[key], []).append(r)
    return out


def read_schema(db: Database) -> SchemaInfo:
    return read_sqlite(db) if db.backend == "sqlite" else read_postgres(db)


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
