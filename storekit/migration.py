"""Copy a database between SQLite and PostgreSQL, then prove the copy row by row.

Type mapping (portable kind: SQLite declared type -> PostgreSQL type, and back):
    integer     INTEGER (INTEGER PRIMARY KEY = identity)  <-> bigint (identity)
    real        REAL, FLOAT, DOUBLE                        <-> double precision
    numeric     NUMERIC, DECIMAL                           <-> numeric
    text        TEXT, VARCHAR, CHAR, untyped               <-> text (uuid -> text)
    boolean     BOOLEAN (0/1)                              <-> boolean
    json        JSON (text)                                <-> jsonb
    timestamp   TIMESTAMP, DATETIME (ISO-8601 text)        <-> timestamp
    timestamptz TIMESTAMPTZ (ISO-8601 text)                <-> timestamptz
    date        DATE                                       <-> date
    blob        BLOB                                       <-> bytea
Any other PostgreSQL type is reported before any data moves when the target is SQLite.

The whole copy, tables included, runs in one target transaction: a failure leaves the
target as it was. Verification compares, per table, the row count and an
order-independent checksum (the sum of per-row hashes of each row's canonical form).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from storekit.database import Database, create_database
from storekit.errors import ConfigurationError, StoreError
from storekit.introspect import SchemaInfo, TableInfo, fk_order, read_schema
from storekit.schema_names import quote_ident

CONFLICTS = ("error", "replace", "ignore")
_PG_TYPES = {"integer": "bigint", "real": "double precision", "numeric": "numeric",
             "text": "text", "boolean": "boolean", "json": "jsonb",
             "timestamp": "timestamp", "timestamptz": "timestamptz", "date": "date",
             "blob": "bytea"}
_SQLITE_TYPES = {"integer": "INTEGER", "real": "REAL", "numeric": "NUMERIC", "text": "TEXT",
                 "boolean": "BOOLEAN", "json": "JSON TEXT", "timestamp": "TIMESTAMP",
                 "timestamptz": "TIMESTAMPTZ TEXT", "date": "DATE", "blob": "BLOB"}
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


# Values on their way into each backend.
def _to_sqlite(kind: str, v: Any) -> Any:
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


def _to_postgres(kind: str, v: Any) -> Any:
    if v is None:
        return None
    if kind == "boolean":
        return bool(v) if not isinstance(v, str) else v.lower() in ("1", "t", "true")
    if kind == "json" and isinstance(v, str):
        from psycopg.types.json import Jsonb

        return Jsonb(v, dumps=lambda text: text)  # sent as stored; the server validates it
    return v


class _Reader:
    """Rows of a table from the source, in key order, as the backend stores them."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.raw: sqlite3.Connection | None = None
        if db.backend == "sqlite":
            # A plain connection without declared-type converters: a broken JSON value must
            # reach the target (and be reported there), not fail while being read.
            path = urllib.parse.quote(db._url.database)
            self.raw = sqlite3.connect(f"file:{path}?mode=ro", uri=True)

    def rows(self, table: TableInfo, batch_size: int) -> Iterator[list[tuple[Any, ...]]]:
        cols = ", ".join(quote_ident(c.name) for c in table.columns)
        order = ", ".join(quote_ident(c) for c in table.primary_key) or (
            "rowid" if self.db.backend == "sqlite" else cols)
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


