"""A throwaway PgBouncer in front of a throwaway PostgreSQL (re-exported by storekit.testing).

Transaction pooling, as production poolers run: each transaction (each autocommit
statement) may land on a different server connection, shared with other clients. Like
the server, it runs from a temporary folder, as the postgres user when we are root
(pgbouncer refuses root). Clients authenticate with SCRAM; the userlist holds the
password in plain text so that PgBouncer can answer the server's SCRAM in turn.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from storekit.errors import DatabaseUnavailable
from storekit.testing import _as_postgres_user, _free_port
from storekit.url import DatabaseURL

_HOW_TO_FIX = ("PgBouncer is not installed: apt-get install pgbouncer (scripts/ensure-postgres.sh"
               " does it), or set STOREKIT_PGBOUNCER to the pgbouncer executable")


def find_pgbouncer() -> Path | None:
    for candidate in (os.environ.get("STOREKIT_PGBOUNCER"), shutil.which("pgbouncer"),
                      "/usr/sbin/pgbouncer"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class PgBouncer:
    """A PgBouncer on 127.0.0.1 and a free port, pooling for every database of the server.

    url is the server's own database through the pooler; url_for(name) any other;
    direct_url_for(name) the same database without the pooler."""

    def __init__(self, binary: Path, server_url: str, *, pool_size: int = 2,
                 settings: dict[str, str] | None = None) -> None:
        server = DatabaseURL.parse(server_url)
        if not server.username or server.password is None:
            raise DatabaseUnavailable(f"{server}: PgBouncer needs a user and a password")
        self.binary = binary
        self._server = server
        self._run_as = _as_postgres_user()
        self.base = Path(tempfile.mkdtemp(prefix="storekit-pgbouncer-"))
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.base / "pgbouncer.log"
        self.settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "scram-sha-256",
            "auth_file": str(self.base / "userlist.txt"),
            "pool_mode": "transaction",
            "default_pool_size": str(pool_size),
            "reserve_pool_size": "0",
            "max_client_conn": "2000",
            "logfile": str(self.log),
            "admin_users": server.username,
            **(settings or {}),
        }
        host = server.host or "127.0.0.1"
        ini = ["[databases]", f"* = host={host} port={server.port or 5432}", "[pgbouncer]"]
        ini += [f"{key} = {value}" for key, value in self.settings.items()]
        config = self.base / "pgbouncer.ini"
        config.write_text("\n".join(ini) + "\n")
        userlist = self.base / "userlist.txt"
        userlist.write_text(f"{_quote(server.username)} {_quote(server.password)}\n")
        userlist.chmod(0o600)
        if self._run_as:
            for p in (self.base, config, userlist):
                shutil.chown(p, "postgres", "postgres")
        self.config = config

    def url_for(self, database: str) -> str:
        return str(self._server.replace(host="127.0.0.1", port=self.port,
                                        database=database).render(mask=False))

    def direct_url_for(self, database: str) -> str:
        return str(self._server.replace(database=database).render(mask=False))

    @property
    def url(self) -> str:
        return self.url_for(self._server.database)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 30.0) -> None:
        self.proc = subprocess.Popen(  # type: ignore[call-overload]
            [str(self.binary), str(self.config)], stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT, start_new_session=True, **self._run_as)
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                log = self.log.read_text()[-2000:] if self.log.exists() else ""
                raise DatabaseUnavailable(f"pgbouncer exited with {self.proc.returncode}: {log}")
            with contextlib.suppress(OSError), \
                    socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise DatabaseUnavailable(f"pgbouncer did not listen within {timeout:g} s")
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)  # immediate shutdown (SIGINT waits for clients)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def __repr__(self) -> str:
        return (f"PgBouncer(url={str(DatabaseURL.parse(self.url))!r}, pid={self.pid})")


@contextlib.contextmanager
def pgbouncer_server(server_url: str, *, pool_size: int = 2,
                     settings: dict[str, str] | None = None) -> Iterator[PgBouncer]:
    """Yield a running PgBouncer (transaction pooling) in front of server_url's server.

    pool_size is the server connections per database and user: small by default, so
    that tests see clients share them."""
    binary = find_pgbouncer()
    if binary is None:
        raise DatabaseUnavailable(_HOW_TO_FIX)
    bouncer = PgBouncer(binary, server_url, pool_size=pool_size, settings=settings)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.remove()


@contextlib.contextmanager
def pooled_database(bouncer: PgBouncer, prefix: str = "t") -> Iterator[str]:
    """A new, empty database on the server, yielded as a URL through the pooler; dropped
    (its server connections ended) on exit. A database, not a schema: PgBouncer refuses
    the options=-csearch_path=... that isolated_schema uses."""
    import psycopg

    name = f"{prefix}_{secrets.token_hex(6)}"
    admin = bouncer.direct_url_for(DatabaseURL.parse(bouncer.url).database)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield bouncer.url_for(name)
    finally:
        with contextlib.suppress(psycopg.Error), \
                psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
