"""The delay proxy: bytes exact and in order both ways, never early, closes propagate."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from bench.harness.proxy import delay_proxy, proxied_url

HANG = 60.0  # seconds: only a guard against hanging, never a speed requirement


class Upstream:
    """A TCP server that echoes each connection's bytes back and half-closes after the
    client's EOF; it counts connections opened and closed."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.opened = 0
        self.closed = 0
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.opened += 1
                self.conns.append(conn)
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        conn.settimeout(HANG)
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            conn.close()
            with self.lock:
                self.closed += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


def _exchange(address: tuple[str, int], payload: bytes, seed: int) -> bytes:
    """Send payload in random chunks while reading the echo; half-close; read to EOF."""
    rng = random.Random(seed)
    with socket.create_connection(address, timeout=HANG) as sock:
        received = bytearray()

        def read() -> None:
            while data := sock.recv(rng.randint(1, 70000)):
                received.extend(data)

        reader = threading.Thread(target=read)
        reader.start()
        i = 0
        while i < len(payload):
            n = rng.choice((1, 7, 100, 1500, 65536, 300000))
            sock.sendall(payload[i:i + n])
            i += n
        sock.shutdown(socket.SHUT_WR)
        reader.join(HANG)
        assert not reader.is_alive()
        return bytes(received)


@pytest.mark.parametrize("rtt_ms", [0, 3])
def test_bytes_exact_and_in_order_over_many_interleaved_connections(
        upstream: Upstream, rtt_ms: float) -> None:
    rng = random.Random(rtt_ms)
    payloads = [rng.randbytes(rng.choice((0, 1, 1000, 200_000, 2_000_000))) for _ in range(24)]
    with delay_proxy("127.0.0.1", upstream.port, rtt_ms) as address, \
            ThreadPoolExecutor(12) as pool:
        echoes = list(pool.map(_exchange, [address] * len(payloads), payloads,
                               range(len(payloads))))
    for sent, got in zip(payloads, echoes, strict=True):
        assert len(got) == len(sent)
        assert got == sent


def test_each_round_trip_takes_at_least_the_target(upstream: Upstream) -> None:
    rtt_ms = 10.0
    with delay_proxy("127.0.0.1", upstream.port, rtt_ms) as address, \
            socket.create_connection(address, timeout=HANG) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(30):
            start = time.monotonic()
            sock.sendall(struct.pack("!I", i))
            got = b""
            while len(got) < 4:
                got += sock.recv(4 - len(got))
            elapsed = time.monotonic() - start
            assert struct.unpack("!I", got)[0] == i
            assert elapsed >= rtt_ms / 1000.0


def test_one_way_delay_applies_to_each_direction(upstream: Upstream) -> None:
    # A burst sent at once comes back no earlier than a full round trip after its start.
    with delay_proxy("127.0.0.1", upstream.port, 40) as address, \
            socket.create_connection(address, timeout=HANG) as sock:
        start = time.monotonic()
        sock.sendall(b"a" * 1000)
        got = b""
        while len(got) < 1000:
            got += sock.recv(1000)
        assert time.monotonic() - start >= 0.040


def _proxy_pid() -> int:
    children = Path(f"/proc/{os.getpid()}/task")
    pids = [int(p) for t in children.iterdir()
            for p in (t / "children").read_text().split()]
    cmdlines = {p: Path(f"/proc/{p}/cmdline").read_bytes() for p in pids}
    found = [p for p, cmd in cmdlines.items() if b"bench" in cmd and b"proxy" in cmd]
    assert len(found) == 1
    return found[0]


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _wait_for(predicate: object, what: str) -> None:
    deadline = time.monotonic() + HANG
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_client_close_closes_upstream_and_nothing_leaks(upstream: Upstream) -> None:
    with delay_proxy("127.0.0.1", upstream.port, 2) as address:
        pid = _proxy_pid()
        baseline = _fds(pid)
        socks = [socket.create_connection(address, timeout=HANG) for _ in range(20)]
        for s in socks:
            s.sendall(b"ping")
            assert s.recv(4) == b"ping"
        assert _fds(pid) >= baseline + 40
        for s in socks[:10]:
            s.close()  # full close, no half-close first
        for s in socks[10:]:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()  # reset
        _wait_for(lambda: upstream.closed == 20, "the upstream connections to close")
        _wait_for(lambda: _fds(pid) == baseline, "the proxy's sockets to close")


