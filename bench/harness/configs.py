"""The named backend configurations the harness compares.

Each Config carries everything about itself, including its chart label and colour, so adding
a config is adding one entry to CONFIGS.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import storekit
from storekit.schema_names import quote_ident
from storekit.testing import schema_url

if TYPE_CHECKING:
    from storekit.aio import AsyncDatabase
    from storekit.testing import PgBouncer


@dataclass(frozen=True)
class Config:
    name: str
    backend: str  # "sqlite" or "postgres"
    description: str
    durability: str
    label: str  # in chart legends
    color: str  # in charts, the same in every notebook
    sqlite: storekit.SqliteOptions | None = None
    pg_session: dict[str, str] = field(default_factory=dict)
    isolation: str = "serializable"  # storekit's default
    pooler: str | None = None  # "transaction": the URL goes through PgBouncer
    default: bool = True  # part of `--config all` (a pooler config needs PgBouncer installed)

    def pool_options(self, pool_size: int, listen_url: str | None) -> storekit.PoolOptions:
        return storekit.PoolOptions(min_size=min(pool_size, 4), max_size=pool_size,
                                    timeout=30.0, pooler=self.pooler, listen_url=listen_url)

    def open(self, url: str, *, pool_size: int = 1,
             listen_url: str | None = None) -> storekit.Database:
        if self.backend == "sqlite":
            return storekit.create_database(url, sqlite=self.sqlite, isolation=self.isolation)
        return storekit.create_database(url, pool=self.pool_options(pool_size, listen_url),
                                        isolation=self.isolation)

    async def open_async(self, url: str, *, pool_size: int = 1,
                         listen_url: str | None = None) -> AsyncDatabase:
        from storekit import aio

        if self.backend == "sqlite":
            return await aio.create_database(url, sqlite=self.sqlite, isolation=self.isolation)
        return await aio.create_database(url, pool=self.pool_options(pool_size, listen_url),
                                         isolation=self.isolation)


CONFIGS: dict[str, Config] = {
    c.name: c
    for c in (
        Config("sqlite-wal", "sqlite",
               "storekit defaults: WAL, synchronous=NORMAL, BEGIN IMMEDIATE",
               "may lose the last commits on power loss (matches postgres-async-commit)",
               "SQLite WAL, sync=NORMAL (storekit default, fair locking)", "#1f77b4",
               storekit.SqliteOptions()),
        Config("sqlite-wal-stock", "sqlite",
               "sqlite-wal with SQLite's stock busy handler (fair_locking=False)",
               "as sqlite-wal",
               "SQLite WAL, sync=NORMAL, stock busy handler", "#9467bd",
               storekit.SqliteOptions(fair_locking=False)),
        Config("sqlite-wal-full", "sqlite", "WAL with synchronous=FULL",
               "durable every commit (matches postgres)",
               "SQLite WAL, sync=FULL", "#6baed6",
               storekit.SqliteOptions(synchronous="full")),
        Config("sqlite-rollback", "sqlite",
               "rollback journal (journal_mode=DELETE, synchronous=FULL), BEGIN IMMEDIATE",
               "durable every commit",
               "SQLite rollback journal", "#ff7f0e",
               storekit.SqliteOptions(journal_mode="delete", synchronous="full")),
        Config("sqlite-naive", "sqlite",
               "Python's sqlite3 defaults: deferred BEGIN, 5 s timeout, rollback journal",
               "durable every commit",
               "SQLite, Python defaults (deferred BEGIN)", "#d62728",
               storekit.SqliteOptions(journal_mode="delete", synchronous="full",
                                      begin="deferred", busy_timeout_ms=5000,
                                      fair_locking=False)),
        Config("postgres", "postgres",
               "PostgreSQL defaults (fsync on, synchronous_commit=on); storekit's "
               "SERIALIZABLE transactions",
               "durable every commit",
               "PostgreSQL (durable, storekit's SERIALIZABLE)", "#2ca02c"),
        Config("postgres-read-committed", "postgres",
               "postgres with READ COMMITTED transactions (PostgreSQL's own default): no "
               "conflicts raised, read-then-write can lose updates",
               "durable every commit",
               "PostgreSQL READ COMMITTED", "#bcbd22",
               isolation="read committed"),
        Config("postgres-async-commit", "postgres", "PostgreSQL with synchronous_commit=off",
               "may lose the last commits on a crash (matches sqlite-wal)",
               "PostgreSQL synchronous_commit=off", "#98df8a",
               pg_session={"synchronous_commit": "off"}),
        Config("postgres-pgbouncer", "postgres",
               "postgres through PgBouncer in transaction pooling mode (provisioned by the"
               " runner), storekit with PoolOptions(pooler='transaction')",
               "durable every commit",
               "PostgreSQL via PgBouncer (transaction pooling)", "#17becf",
               pooler="transaction", default=False),
    )
}
DEFAULT_CONFIGS = [c for c in CONFIGS.values() if c.default]
PGBOUNCER_POOL_SIZE = 20  # server connections PgBouncer keeps per database


# The fair write-lock hand-off (storekit's default) and the same settings with SQLite's
# stock busy handler: compared side by side by the headline and the agent-write notebook.
FAIR_PAIR = ("sqlite-wal", "sqlite-wal-stock")


def parse_configs(text: str | None) -> list[Config]:
    if not text or text == "all":
        return list(DEFAULT_CONFIGS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise ValueError(f"unknown config {', '.join(unknown)}; valid: {', '.join(CONFIGS)}")
    return [CONFIGS[n] for n in names]


class Provisioner:
    """Fresh databases for each (config, workload): SQLite files, PostgreSQL schemas, or,
    behind PgBouncer (which refuses the options=-csearch_path=... a schema URL uses),
    PostgreSQL databases."""

    def __init__(self, workdir: Path, postgres_url: str | None,
                 pgbouncer: PgBouncer | None = None) -> None:
        self.workdir = workdir
        self.postgres_url = postgres_url
        self.pgbouncer = pgbouncer
        self._admin: storekit.Database | None = None
        self._schemas: list[str] = []
        self._databases: list[str] = []
        self.direct: dict[str, str] = {}  # a URL through PgBouncer -> the same, direct

    def fresh_url(self, config: Config, label: str) -> str:
        tag = f"{label}_{secrets.token_hex(3)}".replace("-", "_")
        if config.backend == "sqlite":
            return f"sqlite:///{self.workdir / (tag + '.db')}"
        if self.postgres_url is None:
            raise storekit.DatabaseUnavailable(f"config {config.name} needs PostgreSQL")
        if config.pooler is not None:
            if self.pgbouncer is None:
                raise storekit.DatabaseUnavailable(f"config {config.name} needs PgBouncer")
            self._admin_exec(f"CREATE DATABASE {quote_ident(tag)}")
            self._databases.append(tag)
            url = self.pgbouncer.url_for(tag)
            self.direct[url] = self.pgbouncer.direct_url_for(tag)
            return url
        self._admin_exec(f"CREATE SCHEMA {quote_ident(tag)}")
        self._schemas.append(tag)
        return schema_url(self.postgres_url, tag, config.pg_session)

    def direct_url(self, url: str) -> str:
        """The URL without PgBouncer (for LISTEN and the wait sampler); else url itself."""
        return self.direct.get(url, url)

    def _admin_exec(self, sql: str) -> None:
        """Run on the admin connection, once more if a server restart broke the pooled one."""
        assert self.postgres_url is not None
        for attempt in (1, 2):
            if self._admin is None:
                self._admin = storekit.create_database(self.postgres_url)
            try:
                self._admin.exec(sql)
                return
            except storekit.DatabaseUnavailable:
                self._admin.close()
                self._admin = None
                if attempt == 2:
                    raise

    def close(self) -> None:
        if self._schemas:
            for schema in self._schemas:
                self._admin_exec(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
            self._schemas = []
        for name in self._databases:
            self._admin_exec(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        self._databases = []
        if self._admin is not None:
            self._admin.close()
            self._admin = None


def effective_settings(config: Config, url: str) -> dict[str, Any]:
    with config.open(url) as db:
        settings = dict(db.settings)
        if config.backend == "postgres":
            row = db.get("SELECT current_setting('synchronous_commit') AS s")
            settings["synchronous_commit"] = row["s"] if row else None
        settings["url"] = db.url
    return settings
