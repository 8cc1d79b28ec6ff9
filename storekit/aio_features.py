"""Schema, search, row security and migration for storekit.aio.

Every statement comes from the modules the sync API uses: plan_create_table and the
dialect's sans-IO readers (schema.py, search.py, rls.py), driven here with
run_reader_async instead of run_reader. What is left is the control flow around them
(one transaction, the create race), which cannot be shared without awaiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from storekit.errors import ConfigurationError, IntegrityError, ProgrammingError
from storekit.sansio import run_reader_async, run_script_async
from storekit.schema import plan_create_table, read_columns
from storekit.schema_names import check_ident
from storekit.search import _sources, compose_search, search_clauses, search_statements
from storekit.url import DatabaseURL

if TYPE_CHECKING:
    from storekit.aio import AsyncDatabase
    from storekit.migration import MigrationReport, Progress
    from storekit.params import Params
    from storekit.schema import Column, Table


async def create_table(db: AsyncDatabase, table: Table, *, if_not_exists: bool = True) -> None:
    statements = await run_reader_async(db, plan_create_table(db.dialect, table,
                                                              if_not_exists=if_not_exists))
    if not statements:
        return
    try:
        async with db.transaction() as tx:
            await run_script_async(tx, statements)
    except (IntegrityError, ProgrammingError):
        # The race schema.create_table explains: tasks or processes creating the table
        # together; the winner created it whole, in one transaction.
        if not if_not_exists or db.in_transaction or table.name not in await tables(db):
            raise


async def drop_table(db: AsyncDatabase, name: str, *, if_exists: bool = True) -> None:
    check_ident(name, "table name")
    async with db.transaction() as tx:
        await run_script_async(tx, db.dialect.drop_table(name, if_exists=if_exists))


async def tables(db: AsyncDatabase) -> list[str]:
    return await run_reader_async(db, db.dialect.read_tables())


async def columns(db: AsyncDatabase, name: str) -> list[Column]:
    return await run_reader_async(db, read_columns(db.dialect, name))


async def enable_search(db: AsyncDatabase, table: str, columns: Sequence[str], *,
                        language: str = "english") -> None:
    await run_reader_async(db, db.dialect.check_language(language))
    async with db.transaction() as tx:
        await run_script_async(tx, search_statements(db.dialect, table, columns, language))
    _sources.of(db).pop(table, None)


async def rebuild_search(db: AsyncDatabase, table: str) -> None:
    await db.exec(db.dialect.rebuild_search(table))


async def search_sql(
    db: AsyncDatabase,
    table: str,
    query: str,
    *,
    limit: int = 20,
    offset: int = 0,
    where: str | None = None,
    params: Params = None,
    columns: Sequence[str] | None = None,
) -> tuple[str | None, Sequence[Any] | Mapping[str, Any]]:
    t, clauses = search_clauses(table, query, limit=limit, offset=offset, where=where,
                                columns=columns)
    if not clauses:
        return None, ()
    # The same per-database cache as search.search_sql; keyed by this AsyncDatabase.
    cache = _sources.of(db)
    info = cache.get(table)
    if info is None:
        info = cache[table] = await run_reader_async(db, db.dialect.search_source(table))
    return compose_search(db.dialect, t, clauses, info, limit=limit, offset=offset,
                          where=where, params=params, columns=columns)


async def enable_row_security(db: AsyncDatabase, table: str, column: str = "team_id") -> None:
    await run_reader_async(db, db.dialect.enable_row_security(table, column))


async def create_app_role(db: AsyncDatabase, name: str, password: str) -> None:
    """storekit.rls.create_app_role, awaited."""
    await run_reader_async(db, db.dialect.create_app_role(name, password))


def _migration_url(db: AsyncDatabase | str | DatabaseURL) -> str | DatabaseURL:
    from storekit.aio import AsyncDatabase

    if not isinstance(db, AsyncDatabase):
        return db
    if getattr(db._backend, "memory", False):  # a private in-memory SQLite database
        raise ConfigurationError(
            "migrate() cannot read or write a private in-memory SQLite database from "
            "another connection; use a file")
    return db.reveal_url()


async def migrate(
    source: AsyncDatabase | str | DatabaseURL,
    target: AsyncDatabase | str | DatabaseURL,
    *,
    tables: Sequence[str] | None = None,
    on_conflict: str = "error",
    verify: bool = True,
    batch_size: int = 5000,
    progress: Progress | None = None,
) -> MigrationReport:
    """storekit.migrate, run in a worker thread on its own connections to the same URLs.

    A migration is one long bulk job (COPY on PostgreSQL, a raw sqlite3 reader, one target
    transaction for the whole copy), not a stream of short calls: run off the loop as a
    whole it blocks nothing and keeps one implementation. progress is called from that
    thread. An AsyncDatabase argument stays open and usable meanwhile."""
    from storekit.migration import migrate as sync_migrate

    src, dst = _migration_url(source), _migration_url(target)

    def run() -> MigrationReport:
        from storekit.database import create_database

        # DatabaseURL objects keep their secrets; str() of one would mask the password.
        with create_database(src) as a, create_database(dst) as b:
            return sync_migrate(a, b, tables=tables, on_conflict=on_conflict, verify=verify,
                                batch_size=batch_size, progress=progress)

    return await asyncio.to_thread(run)
