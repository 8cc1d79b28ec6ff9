"""URL options are honoured or refused by name; passwords are masked by structure.

The masking tests run each failure twice, with the password under test and with another
one, and require the same text: so the text cannot depend on the password in any way
(not shown, and nothing around it rewritten, as substring masking did to "accepting").
"""

from __future__ import annotations

import gc
import os
import pickle
import pwd
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

import storekit
from storekit.url import DatabaseURL, mask_secrets

PASSWORDS = ["p", "postgres", "accepting", "connection", "p@ss:w/rd?&=#' \\+%41 x", "%2F"]
OTHER = "Zq-7-other-secret"  # the same failure with this password must read the same


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _texts(exc: BaseException) -> list[str]:
    """Everything a user can see of an error: str, repr and the whole traceback chain."""
    out = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        out += [str(cur), repr(cur)]
        cur = cur.__cause__ or cur.__context__
    return out


@pytest.fixture(scope="module")
def pg(storekit_postgres_url: str) -> Iterator[dict[str, Any]]:
    """A login role whose password each test sets, on the session's server."""
    base = DatabaseURL.parse(storekit_postgres_url)
    admin = storekit.create_database(storekit_postgres_url)
    role = f"pw_{secrets.token_hex(4)}"

    def set_password(password: str) -> None:
        literal = "'" + password.replace("'", "''") + "'"
        admin.exec(f'ALTER ROLE "{role}" PASSWORD {literal}')

    admin.exec(f'CREATE ROLE "{role}" LOGIN')
    try:
        yield {"role": role, "host": base.host, "port": base.port, "set": set_password,
               "closed": _closed_port()}
    finally:
        admin.exec(f'DROP ROLE "{role}"')
        admin.close()


def _url(pg: dict[str, Any], password: str, *, via: str = "userinfo", port: int | None = None,
         db: str = "postgres", query: str = "") -> str:
    secret = quote(password, safe="")
    where = f"{pg['host']}:{port or pg['port']}"
    if via == "query":
        query = f"password={secret}" + (f"&{query}" if query else "")
        return f"postgresql://{pg['role']}@{where}/{db}?{query}"
    return f"postgresql://{pg['role']}:{secret}@{where}/{db}" + (f"?{query}" if query else "")


def _open_and_close(pg: dict[str, Any], password: str, via: str) -> list[str]:
    pg["set"](password)
    db = storekit.create_database(_url(pg, password, via=via),
                                  pool=storekit.PoolOptions(min_size=1, max_size=1))
    assert db.get("SELECT current_user AS u") == {"u": pg["role"]}
    texts = [repr(db), db.url, db.settings["url"], str(db.settings)]
    db.close()
    texts.append(repr(db))
    with pytest.raises(storekit.StoreError, match="is closed") as info:
        db.run("SELECT 1")
    return texts + _texts(info.value)


def _failure(pg: dict[str, Any], password: str, *, correct: bool, **url: Any) -> list[str]:
    pg["set"](password if correct else "not-the-password-given")
    with pytest.raises(storekit.StoreError) as info:
        storekit.create_database(_url(pg, password, **url),
                                 pool=storekit.PoolOptions(connect_timeout=5))
    return _texts(info.value)


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("via", ["userinfo", "query"])
def test_open_database_never_shows_the_password(pg: dict[str, Any], password: str,
                                                via: str) -> None:
    texts = _open_and_close(pg, password, via)
    assert texts == _open_and_close(pg, OTHER, via)
    masked = f"postgresql://{pg['role']}:***@{pg['host']}:{pg['port']}/postgres"
    assert texts[:3] == [f"<storekit.Database postgres {masked}>", masked, masked]


