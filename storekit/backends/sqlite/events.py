"""Notifications emulated on SQLite: a row in `_storekit_events`, polled by listeners.

A notification is written through the caller's connection, so other connections see it
only once it commits (delivery on commit, as NOTIFY). Listeners poll `PRAGMA data_version`,
which changes only when another connection commits, so an idle subscription costs one
cheap pragma per poll interval.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from storekit.errors import ProgrammingError
from storekit.features import FeatureState
from storekit.notify import Subscription

if TYPE_CHECKING:
    from storekit.database import Database

EVENTS_TABLE = "_storekit_events"
RETENTION_SECONDS = 300.0
PRUNE_EVERY = 500
EVENTS_DDL = (
    f"CREATE TABLE IF NOT EXISTS {EVENTS_TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " channel TEXT NOT NULL, payload TEXT NOT NULL, created_at REAL NOT NULL)"
)
INSERT = f"INSERT INTO {EVENTS_TABLE} (channel, payload, created_at) VALUES (?, ?, ?)"
PRUNE = f"DELETE FROM {EVENTS_TABLE} WHERE created_at < ?"
_ready: FeatureState[dict[str, bool]] = FeatureState(dict)  # per Database: table created


def ensure_events_table(db: Database) -> None:
    state = _ready.of(db)
    if not state.get("events"):
        db.exec(EVENTS_DDL)
        state["events"] = True


def notify(db: Database, channel: str, payload: str) -> None:
    ensure_events_table(db)
    result = db.run(INSERT, (channel, payload, time.time()))
    if result.last_id and result.last_id % PRUNE_EVERY == 0:
        db.run(PRUNE, (time.time() - RETENTION_SECONDS,))


class SqliteSubscription(Subscription):
    """Polls the events table when PRAGMA data_version says another connection committed."""

    def __init__(self, db: Database, channels: Sequence[str], poll_interval: float) -> None:
        super().__init__(channels)
        if poll_interval <= 0:
            raise ProgrammingError("poll_interval must be > 0")
        self.poll_interval = poll_interval
        self._db = db
        url = db.reveal_url()
        self._memory = url.is_memory
        self._path = url.database

    def _run(self) -> None:
        placeholders = ", ".join("?" for _ in self.channels)
        select = (f"SELECT id, channel, payload FROM {EVENTS_TABLE}"
                  f" WHERE id > ? AND channel IN ({placeholders}) ORDER BY id")
        try:
            if self._memory:
                self._run_memory(select)
                return
            conn = sqlite3.connect(self._path, timeout=5, isolation_level=None,
                                   check_same_thread=False)
        except Exception as exc:  # reported to the caller of listen()
            self.error = exc
            self._ready.set()
            return
        try:
            row = conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {EVENTS_TABLE}").fetchone()
            last = row[0]
            version = None
            self._ready.set()
            while not self._closed.wait(self.poll_interval):
                current = conn.execute("PRAGMA data_version").fetchone()[0]
                if current == version:
                    continue
                version = current
                oldest = conn.execute(f"SELECT MIN(id) FROM {EVENTS_TABLE}").fetchone()[0]
                last = self._check_gap(last, oldest)
                for event_id, channel, payload in conn.execute(select, (last, *self.channels)):
                    last = event_id
                    self._deliver(channel, payload)
        except sqlite3.Error:
            if not self._closed.is_set():
                raise
        finally:
            conn.close()

    def _check_gap(self, last: int, oldest: int | None) -> int:
        """Event ids have no gaps, so an oldest id past last + 1 means pruning removed
        events this listener had not read (it fell RETENTION_SECONDS behind): a marker, as
        for a PostgreSQL reconnect. The gap is then acknowledged."""
        if oldest is not None and oldest > last + 1:
            self._missed()
            return oldest - 1
        return last

    def _run_memory(self, select: str) -> None:
        # One in-memory database has one connection; share it under the backend's lock.
        row = self._db.get(f"SELECT COALESCE(MAX(id), 0) AS m FROM {EVENTS_TABLE}")
        last = row["m"] if row else 0
        self._ready.set()
        while not self._closed.wait(self.poll_interval):
            if self._db.closed:
                return
            row = self._db.get(f"SELECT MIN(id) AS m FROM {EVENTS_TABLE}")
            last = self._check_gap(last, row["m"] if row else None)
            for event in self._db.all(select, (last, *self.channels)):
                last = event["id"]
                self._deliver(event["channel"], event["payload"])


def listen(db: Database, channels: Sequence[str], poll_interval: float) -> Subscription:
    ensure_events_table(db)
    return SqliteSubscription(db, channels, poll_interval)._start()
