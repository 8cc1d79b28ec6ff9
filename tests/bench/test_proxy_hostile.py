"""The delay proxy against a hostile peer and network: both directions at once under
back-pressure, half-closes with data queued, resets at any moment, connection storms, its
parent dying, a wall-clock step. Real sockets and processes; time bounds only guard hangs."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from bench.harness.proxy import delay_proxy, proxied_url
from tests.bench.test_proxy import HANG, Upstream

RESET = struct.pack("ii", 1, 0)


def _proxy_pid() -> int:
    pids = [int(p) for t in Path(f"/proc/{os.getpid()}/task").iterdir()
            for p in (t / "children").read_text().split()]
    found = [p for p in pids
             if b"bench.harness.proxy" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert len(found) == 1
    return found[0]


def _usage(pid: int) -> tuple[int, int]:
    """(open fds, threads) of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    threads = int(next(line.split()[1] for line in status.splitlines()
                       if line.startswith("Threads:")))
    return len(os.listdir(f"/proc/{pid}/fd")), threads


def _wait_for(predicate: Callable[[], object], what: str, limit: float = HANG) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _settles_to(pid: int, baseline: tuple[int, int]) -> None:
    _wait_for(lambda: _usage(pid) == baseline,
              f"the proxy's fds and threads to return to {baseline} (now {_usage(pid)})")


def _read_all(sock: socket.socket, rng: random.Random, slow: bool = False) -> bytes:
    """Read to EOF in random sizes; slow: pause now and then so back-pressure engages."""
    got = bytearray()
    while data := sock.recv(rng.randint(1, 100_000)):
        got += data
        if slow and rng.random() < 0.02:
            time.sleep(0.02)
    return bytes(got)


def _send_all(sock: socket.socket, payload: bytes, rng: random.Random) -> None:
    """Send in random sizes, then half-close."""
    i = 0
    while i < len(payload):
        n = rng.choice((1, 3, 100, 1460, 70_000, 300_000))
        sock.sendall(payload[i:i + n])
        i += n
    sock.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def _pair(listener: socket.socket,
          address: tuple[str, int]) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A client connected through the proxy and the server's end of it."""
    client = socket.create_connection(address, timeout=HANG)
    server, _ = listener.accept()
    server.settimeout(HANG)
    try:
        yield client, server
    finally:
        client.close()
        server.close()


@pytest.fixture
def echo() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0), backlog=4096) as sock:
        sock.settimeout(HANG)
        yield sock


