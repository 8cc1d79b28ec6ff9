"""The sync PostgreSQL path sends a transaction in fewer round trips: BEGIN goes with the
first statement, and writes given to tx.run_deferred go with the next statement or COMMIT.
Whatever fails in such a pipeline leaves nothing half written, a conflict is still retried
by atomic(), a savepoint's held-back writes stay inside it, and SQL the caller runs on
tx.connection runs inside the transaction. A relay counts the round trips (each ends in a
Sync or a simple Query message from the client)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import uuid
from collections.abc import Iterator

import pytest

import storekit
from storekit import IntegrityError, PoolOptions, TransactionConflict
from storekit.url import DatabaseURL

pytestmark = [pytest.mark.postgres]


class TripCounter:
    """A TCP relay to PostgreSQL counting the client's Sync and Query messages: one reply
    (ReadyForQuery) each, so one round trip each."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.trips = 0
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
        buf = b""
        started = False  # SSLRequest / StartupMessage have no type byte
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
                buf += data
                while True:
                    if not started:
                        if len(buf) < 8:
                            break
                        (length,) = struct.unpack("!i", buf[:4])
                        if len(buf) < length:
                            break
                        code = struct.unpack("!i", buf[4:8])[0]
                        buf = buf[length:]
                        started = code == 196608  # protocol 3.0: the startup itself
                        continue
                    if len(buf) < 5:
                        break
                    kind, (length,) = buf[:1], struct.unpack("!i", buf[1:5])
                    if len(buf) < 1 + length:
                        break
                    if kind in (b"S", b"Q"):
                        self.trips += 1
                    buf = buf[1 + length:]

    @staticmethod
    def _down(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)

    def close(self) -> None:
        self.listener.close()
        for s in self.socks:
            s.close()


@pytest.fixture
def relay(storekit_postgres_url: str) -> Iterator[tuple[storekit.Database, TripCounter]]:
    url = DatabaseURL.parse(storekit_postgres_url)
    counter = TripCounter(url.port or 5432)
    relayed = url.replace(host="127.0.0.1", port=counter.port).render(mask=False)
    db = storekit.create_database(relayed, pool=PoolOptions(min_size=1, max_size=1))
    try:
        yield db, counter
    finally:
        db.close()
        counter.close()


@pytest.fixture
def pg(storekit_postgres_url: str) -> Iterator[storekit.Database]:
    with storekit.create_database(storekit_postgres_url) as db:
        yield db


@pytest.fixture
def table(pg: storekit.Database) -> Iterator[str]:
    name = f"held_{uuid.uuid4().hex[:8]}"
    pg.exec(f"CREATE TABLE {name} (id int PRIMARY KEY, v int NOT NULL)")
    yield name
    pg.exec(f"DROP TABLE {name}")


def count(db: storekit.Database, table: str) -> int:
    row = db.get(f"SELECT count(*) AS n FROM {table}")
    assert row is not None
    return int(row["n"])


def test_an_agent_step_takes_two_round_trips(
        relay: tuple[storekit.Database, TripCounter], table: str) -> None:
    """Read, then three writes whose results are not read: BEGIN goes with the read, the
    writes with COMMIT. With run() instead, each write is a round trip of its own."""
    db, counter = relay
    db.run(f"INSERT INTO {table} VALUES (0, 0)")  # the connection's first reset is done

    def step(tx: storekit.Transaction, base: int, deferred: bool) -> None:
        row = tx.get(f"SELECT v FROM {table} WHERE id = 0")
        assert row is not None
        write = tx.run_deferred if deferred else tx.run
        write(f"INSERT INTO {table} VALUES (?, ?)", (base + 1, 1))
        write(f"INSERT INTO {table} VALUES (?, ?)", (base + 2, 2))
        write(f"UPDATE {table} SET v = ? WHERE id = 0", (row["v"] + 1,))

    before = counter.trips
    db.atomic(step, 10, True)
    assert counter.trips - before == 2
    before = counter.trips
    db.atomic(step, 20, False)
    assert counter.trips - before == 5  # BEGIN still goes with the read
    assert count(db, table) == 5
    assert db.get(f"SELECT v FROM {table} WHERE id = 0") == {"v": 2}


def test_an_empty_transaction_sends_nothing(
        relay: tuple[storekit.Database, TripCounter]) -> None:
    db, counter = relay
    db.get("SELECT 1 AS x")
    before = counter.trips
    with db.transaction():
        pass
    with pytest.raises(RuntimeError), db.transaction():
        raise RuntimeError("nothing ran")
    assert counter.trips == before


@pytest.mark.parametrize("isolation", ["read committed", "repeatable read", "serializable"])
def test_a_held_back_write_that_fails_leaves_nothing(pg: storekit.Database, table: str,
                                                     isolation: str) -> None:
    def body(tx: storekit.Transaction) -> None:
        tx.run_deferred(f"INSERT INTO {table} VALUES (?, ?)", (1, 1))
        tx._h().run_many_deferred(  # type: ignore[attr-defined]
            f"INSERT INTO {table} VALUES (?, ?)", [(2, 2), (3, 3), (2, 4)])

    with pytest.raises(IntegrityError) as caught:
        pg.atomic(body, isolation=isolation)
    assert caught.value.__cause__ is not None  # the driver's error
    assert count(pg, table) == 0
    pg.atomic(lambda tx: tx.run(f"INSERT INTO {table} VALUES (?, ?)", (9, 9)))
    assert count(pg, table) == 1


