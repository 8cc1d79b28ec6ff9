"""Copy a database between SQLite and PostgreSQL, then prove the copy row by row.

Columns move by portable kind (storekit.introspect.KINDS): each backend's dialect reads
its native type as a kind and declares a kind as its native type (its `types`); integer is
64-bit on both (INTEGER <-> bigint), an INTEGER PRIMARY KEY <-> an identity column. Any
PostgreSQL type without a kind is reported before any data moves when the target is SQLite.

The whole copy, tables included, runs in one target transaction: a failure leaves the
target as it was. Verification compares, per table, the row count and an
order-independent checksum (the sum of per-row hashes of each row's canonical form).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from storekit.backends.base import check_int
from storekit.database import Database, create_database
from storekit.errors import ConfigurationError, StoreError, shown
from storekit.introspect import SchemaInfo, TableInfo, fk_order, read_schema
from storekit.sansio import run_script
from storekit.schema import index_ddl, table_ddl
from storekit.schema_names import quote_ident

CONFLICTS = ("error", "replace", "ignore")
Progress = Callable[[str, int, int], None]  # (table, rows done, rows total)


@dataclass
class TableReport:
    name: str
    source_rows: int = 0
    copied_rows: int = 0
    target_rows: int | None = None
    source_checksum: str | None = None
    target_checksum: str | None = None
    differing_keys: list[Any] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def verified(self) -> bool:
        return (self.target_rows == self.source_rows
                and self.source_checksum == self.target_checksum
                and self.source_checksum is not None and not self.differing_keys)


@dataclass
class MigrationReport:
    source: str
    target: str
    tables: list[TableReport] = field(default_factory=list)
    not_migrated: list[str] = field(default_factory=list)
    verified: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.verified and all(t.verified for t in self.tables)


class MigrationError(StoreError):
    """The copy failed and the target was left as it was; .report says where."""

    def __init__(self, message: str, report: MigrationReport) -> None:
        super().__init__(message)
        self.report = report


# Canonical forms, identical for a value read from either backend.
def _canon(kind: str, v: Any) -> str:
    if v is None:
        return "\x00"
    if kind == "integer":
        return str(int(v))
    if kind == "real":
        return repr(float(v))
    if kind == "numeric":
        return str(Decimal(str(v)).normalize())
    if kind == "boolean":
        return "1" if v in (1, True) or str(v).lower() in ("1", "t", "true") else "0"
    if kind == "json":
        value = json.loads(v) if isinstance(v, (str, bytes)) else v
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    if kind in ("timestamp", "timestamptz"):
        t = v if isinstance(v, dt.datetime) else dt.datetime.fromisoformat(str(v))
        if kind == "timestamptz":
            t = (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)
        return t.isoformat()
    if kind == "date":
        return (v if isinstance(v, dt.date) else dt.date.fromisoformat(str(v))).isoformat()
    if kind == "blob":
        return bytes(v).hex()
    return str(v)


def row_hash(kinds: Sequence[str], row: Sequence[Any]) -> int:
    text = "\x1f".join(_canon(k, v) for k, v in zip(kinds, row, strict=True))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class _Reader:
    """Rows of a table from the source, in key order, as the backend stores them."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.raw = db.dialect.raw_reader(db)  # SQLite: without declared-type converters

    def rows(self, table: TableInfo, batch_size: int) -> Iterator[list[tuple[Any, ...]]]:
        cols = ", ".join(quote_ident(c.name) for c in table.columns)
        order = ", ".join(quote_ident(c) for c in table.primary_key) or (
            self.db.dialect.row_order or cols)
        sql = f"SELECT {cols} FROM {quote_ident(table.name)} ORDER BY {order}"
        if self.raw is not None:
            cur = self.raw.execute(sql)
            while batch := cur.fetchmany(batch_size):
                yield batch
            return
        names = [c.name for c in table.columns]
        pending: list[tuple[Any, ...]] = []
        for row in self.db.iter(sql):
            pending.append(tuple(row[n] for n in names))
            if len(pending) >= batch_size:
                yield pending
                pending = []
        if pending:
            yield pending

    def count(self, table: str) -> int:
        sql = f"SELECT COUNT(*) AS n FROM {quote_ident(table)}"
        if self.raw is not None:
            return int(self.raw.execute(sql).fetchone()[0])
        row = self.db.get(sql)
        return int(row["n"]) if row else 0

    def close(self) -> None:
        if self.raw is not None:
            self.raw.close()


