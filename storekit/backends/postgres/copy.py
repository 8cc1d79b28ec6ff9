"""Migration into PostgreSQL: COPY through the transaction's connection (a staging table
when rows may conflict), errors named by table and row, identity sequences moved on."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from storekit.errors import StoreError
from storekit.schema_names import quote_ident

if TYPE_CHECKING:
    from storekit.database import Transaction
    from storekit.introspect import TableInfo

BEGIN_COPY: list[str] = []
STAGE = "_storekit_stage"


def to_postgres(kind: str, v: Any) -> Any:
    if v is None:
        return None
    if kind == "boolean":
        return bool(v) if not isinstance(v, str) else v.lower() in ("1", "t", "true")
    if kind == "json" and isinstance(v, str):
        from psycopg.types.json import Jsonb

        return Jsonb(v, dumps=lambda text: text)  # sent as stored; the server validates it
    return v


def stage(table: str) -> list[str]:
    return [f"DROP TABLE IF EXISTS {STAGE}; CREATE TEMP TABLE "
            f"{STAGE} (LIKE {quote_ident(table)}) ON COMMIT DROP"]


def copy_rows(tx: Transaction, t: TableInfo, batch: list[tuple[Any, ...]], conflict: str,
              key_of: Any) -> None:
    """COPY the rows; with a conflict clause, into the staging table and INSERT from it."""
    import psycopg

    conn = tx.connection
    kinds = [c.kind for c in t.columns]
    cols = ", ".join(quote_ident(c.name) for c in t.columns)
    target = quote_ident(t.name) if not conflict else STAGE
    try:
        with conn.cursor() as cur, cur.copy(f"COPY {target} ({cols}) FROM STDIN") as copy:
            for row in batch:
                copy.write_row([to_postgres(k, v) for k, v in zip(kinds, row, strict=True)])
    except psycopg.Error as exc:
        raise _row_error(t, batch, exc, key_of) from exc
    if conflict:
        tx.exec(f"INSERT INTO {quote_ident(t.name)} ({cols}) SELECT {cols} FROM {STAGE}"
                f"{conflict}; TRUNCATE {STAGE}")


def _row_error(t: TableInfo, batch: list[tuple[Any, ...]], exc: Any, key_of: Any) -> StoreError:
    """Name the table and the row from PostgreSQL's "COPY t, line N" context."""
    from storekit.errors import from_psycopg

    diag = getattr(exc, "diag", None)
    context = getattr(diag, "context", None) or ""
    detail = getattr(diag, "message_detail", None) or ""
    where = f"table {t.name}"
    match = re.search(r"COPY [^,]+, line (\d+)", context)
    if match and 0 < int(match.group(1)) <= len(batch):
        where += f", row with key {key_of(t, batch[int(match.group(1)) - 1])!r}"
    err = from_psycopg(exc)
    return type(err)(f"{where}: {getattr(diag, 'message_primary', None) or exc}"
                     + (f" ({detail})" if detail else ""))


def after_copy(t: TableInfo) -> Sequence[tuple[str, Any]]:
    """Set identity sequences past the copied keys, so the next insert works."""
    out = []
    for c in t.columns:
        if c.identity:
            col = quote_ident(c.name)
            out.append((f"SELECT setval(pg_get_serial_sequence(?, ?), COALESCE(MAX({col}), 0)"
                        f" + 1, false) AS v FROM {quote_ident(t.name)}",
                        (quote_ident(t.name), c.name)))
    return out
