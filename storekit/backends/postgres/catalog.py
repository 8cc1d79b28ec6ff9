"""PostgreSQL's catalog read into the neutral model (storekit.introspect), as a sans-IO
reader: information_schema and pg_catalog for the current schema."""

from __future__ import annotations

import re

from storekit.introspect import ColumnInfo, ForeignKey, IndexInfo, SchemaInfo, TableInfo
from storekit.sansio import Reader

SEARCH_COLUMN = "_search"
KINDS = {
    "smallint": "integer", "integer": "integer", "bigint": "integer", "real": "real",
    "double precision": "real", "numeric": "numeric", "text": "text",
    "character varying": "text", "character": "text", "boolean": "boolean", "jsonb": "json",
    "json": "json", "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz", "date": "date", "bytea": "blob",
    "uuid": "text",
}
TABLES = ("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
          " AND table_type = 'BASE TABLE' ORDER BY table_name")
_CONSTRAINTS = (
    "SELECT con.conname, con.contype, con.confdeltype,"
    " (SELECT array_to_json(array_agg(a.attname ORDER BY k.ord)) FROM unnest(con.conkey)"
    "   WITH ORDINALITY k(att, ord) JOIN pg_attribute a"
    "   ON a.attrelid = con.conrelid AND a.attnum = k.att) AS cols,"
    " (SELECT array_to_json(array_agg(a.attname ORDER BY k.ord)) FROM unnest(con.confkey)"
    "   WITH ORDINALITY k(att, ord) JOIN pg_attribute a"
    "   ON a.attrelid = con.confrelid AND a.attnum = k.att) AS refcols,"
    " con.confrelid::regclass::text AS reftable"
    " FROM pg_constraint con WHERE con.conrelid = to_regclass(?)"
    " ORDER BY con.conname")
_INDEXES = (
    "SELECT i.relname AS name, ix.indisunique AS uniq,"
    " (SELECT array_to_json(array_agg(a.attname ORDER BY k.ord)) FROM unnest(ix.indkey)"
    "   WITH ORDINALITY k(att, ord) LEFT JOIN pg_attribute a"
    "   ON a.attrelid = ix.indrelid AND a.attnum = k.att) AS cols"
    " FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid"
    " WHERE ix.indrelid = to_regclass(?) AND NOT ix.indisprimary"
    " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = ix.indexrelid)")
_ACTIONS = {"c": "CASCADE", "n": "SET NULL", "r": "RESTRICT", "d": "SET DEFAULT"}


def kind_of(declared: str) -> str | None:
    """information_schema's data_type to a portable kind; None: no portable kind."""
    return KINDS.get(declared.lower())


def read_tables() -> Reader[list[str]]:
    rows = yield TABLES, None
    return [r["table_name"] for r in rows if not r["table_name"].startswith("_storekit")]


def read_schema(names: list[str] | None = None) -> Reader[SchemaInfo]:
    info = SchemaInfo([])
    for r in (yield ("SELECT table_name FROM information_schema.views"
                     " WHERE table_schema = current_schema()", None)):
        info.skipped.append(f"view {r['table_name']}")
    for r in (yield ("SELECT DISTINCT trigger_name FROM information_schema.triggers"
                     " WHERE trigger_schema = current_schema()", None)):
        info.skipped.append(f"trigger {r['trigger_name']}")
    found = yield from read_tables()
    for name in found if names is None else [n for n in found if n in names]:
        info.tables.append((yield from _read_table(name, info)))
    return info


def _read_table(name: str, info: SchemaInfo) -> Reader[TableInfo]:
    cols = yield (
        "SELECT column_name, data_type, is_nullable, column_default, is_identity,"
        " is_generated FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
        (name,))
    columns = []
    search: list[str] = []
    for c in cols:
        if c["is_generated"] == "ALWAYS":
            if c["column_name"] == SEARCH_COLUMN:
                search = yield from _search_sources(name)
            continue
        kind = kind_of(c["data_type"])
        if kind is None:
            info.unsupported.append(f"{name}.{c['column_name']}: {c['data_type']}")
            kind = "text"
        default = c["column_default"]
        identity = c["is_identity"] == "YES" or (default or "").startswith("nextval(")
        columns.append(ColumnInfo(c["column_name"], c["data_type"], kind,
                                  c["is_nullable"] == "NO",
                                  None if identity else default, identity))
    pk: list[str] = []
    table = TableInfo(name, columns, pk)
    for con in (yield _CONSTRAINTS, (f'"{name}"',)):
        if con["contype"] == "p":
            pk.extend(con["cols"])
        elif con["contype"] == "u":
            table.uniques.append(con["cols"])
        elif con["contype"] == "f":
            table.foreign_keys.append(ForeignKey(con["cols"], con["reftable"].strip('"'),
                                                 con["refcols"],
                                                 _ACTIONS.get(con["confdeltype"])))
    for idx in (yield _INDEXES, (f'"{name}"',)):
        cols_ = idx["cols"] or []
        if cols_ and all(cols_) and SEARCH_COLUMN not in cols_:
            table.indexes.append(IndexInfo(idx["name"], cols_, idx["uniq"]))
    table.search_columns = search
    return table


def _search_sources(table: str) -> Reader[list[str]]:
    rows = yield (
        "SELECT pg_get_expr(d.adbin, d.adrelid) AS expr FROM pg_attrdef d"
        " JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum"
        " WHERE d.adrelid = to_regclass(?) AND a.attname = '_search'", (f'"{table}"',))
    expr = rows[0]["expr"] if rows else ""
    return re.findall(r'COALESCE\("?([A-Za-z_][A-Za-z0-9_]*)"?', expr, flags=re.I)
