"""LISTEN/NOTIFY: each subscription listens on a dedicated connection (never a pooled one)
and LISTENs again after a reconnect, delivering a `reconnected` marker for the gap."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from storekit.notify import Subscription
from storekit.schema_names import quote_ident

if TYPE_CHECKING:
    from storekit.database import Database


class PostgresSubscription(Subscription):
    """LISTEN on a dedicated connection (never a pooled one), re-LISTENing after reconnects."""

    def __init__(self, db: Database, channels: Sequence[str]) -> None:
        super().__init__(channels)
        from storekit.backends.postgres.pooler import listen_conninfo

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