@pytest.mark.parametrize("rtt_ms", [0, 4])
def test_both_directions_at_once_with_slow_readers(listener: socket.socket,
                                                   rtt_ms: float) -> None:
    # Each side sends 6 MB in random pieces while reading the other's 6 MB slowly, so the
    # proxy's queues and both kernels' buffers fill; then each half-closes.
    rng = random.Random(rtt_ms)
    up, down = rng.randbytes(6_000_000), rng.randbytes(6_000_000)
    with delay_proxy("127.0.0.1", listener.getsockname()[1], rtt_ms) as address, \
            _pair(listener, address) as (client, server):
        results: dict[str, bytes] = {}

        def side(name: str, sock: socket.socket, payload: bytes, seed: int) -> None:
            sender = threading.Thread(target=_send_all,
                                      args=(sock, payload, random.Random(seed)))
            sender.start()
            results[name] = _read_all(sock, random.Random(seed + 1), slow=True)
            sender.join()

        threads = [threading.Thread(target=side, args=("server", server, down, 1)),
                   threading.Thread(target=side, args=("client", client, up, 3))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(HANG)
            assert not t.is_alive()
    assert results["server"] == up
    assert results["client"] == down


@pytest.mark.parametrize("rtt_ms", [0, 4])
@pytest.mark.parametrize("first", ["client", "server"])
def test_half_close_with_data_queued_then_data_the_other_way(
        listener: socket.socket, rtt_ms: float, first: str) -> None:
    rng = random.Random(5)
    before, after = rng.randbytes(3_000_000), rng.randbytes(3_000_000)
    with delay_proxy("127.0.0.1", listener.getsockname()[1], rtt_ms) as address, \
            _pair(listener, address) as (client, server):
        closer, other = (client, server) if first == "client" else (server, client)
        closer.sendall(before)  # the proxy holds much of it when the FIN comes
        closer.shutdown(socket.SHUT_WR)
        time.sleep(0.2)
        assert _read_all(other, rng) == before  # all of it, then EOF
        other.sendall(after)  # the half-closed side still reads
        other.shutdown(socket.SHUT_WR)
        assert _read_all(closer, rng) == after


@pytest.mark.parametrize("rtt_ms", [2, 30])
def test_never_earlier_than_half_the_round_trip_each_way(listener: socket.socket,
                                                         rtt_ms: float) -> None:
    one_way = rtt_ms / 2000
    rng = random.Random(9)
    with delay_proxy("127.0.0.1", listener.getsockname()[1], rtt_ms) as address, \
            _pair(listener, address) as (client, server):
        for i in range(40):
            src, dst = (client, server) if i % 2 else (server, client)
            payload = rng.randbytes(rng.choice((1, 100, 5000, 200_000)))
            start = time.monotonic()
            src.sendall(payload)
            got = bytearray(dst.recv(len(payload)))
            first = time.monotonic()
            while len(got) < len(payload):
                got += dst.recv(len(payload) - len(got))
            assert got == payload
            assert first - start >= one_way
            if rng.random() < 0.3:
                time.sleep(rng.random() * one_way)


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
    sock.close()


def _ends(sock: socket.socket) -> None:
    """Read until the connection ends (EOF or reset); fail on a hang."""
    sock.settimeout(HANG)
    try:
        while sock.recv(1 << 20):
            pass
    except ConnectionResetError:
        pass


@pytest.mark.parametrize("rtt_ms", [0, 3])
def test_resets_at_any_moment_end_both_sides_and_leak_nothing(listener: socket.socket,
                                                              rtt_ms: float) -> None:
    rng = random.Random(11)
    with delay_proxy("127.0.0.1", listener.getsockname()[1], rtt_ms) as address:
        pid = _proxy_pid()
        baseline = _usage(pid)
        for _ in range(40):
            client = socket.create_connection(address, timeout=HANG)
            server, _ = listener.accept()
            # Traffic either way, the receivers not reading, so chunks sit queued and
            # senders wait for their due time or for room in the receiver's buffer.
            for src in rng.sample([client, server], rng.randint(0, 2)):
                with contextlib.suppress(OSError):
                    src.setblocking(False)
                    src.send(rng.randbytes(rng.choice((10, 100_000, 3_000_000))))
                    src.setblocking(True)
            time.sleep(rng.random() * rtt_ms / 1000)
            victim, survivor = rng.sample([client, server], 2)
            _reset(victim)
            _ends(survivor)
            survivor.close()
        _settles_to(pid, baseline)


@pytest.mark.parametrize("rtt_ms", [0, 3])
def test_upstream_that_accepts_then_resets(listener: socket.socket, rtt_ms: float) -> None:
    with delay_proxy("127.0.0.1", listener.getsockname()[1], rtt_ms) as address:
        pid = _proxy_pid()
        baseline = _usage(pid)
        for i in range(20):
            client = socket.create_connection(address, timeout=HANG)
            if i % 2:
                client.sendall(b"hello" * 1000)
            server, _ = listener.accept()
            _reset(server)
            _ends(client)
            client.close()
        _settles_to(pid, baseline)


@pytest.mark.parametrize("rtt_ms", [0, 1])
def test_thousands_of_short_connections(echo: Upstream, rtt_ms: float) -> None:
    rng = random.Random(13)
    with delay_proxy("127.0.0.1", echo.port, rtt_ms) as address:
        pid = _proxy_pid()
        baseline = _usage(pid)
        for i in range(2000):
            sock = socket.create_connection(address, timeout=HANG)
            kind = rng.randrange(4)
            if kind == 1:
                sock.sendall(b"x")
            elif kind == 2:
                sock.sendall(b"ping")
                assert sock.recv(4) == b"ping"
            if kind == 3 or i % 7 == 0:
                _reset(sock)
            else:
                sock.close()
        _wait_for(lambda: echo.closed == echo.opened, "the upstream to see all closes")
        _settles_to(pid, baseline)


def test_idle_client_then_close(echo: Upstream) -> None:
    with delay_proxy("127.0.0.1", echo.port, 3) as address:
        pid = _proxy_pid()
        baseline = _usage(pid)
        socks = [socket.create_connection(address, timeout=HANG) for _ in range(50)]
        time.sleep(0.5)
        for s in socks:
            s.close()
        _settles_to(pid, baseline)


PARENT = """
import sys, time
from bench.harness.proxy import delay_proxy
with delay_proxy("127.0.0.1", int(sys.argv[1]), float(sys.argv[2])) as (host, port):
    print(port, flush=True)
    time.sleep(3600)
"""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("rtt_ms", [0, 3])
def test_proxy_exits_when_its_parent_is_killed(echo: Upstream, rtt_ms: float) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(echo.port), str(rtt_ms)],
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    try:
        assert parent.stdout is not None
        port = int(parent.stdout.readline())
        proxy = int(Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()[0])
        client = socket.create_connection(("127.0.0.1", port), timeout=HANG)
        client.sendall(b"x" * 100_000)  # a connection open, data in flight
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        _wait_for(lambda: not _alive(proxy), "the orphaned proxy to exit")
        _ends(client)
        client.close()
    finally:
        parent.kill()
        parent.communicate()


