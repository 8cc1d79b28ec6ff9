"""Throwaway PostgreSQL servers for tests, benchmarks and users' own test suites.

`postgres_server()` tries, in order: STOREKIT_TEST_POSTGRES_URL; Docker through
testcontainers when a daemon answers; local PostgreSQL binaries started in a temporary
folder. Anything else raises DatabaseUnavailable naming the three ways to fix it.
`isolated_schema(url)` gives a test (or a benchmark run) a fresh, empty schema on a server.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from storekit.errors import DatabaseUnavailable
from storekit.schema_names import quote_ident
from storekit.url import DatabaseURL

Kind = Literal["url", "docker", "local"]
DOCKER_IMAGE = "postgres:16"
_HOW_TO_FIX = (
    "no PostgreSQL server is available. Fix it one of three ways: "
    "set STOREKIT_TEST_POSTGRES_URL to an existing server; start a Docker daemon "
    "(testcontainers runs postgres:16); or install the PostgreSQL server binaries "
    "(apt-get install postgresql, or set STOREKIT_PG_BIN to the folder holding initdb)"
)


def schema_url(url: str, schema: str, settings: Mapping[str, object] | None = None) -> str:
    """The URL, unmasked, whose connections use `schema` (and these session settings)."""
    base = DatabaseURL.parse(url)
    options = [f"-csearch_path={schema}"] + [f"-c{k}={v}" for k, v in (settings or {}).items()]
    query = dict(base.query) | {"options": " ".join(options)}
    return base.replace(query=tuple(query.items())).render(mask=False)


@contextlib.contextmanager
def isolated_schema(url: str, prefix: str = "t", *,
                    settings: Mapping[str, object] | None = None) -> Iterator[str]:
    """A URL whose connections use a new, empty schema; the schema is dropped on exit."""
    from storekit.database import create_database

    schema = f"{prefix}_{secrets.token_hex(6)}"
    admin = create_database(url)
    try:
        admin.exec(f"CREATE SCHEMA {quote_ident(schema)}")
        yield schema_url(url, schema, settings)
    finally:
        with contextlib.suppress(Exception):
            admin.exec(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
        admin.close()


@dataclass(frozen=True)
class PostgresServer:
    url: str
    kind: Kind

    def __repr__(self) -> str:
        return f"PostgresServer(kind={self.kind!r}, url={str(DatabaseURL.parse(self.url))!r})"


def docker_available(timeout: float = 1.0) -> bool:
    """True when a Docker daemon answers GET /_ping within the timeout.

    Asked directly over DOCKER_HOST (or the default socket) rather than through the docker
    SDK: the SDK leaves its socket open when the daemon is absent, the common case here.
    """
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: str | tuple[str, int] = host[len("unix://"):]
        elif host.startswith("tcp://"):
            hostname, _, port = host[len("tcp://"):].rstrip("/").rpartition(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (hostname, int(port))
        else:
            return False
        with sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = sock.recv(4096)
    except (OSError, ValueError):
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]


def find_pg_bin() -> Path | None:
    """The folder holding initdb and postgres, from the places a Debian or source install uses."""
    candidates: list[str] = []
    if env := os.environ.get("STOREKIT_PG_BIN"):
        candidates.append(env)
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                 timeout=5, check=True)
            candidates.append(out.stdout.strip())
    candidates.extend(sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True))
    if initdb := shutil.which("initdb"):
        candidates.append(str(Path(initdb).parent))
    for folder in candidates:
        path = Path(folder)
        if (path / "initdb").is_file() and (path / "postgres").is_file():
            return path
    return None


def select_kind(*, docker_timeout: float = 1.0) -> Kind | None:
    """Which provider postgres_server() would use now, without starting anything."""
    if os.environ.get("STOREKIT_TEST_POSTGRES_URL"):
        return "url"
    if docker_available(docker_timeout):
        return "docker"
    if find_pg_bin() is not None:
        return "local"
    return None


@contextlib.contextmanager
def postgres_server(
    *, settings: dict[str, str] | None = None, docker_timeout: float = 1.0
) -> Iterator[PostgresServer | LocalPostgres]:
    """Yield a running PostgreSQL server; stop and remove it on exit (Ctrl-C included)."""
    kind = select_kind(docker_timeout=docker_timeout)
    if kind == "url":
        yield PostgresServer(os.environ["STOREKIT_TEST_POSTGRES_URL"], "url")
    elif kind == "docker":
        with _docker_server() as server:
            yield server
    elif kind == "local":
        bindir = find_pg_bin()
        assert bindir is not None
        with local_server(bindir, settings=settings) as server:
            yield server
    else:
        raise DatabaseUnavailable(_HOW_TO_FIX)


@contextlib.contextmanager
def _docker_server() -> Iterator[PostgresServer]:  # pragma: no cover - needs a Docker daemon
    from testcontainers.postgres import PostgresContainer

    password = secrets.token_urlsafe(16)
    with PostgresContainer(DOCKER_IMAGE, username="storekit", password=password,
                           dbname="storekit", driver=None) as container:
        url = container.get_connection_url()
        yield PostgresServer(url, "docker")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _as_postgres_user() -> dict[str, object]:
    """initdb and postgres refuse to run as root; run them as the postgres system user."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise DatabaseUnavailable(
            "running as root, and there is no 'postgres' system user to run the server as"
        ) from None
    return {"user": "postgres", "group": "postgres"}


