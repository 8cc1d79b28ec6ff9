"""1,000 asyncio tasks in one process doing the agent-write transaction through storekit.aio,
against the sync API with one thread doing the same transactions one after another.

The transaction is bench.harness.workloads.agent_write's (read the agent's row, insert a
~1 KB result and a log line, update the agent's counter from the value read), through
atomic(). A ticker task sleeps 1 ms at a time and records how late it wakes: the event
loop's lag. The figures go in the benchmark's extra_info (throughput of both, their ratio,
lag p50/p99/max, errors, lost writes), so `python -m bench micro` writes them to its JSON
and prints them. The test asserts only what the data determines: no errors, no lost write
or update. STOREKIT_MICRO_AIO_TASKS and STOREKIT_MICRO_AIO_STEPS change the size.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import storekit
from bench.harness.workloads.agent_write import (
    AGENTS,
    INSERT_LOG,
    INSERT_RESULT,
    LOGS,
    READ_AGENT,
    RESULTS,
    UPDATE_AGENT,
    documents,
)
from storekit import aio

TASKS = int(os.environ.get("STOREKIT_MICRO_AIO_TASKS", "1000"))
STEPS = int(os.environ.get("STOREKIT_MICRO_AIO_STEPS", "3"))
# A measuring run alternates sync and async runs and reports medians: on a shared machine
# one pair of runs minutes apart measures the load as much as the client.
ROUNDS = int(os.environ.get("STOREKIT_MICRO_AIO_ROUNDS", "3"))
SYNC_RUN, ASYNC_RUN = 1, 2  # run_key: the two runs' rows apart in the same tables
TICK_S = 0.001


@pytest.fixture(params=["sqlite", "postgres"])
def agent_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'agents.db'}"
        with storekit.create_database(url) as db:
            _setup(db)
        yield url
        return
    from storekit.testing import isolated_schema

    with isolated_schema(request.getfixturevalue("storekit_postgres_url"),
                         prefix="aioagents") as url:
        with storekit.create_database(url) as db:
            _setup(db)
        yield url


def _setup(db: storekit.Database) -> None:
    for table in (AGENTS, RESULTS, LOGS):
        db.create_table(table)
    for run in (SYNC_RUN, ASYNC_RUN):
        db.run_many("INSERT INTO agents (id, name, status, runs, config) VALUES (?, ?, ?, ?, ?)",
                    [(_agent(run, a), f"agent-{a}", "idle", 0, {"model": "m"})
                     for a in range(TASKS)])


def _agent(run: int, a: int) -> int:
    return run * 1_000_000 + a


DOCS = documents(seed=1)


def _sync_run(url: str, first: int) -> float:
    """Every task's steps, one after another on one thread: transactions per second."""
    with storekit.create_database(url) as db:

        def step(tx: storekit.Transaction, me: int, seq: int) -> None:
            row = tx.get(READ_AGENT, (me,))
            assert row is not None
            tx.run(INSERT_RESULT, (SYNC_RUN, me, seq, dict(DOCS[seq % len(DOCS)], seq=seq)))
            tx.run(INSERT_LOG, (SYNC_RUN, me, seq, f"agent {me} finished task {seq}"))
            tx.run(UPDATE_AGENT, (f"done {seq}", row["runs"] + 1, me))

        started = time.perf_counter()
        for seq in range(first, first + STEPS):
            for a in range(TASKS):
                db.atomic(step, _agent(SYNC_RUN, a), seq)
        return TASKS * STEPS / (time.perf_counter() - started)