@pytest.mark.parametrize("rtt_ms", [0, 3])
def test_sigterm_with_connections_open_and_data_queued(listener: socket.socket,
                                                       rtt_ms: float) -> None:
    with delay_proxy("127.0.0.1", listener.getsockname()[1], rtt_ms) as address:
        pid = _proxy_pid()
        pairs = []
        for _ in range(10):
            client = socket.create_connection(address, timeout=HANG)
            server, _ = listener.accept()
            client.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                client.send(b"x" * 5_000_000)
            pairs.append((client, server))
        os.kill(pid, signal.SIGTERM)
        _wait_for(lambda: not _alive(pid), "the proxy to exit on SIGTERM")
        for client, server in pairs:
            _ends(server)
            client.close()
            server.close()


def _fill(sock: socket.socket, piece: int = 65536) -> int:
    """Send until the peer's side stops taking bytes for a second (back-pressure has reached
    sock: every buffer and queue on the way is full); return the bytes sent."""
    sock.setblocking(False)
    sent = 0
    stalled_at = None
    chunk = b"x" * piece
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        try:
            sent += sock.send(chunk)
            stalled_at = None
        except BlockingIOError:
            if stalled_at is None:
                stalled_at = time.monotonic()
            elif time.monotonic() - stalled_at > 1.0:
                break
            time.sleep(0.01)
    sock.setblocking(True)
    return sent


def test_memory_stays_bounded_under_a_fast_sender_and_a_stalled_receiver(
        listener: socket.socket) -> None:
    with delay_proxy("127.0.0.1", listener.getsockname()[1], 2) as address, \
            _pair(listener, address) as (client, _):
        pid = _proxy_pid()
        sent = _fill(client)
        rss_kb = int(next(line.split()[1] for line in
                          Path(f"/proc/{pid}/status").read_text().splitlines()
                          if line.startswith("VmRSS:")))
        assert sent < 200_000_000
        assert rss_kb < 120_000


@pytest.mark.parametrize("rtt_ms", [0, 3])
@pytest.mark.parametrize("victim", ["client", "server"])
def test_a_reset_reaches_a_peer_that_is_busy_sending_and_not_reading(
        listener: socket.socket, rtt_ms: float, victim: str) -> None:
    # Both sides send more than the buffers hold and neither reads: the proxy is stuck in
    # a send to each. When one side resets, the other must see it (as across a network),
    # not wait forever in its own send for a reader that is gone.
    with contextlib.ExitStack() as stack:
        address = stack.enter_context(delay_proxy("127.0.0.1", listener.getsockname()[1],
                                                  rtt_ms))
        pid = _proxy_pid()
        baseline = _usage(pid)
        client = socket.create_connection(address, timeout=HANG)
        server, _ = listener.accept()
        server.settimeout(HANG)
        stack.callback(client.close)
        stack.callback(server.close)
        dead, survivor = (client, server) if victim == "client" else (server, client)
        outcome: list[BaseException] = []

        def send_forever() -> None:
            try:
                while True:
                    survivor.sendall(b"y" * 1_000_000)
            except OSError as exc:
                outcome.append(exc)

        _fill(dead)
        sender = threading.Thread(target=send_forever)
        sender.start()
        time.sleep(0.5)  # the other direction fills up too
        assert not outcome
        _reset(dead)
        sender.join(HANG)
        assert not sender.is_alive(), "the survivor never learned of the reset"
        assert not isinstance(outcome[0], TimeoutError)
        assert isinstance(outcome[0], ConnectionError)
        survivor.close()
        _settles_to(pid, baseline)


