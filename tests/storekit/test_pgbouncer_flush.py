"""A Flush sent after a pipeline's last Sync must not hold PgBouncer's server connection.

psycopg follows a pipeline's closing Sync with a Flush. When the Flush reaches PgBouncer
after the server's ReadyForQuery (a race on a busy machine, about one run in ten of
test_aio_pgbouncer.py here), PgBouncer links a server connection to that client for it
and never releases it: with every server connection held, other clients wait forever.
The relay below makes that race certain: it holds back a Flush that follows a Sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest

from storekit import PoolOptions, aio, create_database
from storekit.testing import PgBouncer, pgbouncer_server, pooled_database
from storekit.url import DatabaseURL

pytestmark = [pytest.mark.postgres]
SYNC, FLUSH = b"S\0\0\0\x04", b"H\0\0\0\x04"
HOLD_S = 0.3  # far longer than a ReadyForQuery takes to come back
WAIT_S = 20.0  # a guard against hanging only: held, the server connection never comes
POOLED = PoolOptions(pooler="transaction", max_size=1)


class FlushHolder:
    """A TCP relay to PgBouncer that delivers a Flush following a Sync HOLD_S late."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.syncs = self.held = 0
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                server = socket.create_connection(("127.0.0.1", self.upstream))
                self.socks += [client, server]
                threading.Thread(target=self._up, args=(client, server), daemon=True).start()
                threading.Thread(target=self._down, args=(server, client), daemon=True).start()

    def _up(self, src: socket.socket, dst: socket.socket) -> None:
        after_sync = False
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                self.syncs += data.count(SYNC)
                cut = data.find(SYNC + FLUSH)
                if cut >= 0 or (after_sync and data.startswith(FLUSH)):
                    cut = cut + len(SYNC) if cut >= 0 else 0
                    dst.sendall(data[:cut])
                    self.held += 1
                    time.sleep(HOLD_S)
                    data = data[cut:]
                dst.sendall(data)
                after_sync = data.endswith(SYNC)

    @staticmethod
    def _down(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)

    def close(self) -> None:
        self.listener.close()
        for s in self.socks:
            s.close()


def _within(fn: Callable[[], Any]) -> Any:
    """fn(), run in a thread that the relay's close() ends if it is still waiting."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    thread.join(WAIT_S)
    assert result, f"still waiting for PgBouncer's server connection after {WAIT_S:g} s"
    return result[0]


@pytest.fixture(scope="module")
def one_server(storekit_postgres_url: str) -> Iterator[PgBouncer]:
    """A PgBouncer with one server connection; a client waits 5 s for it at most."""
    with pgbouncer_server(storekit_postgres_url, pool_size=1,
                          settings={"query_wait_timeout": "5"}) as bouncer:
        yield bouncer


@pytest.fixture
def relayed(one_server: PgBouncer) -> Iterator[tuple[str, FlushHolder]]:
    with pooled_database(one_server) as url:
        holder = FlushHolder(one_server.port)
        try:
            yield str(DatabaseURL.parse(url).replace(port=holder.port).render(mask=False)), holder
        finally:
            holder.close()


def test_a_statement_leaves_the_server_connection_to_other_clients(
        relayed: tuple[str, FlushHolder]) -> None:
    url, holder = relayed
    first, second = create_database(url, pool=POOLED), create_database(url, pool=POOLED)
    try:
        for n in range(3):
            assert first.get("SELECT ? + 1 AS x", (n,)) == {"x": n + 1}
            time.sleep(HOLD_S * 2)  # a held-back Flush, if any, has reached PgBouncer
            # Each Database has its own client connection: the second one needs the
            # server connection the first one's statement used.
            assert _within(partial(second.get, "SELECT ? + 2 AS x", (n,))) == {"x": n + 2}
        assert holder.syncs >= 6, "the statements went through the relay"
        assert holder.held == 0
    finally:
        first.close()
        second.close()


def test_an_async_statement_leaves_the_server_connection_to_other_clients(
        relayed: tuple[str, FlushHolder]) -> None:
    url, holder = relayed

    async def main() -> None:
        first = await aio.create_database(url, pool=POOLED)
        second = await aio.create_database(url, pool=POOLED)
        try:
            for n in range(3):
                assert await first.get("SELECT ? + 1 AS x", (n,)) == {"x": n + 1}
                await asyncio.sleep(HOLD_S * 2)
                assert await asyncio.wait_for(
                    second.get("SELECT ? + 2 AS x", (n,)), WAIT_S) == {"x": n + 2}
            await first.run("CREATE TABLE t (k int)")
            await first.run("INSERT INTO t VALUES (?)", (1,))
            await asyncio.sleep(HOLD_S * 2)
            assert await asyncio.wait_for(second.all("SELECT k FROM t"), WAIT_S) == [{"k": 1}]
        finally:
            await first.close()
            await second.close()

    asyncio.run(main())
    assert holder.syncs >= 8, "the statements went through the relay"
    assert holder.held == 0
