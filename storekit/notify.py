"""Notifications with one API: native LISTEN/NOTIFY on PostgreSQL, emulated on SQLite.

Both deliver on commit only. On PostgreSQL that is the server's own rule for NOTIFY in a
transaction. On SQLite a notification is a row in `_storekit_events`, written through the
caller's connection, so other connections see it only once it commits. Listeners poll
`PRAGMA data_version`, which changes only when another connection commits, so an idle
subscription costs one cheap pragma per poll interval.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from storekit.errors import ProgrammingError
from storekit.schema_names import check_ident, quote_ident

if TYPE_CHECKING:
    from storekit.database import Database

MAX_PAYLOAD_BYTES = 7999  # PostgreSQL's limit is "shorter than 8000 bytes"
EVENTS_TABLE = "_storekit_events"
RETENTION_SECONDS = 300.0
PRUNE_EVERY = 500
_EVENTS_DDL = (
    f"CREATE TABLE IF NOT EXISTS {EVENTS_TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " channel TEXT NOT NULL, payload TEXT NOT NULL, created_at REAL NOT NULL)"
)


@dataclass(frozen=True)
class Notification:
    channel: str
    payload: str
    received_at: float  # time.time() when this process received it
    # A marker, not a message: notifications on this channel may have been missed just
    # before it (the listener reconnected, or SQLite pruned events it had not read yet).
    # Re-read whatever state the notifications stand for.
    reconnected: bool = False

    def json(self) -> Any:
        """The payload parsed as JSON (what notify() sent when given a dict)."""
        return json.loads(self.payload)


def _payload_text(payload: str | Mapping[str, Any]) -> str:
    if isinstance(payload, Mapping):
        text = json.dumps(payload, separators=(",", ":"), allow_nan=False)  # NaN: not JSON
    elif isinstance(payload, str):
        text = payload
    else:
        raise ProgrammingError(
            f"notification payload must be a str or a dict, not {type(payload).__name__}"
        )
    size = len(text.encode())
    if size > MAX_PAYLOAD_BYTES:
        raise ProgrammingError(
            f"notification payload is {size} bytes; the limit is {MAX_PAYLOAD_BYTES} "
            "(store the data in a table and send its id)"
        )
    return text


def notify(db: Database, channel: str, payload: str | Mapping[str, Any] = "") -> None:
    check_ident(channel, "channel name")
    text = _payload_text(payload)
    if db.backend == "postgres":
        db.run("SELECT pg_notify(?, ?)", (channel, text))
        return
    _ensure_events_table(db)
    result = db.run(
        f"INSERT INTO {EVENTS_TABLE} (channel, payload, created_at) VALUES (?, ?, ?)",
        (channel, text, time.time()),
    )
    if result.last_id and result.last_id % PRUNE_EVERY == 0:
        db.run(f"DELETE FROM {EVENTS_TABLE} WHERE created_at < ?",
               (time.time() - RETENTION_SECONDS,))


def _ensure_events_table(db: Database) -> None:
    if not db._events_ready:
        db.exec(_EVENTS_DDL)
        db._events_ready = True


class Subscription:
    """Notifications on some channels. Iterate it (blocks), or get(timeout=...)."""

    def __init__(self, channels: Sequence[str]) -> None:
        if not channels:
            raise ProgrammingError("listen() needs at least one channel")
        self.channels = tuple(check_ident(c, "channel name") for c in channels)
        self._queue: queue.Queue[Notification] = queue.Queue()
        self._closed = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"storekit-listen-{','.join(self.channels)}")
        self.error: BaseException | None = None
        self.reconnects = 0  # how many markers (reconnected=True) were delivered per channel

    def _start(self) -> Subscription:
        self._thread.start()
        self._ready.wait(10)
        if self.error is not None:
            raise self.error
        return self

    def _run(self) -> None:  # pragma: no cover - replaced by each backend
        raise NotImplementedError

    def _deliver(self, channel: str, payload: str) -> None:
        if channel in self.channels:
            self._queue.put(Notification(channel, payload, time.time()))

    def _missed(self) -> None:
        """Tell the subscriber notifications may be lost: a marker on every channel."""
        self.reconnects += 1
        now = time.time()
        for channel in self.channels:
            self._queue.put(Notification(channel, "", now, reconnected=True))

    def get(self, timeout: float | None = None) -> Notification | None:
        """The next notification, or None if none arrives within the timeout."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def __iter__(self) -> Iterator[Notification]:
        while not self._closed.is_set():
            item = self.get(timeout=0.1)
            if item is not None:
                yield item

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        self._closed.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PostgresSubscription(Subscription):
    """LISTEN on a dedicated connection (never a pooled one), re-LISTENing after reconnects."""

    def __init__(self, db: Database, channels: Sequence[str]) -> None:
        super().__init__(channels)
        from storekit.backends.postgres_pooler import listen_conninfo

        self._conninfo = listen_conninfo(db)
        self._backend_pid: int | None = None

    def _connect(self) -> Any:
        import psycopg

        conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=2)
        for channel in self.channels:
            conn.execute(f"LISTEN {quote_ident(channel)}")
        return conn

    def _run(self) -> None:
        import psycopg

        conn = None
        lost = False
        while not self._closed.is_set():
            try:
                if conn is None:
                    conn = self._connect()
                    self._backend_pid = conn.info.backend_pid
                    self._ready.set()
                    if lost:
                        # LISTEN is active again: anything sent while the connection was
                        # down is gone (the server queues only for live listeners).
                        lost = False
                        self._missed()
                for n in conn.notifies(timeout=0.2):
                    self._deliver(n.channel, n.payload)
            except psycopg.Error as exc:
                if not self._ready.is_set():
                    from storekit.errors import from_psycopg

                    self.error = from_psycopg(exc)
                    self._ready.set()
                    return
                if conn is not None:
                    conn.close()
                    conn = None
                    lost = True
                time.sleep(0.2)  # the server is restarting; try again shortly
        if conn is not None:
            conn.close()


class SqliteSubscription(Subscription):
    """Polls the events table when PRAGMA data_version says another connection committed."""

    def __init__(self, db: Database, channels: Sequence[str], poll_interval: float) -> None:
        super().__init__(channels)
        if poll_interval <= 0:
            raise ProgrammingError("poll_interval must be > 0")
        self.poll_interval = poll_interval
        self._db = db
        self._memory = db._url.is_memory
        self._path = db._url.database

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


def listen(db: Database, channels: Sequence[str], *, poll_interval: float = 0.02
           ) -> Subscription:
    if db.backend == "postgres":
        return PostgresSubscription(db, channels)._start()
    _ensure_events_table(db)
    return SqliteSubscription(db, channels, poll_interval)._start()
