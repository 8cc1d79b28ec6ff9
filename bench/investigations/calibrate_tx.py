"""Each workload's write transaction, written for every layer `bench calibrate` measures:
the harness runs the workload's own writer; a loop through storekit, a bare sqlite3 loop, a
plain psycopg loop and a pgbench script run the same statements with nothing around them.
The statements come from the workload modules."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.harness.workloads import agent_write, read_while_write, single_insert
from storekit import Database, Transaction

# The bare loops encode their JSON per transaction, as the harness's writers (and any
# sqlite3 user storing a dict) do; pgbench sends the same text as a literal.
AGENT_DOC_DICT = agent_write.documents(1)[0]
AGENT_DOC = json.dumps(AGENT_DOC_DICT)
STATUS_CONFIG = json.dumps({"model": "m", "v": 1, "pad": "x" * 200})
MESSAGE = "the deploy of the cache service finished after a retry"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class WriteTx:
    workload: str
    # (connection, run_key, agent, seq): one write transaction with sqlite3 and nothing else.
    bare: Callable[[sqlite3.Connection, int, int, int], None]
    # run_key -> a pgbench script; :client_id is the agent, as the workload numbers them.
    pgbench: Callable[[int], str]
    # The same transaction through storekit (either backend), and through plain psycopg
    # (an autocommit connection: BEGIN and COMMIT are sent as pgbench sends them).
    storekit: Callable[[Database, int, int, int], None]
    psycopg: Callable[[psycopg.Connection[Any], int, int, int], None]


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")  # these statements have no literal holding a "?"


def _in_pg_tx(conn: psycopg.Connection[Any], body: Callable[[], None]) -> None:
    conn.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
    try:
        body()
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _bare_single(conn: sqlite3.Connection, run_key: int, agent: int, seq: int) -> None:
    conn.execute(single_insert.INSERT, (single_insert.DOC_TEXT,))


def _sk_single(db: Database, run_key: int, agent: int, seq: int) -> None:
    db.run(single_insert.INSERT, (single_insert.DOC_TEXT,))


def _psycopg_single(conn: psycopg.Connection[Any], run_key: int, agent: int, seq: int) -> None:
    conn.execute(_pg(single_insert.INSERT), (single_insert.DOC_TEXT,))


def _pg_single(run_key: int) -> str:
    return f"INSERT INTO bench_insert (doc) VALUES ({_literal(single_insert.DOC_TEXT)});\n"


def _bare_agent_write(conn: sqlite3.Connection, run_key: int, agent: int, seq: int) -> None:
    me = agent_write.agent_id(run_key, agent)
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(agent_write.READ_AGENT, (me,)).fetchone()
        doc = json.dumps(dict(AGENT_DOC_DICT, seq=seq))
        conn.execute(agent_write.INSERT_RESULT, (run_key, me, seq, doc))
        conn.execute(agent_write.INSERT_LOG,
                     (run_key, me, seq, f"agent {agent} finished task {seq}"))
        conn.execute(agent_write.UPDATE_AGENT, (f"done {seq}", row[2] + 1, me))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _sk_agent_step(tx: Transaction, me: int, run_key: int, agent: int, seq: int) -> None:
    row = tx.get(agent_write.READ_AGENT, (me,))
    assert row is not None
    # As the workload's writer: the writes go with COMMIT on PostgreSQL.
    tx.run_deferred(agent_write.INSERT_RESULT,
                    (run_key, me, seq, dict(AGENT_DOC_DICT, seq=seq)))
    tx.run_deferred(agent_write.INSERT_LOG,
                    (run_key, me, seq, f"agent {agent} finished task {seq}"))
    tx.run_deferred(agent_write.UPDATE_AGENT, (f"done {seq}", row["runs"] + 1, me))


def _sk_agent_write(db: Database, run_key: int, agent: int, seq: int) -> None:
    db.atomic(_sk_agent_step, agent_write.agent_id(run_key, agent), run_key, agent, seq)


def _psycopg_agent_write(conn: psycopg.Connection[Any], run_key: int, agent: int,
                         seq: int) -> None:
    me = agent_write.agent_id(run_key, agent)

    def body() -> None:
        row = conn.execute(_pg(agent_write.READ_AGENT), (me,)).fetchone()
        assert row is not None
        doc = json.dumps(dict(AGENT_DOC_DICT, seq=seq))
        conn.execute(_pg(agent_write.INSERT_RESULT), (run_key, me, seq, doc))
        conn.execute(_pg(agent_write.INSERT_LOG),
                     (run_key, me, seq, f"agent {agent} finished task {seq}"))
        conn.execute(_pg(agent_write.UPDATE_AGENT), (f"done {seq}", row[2] + 1, me))

    _in_pg_tx(conn, body)


def _pg_agent_write(run_key: int) -> str:
    base = run_key * agent_write.AGENT_ID_STRIDE
    return (
        "\\set seq random(1, 2000000000)\n"
        f"\\set aid {base} + :client_id\n"
        "BEGIN ISOLATION LEVEL SERIALIZABLE;\n"
        "SELECT id, status, runs FROM agents WHERE id = :aid \\gset\n"
        f"INSERT INTO results (run_key, agent_id, seq, doc) VALUES ({run_key}, :aid, :seq,"
        f" {_literal(AGENT_DOC)});\n"
        f"INSERT INTO logs (run_key, agent_id, seq, message) VALUES ({run_key}, :aid, :seq,"
        " 'agent ' || :client_id || ' finished task ' || :seq);\n"
        "UPDATE agents SET status = 'done ' || :seq, runs = :runs + 1 WHERE id = :aid;\n"
        "COMMIT;\n"
    )


_RWW_READ = "SELECT version FROM agent_status WHERE id = ?"
_RWW_UPDATE = ("UPDATE agent_status SET status = ?, config = ?, version = version + 1,"
               " updated_at = ? WHERE id = ? RETURNING version")


def _bare_read_while_write(conn: sqlite3.Connection, run_key: int, agent: int,
                           seq: int) -> None:
    me = run_key * read_while_write.STRIDE + agent
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_RWW_READ, (me,)).fetchone()
        config = json.dumps({"model": "m", "v": seq, "pad": "x" * 200})
        conn.execute(_RWW_UPDATE, (f"step {seq}", config, time.time(), me)).fetchall()
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _sk_rww_step(tx: Transaction, me: int, seq: int) -> None:
    tx.get(_RWW_READ, (me,))
    tx.run(_RWW_UPDATE, (f"step {seq}", {"model": "m", "v": seq, "pad": "x" * 200},
                         time.time(), me))


def _sk_read_while_write(db: Database, run_key: int, agent: int, seq: int) -> None:
    # The harness's writer uses transaction(), not atomic(): the first error ends the step.
    with db.transaction() as tx:
        _sk_rww_step(tx, run_key * read_while_write.STRIDE + agent, seq)


def _psycopg_read_while_write(conn: psycopg.Connection[Any], run_key: int, agent: int,
                              seq: int) -> None:
    me = run_key * read_while_write.STRIDE + agent

    def body() -> None:
        conn.execute(_pg(_RWW_READ), (me,)).fetchone()
        config = json.dumps({"model": "m", "v": seq, "pad": "x" * 200})
        conn.execute(_pg(_RWW_UPDATE), (f"step {seq}", config, time.time(), me)).fetchall()

    _in_pg_tx(conn, body)


def _pg_read_while_write(run_key: int) -> str:
    base = run_key * read_while_write.STRIDE
    return (
        "\\set seq random(1, 2000000000)\n"
        f"\\set aid {base} + :client_id\n"
        "BEGIN ISOLATION LEVEL SERIALIZABLE;\n"
        "SELECT version FROM agent_status WHERE id = :aid;\n"
        f"UPDATE agent_status SET status = 'step ' || :seq, config = {_literal(STATUS_CONFIG)},"
        " version = version + 1, updated_at = extract(epoch from now()) WHERE id = :aid"
        " RETURNING version;\n"
        "COMMIT;\n"
    )


_SEARCH_INSERT = "INSERT INTO chat (run_key, agent, seq, content) VALUES (?, ?, ?, ?)"


def _bare_search(conn: sqlite3.Connection, run_key: int, agent: int, seq: int) -> None:
    conn.execute(_SEARCH_INSERT, (run_key, agent, seq, f"{MESSAGE} zq{run_key}x{agent}x{seq}"))


def _sk_search(db: Database, run_key: int, agent: int, seq: int) -> None:
    db.run(_SEARCH_INSERT, (run_key, agent, seq, f"{MESSAGE} zq{run_key}x{agent}x{seq}"))


def _psycopg_search(conn: psycopg.Connection[Any], run_key: int, agent: int, seq: int) -> None:
    conn.execute(_pg(_SEARCH_INSERT), (run_key, agent, seq, f"{MESSAGE} zq{run_key}x{agent}x{seq}"))


def _pg_search(run_key: int) -> str:
    return (
        "\\set seq random(1, 2000000000)\n"
        f"INSERT INTO chat (run_key, agent, seq, content) VALUES ({run_key}, :client_id, :seq,"
        f" {_literal(MESSAGE)} || ' zq{run_key}x' || :client_id || 'x' || :seq);\n"
    )


WRITE_TXS: dict[str, WriteTx] = {tx.workload: tx for tx in (
    WriteTx("single-insert", _bare_single, _pg_single, _sk_single, _psycopg_single),
    WriteTx("agent-write", _bare_agent_write, _pg_agent_write, _sk_agent_write,
            _psycopg_agent_write),
    WriteTx("read-while-write", _bare_read_while_write, _pg_read_while_write,
            _sk_read_while_write, _psycopg_read_while_write),
    WriteTx("search", _bare_search, _pg_search, _sk_search, _psycopg_search),
)}
