"""Provisioning a throwaway PostgreSQL: the order of providers.

There is no Docker daemon on the machines this project is tested on, so the Docker path is
covered by its selection logic only: a tiny HTTP server on a Unix socket answers /_ping the
way dockerd does, and select_kind() must then prefer Docker. Starting the container itself
is not exercised here.
"""

from __future__ import annotations

import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import storekit
from storekit import testing


@pytest.fixture
def fake_dockerd() -> Iterator[str]:
    folder = tempfile.mkdtemp()
    path = str(Path(folder) / "docker.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"unix://{path}"
    stop.set()
    thread.join()
    server.close()


def test_explicit_url_wins(monkeypatch: pytest.MonkeyPatch, fake_dockerd: str) -> None:
    monkeypatch.setenv("STOREKIT_TEST_POSTGRES_URL", "postgresql://u@h/db")
    monkeypatch.setenv("DOCKER_HOST", fake_dockerd)
    assert testing.select_kind() == "url"
    with testing.postgres_server() as server:
        assert server.kind == "url"
        assert server.url == "postgresql://u@h/db"


def test_docker_chosen_when_daemon_answers(
    monkeypatch: pytest.MonkeyPatch, fake_dockerd: str
) -> None:
    monkeypatch.delenv("STOREKIT_TEST_POSTGRES_URL", raising=False)
    monkeypatch.setenv("DOCKER_HOST", fake_dockerd)
    assert testing.docker_available()
    assert testing.select_kind() == "docker"


def test_silent_docker_socket_falls_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STOREKIT_TEST_POSTGRES_URL", raising=False)
    folder = tempfile.mkdtemp()
    path = str(Path(folder) / "silent.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(path)
        silent.listen()  # accepts, never answers: the ping must time out, not hang
        monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
        assert not testing.docker_available(timeout=0.3)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert not testing.docker_available()
    expected = "local" if testing.find_pg_bin() else None
    assert testing.select_kind() == expected


def test_nothing_available_names_three_fixes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("STOREKIT_TEST_POSTGRES_URL", raising=False)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.setattr(testing.glob, "glob", lambda pattern: [])
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("STOREKIT_PG_BIN", str(tmp_path))
    with pytest.raises(storekit.DatabaseUnavailable) as info, testing.postgres_server():
        pass
    message = str(info.value)
    assert "STOREKIT_TEST_POSTGRES_URL" in message
    assert "Docker" in message
    assert "STOREKIT_PG_BIN" in message


def test_local_server_runs_as_postgres_and_is_removed() -> None:
    bindir = testing.find_pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL binaries")
    with testing.local_server(bindir) as server:
        folder = server.base
        assert "***" in repr(server)
        with storekit.create_database(server.url) as db:
            assert db.get("SHOW fsync") == {"fsync": "on"}
            assert db.get("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        server.stop()
        with pytest.raises(storekit.DatabaseUnavailable):
            storekit.create_database(server.url, pool=storekit.PoolOptions(connect_timeout=1))
        server.start()
        with storekit.create_database(server.url) as db:
            assert db.get("SELECT 1 AS one") == {"one": 1}
    assert not folder.exists()
