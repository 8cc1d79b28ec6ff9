"""The named backend configurations the harness compares.

Each Config carries everything about itself, including its chart label and colour, so adding
a config is adding one entry to CONFIGS.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import storekit
from storekit.schema_names import quote_ident
from storekit.testing import schema_url


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

    def open(self, url: str, *, pool_size: int = 1) -> storekit.Database:
        if self.backend == "sqlite":
            return storekit.create_database(url, sqlite=self.sqlite, isolation=self.isolation)
        pool = storekit.PoolOptions(min_size=min(pool_size, 4), max_size=pool_size,
                                    timeout=30.0)
        return storekit.create_database(url, pool=pool, isolation=self.isolation)


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
    )
}


# The fair write-lock hand-off (storekit's default) and the same settings with SQLite's
# stock busy handler: compared side by side by the headline and the agent-write notebook.
FAIR_PAIR = ("sqlite-wal", "sqlite-wal-stock")


def parse_configs(text: str | None) -> list[Config]:
    if not text or text == "all":
        return list(CONFIGS.values())
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise ValueError(f"unknown config {', '.join(unknown)}; valid: {', '.join(CONFIGS)}")
    return [CONFIGS[n] for n in names]


class Provisioner:
    """Fresh databases for each (config, workload): SQLite files or PostgreSQL schemas."""

    def __init__(self, workdir: Path, postgres_url: str | None) -> None:
        self.workdir = workdir
        self.postgres_url = postgres_url
        self._admin: storekit.Database | None = None
        self._schemas: list[str] = []

    def fresh_url(self, config: Config, label: str) -> str:
        tag = f"{label}_{secrets.token_hex(3)}".replace("-", "_")
        if config.backend == "sqlite":
            return f"sqlite:///{self.workdir / (tag + '.db')}"
        if self.postgres_url is None:
            raise storekit.DatabaseUnavailable(f"config {config.name} needs PostgreSQL")
        self._admin_exec(f"CREATE SCHEMA {quote_ident(tag)}")
        self._schemas.append(tag)
        return schema_url(self.postgres_url, tag, config.pg_session)

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