def _open(db: Database | str) -> tuple[Database, bool]:
    return (db, False) if isinstance(db, Database) else (create_database(db), True)


def _copy_of(t: TableInfo) -> TableInfo:
    """The table as the copy creates it: no defaults or checks (rows are moved as they
    are), foreign keys deferred to commit so self-references and cycles load in any order."""
    fks = [dataclasses.replace(fk, deferred=True) for fk in t.foreign_keys]
    return dataclasses.replace(t, foreign_keys=fks)


def _index_ddl(t: TableInfo) -> list[str]:
    return [index_ddl(t.name, i.name, [quote_ident(c) for c in i.columns], unique=i.unique)
            for i in t.indexes]


def _conflict_clause(db: Database, t: TableInfo, on_conflict: str) -> str:
    if on_conflict == "error":
        return ""
    key = t.primary_key or (t.uniques[0] if t.uniques else [])
    if not key:
        raise ConfigurationError(f"table {t.name} has no primary key or unique constraint; "
                                 f"on_conflict={on_conflict!r} needs one")
    updates = [c.name for c in t.columns if c.name not in key]
    return db.dialect.conflict_clause(key, [] if on_conflict == "ignore" else updates)


def _key_of(t: TableInfo, row: Sequence[Any]) -> Any:
    names = [c.name for c in t.columns]
    key = [row[names.index(k)] for k in t.primary_key] if t.primary_key else list(row)
    return key[0] if len(key) == 1 else tuple(key)


def _checksum(rows: Iterable[list[tuple[Any, ...]]], kinds: Sequence[str]) -> tuple[int, str]:
    count, total = 0, 0
    for batch in rows:
        for row in batch:
            total = (total + row_hash(kinds, row)) % 2**64
            count += 1
    return count, f"{total:016x}"


def _differences(src: _Reader, dst: _Reader, t: TableInfo, limit: int = 10) -> list[Any]:
    kinds = [c.kind for c in t.columns]

    def hashes(reader: _Reader) -> dict[Any, int]:
        out: dict[Any, int] = {}
        for batch in reader.rows(t, 5000):
            for row in batch:
                try:
                    out[_key_of(t, row)] = row_hash(kinds, row)
                except (ValueError, TypeError):
                    out[_key_of(t, row)] = -1
        return out

    a, b = hashes(src), hashes(dst)
    keys = [k for k in a if b.get(k) != a[k]] + [k for k in b if k not in a]
    return keys[:limit]