FAILURES: dict[str, Callable[[dict[str, Any], str], list[str]]] = {
    "wrong password": lambda pg, pw: _failure(pg, pw, correct=False),
    "wrong password in query": lambda pg, pw: _failure(pg, pw, correct=False, via="query"),
    "no such database": lambda pg, pw: _failure(pg, pw, correct=True, db="no_such_db"),
    "unreachable": lambda pg, pw: _failure(pg, pw, correct=True, port=pg["closed"]),
    "unknown option": lambda pg, pw: _failure(pg, pw, correct=True, query="bogus=1"),
    "bad option value": lambda pg, pw: _failure(pg, pw, correct=True, query="sslmode=xyz"),
    "ssl refused": lambda pg, pw: _failure(pg, pw, correct=True, query="sslmode=require"),
    "server setting refused": lambda pg, pw: _failure(
        pg, pw, correct=True, via="query", query="options=-cno_such_setting%3D1"),
}


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("case", list(FAILURES))
def test_connect_errors_never_show_or_depend_on_the_password(pg: dict[str, Any], password: str,
                                                             case: str) -> None:
    texts = FAILURES[case](pg, password)
    assert texts == FAILURES[case](pg, OTHER)
    if case == "unreachable":
        assert "accepting TCP/IP connections" in texts[0]  # not "acce***ting"
    if not password.isalpha():  # words like "postgres" appear in the text on their own
        assert not any(password in t or quote(password, safe="") in t for t in texts)


def test_mask_secrets_masks_by_structure_only() -> None:
    assert mask_secrets("password authentication failed; accepting p") == (
        "password authentication failed; accepting p")
    assert mask_secrets("host=h password='a b\\'c' user=u") == "host=h password=*** user=u"
    assert mask_secrets("see postgresql://u:p%40ss@h/db now") == "see postgresql://u:***@h/db now"
    assert mask_secrets("postgresql://u@h/db?sslmode=require&password=x") == (
        "postgresql://u@h/db?sslmode=require&password=***")


@pytest.mark.parametrize("raw", [
    "postgresql://u@h/db?password=hunter2",
    "postgresql://u:hunter2@h/db?password=hunter2",
    "postgresql://:hunter2@h/db",
])
def test_query_password_is_the_password_field(raw: str) -> None:
    url = DatabaseURL.parse(raw)
    assert url.password == "hunter2"
    assert "password" not in url.options
    assert "hunter2" not in str(url) + repr(url)
    assert "password='hunter2'" in url.conninfo()
    assert DatabaseURL.parse(url.render(mask=False)) == url


@pytest.mark.parametrize("raw", [
    "sqlite:///x.db?password=hunter2",
    "postgresql://u@h:x/db?password=hunter2",
    "postgresql://u:hunter2@h/db?password=hunter2&password=hunter2",
    "postgresql://u:hunter2@h/db\x00",
])
def test_configuration_errors_never_show_a_query_password(raw: str) -> None:
    with pytest.raises(storekit.ConfigurationError) as info:
        storekit.create_database(raw)
    assert not any("hunter2" in t for t in _texts(info.value))


# PostgreSQL options: libpq's keywords pass through; others are refused before connecting.
def test_unknown_postgres_option_is_refused_by_name_before_connecting() -> None:
    url = f"postgresql://u:pw@127.0.0.1:{_closed_port()}/db?sslmode=disable&sslmod=require"
    with pytest.raises(storekit.ConfigurationError, match=r"'sslmod'.*'sslmode'"):
        storekit.create_database(url)


def _pooled_parameters(db: storekit.Database) -> dict[str, str]:
    pool = db._backend._pool  # type: ignore[attr-defined]
    with pool.connection() as conn:
        params: dict[str, str] = conn.info.get_parameters()
    return params


