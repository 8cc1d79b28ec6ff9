"""Notifications with one API: native LISTEN/NOTIFY on PostgreSQL, emulated on SQLite.

Both deliver on commit only. The dialect sends and subscribes (backends/postgres/listen.py,
backends/sqlite/events.py); this module checks channels and payloads and holds the
Subscription every backend's listener is.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from storekit.errors import ProgrammingError
from storekit.params import to_json
from storekit.schema_names import check_ident

if TYPE_CHECKING:
    from storekit.database import Database

MAX_PAYLOAD_BYTES = 7999  # PostgreSQL's limit is "shorter than 8000 bytes"


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
        text = to_json(payload)  # NaN: not JSON
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
    db.dialect.notify(db, channel, _payload_text(payload))


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


def check_poll_interval(value: object) -> None:
    """listen()'s poll_interval (sync and async): SQLite's listener thread waits it between
    looks, so a value a wait cannot take would end that thread instead of raising here."""
    from storekit.backends.base import check_seconds
    from storekit.errors import ConfigurationError

    try:
        check_seconds("poll_interval", value)
    except ConfigurationError as exc:
        raise ProgrammingError(str(exc)) from exc.__cause__


def listen(db: Database, channels: Sequence[str], *, poll_interval: float = 0.02
           ) -> Subscription:
    check_poll_interval(poll_interval)
    return db.dialect.listen(db, channels, poll_interval)