async def _async_run(url: str, first: int) -> dict[str, Any]:
    lags: list[float] = []
    errors: list[BaseException] = []
    running = True

    async def ticker() -> None:
        while running:
            before = time.perf_counter()
            await asyncio.sleep(TICK_S)
            lags.append(time.perf_counter() - before - TICK_S)

    async def step(tx: aio.AsyncTransaction, me: int, seq: int) -> None:
        row = await tx.get(READ_AGENT, (me,))
        assert row is not None
        await tx.run(INSERT_RESULT, (ASYNC_RUN, me, seq, dict(DOCS[seq % len(DOCS)], seq=seq)))
        await tx.run(INSERT_LOG, (ASYNC_RUN, me, seq, f"agent {me} finished task {seq}"))
        await tx.run(UPDATE_AGENT, (f"done {seq}", row["runs"] + 1, me))

    async def agent(db: aio.AsyncDatabase, a: int) -> None:
        for seq in range(first, first + STEPS):
            try:
                await db.atomic(step, _agent(ASYNC_RUN, a), seq)
            except Exception as exc:  # counted, and the run goes on
                errors.append(exc)

    async with await aio.create_database(url) as db:
        tick = asyncio.create_task(ticker())
        await asyncio.sleep(TICK_S * 5)
        started = time.perf_counter()
        await asyncio.gather(*(agent(db, a) for a in range(TASKS)))
        seconds = time.perf_counter() - started
        running = False
        await tick
    lags.sort()
    return {
        "seconds": seconds,
        "throughput_tx_s": TASKS * STEPS / seconds,
        "errors": len(errors),
        "first_error": repr(errors[0]) if errors else "",
        "lag_ticks": len(lags),
        "lag_p50_ms": statistics.median(lags) * 1000 if lags else None,
        "lag_p99_ms": lags[int(0.99 * (len(lags) - 1))] * 1000 if lags else None,
        "lag_max_ms": lags[-1] * 1000 if lags else None,
    }


def _lost(url: str, run: int, rounds: int) -> int:
    """Acknowledged steps missing, plus agents whose counter is not their step count (lost
    updates)."""
    steps = STEPS * rounds
    with storekit.create_database(url) as db:
        results = db.get("SELECT count(*) AS n FROM results WHERE run_key = ?", (run,))
        logs = db.get("SELECT count(*) AS n FROM logs WHERE run_key = ?", (run,))
        wrong = db.get("SELECT count(*) AS n FROM agents WHERE id >= ? AND id < ?"
                       " AND runs <> ?", (_agent(run, 0), _agent(run, TASKS), steps))
    assert results is not None
    assert logs is not None
    assert wrong is not None
    missing: int = (TASKS * steps - results["n"]) + (TASKS * steps - logs["n"])
    return missing + int(wrong["n"])


def test_aio_agent_writes_1000_tasks(benchmark: Any, agent_url: str) -> None:
    backend = storekit.DatabaseURL.parse(agent_url).backend
    # The normal test run (--benchmark-disable) checks one async run only: the baseline
    # is there for the ratio, which only a measuring run reports.
    rounds = 1 if benchmark.disabled else max(1, ROUNDS)
    sync: list[float] = []
    runs: list[dict[str, Any]] = []

    def measure() -> None:
        for r in range(rounds):
            if not benchmark.disabled:
                sync.append(_sync_run(agent_url, r * STEPS))
            runs.append(asyncio.run(_async_run(agent_url, r * STEPS)))

    benchmark.pedantic(measure, rounds=1, iterations=1)
    lost = _lost(agent_url, ASYNC_RUN, rounds)
    figures = {key: statistics.median(run[key] for run in runs)
               for key in ("seconds", "throughput_tx_s", "lag_p50_ms", "lag_p99_ms")}
    errors = sum(run["errors"] for run in runs)
    first_error = next((run["first_error"] for run in runs if run["errors"]), "")
    benchmark.group = f"aio agent_write_{TASKS}_tasks"
    benchmark.extra_info.update({
        "suite": "aio", "operation": f"agent_write_{TASKS}_tasks", "backend": backend,
        "client": "storekit.aio", "tasks": TASKS, "steps": STEPS, "rounds": rounds,
        **figures, "lag_max_ms": max(run["lag_max_ms"] for run in runs),
        "errors": errors, "first_error": first_error, "lost": lost,
        "sync_one_thread_tx_s": statistics.median(sync) if sync else None,
        # The median of each round's ratio: a sync run and the async run right after it.
        "vs_sync_one_thread": statistics.median(
            run["throughput_tx_s"] / tps for run, tps in zip(runs, sync, strict=True))
        if sync else None,
        "throughput_rounds": [run["throughput_tx_s"] for run in runs],
        "sync_rounds": sync, "lag_p99_rounds_ms": [run["lag_p99_ms"] for run in runs],
        "python": sys.version.split()[0],
    })
    assert errors == 0, first_error
    assert lost == 0
    if sync:
        assert _lost(agent_url, SYNC_RUN, rounds) == 0