def test_held_back_writes_commit_whole_and_an_error_shows_at_the_next_statement(
        pg: storekit.Database, table: str) -> None:
    with pg.transaction() as tx:
        tx.run_deferred(f"INSERT INTO {table} VALUES (?, ?)", (1, 1))
        tx.run_deferred(f"INSERT INTO {table} VALUES (?, ?)", (2, 2))
    assert count(pg, table) == 2
    with pytest.raises(IntegrityError), pg.transaction() as tx:
        tx.run_deferred(f"INSERT INTO {table} VALUES (?, ?)", (3, 3))
        tx.run_deferred(f"INSERT INTO {table} VALUES (?, ?)", (1, 5))  # a duplicate key
        tx.get("SELECT 1 AS x")  # raised here, where it was sent
    assert count(pg, table) == 2
    with pytest.raises(storekit.ProgrammingError), pg.transaction() as tx:
        tx.run_deferred(f"INSERT INTO {table} VALUES (?, ?)", (4,))  # bad input: at once
    assert count(pg, table) == 2


def test_a_conflict_raised_at_commit_is_retried(pg: storekit.Database, storekit_postgres_url: str,
                                                table: str) -> None:
    pg.run(f"INSERT INTO {table} VALUES (1, 0)")
    attempts: list[None] = []
    with storekit.create_database(storekit_postgres_url) as other:

        def body(tx: storekit.Transaction) -> None:
            row = tx.get(f"SELECT v FROM {table} WHERE id = 1")
            assert row is not None
            if not attempts:
                other.run(f"UPDATE {table} SET v = v + 1 WHERE id = 1")
            attempts.append(None)
            tx.run_deferred(f"UPDATE {table} SET v = ? WHERE id = 1", (row["v"] + 1,))

        pg.atomic(body, isolation="serializable")
        assert len(attempts) == 2
        assert pg.get(f"SELECT v FROM {table} WHERE id = 1") == {"v": 2}

        def once(tx: storekit.Transaction) -> None:
            tx.get(f"SELECT v FROM {table} WHERE id = 1")
            other.run(f"UPDATE {table} SET v = 10 WHERE id = 1")
            tx.run_deferred(f"UPDATE {table} SET v = 20 WHERE id = 1")

        with pytest.raises(TransactionConflict):
            pg.atomic(once, isolation="serializable", retries=0)
        assert pg.get(f"SELECT v FROM {table} WHERE id = 1") == {"v": 10}


def test_a_savepoint_keeps_its_held_back_writes(pg: storekit.Database, table: str) -> None:
    with pg.transaction() as tx:
        tx.run(f"INSERT INTO {table} VALUES (1, 1)")
        with pytest.raises(IntegrityError), pg.transaction() as inner:
            inner.run_deferred(f"INSERT INTO {table} VALUES (2, 2)")
            inner.run_deferred(f"INSERT INTO {table} VALUES (1, 5)")  # a duplicate key
        with pytest.raises(RuntimeError), pg.transaction() as inner:
            inner.run_deferred(f"INSERT INTO {table} VALUES (3, 3)")
            raise RuntimeError("abandon the savepoint")
        with pg.transaction() as inner:
            inner.run_deferred(f"INSERT INTO {table} VALUES (4, 4)")
    assert [r["id"] for r in pg.all(f"SELECT id FROM {table} ORDER BY id")] == [1, 4]


def test_the_connection_and_the_level_are_the_transactions(pg: storekit.Database,
                                                           table: str) -> None:
    """BEGIN is held back: SQL run on tx.connection, or a first statement, still runs
    inside the transaction at its level."""
    with pg.transaction(isolation="repeatable read") as tx:
        tx.run_deferred(f"INSERT INTO {table} VALUES (1, 1)")
        level = tx.connection.execute("SHOW transaction_isolation").fetchone()
        assert level is not None
        assert next(iter(level.values())) == "repeatable read"
        tx.connection.execute(f"INSERT INTO {table} VALUES (2, 2)")
    assert count(pg, table) == 2
    with pytest.raises(RuntimeError), pg.transaction() as tx:
        tx.connection.execute(f"INSERT INTO {table} VALUES (3, 3)")
        raise RuntimeError("roll it back")
    assert count(pg, table) == 2


def test_sqlite_runs_it_at_once(tmp_path: object) -> None:
    with storekit.open_database(f"{tmp_path}/d.db") as db:
        db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        with db.transaction() as tx:
            tx.run_deferred("INSERT INTO t VALUES (1)")
            assert tx.get("SELECT count(*) AS n FROM t") == {"n": 1}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_the_async_transaction_has_it_too(storekit_postgres_url: str, tmp_path: object,
                                                backend: str) -> None:
    from storekit import aio

    url = storekit_postgres_url if backend == "postgres" else f"sqlite:///{tmp_path}/a.db"
    name = f"held_{uuid.uuid4().hex[:8]}"
    async with await aio.create_database(url) as db:
        await db.exec(f"CREATE TABLE {name} (id int PRIMARY KEY)")
        try:
            async with db.transaction() as tx:
                await tx.run_deferred(f"INSERT INTO {name} VALUES (?)", (1,))
                await tx.run_deferred(f"INSERT INTO {name} VALUES (?)", (2,))
            with pytest.raises(IntegrityError):
                async with db.transaction() as tx:
                    await tx.run_deferred(f"INSERT INTO {name} VALUES (?)", (3,))
                    await tx.run_deferred(f"INSERT INTO {name} VALUES (?)", (1,))
            assert await db.get(f"SELECT count(*) AS n FROM {name}") == {"n": 2}
        finally:
            await db.exec(f"DROP TABLE {name}")