def test_upstream_close_and_reset_reach_the_client() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener, \
            delay_proxy("127.0.0.1", listener.getsockname()[1], 2) as address:
        pid = _proxy_pid()
        baseline = _fds(pid)
        a = socket.create_connection(address, timeout=HANG)
        server_a, _ = listener.accept()
        b = socket.create_connection(address, timeout=HANG)
        server_b, _ = listener.accept()
        server_a.sendall(b"bye")
        server_a.close()  # the server ends the connection after sending
        assert a.recv(10) == b"bye"
        assert a.recv(10) == b""
        server_b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        server_b.close()  # the server resets the connection
        with contextlib.suppress(ConnectionResetError):
            assert b.recv(10) == b""
        a.close()
        b.close()
        _wait_for(lambda: _fds(pid) == baseline, "the proxy's sockets to close")


def test_unreachable_upstream_closes_the_client() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        # The reset may come before create_connection() has seen its connect complete.
        with delay_proxy("127.0.0.1", port, 0) as address, \
                contextlib.suppress(ConnectionResetError), \
                socket.create_connection(address, timeout=HANG) as client:
            assert client.recv(10) == b""


def test_stopping_with_open_connections_does_not_hang(upstream: Upstream) -> None:
    with delay_proxy("127.0.0.1", upstream.port, 50) as address:
        client = socket.create_connection(address, timeout=HANG)
        client.sendall(b"in flight")
    with contextlib.suppress(ConnectionResetError):
        assert client.recv(100) == b""
    client.close()


@pytest.mark.parametrize("rtt_ms", [-1, float("nan"), 10**9])
def test_bad_rtt_is_refused(rtt_ms: float) -> None:
    with pytest.raises(ValueError, match="rtt_ms"), delay_proxy("127.0.0.1", 1, rtt_ms):
        pass


@pytest.mark.parametrize("rtt_ms", [0, 2])
def test_psycopg_works_through_it(storekit_postgres_url: str, rtt_ms: float) -> None:
    blob = random.Random(1).randbytes(3_000_000)
    with proxied_url(storekit_postgres_url, rtt_ms) as url, \
            psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        row = conn.execute("SELECT %s::bytea AS b, md5(%s::bytea) AS h", [blob, blob]).fetchone()
        assert row is not None
        assert row[0] == blob
        with conn.transaction():
            conn.execute("CREATE TEMP TABLE t (x int)")
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO t VALUES (%s)", [(i,) for i in range(500)])
        assert conn.execute("SELECT sum(x) FROM t").fetchone() == (sum(range(500)),)


def test_chunks_in_flight_are_pipelined_not_queued_behind_each_other(
        upstream: Upstream) -> None:
    # 40 chunks sent 5 ms apart through a 200 ms round trip: in flight together, they come
    # back in about 0.4 s; a proxy that delayed each after the previous one took 8 s.
    n, gap, rtt_ms = 40, 0.005, 200
    with delay_proxy("127.0.0.1", upstream.port, rtt_ms) as address, \
            socket.create_connection(address, timeout=HANG) as sock:
        start = time.monotonic()
        for i in range(n):
            sock.sendall(bytes([i]) * 10)
            time.sleep(gap)
        received = b""
        while len(received) < 10 * n:
            received += sock.recv(4096)
        elapsed = time.monotonic() - start
    assert received == b"".join(bytes([i]) * 10 for i in range(n))
    assert elapsed >= rtt_ms / 1000.0
    assert elapsed < n * rtt_ms / 1000.0 / 2  # half the serial time: no load makes it that slow


def test_hundreds_of_connections_at_once(upstream: Upstream) -> None:
    with delay_proxy("127.0.0.1", upstream.port, 1) as address:
        socks = [socket.create_connection(address, timeout=HANG) for _ in range(300)]
        for i, s in enumerate(socks):
            s.sendall(i.to_bytes(2, "big"))
        for i, s in enumerate(socks):
            assert s.recv(2) == i.to_bytes(2, "big")
        for s in socks:
            s.close()
        _wait_for(lambda: upstream.closed == 300, "the upstream connections to close")
