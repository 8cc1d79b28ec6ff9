"""A TCP proxy that adds network distance: each direction is delayed by half a round trip.

This machine's kernel has no netem qdisc, so the delay is in user space. The proxy runs in
a process of its own (the harness's GIL and load must not move its timers) and forwards
bytes exactly and in order. Design (measured with `python -m bench proxy`):
- asyncio Protocols, no streams: at 0 ms a chunk is written to the other side from
  data_received, the least Python per hop.
- select() instead of epoll: epoll rounds its timeout up to whole milliseconds, which
  alone would turn a 1 ms round trip into 2 ms; select() takes microseconds.
- A wake-up on a shared (virtual) machine comes late, by more as the sleep gets longer
  (tens to hundreds of microseconds). Each direction's timer is set early by a margin
  that tracks the lateness observed, and the last stretch is spun, so a chunk never
  leaves before its time and rarely much after.
- One FIFO queue and at most one timer per direction: order is kept whatever the timer
  heap does with equal deadlines.
- TCP_NODELAY on both sides (asyncio sets it on TCP transports; set again explicitly).

`delay_proxy(host, port, rtt_ms)` starts one and yields its local (host, port);
`proxied_url(url, rtt_ms)` yields the URL rewritten to go through one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# select() cannot watch a descriptor number >= FD_SETSIZE (1024): refuse a connection
# whose socket would be one rather than crash the loop.
MAX_FD = 1000
_EOF = b""  # queue marker: the source half-closed (write_eof on delivery)
_CLOSE = None  # queue marker: the source is gone (close the destination on delivery)


class _Clock:
    """How early to wake: a running estimate of how late wake-ups come (mean + 3 MAD)."""

    def __init__(self) -> None:
        self.mean = 100e-6
        self.dev = 50e-6

    @property
    def margin(self) -> float:
        return min(2e-3, self.mean + 3 * self.dev)

    def observe(self, late: float) -> None:
        late = max(0.0, late)
        self.dev += 0.05 * (abs(late - self.mean) - self.dev)
        self.mean += 0.05 * (late - self.mean)


class _Link:
    """One direction of one connection: chunks wait in arrival order until they are due."""

    def __init__(self, session: _Session, delay: float) -> None:
        self.session = session
        self.loop = session.server.loop
        self.clock = session.server.clock
        self.delay = delay
        self.dst: asyncio.Transport | None = None
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.wake_at = 0.0
        self.done = False  # the destination is closed or has had its EOF

    def push(self, item: bytes | None) -> None:
        if self.done:
            return
        if self.delay == 0.0 and not self.queue and self.dst is not None:
            self._deliver(item)
            return
        self.queue.append((self.loop.time() + self.delay, item))
        if self.timer is None and self.dst is not None:
            self._arm()

    def connected(self, dst: asyncio.Transport) -> None:
        self.dst = dst
        if self.queue and self.timer is None:
            self._arm()

    def drop(self) -> None:
        self.done = True
        self.queue.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _arm(self) -> None:
        self.wake_at = self.queue[0][0] - self.clock.margin
        self.timer = self.loop.call_at(self.wake_at, self._fire)

    def _fire(self) -> None:
        self.timer = None
        now = self.loop.time()
        self.clock.observe(now - self.wake_at)
        due = self.queue[0][0]
        while now < due:  # the last stretch, spun: never deliver early
            now = self.loop.time()
        while self.queue and self.queue[0][0] <= now and not self.done:
            self._deliver(self.queue.popleft()[1])
        if self.queue and not self.done:
            self._arm()

    def _deliver(self, item: bytes | None) -> None:
        dst = self.dst
        assert dst is not None
        if item is _CLOSE:
            self.done = True
            dst.close()  # sends what is buffered, then closes
            self.session.check_done()
        elif item == _EOF:
            self.done = True
            if dst.can_write_eof() and not dst.is_closing():
                dst.write_eof()
            self.session.check_done()
        elif not dst.is_closing():
            dst.write(item)


class _Side(asyncio.Protocol):
    def __init__(self, session: _Session) -> None:
        self.session = session
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.session.outgoing(self).push(data)

    def eof_received(self) -> bool:
        self.session.outgoing(self).push(_EOF)
        return True  # keep the other direction open (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.session.side_lost(self, exc)

    def pause_writing(self) -> None:
        other = self.session.other(self).transport
        if other is not None and not other.is_closing():
            other.pause_reading()

    def resume_writing(self) -> None:
        other = self.session.other(self).transport
        if other is not None and not other.is_closing():
            other.resume_reading()


class _Session:
    """A client connection and its upstream connection, with a link each way."""

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.client = _Side(self)
        self.upstream = _Side(self)
        self.up = _Link(self, server.delay)  # client -> upstream
        self.down = _Link(self, server.delay)  # upstream -> client
        self.task: asyncio.Task[None] | None = None

    def other(self, side: _Side) -> _Side:
        return self.upstream if side is self.client else self.client

    def outgoing(self, side: _Side) -> _Link:
        return self.up if side is self.client else self.down

    def incoming(self, side: _Side) -> _Link:
        return self.down if side is self.client else self.up

    def client_made(self) -> None:
        transport = self.client.transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        if sock is None or sock.fileno() >= MAX_FD:
            transport.abort()
            return
        self.server.sessions.add(self)
        self.down.dst = transport
        self.task = self.server.loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            await self.server.loop.create_connection(
                lambda: self.upstream, self.server.upstream[0], self.server.upstream[1])
        except OSError:
            self.client_abort()
            return
        assert self.upstream.transport is not None
        if self.client.lost:  # the client left while we connected
            self.upstream.transport.close()
            return
        self.up.connected(self.upstream.transport)

    def client_abort(self) -> None:
        self.down.drop()
        self.up.drop()
        if self.client.transport is not None:
            self.client.transport.abort()

    def check_done(self) -> None:
        # Nothing more can flow either way (both half-closed, or one side gone and its
        # data delivered): close both; close() still sends what is buffered.
        if self.up.done and self.down.done:
            for side in (self.client, self.upstream):
                if side.transport is not None:
                    side.transport.close()

    def side_lost(self, side: _Side, exc: Exception | None) -> None:
        self.incoming(side).drop()  # nothing more can be written to it
        self.check_done()
        other = self.other(side)
        if exc is not None:  # reset or error: no point delivering the rest
            self.outgoing(side).drop()
            if other.transport is not None:
                other.transport.abort()
        else:  # closed after its data: deliver what is queued, then close the other side
            self.outgoing(side).push(_CLOSE)
            if other.transport is None and side is self.client and self.task is not None:
                self.task.cancel()
        if self.client.lost and (self.upstream.lost or self.upstream.transport is None):
            self.server.sessions.discard(self)


class _Server:
    def __init__(self, loop: asyncio.AbstractEventLoop, upstream: tuple[str, int],
                 delay: float) -> None:
        self.loop = loop
        self.upstream = upstream
        self.delay = delay
        self.clock = _Clock()
        self.sessions: set[_Session] = set()

    def protocol(self) -> _Side:
        session = _Session(self)
        side = session.client
        made = side.connection_made

        def connection_made(transport: asyncio.BaseTransport) -> None:
            made(transport)
            session.client_made()

        side.connection_made = connection_made  # type: ignore[method-assign]
        return side

    def close_all(self) -> None:
        for session in list(self.sessions):
            for side in (session.client, session.upstream):
                if side.transport is not None:
                    side.transport.abort()


async def _serve(upstream: tuple[str, int], rtt_ms: float, host: str) -> None:
    loop = asyncio.get_running_loop()
    server = _Server(loop, upstream, rtt_ms / 2000.0)
    listener = await loop.create_server(server.protocol, host, 0, backlog=1024)
    port = listener.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # The parent holds our stdin: its end closing (the parent died) stops us too.
    loop.add_reader(sys.stdin.fileno(), stop.set)
    print(f"listening {host} {port}", flush=True)
    await stop.wait()
    listener.close()
    server.close_all()
    await listener.wait_closed()


def main(argv: list[str]) -> None:
    upstream_host, upstream_port, rtt_ms, host = argv
    with contextlib.suppress(OSError):  # timer slack 1 ns: wake-ups as precise as can be
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    try:
        loop.run_until_complete(_serve((upstream_host, int(upstream_port)),
                                       float(rtt_ms), host))
    finally:
        loop.close()


def _repo_root() -> Path:
    # The folder holding the top-level package, wherever this module sits inside it.
    return Path(__file__).resolve().parents[__name__.count(".")]


@contextlib.contextmanager
def delay_proxy(upstream_host: str, upstream_port: int, rtt_ms: float, *,
                host: str = "127.0.0.1", timeout: float = 30.0) -> Iterator[tuple[str, int]]:
    """Run a proxy to upstream in a child process; yield its (host, port); stop it on exit.

    rtt_ms is the round trip it adds: each direction waits half of it."""
    if not rtt_ms >= 0 or rtt_ms > 60_000:
        raise ValueError(f"rtt_ms={rtt_ms!r}: must be from 0 to 60000 milliseconds")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_repo_root()), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", __name__, upstream_host, str(upstream_port), repr(rtt_ms),
         host],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        address = _read_address(proc, timeout)
        yield address
    finally:
        proc.stdin.close()
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _read_address(proc: subprocess.Popen[bytes], timeout: float) -> tuple[str, int]:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise RuntimeError(f"the delay proxy did not start within {timeout:g} s")
    line = proc.stdout.readline().decode()
    parts = line.split()
    if len(parts) != 3 or parts[0] != "listening":
        raise RuntimeError(f"the delay proxy failed to start (exit {proc.wait()})")
    return parts[1], int(parts[2])


@contextlib.contextmanager
def proxied_url(url: str, rtt_ms: float) -> Iterator[str]:
    """The PostgreSQL URL rewritten to reach its server through a delay proxy."""
    from storekit.url import DatabaseURL

    parsed = DatabaseURL.parse(url)
    if not parsed.host or parsed.host.startswith("/"):
        raise ValueError(f"{parsed}: the delay proxy needs a TCP host, not a socket")
    with delay_proxy(parsed.host, parsed.port or 5432, rtt_ms) as (host, port):
        yield str(parsed.replace(host=host, port=port).render(mask=False))


def round_trips(url: str, n: int = 500, warmup: int = 50, *,
                pooled: bool = False) -> list[float]:
    """Seconds per no-op statement (SELECT 1) on one connection, n samples. pooled: the URL
    goes through a transaction pooler (no prepared statements, which it would break)."""
    import psycopg

    extra: dict[str, Any] = {"prepare_threshold": None} if pooled else {}
    with psycopg.connect(url, autocommit=True, **extra) as conn:
        conn.execute("SELECT 1")
        samples = []
        for i in range(n + warmup):
            start = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            if i >= warmup:
                samples.append(time.perf_counter() - start)
    return samples


if __name__ == "__main__":
    main(sys.argv[1:])
