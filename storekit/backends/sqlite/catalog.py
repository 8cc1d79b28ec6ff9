"""SQLite's catalog read into the neutral model (storekit.introspect), as a sans-IO reader:
PRAGMA table_list, table_info, foreign_key_list, index_list and index_info, plus
sqlite_master for views, triggers and FTS5 tables."""

from __future__ import annotations

import re
from typing import Any

from storekit.introspect import ColumnInfo, ForeignKey, IndexInfo, SchemaInfo, TableInfo
from storekit.sansio import Reader
from storekit.schema_names import derived_name

TABLES = ("SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table'"
          " AND name NOT LIKE 'sqlite!_%' ESCAPE '!' ORDER BY name")


def kind_of(declared: str) -> str:
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


def fts_table(table: str) -> str:
    """The FTS5 table of a searchable table (its triggers end in _fts_ai/_ad/_au)."""
    return derived_name(table, "_fts")


def read_tables() -> Reader[list[str]]:
    rows = yield TABLES, None
    return [r["name"] for r in rows if not r["name"].startswith("_storekit")]


def read_schema(names: list[str] | None = None) -> Reader[SchemaInfo]:
    info = SchemaInfo([])
    master = yield "SELECT type, name, tbl_name, sql FROM sqlite_master", None
    fts = {r["name"] for r in master if r["type"] == "table"
           and (r["sql"] or "").upper().startswith("CREATE VIRTUAL TABLE")}
    shadow = {r["name"] for r in (yield (
        "SELECT name FROM pragma_table_list WHERE type IN ('shadow', 'virtual')", None))}
    for r in master:
        if r["type"] == "view":
            info.skipped.append(f"view {r['name']}")
        elif r["type"] == "trigger" and not r["name"].endswith(("_fts_ai", "_fts_ad", "_fts_au")):
            info.skipped.append(f"trigger {r['name']}")
    found = [n for n in (yield from read_tables()) if n not in shadow | fts]
    for name in found if names is None else [n for n in found if n in names]:
        info.tables.append((yield from _read_table(name, fts)))
    return info


def _read_table(name: str, fts: set[str]) -> Reader[TableInfo]:
    cols = yield "SELECT * FROM pragma_table_info(?) ORDER BY cid", (name,)
    pk = [c["name"] for c in sorted((c for c in cols if c["pk"]), key=lambda c: c["pk"])]
    columns = []
    for c in cols:
        identity = pk == [c["name"]] and (c["type"] or "").upper() == "INTEGER"
        columns.append(ColumnInfo(c["name"], c["type"] or "", kind_of(c["type"] or ""),
                                  bool(c["notnull"]), c["dflt_value"], identity))
    table = TableInfo(name, columns, pk)
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in (yield "SELECT * FROM pragma_foreign_key_list(?)", (name,)):
        groups.setdefault(r["id"], []).append(r)
    for group in groups.values():
        group.sort(key=lambda r: r["seq"])
        ref_cols = [g["to"] for g in group]
        if any(c is None for c in ref_cols):  # REFERENCES t without columns: its key
            ref_cols = [c["name"] for c in (yield (
                "SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk",
                (group[0]["table"],)))]
        on_delete = group[0]["on_delete"]
        table.foreign_keys.append(ForeignKey(
            [g["from"] for g in group], group[0]["table"], ref_cols,
            None if on_delete == "NO ACTION" else on_delete))
    for idx in (yield "SELECT * FROM pragma_index_list(?)", (name,)):
        idx_cols = [r["name"] for r in (yield (
            "SELECT name FROM pragma_index_info(?) ORDER BY seqno", (idx["name"],)))]
        if idx["origin"] == "pk" or any(c is None for c in idx_cols):
            continue  # the primary key, or an expression index (not moved)
        if idx["origin"] == "u":
            table.uniques.append(idx_cols)
        else:
            table.indexes.append(IndexInfo(idx["name"], idx_cols, bool(idx["unique"])))
    fts_name = fts_table(name)
    if fts_name in fts:
        table.search_columns = [c["name"] for c in (yield (
            "SELECT name FROM pragma_table_info(?)", (fts_name,)))]
    return table