def _run(cmd: Sequence[str], **kwargs: object) -> None:
    result = subprocess.run(list(cmd), capture_output=True, text=True, check=False,
                            **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise DatabaseUnavailable(
            f"{Path(cmd[0]).name} failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
        )


class LocalPostgres:
    """A server in its own temporary folder; stop() and start() keep its data and port."""

    kind: Kind = "local"

    def __init__(self, bindir: Path, *, settings: dict[str, str] | None = None,
                 user: str = "storekit") -> None:
        self.bindir = bindir
        self._run_as = _as_postgres_user()
        self.base = Path(tempfile.mkdtemp(prefix="storekit-pg-"))
        self.data_dir = str(self.base / "data")
        self._sockets = self.base / "sock"
        self._sockets.mkdir()
        self._password = secrets.token_urlsafe(16)
        self.port = _free_port()
        self.url = f"postgresql://{user}:{self._password}@127.0.0.1:{self.port}/postgres"
        self.settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self._sockets),
            "max_connections": "200",
            "shared_buffers": "128MB",
            **(settings or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        pwfile = self.base / "pwfile"
        pwfile.write_text(self._password + "\n")
        if self._run_as:
            for p in (self.base, self._sockets, pwfile):
                shutil.chown(p, "postgres", "postgres")
        _run([str(bindir / "initdb"), "-D", self.data_dir, "-U", user, "--pwfile", str(pwfile),
              "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
              "--locale=C.UTF-8"], **self._run_as)
        pwfile.unlink()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        args = [str(self.bindir / "postgres"), "-D", self.data_dir]
        for key, value in self.settings.items():
            args += ["-c", f"{key}={value}"]
        log_path = self.base / "server.log"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(  # type: ignore[call-overload]
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                **self._run_as,
            )
        assert self.proc is not None
        _wait_ready(self.bindir, self.port, self._sockets, self.proc, log_path)

    def stop(self) -> None:
        if self.proc is not None:
            stop_server(self.proc)
            self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def __repr__(self) -> str:
        return f"LocalPostgres(url={str(DatabaseURL.parse(self.url))!r}, pid={self.pid})"


@contextlib.contextmanager
def local_server(
    bindir: Path, *, settings: dict[str, str] | None = None
) -> Iterator[LocalPostgres]:
    """initdb into a fresh folder, start on 127.0.0.1 and a free port, fsync left on."""
    server = LocalPostgres(bindir, settings=settings)
    try:
        server.start()
        yield server
    finally:
        server.remove()


def _wait_ready(bindir: Path, port: int, sockets: Path, proc: subprocess.Popen[bytes],
                log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DatabaseUnavailable(
                f"postgres exited with {proc.returncode}: {log.read_text()[-2000:]}"
            )
        ready = subprocess.run([str(bindir / "pg_isready"), "-q", "-h", str(sockets),
                                "-p", str(port)], check=False)
        if ready.returncode == 0:
            return
        time.sleep(0.1)
    raise DatabaseUnavailable(f"postgres did not become ready in {timeout:g} s")


def stop_server(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Fast shutdown (SIGINT), then SIGKILL if the server does not stop in time."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# PgBouncer lives in its own module; re-exported here, where users look for it.
from storekit.testing_pgbouncer import PgBouncer as PgBouncer  # noqa: E402
from storekit.testing_pgbouncer import find_pgbouncer as find_pgbouncer  # noqa: E402
from storekit.testing_pgbouncer import pgbouncer_server as pgbouncer_server  # noqa: E402
from storekit.testing_pgbouncer import pooled_database as pooled_database  # noqa: E402