def table_ddl(backend: str, t: TableInfo) -> str:
    parts = []
    for c in t.columns:
        if backend == "postgres":
            col = f"{quote_ident(c.name)} {_PG_TYPES[c.kind]}"
            if c.identity:
                col += " GENERATED BY DEFAULT AS IDENTITY"
        else:
            col = f"{quote_ident(c.name)} {_SQLITE_TYPES[c.kind]}"
            if c.identity:
                col = f"{quote_ident(c.name)} INTEGER"
        if c.notnull and not c.identity:
            col += " NOT NULL"
        parts.append(col)
    if t.primary_key:
        parts.append(f"PRIMARY KEY ({', '.join(quote_ident(c) for c in t.primary_key)})")
    parts += [f"UNIQUE ({', '.join(quote_ident(c) for c in u)})" for u in t.uniques]
    for fk in t.foreign_keys:
        ref = (f"FOREIGN KEY ({', '.join(quote_ident(c) for c in fk.columns)}) REFERENCES "
               f"{quote_ident(fk.table)} ({', '.join(quote_ident(c) for c in fk.ref_columns)})")
        if fk.on_delete:
            ref += f" ON DELETE {fk.on_delete}"
        # Deferred to commit, so self-references and cycles load in any row order.
        ref += " DEFERRABLE INITIALLY DEFERRED"
        parts.append(ref)
    body = ",\n  ".join(parts)
    return f"CREATE TABLE IF NOT EXISTS {quote_ident(t.name)} (\n  {body}\n)"


def _index_ddl(t: TableInfo) -> list[str]:
    return [f"CREATE {'UNIQUE ' if i.unique else ''}INDEX IF NOT EXISTS {quote_ident(i.name)}"
            f" ON {quote_ident(t.name)} ({', '.join(quote_ident(c) for c in i.columns)})"
            for i in t.indexes]


def _conflict_clause(t: TableInfo, on_conflict: str) -> str:
    if on_conflict == "error":
        return ""
    key = t.primary_key or (t.uniques[0] if t.uniques else [])
    if not key:
        raise ConfigurationError(f"table {t.name} has no primary key or unique constraint; "
                                 f"on_conflict={on_conflict!r} needs one")
    target = ", ".join(quote_ident(c) for c in key)
    updates = [c.name for c in t.columns if c.name not in key]
    if on_conflict == "ignore" or not updates:
        return f" ON CONFLICT ({target}) DO NOTHING"
    sets = ", ".join(f"{quote_ident(c)} = excluded.{quote_ident(c)}" for c in updates)
    return f" ON CONFLICT ({target}) DO UPDATE SET {sets}"


def _key_of(t: TableInfo, row: Sequence[Any]) -> Any:
    names = [c.name for c in t.columns]
    key = [row[names.index(k)] for k in t.primary_key] if t.primary_key else list(row)
    return key[0] if len(key) == 1 else tuple(key)


def _copy_postgres(tx: Any, t: TableInfo, batch: list[tuple[Any, ...]], on_conflict: str) -> None:
    import psycopg

    conn = tx._handle.conn
    kinds = [c.kind for c in t.columns]
    cols = ", ".join(quote_ident(c.name) for c in t.columns)
    target = quote_ident(t.name) if on_conflict == "error" else "_storekit_stage"
    try:
        with conn.cursor() as cur, cur.copy(f"COPY {target} ({cols}) FROM STDIN") as copy:
            for row in batch:
                copy.write_row([_to_postgres(k, v) for k, v in zip(kinds, row, strict=True)])
    except psycopg.Error as exc:
        raise _row_error(t, batch, exc) from exc
    if on_conflict != "error":
        tx.exec(f"INSERT INTO {quote_ident(t.name)} ({cols}) SELECT {cols} FROM _storekit_stage"
                f"{_conflict_clause(t, on_conflict)}; TRUNCATE _storekit_stage")


def _row_error(t: TableInfo, batch: list[tuple[Any, ...]], exc: Any) -> StoreError:
    """Name the table and the row from PostgreSQL's "COPY t, line N" context."""
    import re

    from storekit.errors import from_psycopg

    diag = getattr(exc, "diag", None)
    context = getattr(diag, "context", None) or ""
    detail = getattr(diag, "message_detail", None) or ""
    where = f"table {t.name}"
    match = re.search(r"COPY [^,]+, line (\d+)", context)
    if match and 0 < int(match.group(1)) <= len(batch):
        where += f", row with key {_key_of(t, batch[int(match.group(1)) - 1])!r}"
    err = from_psycopg(exc)
    return type(err)(f"{where}: {getattr(diag, 'message_primary', None) or exc}"
                     + (f" ({detail})" if detail else ""))