@pytest.mark.parametrize("rtt_ms", [0, 3])
def test_psycopg_pipeline_and_copy_through_it(storekit_postgres_url: str,
                                              rtt_ms: float) -> None:
    rng = random.Random(17)
    rows = [(i, rng.randbytes(rng.choice((0, 10, 5000, 100_000))).hex()) for i in range(300)]
    with proxied_url(storekit_postgres_url, rtt_ms) as url, \
            psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE p (i int PRIMARY KEY, v text)")
        with conn.pipeline(), conn.cursor() as cur:
            for i, v in rows[:150]:
                cur.execute("INSERT INTO p VALUES (%s, %s)", (i, v))
            cur.executemany("INSERT INTO p VALUES (%s, %s)", rows[150:])
        with conn.cursor() as cur:
            with cur.copy("COPY p TO STDOUT") as copy:
                back = sorted((int(i), v) for i, v in copy.rows())
            assert back == rows
            cur.execute("CREATE TEMP TABLE q (i int, v text)")
            with cur.copy("COPY q FROM STDIN") as copy:
                for row in rows * 3:
                    copy.write_row(row)
            cur.execute("SELECT count(*), sum(length(v)) FROM q")
            assert cur.fetchone() == (900, 3 * sum(len(v) for _, v in rows))
        # An error mid-pipeline: it surfaces at the sync, and the connection goes on.
        with pytest.raises(psycopg.errors.UniqueViolation), conn.pipeline():
            conn.execute("SELECT 1")
            conn.execute("INSERT INTO p VALUES (0, 'dup')")
            conn.execute("SELECT 2")
        assert conn.execute("SELECT count(*) FROM p").fetchone() == (300,)


# The proxy with its wall clock (time.time_ns, the clock of SO_TIMESTAMPNS stamps) stepped
# by the number of ns written to a file: stepping the machine's clock would move every
# other process's too.
STEPPED = """
import os, runpy, sys, threading, time
flag = sys.argv.pop(1)
real, step = time.time_ns, [0]
def watch():
    while not os.path.exists(flag):
        time.sleep(0.002)
    step[0] = int(open(flag).read())
    print("stepped", flush=True)
threading.Thread(target=watch, daemon=True).start()
time.time_ns = lambda: real() + step[0]
runpy.run_module("bench.harness.proxy", run_name="__main__")
"""


@contextlib.contextmanager
def _stepped_proxy(port: int, rtt_ms: float, flag: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", STEPPED, str(flag), "127.0.0.1", str(port), str(rtt_ms),
         "127.0.0.1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        yield proc
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.parametrize("step_s", [-3600, 3600])
def test_a_wall_clock_step_neither_holds_chunks_nor_lets_them_out_early(
        listener: socket.socket, tmp_path: Path, step_s: int) -> None:
    # One-way delay 1 s. Chunks a and b are in the proxy when the clock steps an hour (back:
    # a chunk due by the wall clock would wait an hour; on: it would leave at once); c comes
    # after the step. Each arrives a second after it was sent, not earlier, not an hour on.
    one_way = 1.0
    flag = tmp_path / "step"
    with _stepped_proxy(listener.getsockname()[1], 2000 * one_way, flag) as proc:
        assert proc.stdout is not None
        _, _, port = proc.stdout.readline().split()
        with _pair(listener, ("127.0.0.1", int(port))) as (client, server):
            sent = {}
            for byte in b"ab":
                sent[byte] = time.monotonic()
                client.sendall(bytes([byte]))
                time.sleep(0.2)  # read by the proxy before the step
            tmp = tmp_path / "step.tmp"
            tmp.write_text(str(step_s * 1_000_000_000))
            tmp.rename(flag)
            assert proc.stdout.readline() == "stepped\n"
            sent[ord("c")] = time.monotonic()
            client.sendall(b"c")
            for expected in b"abc":
                assert server.recv(1) == bytes([expected])  # within HANG, not an hour
                assert time.monotonic() - sent[expected] >= one_way
            start = time.monotonic()
            server.sendall(b"d")
            assert client.recv(1) == b"d"
            assert time.monotonic() - start >= one_way


@pytest.mark.parametrize("rtt_ms", [0, 3])
def test_out_of_file_descriptors_refuses_rather_than_hangs(echo: Upstream,
                                                          rtt_ms: float) -> None:
    # The proxy's fd limit lowered so that two sessions fill it: a third client is reset at
    # once (it was left in the backlog, the proxy spinning on its ready listener, until a
    # session ended), and the proxy serves again once a session ends.
    import resource

    with contextlib.ExitStack() as stack:
        address = stack.enter_context(delay_proxy("127.0.0.1", echo.port, rtt_ms))
        pid = _proxy_pid()
        fds = _usage(pid)[0] + 4
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (fds, fds))
        held = [socket.create_connection(address, timeout=HANG) for _ in range(2)]
        stack.callback(lambda: [sock.close() for sock in held])
        for sock in held:
            sock.sendall(b"hi")
            assert sock.recv(2) == b"hi"
        for _ in range(3):
            with contextlib.suppress(ConnectionResetError), \
                    socket.create_connection(address, timeout=HANG) as extra:
                assert extra.recv(10) == b""
        held.pop().close()
        _wait_for(lambda: _usage(pid)[0] <= fds - 2, "a session to end")
        held.append(socket.create_connection(address, timeout=HANG))
        held[-1].sendall(b"again")
        assert held[-1].recv(5) == b"again"
