"""A TCP proxy that adds network distance: each direction is delayed by half a round trip.

This machine's kernel has no netem qdisc, so the delay is in user space. The proxy runs in
a process of its own (the harness's GIL and load must not move its timers) and forwards
bytes exactly and in order. Design (measured with `python -m bench proxy`; figures in
docs/benchmarks.md):
- Blocking sockets and a thread per direction, no event loop: at 0 ms a chunk costs one
  wake-up, a recv and a send, the least there is in Python per hop.
- With a delay, each direction has a reader that reads as soon as bytes arrive and a
  sender that waits until each chunk is due, so a chunk's delay never includes the time
  the previous one waited. A chunk is due half a round trip after the kernel received it
  (SO_TIMESTAMPNS), so the proxy's own wake-up latency is inside the delay, not added. The
  stamp is on the wall clock; due times are on the monotonic one, so a step of the wall
  clock neither holds a chunk nor lets it out early.
- A wake-up on a shared (virtual) machine comes late. The sender sleeps until a margin
  before the deadline, the margin tracking the lateness observed, and yields the last
  stretch (timer slack 1 ns): a chunk never leaves early and rarely much late.
- TCP_NODELAY on both sides; a bounded queue per direction is the back-pressure.

`delay_proxy(host, port, rtt_ms)` starts one and yields its local (host, port);
`proxied_url(url, rtt_ms)` yields the URL rewritten to go through one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import queue
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_CMSG_SPACE = socket.CMSG_SPACE(16)
_CHUNK = 262144
_QUEUED = 64  # chunks per direction before the reader stops reading (back-pressure)
_EOF = b""  # queue marker: the source half-closed
_RESET = None  # queue marker: the source was reset (queued bytes are dropped)
_LINGER_RESET = struct.pack("ii", 1, 0)  # close() then sends RST, as the source did


class _Clock:
    """Due times, on the monotonic clock (it never steps), and how early to wake for them: a
    running estimate of how late wake-ups come (mean + 3 MAD)."""

    def __init__(self) -> None:
        self.mean = 100_000
        self.dev = 50_000
        self.offset = -(1 << 62)  # the wall clock less the monotonic one, highest seen (ns)

    @property
    def margin(self) -> int:
        return min(2_000_000, self.mean + 3 * self.dev)

    def observe(self, late: int) -> None:
        late = max(0, late)
        self.dev += (abs(late - self.mean) - self.dev) // 20
        self.mean += (late - self.mean) // 20

    def wait_until(self, due: int) -> None:
        """Return at due (time.monotonic_ns()) or just after, never before."""
        now = time.monotonic_ns()
        early = due - self.margin
        if now < early:
            time.sleep((early - now) / 1e9)
            self.observe(time.monotonic_ns() - early)
        while time.monotonic_ns() < due:
            time.sleep(0)  # lets other threads take the GIL while this one waits

    def arrival(self, ancdata: list[tuple[int, int, bytes]]) -> int:
        """When the kernel received the bytes (monotonic clock, ns), from its wall-clock stamp.

        A stamp from before a step forward of the wall clock looks older than it is, and its
        chunk would leave early: a stamp counts only while the wall clock's offset from the
        monotonic clock is no higher than seen before (read wall first, a pause between the
        two reads can only lower it). After a step, or without a stamp: now (late, never
        early)."""
        wall = time.time_ns()
        now = time.monotonic_ns()
        offset = wall - now
        if offset > self.offset or offset < self.offset - 1_000_000:
            self.offset = offset  # a step (or the first look): stamps count from here on
            return now
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                sec, nsec = struct.unpack("qq", data[:16])
                age: int = wall - (sec * 1_000_000_000 + nsec)
                if 0 <= age < 1_000_000_000:
                    return now - age
        return now


class _Session:
    """A client connection and its upstream connection, forwarded both ways."""

    def __init__(self, server: _Server, client: socket.socket) -> None:
        self.server = server
        self.client = client
        self.upstream: socket.socket | None = None
        self.lock = threading.Lock()
        self.running = 0

    def start(self) -> None:
        self._spawn(self._connect)

    def _spawn(self, target: Any, *args: Any) -> None:
        with self.lock:
            self.running += 1
        threading.Thread(target=self._run, args=(target, *args), daemon=True).start()

    def _run(self, target: Any, *args: Any) -> None:
        try:
            target(*args)
        finally:
            with self.lock:
                self.running -= 1
                last = self.running == 0
            if last:  # nothing can flow any more: release both sockets
                self.client.close()
                if self.upstream is not None:
                    self.upstream.close()
                self.server.sessions.discard(self)

    def _connect(self) -> None:
        try:
            upstream = socket.create_connection(self.server.upstream)
        except OSError:
            _abort(self.client)
            return
        _nodelay(upstream)
        self.upstream = upstream
        if self.server.stopping.is_set():
            _wake(upstream)
        self._spawn(self._forward, upstream, self.client)
        self._forward(self.client, upstream)

    def _forward(self, src: socket.socket, dst: socket.socket) -> None:
        delay, clock = self.server.delay, self.server.clock
        if not delay:
            _relay(src, dst)
            return
        chunks: queue.Queue[tuple[int, bytes | None]] = queue.Queue(_QUEUED)
        self._spawn(self._send_due, chunks, src, dst)
        src.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        while True:
            try:
                data, ancdata, _, _ = src.recvmsg(_CHUNK, _CMSG_SPACE)
            except OSError:  # src was reset: so is dst, when the RST would reach it
                clock.wait_until(time.monotonic_ns() + delay)
                _abort(dst)  # also wakes our sender should it be stuck sending to dst
                chunks.put((0, _RESET))
                return
            chunks.put((clock.arrival(ancdata) + delay, data))
            if not data:
                return

    def _send_due(self, chunks: queue.Queue[tuple[int, bytes | None]], src: socket.socket,
                  dst: socket.socket) -> None:
        clock = self.server.clock
        while True:
            due, data = chunks.get()
            if data is _RESET:
                return
            clock.wait_until(due)
            if not _send(data, dst):
                # dst is gone: src learns it when dst's RST would reach it. The reader then
                # fails, and its last put ends the drain (so it never blocks on put()).
                clock.wait_until(time.monotonic_ns() + self.server.delay)
                _abort(src)
                while data:
                    data = chunks.get()[1]
                return
            if not data:
                return


def _relay(src: socket.socket, dst: socket.socket) -> None:
    """No delay: each chunk straight on, through one reused buffer."""
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    while True:
        try:
            n = src.recv_into(buf)
        except OSError:  # src was reset: so is dst
            _abort(dst)
            return
        if not _send(view[:n], dst):
            _abort(src)  # dst is gone: so is src
            return
        if not n:
            return


def _send(data: bytes | memoryview, dst: socket.socket) -> bool:
    """Forward data, or the EOF (b""); False when the destination is gone."""
    try:
        if data:
            dst.sendall(data)
        else:
            dst.shutdown(socket.SHUT_WR)
        return True
    except OSError:
        return False


def _nodelay(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


_LIBC = ctypes.CDLL(None, use_errno=True)
_UNSPEC = bytes(16)  # a sockaddr of family AF_UNSPEC


def _abort(sock: socket.socket) -> None:
    """Reset the connection now: the peer gets RST, and threads blocked reading or writing
    sock wake with an error (connect() to AF_UNSPEC; the fd stays open until the session
    closes it, so no thread can meet it reused). Where that fails, shut it both ways and
    let close() send the RST."""
    if _LIBC.connect(sock.fileno(), _UNSPEC, len(_UNSPEC)) == 0:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        sock.shutdown(socket.SHUT_RDWR)


def _wake(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)


class _Server:
    def __init__(self, upstream: tuple[str, int], delay_ns: int) -> None:
        self.upstream = upstream
        self.delay = delay_ns
        self.clock = _Clock()
        self.sessions: set[_Session] = set()
        self.stopping = threading.Event()
        self.reserve: int | None = os.open(os.devnull, os.O_RDONLY)  # see _refuse

    def serve(self, host: str) -> None:
        listener = socket.create_server((host, 0), backlog=1024)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: None)  # the wake-up fd does the work
        with selectors.DefaultSelector() as sel:
            sel.register(listener, selectors.EVENT_READ)
            sel.register(wake_r, selectors.EVENT_READ)
            # The parent holds our stdin: its end closing (the parent died) stops us too.
            sel.register(sys.stdin.fileno(), selectors.EVENT_READ)
            print(f"listening {host} {listener.getsockname()[1]}", flush=True)
            while True:
                ready = [key.fileobj for key, _ in sel.select()]
                if listener not in ready:
                    break
                try:
                    client, _ = listener.accept()
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE):
                        self._refuse(listener)
                    continue
                with contextlib.suppress(OSError):
                    _nodelay(client)
                session = _Session(self, client)
                self.sessions.add(session)
                session.start()
        listener.close()
        self.stopping.set()
        for session in list(self.sessions):
            for sock in (session.client, session.upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)


    def _refuse(self, listener: socket.socket) -> None:
        """Out of fds: accept the next connection on the reserve fd and reset it. Left in the
        backlog, it would wait for an fd to free, the listener ready all the while (a busy
        loop)."""
        if self.reserve is not None:
            os.close(self.reserve)
        with contextlib.suppress(OSError):
            client, _ = listener.accept()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            client.close()
        try:
            self.reserve = os.open(os.devnull, os.O_RDONLY)
        except OSError:  # a session took the fd first: try again a little later
            self.reserve = None
            time.sleep(0.01)


def main(argv: list[str]) -> None:
    upstream_host, upstream_port, rtt_ms, host = argv
    with contextlib.suppress(AttributeError):  # PR_SET_TIMERSLACK 1 ns: precise wake-ups
        _LIBC.prctl(29, 1, 0, 0, 0)
    threading.stack_size(512 * 1024)  # thousands of threads fit; recv buffers are on the heap
    server = _Server((upstream_host, int(upstream_port)), round(float(rtt_ms) * 500_000))
    server.serve(host)
    sys.stdout.flush()
    os._exit(0)  # daemon threads may sit in recv on sockets just shut down


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