def test_postgres_options_reach_the_server(storekit_postgres_url: str) -> None:
    url = DatabaseURL.parse(storekit_postgres_url)
    query = (("application_name", "agent one"), ("connect_timeout", "17"),
             ("options", "-cwork_mem=7MB"))
    with storekit.create_database(url.replace(query=query)) as db:
        row = db.get("SELECT current_setting('application_name') AS a, "
                     "current_setting('work_mem') AS w")
        assert row == {"a": "agent one", "w": "7MB"}
        # The URL's connect_timeout is the one libpq got, not PoolOptions' default.
        assert _pooled_parameters(db)["connect_timeout"] == "17"
    explicit = storekit.PoolOptions(connect_timeout=9)
    with storekit.create_database(url, pool=explicit) as db:
        assert _pooled_parameters(db)["connect_timeout"] == "9"
    with pytest.raises(storekit.ConfigurationError, match="connect_timeout"):
        storekit.create_database(url.replace(query=(("connect_timeout", "17"),)), pool=explicit)
    with pytest.raises(storekit.ConfigurationError, match="connect_timeout"):
        storekit.create_database(url.replace(query=(("connect_timeout", "soon"),)))


@pytest.mark.parametrize("option", ["sslmode=bogus", "target_session_attrs=bogus"])
def test_a_bad_postgres_option_value_is_an_error_naming_it(storekit_postgres_url: str,
                                                           option: str) -> None:
    key, _, value = option.partition("=")
    url = DatabaseURL.parse(storekit_postgres_url).replace(query=((key, value),))
    with pytest.raises(storekit.StoreError, match=key):
        storekit.create_database(url)


# A socket directory as the host: %2F-encoded, in ?host=, and with capitals in its name.
@pytest.fixture
def socket_dir(storekit_postgres_server: Any) -> Iterator[str]:
    sockets = getattr(storekit_postgres_server, "_sockets", None)
    if sockets is None:
        pytest.skip("the test server is not a local one with a socket directory")
    link = Path(tempfile.mkdtemp()) / "Run-PostgreSQL"
    link.symlink_to(sockets)
    yield str(link)
    link.unlink()
    link.parent.rmdir()


def test_socket_directory_hosts(storekit_postgres_url: str, socket_dir: str) -> None:
    base = DatabaseURL.parse(storekit_postgres_url)
    user, port = base.username, base.port
    for raw in (f"postgresql://{user}@{quote(socket_dir, safe='')}:{port}/postgres",
                f"postgresql://{user}@/postgres?host={quote(socket_dir, safe='')}&port={port}",
                f"postgresql://{user}@/postgres?host={socket_dir}&port={port}"):
        url = DatabaseURL.parse(raw)
        assert socket_dir in (url.host, url.options.get("host"))
        assert DatabaseURL.parse(str(url)) == url
        with storekit.create_database(raw) as db:
            # inet_server_addr() is NULL over a unix socket.
            assert db.get("SELECT inet_server_addr() AS a") == {"a": None}
            assert db.url == str(url)


# SQLite options: mode, immutable, cache; anything else is refused.
@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    path = tmp_path / "seeded.db"
    with storekit.open_database(path) as db:
        db.exec("CREATE TABLE t (x INTEGER)")
        db.run("INSERT INTO t VALUES (1)")
    return path


def _assert_reads_but_refuses_writes(db: storekit.Database, reason: str) -> None:
    assert db.all("SELECT x FROM t") == [{"x": 1}]
    seen: list[Any] = []
    reader = threading.Thread(target=lambda: seen.append(list(db.iter("SELECT x FROM t"))))
    reader.start()
    reader.join()
    assert seen == [[{"x": 1}]]
    with db.transaction(readonly=True) as tx:
        assert tx.get("SELECT COUNT(*) AS n FROM t") == {"n": 1}
    for write in (lambda: db.run("INSERT INTO t VALUES (2)"),
                  lambda: db.exec("CREATE TABLE u (y)"),
                  lambda: db.run_many("INSERT INTO t VALUES (?)", [(3,), (4,)])):
        with pytest.raises(storekit.OperationalError, match=f"read-only: {reason}") as info:
            write()
        assert isinstance(info.value.__cause__, sqlite3.Error)
    with pytest.raises(storekit.OperationalError, match="read-only"), db.transaction() as tx:
        tx.run("UPDATE t SET x = 5")
    assert db.all("SELECT x FROM t") == [{"x": 1}]
    assert db.settings["read_only"] == reason