def migrate(
    source: Database | str,
    target: Database | str,
    *,
    tables: Sequence[str] | None = None,
    on_conflict: str = "error",
    verify: bool = True,
    batch_size: int = 5000,
    progress: Progress | None = None,
) -> MigrationReport:
    """Copy tables from source to target in one transaction, then verify every row."""
    if not isinstance(on_conflict, str) or str.__str__(on_conflict) not in CONFLICTS:
        raise ConfigurationError(f"on_conflict={shown(on_conflict)}; use one of"
                                 f" {', '.join(CONFLICTS)}")
    # fetchmany() takes a C int.
    check_int("batch_size", batch_size, 1, 2**31 - 1, "of rows ")
    if tables is not None and (not isinstance(tables, (list, tuple))
                               or not all(isinstance(t, str) for t in tables)):
        raise ConfigurationError(f"tables= must be a list or tuple of table names, not"
                                 f" {shown(tables)}")
    if progress is not None and not callable(progress):
        raise ConfigurationError(f"progress= must be callable, not {type(progress).__name__}")
    on_conflict = str.__str__(on_conflict)
    src, close_src = _open(source)
    dst, close_dst = _open(target)
    report = MigrationReport(src.url, dst.url)
    reader = target_reader = None
    try:
        schema = read_schema(src)
        chosen = _select(schema, tables)
        report.not_migrated = schema.skipped
        if not dst.dialect.takes_unsupported and schema.unsupported:
            raise ConfigurationError("no SQLite equivalent for: " + "; ".join(schema.unsupported))
        reader = _Reader(src)
        report.tables = [TableReport(t.name, source_rows=reader.count(t.name)) for t in chosen]
        _copy_all(src, dst, chosen, reader, report, on_conflict, batch_size, progress)
        if verify:
            target_reader = _Reader(dst)
            for t, tr in zip(chosen, report.tables, strict=True):
                kinds = [c.kind for c in t.columns]
                tr.source_rows, tr.source_checksum = _safe_checksum(reader, t, kinds, batch_size)
                tr.target_rows, tr.target_checksum = _safe_checksum(target_reader, t, kinds,
                                                                    batch_size)
                if (tr.source_rows, tr.source_checksum) != (tr.target_rows, tr.target_checksum):
                    tr.differing_keys = _differences(reader, target_reader, t)
            report.verified = True
        return report
    finally:
        for r in (reader, target_reader):
            if r is not None:
                r.close()
        if close_src:
            src.close()
        if close_dst:
            dst.close()


def _safe_checksum(reader: _Reader, t: TableInfo, kinds: list[str],
                   batch_size: int) -> tuple[int, str | None]:
    try:
        return _checksum(reader.rows(t, batch_size), kinds)
    except (ValueError, TypeError):  # a value that has no canonical form (e.g. broken JSON)
        return reader.count(t.name), None


def _select(schema: SchemaInfo, tables: Sequence[str] | None) -> list[TableInfo]:
    by_name = {t.name: t for t in schema.tables}
    if tables is None:
        return fk_order(schema.tables)
    missing = [n for n in tables if n not in by_name]
    if missing:
        raise ConfigurationError(f"no table {', '.join(missing)} in the source; "
                                 f"tables: {', '.join(by_name) or 'none'}")
    return fk_order([by_name[n] for n in tables])


def _copy_all(src: Database, dst: Database, chosen: list[TableInfo], reader: _Reader,
              report: MigrationReport, on_conflict: str, batch_size: int,
              progress: Progress | None) -> None:
    dialect = dst.dialect
    current = ""
    try:
        with dst.transaction() as tx:
            run_script(tx, dialect.begin_copy())
            for t in chosen:
                current = t.name
                tx.exec(table_ddl(dialect, _copy_of(t)))
                run_script(tx, _index_ddl(t))
                if t.search_columns:
                    dst.enable_search(t.name, t.search_columns)
            for t, tr in zip(chosen, report.tables, strict=True):
                current = t.name
                started = time.perf_counter()
                conflict = _conflict_clause(dst, t, on_conflict)
                run_script(tx, dialect.stage_copy(t.name, conflict))
                if progress:
                    progress(t.name, 0, tr.source_rows)
                for batch in reader.rows(t, batch_size):
                    dialect.copy_rows(tx, t, batch, conflict, _key_of)
                    tr.copied_rows += len(batch)
                    if progress:
                        progress(t.name, tr.copied_rows, tr.source_rows)
                run_script(tx, dialect.end_stage(conflict))
                for sql, params in dialect.after_copy(t):
                    tx.get(sql, params)
                tr.seconds = time.perf_counter() - started
    except StoreError as exc:
        report.error = str(exc) if current in str(exc) else f"table {current}: {exc}"
        raise MigrationError(f"migration failed, target unchanged: {report.error}",
                             report) from exc