def _copy_sqlite(tx: Any, t: TableInfo, batch: list[tuple[Any, ...]], on_conflict: str) -> None:
    kinds = [c.kind for c in t.columns]
    cols = ", ".join(quote_ident(c.name) for c in t.columns)
    marks = ", ".join("?" for _ in t.columns)
    sql = (f"INSERT INTO {quote_ident(t.name)} ({cols}) VALUES ({marks})"
           f"{_conflict_clause(t, on_conflict)}")
    rows = [tuple(_to_sqlite(k, v) for k, v in zip(kinds, row, strict=True)) for row in batch]
    try:
        tx.run_many(sql, rows)
    except StoreError as exc:
        # Find the first offending row: one insert at a time under a savepoint.
        for original, row in zip(batch, rows, strict=True):
            try:
                with tx._db.transaction() as sub:
                    sub.run(sql, row)
            except StoreError as row_exc:
                raise type(row_exc)(
                    f"table {t.name}, row with key {_key_of(t, original)!r}: {row_exc}"
                ) from exc
        raise


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
    if on_conflict not in CONFLICTS:
        raise ConfigurationError(f"on_conflict={on_conflict!r}; use one of {', '.join(CONFLICTS)}")
    if batch_size <= 0:
        raise ConfigurationError("batch_size must be a positive number of rows")
    src, close_src = _open(source)
    dst, close_dst = _open(target)
    report = MigrationReport(src.url, dst.url)
    reader = target_reader = None
    try:
        schema = read_schema(src)
        chosen = _select(schema, tables)
        report.not_migrated = schema.skipped
        if dst.backend == "sqlite" and schema.unsupported:
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
    copy = _copy_postgres if dst.backend == "postgres" else _copy_sqlite
    current = ""
    try:
        with dst.transaction() as tx:
            if dst.backend == "sqlite":
                tx.exec("PRAGMA defer_foreign_keys = ON")
            for t in chosen:
                current = t.name
                tx.exec(table_ddl(dst.backend, t))
                for statement in _index_ddl(t):
                    tx.exec(statement)
                if t.search_columns:
                    dst.enable_search(t.name, t.search_columns)
            for t, tr in zip(chosen, report.tables, strict=True):
                current = t.name
                started = time.perf_counter()
                if dst.backend == "postgres" and on_conflict != "error":
                    tx.exec("DROP TABLE IF EXISTS _storekit_stage; CREATE TEMP TABLE "
                            f"_storekit_stage (LIKE {quote_ident(t.name)}) ON COMMIT DROP")
                if progress:
                    progress(t.name, 0, tr.source_rows)
                for batch in reader.rows(t, batch_size):
                    copy(tx, t, batch, on_conflict)
                    tr.copied_rows += len(batch)
                    if progress:
                        progress(t.name, tr.copied_rows, tr.source_rows)
                if dst.backend == "postgres" and on_conflict != "error":
                    tx.exec("DROP TABLE _storekit_stage")
                _fix_identity(tx, dst.backend, t)
                tr.seconds = time.perf_counter() - started
    except StoreError as exc:
        report.error = str(exc) if current in str(exc) else f"table {current}: {exc}"
        raise MigrationError(f"migration failed, target unchanged: {report.error}",
                             report) from exc


def _fix_identity(tx: Any, backend: str, t: TableInfo) -> None:
    """Set identity sequences past the copied keys, so the next insert works."""
    if backend != "postgres":
        return
    for c in t.columns:
        if c.identity:
            col = quote_ident(c.name)
            tx.get(f"SELECT setval(pg_get_serial_sequence(?, ?), COALESCE(MAX({col}), 0) + 1,"
                   f" false) AS v FROM {quote_ident(t.name)}", (quote_ident(t.name), c.name))