@pytest.mark.parametrize("option", ["mode=ro", "immutable=1"])
def test_read_only_options_refuse_writes(seeded: Path, option: str) -> None:
    with storekit.create_database(f"sqlite:///{seeded}?{option}") as db:
        _assert_reads_but_refuses_writes(db, option)
    with storekit.open_database(seeded) as db:
        assert db.all("SELECT x FROM t") == [{"x": 1}]


def test_mode_ro_and_rw_never_create(tmp_path: Path) -> None:
    for mode in ("ro", "rw"):
        missing = tmp_path / mode / "missing.db"
        with pytest.raises(storekit.DatabaseUnavailable, match=str(missing)):
            storekit.create_database(f"sqlite:///{missing}?mode={mode}")
        assert not missing.parent.exists()


def test_mode_rw_writes_an_existing_file(seeded: Path) -> None:
    with storekit.create_database(f"sqlite:///{seeded}?mode=rw&cache=private") as db:
        db.run("INSERT INTO t VALUES (2)")
        assert db.settings["read_only"] is False
    with storekit.open_database(seeded) as db:
        assert db.all("SELECT x FROM t ORDER BY x") == [{"x": 1}, {"x": 2}]


def test_mode_memory_touches_no_file_and_shared_cache_is_shared(tmp_path: Path) -> None:
    name = tmp_path / "mem.db"
    url = f"sqlite:///{name}?mode=memory&cache=shared"
    with storekit.create_database(url) as one, storekit.create_database(url) as two:
        one.exec("CREATE TABLE t (x INTEGER)")
        one.run("INSERT INTO t VALUES (1)")
        assert two.all("SELECT x FROM t") == [{"x": 1}]
        seen: list[Any] = []
        reader = threading.Thread(target=lambda: seen.append(one.all("SELECT x FROM t")))
        reader.start()
        reader.join()
        assert seen == [[{"x": 1}]]
    with storekit.create_database(f"sqlite:///{name}?mode=memory") as private:
        assert private.tables() == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("query", "named"), [
    ("bogus=1", "bogus"),
    ("mode=readonly", "mode"),
    ("cache=big", "cache"),
    ("immutable=maybe", "immutable"),
    ("vfs=unix-none", "vfs"),
    ("mode=ro&mode=rw", "mode"),
])
def test_unknown_sqlite_options_are_refused_by_name(tmp_path: Path, query: str,
                                                    named: str) -> None:
    path = tmp_path / "x.db"
    with pytest.raises(storekit.ConfigurationError, match=f"'?{named}'?"):
        storekit.create_database(f"sqlite:///{path}?{query}")
    assert not path.exists()


# Files this process cannot write still open for reading.
@pytest.fixture
def read_only_mount() -> Iterator[Path]:
    """A tmpfs with one WAL-mode and one rollback-journal database, remounted read-only:
    root ignores file permissions, not a read-only mount."""
    folder = Path(tempfile.mkdtemp())
    mounted = subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(folder)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        folder.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        for name, mode in (("wal.db", "wal"), ("delete.db", "delete")):
            with storekit.open_database(folder / name,
                                        sqlite=storekit.SqliteOptions(journal_mode=mode)) as db:
                db.exec("CREATE TABLE t (x INTEGER)")
                db.run("INSERT INTO t VALUES (1)")
        (folder / "wal.db-storekit.lock").unlink(missing_ok=True)
        _until_done(["mount", "-o", "remount,ro", str(folder)])
        yield folder
    finally:
        # A lazy unmount detaches the folder even while something still holds a file in it.
        if _until_done(["umount", str(folder)], check=False) != 0:
            subprocess.run(["umount", "-l", str(folder)], check=True)
        folder.rmdir()


def _until_done(command: list[str], *, check: bool = True, within: float = 30.0) -> int:
    """Run a mount command until it succeeds: "target is busy" lasts only while a file closed
    by now is still being released (a finalizer, a loaded machine's late thread), so retry
    rather than fail on how fast that happens. Returns the last exit status."""
    deadline = time.monotonic() + within
    while True:
        gc.collect()  # a connection dropped but not yet finalized still holds its file
        done = subprocess.run(command, capture_output=True, check=False)
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.decode().strip()}")
    return done.returncode


