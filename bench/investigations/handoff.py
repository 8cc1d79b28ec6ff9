"""Where the write lock's time goes when SQLite writer processes take turns.

python -m bench handoff [--agents 4,16] [--seconds 3] [--repetitions 3]

Runs agent-write's transaction in N processes on one WAL file, fair hand-off and the
stock busy handler interleaved, and records when each transaction acquired the lock and
when it finished (time.monotonic(), one clock for every process on Linux). From these:
how often the lock changed process (turns/s), the lock's idle time at each change, how
much longer the first transaction of a turn takes than the others (the new holder's cold
caches), and the share of time spent in transactions of a millisecond or more (mostly
those that ran a WAL checkpoint). Writes results/extras/handoff-<time>.json.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import queue
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from multiprocessing.context import ForkContext, SpawnContext
from pathlib import Path
from typing import Any, NamedTuple

from rich.table import Table

import storekit
from bench.harness.workloads import agent_write


class Span(NamedTuple):
    asked: float  # the writer asked for the lock
    got: float  # BEGIN IMMEDIATE returned
    done: float  # COMMIT returned and the lock was given back
    agent: int


def _agent(url: str, fair: bool, agent: int, start: float, seconds: float,
           out: Any, wal_autocheckpoint: int) -> None:
    options = storekit.SqliteOptions(fair_locking=fair, wal_autocheckpoint=wal_autocheckpoint)
    spans: list[Span] = []
    with storekit.create_database(url, sqlite=options) as db:
        me = agent_write.agent_id(1, agent)
        docs = agent_write.documents(agent)
        clock = time.monotonic
        while time.time() < start:
            time.sleep(0.001)
        end = clock() + seconds
        seq = 0
        while clock() < end:
            asked = clock()
            with db.transaction() as tx:
                got = clock()
                row = tx.get(agent_write.READ_AGENT, (me,))
                assert row is not None
                tx.run(agent_write.INSERT_RESULT, (1, me, seq, docs[seq % len(docs)]))
                tx.run(agent_write.INSERT_LOG, (1, me, seq, f"agent {agent} finished task {seq}"))
                tx.run(agent_write.UPDATE_AGENT, (f"done {seq}", row["runs"] + 1, me))
            spans.append(Span(asked, got, clock(), agent))
            seq += 1
    out.put(spans)


class Run(NamedTuple):
    spans: list[Span]
    wal_peak_bytes: int  # a WAL that checkpoints cannot restart keeps growing


def measure(agents: int, fair: bool, seconds: float, wal_autocheckpoint: int = 1000) -> Run:
    """One run: `agents` processes on a fresh file for `seconds`; every transaction's span.

    The WAL's peak size follows the scheduling (how much others write while a checkpoint
    runs outside the turn), so it is measured here, not asserted in a test."""
    folder = Path(tempfile.mkdtemp(prefix="storekit-handoff-"))
    url = f"sqlite:///{folder / 'handoff.db'}"
    with storekit.create_database(url) as db:
        agent_write.setup(db, {})
        agent_write.prepare(db, 1, ["writer"] * agents)
    # fork starts 16 processes well within the second before the common start.
    ctx: SpawnContext | ForkContext = (multiprocessing.get_context("fork")
                                       if sys.platform == "linux"
                                       else multiprocessing.get_context("spawn"))
    out = ctx.Queue()
    start = time.time() + 1.0  # every process open and waiting before the clock starts
    procs = [ctx.Process(target=_agent, args=(url, fair, i, start, seconds, out,
                                                     wal_autocheckpoint))
             for i in range(agents)]
    for p in procs:
        p.start()
    wal = folder / "handoff.db-wal"
    spans: list[Span] = []
    received, peak = 0, 0
    deadline = time.monotonic() + seconds + 120
    while received < agents:
        with contextlib.suppress(FileNotFoundError):
            peak = max(peak, wal.stat().st_size)
        try:
            spans.extend(out.get(timeout=0.05))
            received += 1
        except queue.Empty:
            if time.monotonic() > deadline:
                raise TimeoutError("an agent process did not report back") from None
    for p in procs:
        p.join(30)
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    return Run(spans, peak)


def summarise(spans: Sequence[Span]) -> dict[str, float]:
    """Turn changes and where the time went, from the spans of one run."""
    if len(spans) < 2:
        raise ValueError("need at least two transactions to see a hand-off")
    ordered = sorted(spans, key=lambda s: s.got)
    wall = ordered[-1].done - ordered[0].got
    gaps: list[float] = []
    first: list[float] = []
    rest: list[float] = []
    for before, span in itertools.pairwise(ordered):
        duration = span.done - span.got
        if span.agent != before.agent:
            # Negative when the old holder was descheduled between its COMMIT and
            # reading the clock: the lock was not idle at all then.
            gaps.append(max(0.0, span.got - before.done))
            first.append(duration)
        else:
            rest.append(duration)
    latencies = sorted(s.done - s.asked for s in spans)
    held = [s.done - s.got for s in spans]
    return {
        "commits_per_s": len(spans) / wall,
        "turns_per_s": len(first) / wall,
        "commits_per_turn": len(spans) / max(1, len(first)),
        "handoff_gap_p50_us": statistics.median(gaps) * 1e6 if gaps else 0.0,
        "first_of_turn_p50_us": statistics.median(first) * 1e6 if first else 0.0,
        "rest_of_turn_p50_us": statistics.median(rest) * 1e6 if rest else 0.0,
        "long_tx_share": sum(h for h in held if h >= 0.001) / wall,
        "latency_p999_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.999))]
        * 1e3,
    }


def table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Write-lock turns (medians over repetitions)")
    keys = ["commits_per_s", "turns_per_s", "commits_per_turn", "handoff_gap_p50_us",
            "first_of_turn_p50_us", "rest_of_turn_p50_us", "long_tx_share", "latency_p999_ms",
            "wal_peak_mb"]
    for col in ("agents", "mode", "commits/s", "turns/s", "per turn", "idle µs", "1st tx µs",
                "tx µs", ">=1ms share", "p99.9 ms", "WAL MB", "fair/stock"):
        table.add_column(col, justify="right")
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["agents"], row["mode"]), []).append(row)
    for (agents, mode), group in sorted(groups.items()):
        med = {k: statistics.median(r[k] for r in group) for k in keys}
        ratio = ""
        if mode == "fair" and (agents, "stock") in groups:
            paired = [f["commits_per_s"] / s["commits_per_s"]
                      for f, s in zip(group, groups[(agents, "stock")], strict=True)]
            ratio = f"{statistics.median(paired):.2f}"
        table.add_row(str(agents), mode, *(f"{med[k]:,.2f}" if k in ("long_tx_share", "wal_peak_mb")
                                            else f"{med[k]:,.0f}" for k in keys), ratio)
    return table