@pytest.mark.parametrize(("name", "reason"), [
    ("wal.db", "its file system is read-only"),
    ("delete.db", "the file or its folder is not writable"),
])
def test_a_database_on_a_read_only_mount_opens_for_reading(read_only_mount: Path, name: str,
                                                           reason: str) -> None:
    with storekit.open_database(read_only_mount / name) as db:
        _assert_reads_but_refuses_writes(db, reason)
    with storekit.create_database(f"sqlite:///{read_only_mount / name}?mode=ro") as db:
        _assert_reads_but_refuses_writes(db, "mode=ro" if name == "delete.db" else reason)


def _as_unprivileged(fn: Callable[[], Any]) -> Any:
    """Run fn in a forked child as the 'postgres' system user, where file modes apply
    (root ignores them); return its result or raise what it raised, as text."""
    user = _unprivileged_user()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            try:
                result: Any = ("ok", fn())
            except BaseException as exc:  # reported to the parent
                result = ("error", f"{type(exc).__name__}: {exc}")
            os.write(write, pickle.dumps(result))
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    kind, value = pickle.loads(data)
    assert kind == "ok", value
    return value


def _unprivileged_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no unprivileged 'postgres' user to run as")


@pytest.fixture
def folder() -> Iterator[Path]:
    """A folder outside pytest's tmp_path, whose parents (0700) the other user cannot enter."""
    path = Path(tempfile.mkdtemp(prefix="storekit-ro-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_a_read_only_file_opens_for_reading_for_an_unprivileged_user(folder: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a child as another user")
    _unprivileged_user()
    for name, mode in (("wal.db", "wal"), ("delete.db", "delete")):
        with storekit.open_database(folder / name,
                                    sqlite=storekit.SqliteOptions(journal_mode=mode)) as db:
            db.exec("CREATE TABLE t (x INTEGER)")
            db.run("INSERT INTO t VALUES (1)")
        (folder / name).chmod(0o444)
    for leftover in folder.glob("*-storekit.lock"):
        leftover.unlink()

    def read_and_try_to_write(path: Path) -> tuple[Any, str, Any]:
        with storekit.open_database(path) as db:
            rows = db.all("SELECT x FROM t")
            try:
                db.run("INSERT INTO t VALUES (2)")
            except storekit.OperationalError as exc:
                return rows, str(exc), db.settings["read_only"]
            return rows, "wrote", None

    # A folder the user can write (so SQLite can make a -shm file), a file it cannot.
    shutil.chown(folder, "postgres")
    for name in ("wal.db", "delete.db"):
        rows, error, reason = _as_unprivileged(lambda n=name: read_and_try_to_write(folder / n))
        assert rows == [{"x": 1}]
        assert "readonly database" in error
        assert "opened read-only" in error
        assert reason == "the file or its folder is not writable"
    # A folder it cannot write either: a rollback-journal file reads; a WAL file needs a
    # -shm file nobody can create, which the error explains, and immutable=1 reads it.
    shutil.chown(folder, "root")
    for leftover in folder.glob("*.db-*"):
        leftover.unlink()
    rows, error, _ = _as_unprivileged(lambda: read_and_try_to_write(folder / "delete.db"))
    assert rows == [{"x": 1}]
    assert "opened read-only" in error

    def open_wal() -> str:
        try:
            storekit.open_database(folder / "wal.db")
        except storekit.DatabaseUnavailable as exc:
            return str(exc)
        return "opened"

    assert "immutable=1" in _as_unprivileged(open_wal)
    immutable = f"sqlite:///{folder / 'wal.db'}?immutable=1"
    assert _as_unprivileged(lambda: storekit.create_database(immutable).all(
        "SELECT x FROM t")) == [{"x": 1}]
