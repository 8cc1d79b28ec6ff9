"""The claims ledger: one function per claim of the seed document, each a verdict computed
from a run's summary with the number beside it.

Thresholds are named constants so a reader can see, and argue with, what "holds" means.
A claim function takes the Evidence of one run and returns its Claim; CLAIMS lists them
in the order the ledger prints them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import pandas as pd

from bench.harness.results import select

HOLDS, HOLDS_IF, FAILS, NOT_MEASURED = (
    "holds", "holds only under a named setting", "does not hold", "not measured")
BLOCKING_FACTOR = 10.0  # "blocks" = reader p99 at least 10x PostgreSQL's (MVCC) ...
BLOCKING_MIN_MS = 5.0  # ... and at least 5 ms, so a fast path made slower is not "blocked"
WAITING_SHARE = 0.2  # "make each other wait" = over 20% of transaction time waiting


@dataclass(frozen=True)
class Claim:
    claim: str
    verdict: str
    evidence: str
    figure: str


def median_metric(summary: pd.DataFrame, workload: str, config: str, metric: str,
                  op: str = "all", agents: int | None = None) -> float:
    """The median over repetitions at `agents` (default: the most agents measured)."""
    s = select(summary, workload=workload, config=config, metric=metric, op=op)
    if s.empty:
        return math.nan
    agents = int(s["agents"].max()) if agents is None else agents
    values = select(s, agents=agents)["value"]
    return float(values.median()) if not values.empty else math.nan


def _zero_if_nan(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def _fmt(x: float, unit: str = "") -> str:
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "none completed"
    return f"{x:,.3g}{unit}" if abs(x) < 100 else f"{x:,.0f}{unit}"


@dataclass(frozen=True)
class Evidence:
    """One run's summary, and the figures the claims share."""

    summary: pd.DataFrame

    def m(self, workload: str, config: str, metric: str, op: str = "all",
          agents: int | None = None) -> float:
        return median_metric(self.summary, workload, config, metric, op, agents)

    def most_agents(self, workload: str) -> int:
        s = select(self.summary, workload=workload)
        return int(s["agents"].max()) if not s.empty else 0

    def starved(self, workload: str, config: str, metric: str, op: str, agents: int) -> float:
        """A latency metric, or infinity when the config ran but this op completed none
        within the window (readers starved by writers): the strongest case of blocking."""
        value = self.m(workload, config, metric, op, agents)
        if math.isnan(value) and not math.isnan(self.m(workload, config, "ops_per_s", "all",
                                                       agents)):
            return math.inf
        return value


def one_writer(e: Evidence) -> Claim:
    name = "SQLite allows one writer at a time"
    n = e.most_agents("agent-write")
    one = e.m("agent-write", "sqlite-wal", "ops_per_s", agents=1)
    many = e.m("agent-write", "sqlite-wal", "ops_per_s", agents=n)
    wait = e.m("agent-write", "sqlite-wal", "lock_wait_share", "transaction", n)
    if math.isnan(one) or math.isnan(many):
        return Claim(name, NOT_MEASURED, "", "01")
    serial = many <= 1.5 * one or wait > WAITING_SHARE
    return Claim(
        name, HOLDS if serial else FAILS,
        f"sqlite-wal commits/s {_fmt(one)} with 1 agent, {_fmt(many)} with {n}; "
        f"{_fmt(100 * wait)}% of transaction time waiting for the write lock",
        "01-agent-write: throughput and lock-wait share")


def readers_dont_block_readers(e: Evidence) -> Claim:
    return Claim("Readers don't block readers", NOT_MEASURED,
                 "no read-only workload in this run (WAL and MVCC both allow it by design)", "-")


def writers_block(mode: str, config: str, e: Evidence) -> Claim:
    """Per journal mode: readers either wait (latency) or get far fewer reads through than
    WAL readers do beside the same writers (throughput)."""
    name = f"SQLite writers block everything ({mode})"
    n = e.most_agents("read-while-write")
    wal_reads = e.m("read-while-write", "sqlite-wal", "ops_per_s", "point_read", n)
    p99 = e.starved("read-while-write", config, "latency_p99_ms", "point_read", n)
    reads = _zero_if_nan(e.m("read-while-write", config, "ops_per_s", "point_read", n))
    pg = e.m("read-while-write", "postgres", "latency_p99_ms", "point_read", n)
    if math.isnan(p99) or math.isnan(pg):
        return Claim(name, NOT_MEASURED, "", "02")
    slow = p99 >= max(BLOCKING_FACTOR * pg, BLOCKING_MIN_MS)
    starved = config != "sqlite-wal" and reads * BLOCKING_FACTOR <= wal_reads
    return Claim(
        name, HOLDS if slow or starved else FAILS,
        f"{config}: reader p99 {_fmt(p99, ' ms')}, {_fmt(reads)} point reads/s while "
        f"writers run ({n} agents; sqlite-wal readers {_fmt(wal_reads)}/s); "
        f"postgres reader p99 {_fmt(pg, ' ms')}",
        "02-read-while-write: reader latency CDF and p99")


def postgres_no_blocking(e: Evidence) -> Claim:
    name = "PostgreSQL readers and writers don't block each other"
    n = e.most_agents("read-while-write")
    pg_read = e.m("read-while-write", "postgres", "latency_p99_ms", "point_read", n)
    lock_share = _zero_if_nan(e.m("read-while-write", "postgres", "pg_wait_share_Lock",
                                  agents=n))
    if math.isnan(pg_read):
        return Claim(name, NOT_MEASURED, "", "02")
    return Claim(
        name, HOLDS if lock_share < 0.05 else FAILS,
        f"postgres reader p99 {_fmt(pg_read, ' ms')} with {n} agents; "
        f"{_fmt(100 * lock_share)}% of sampled backends waiting on locks",
        "02-read-while-write")


def three_agents_wait(e: Evidence) -> Claim:
    name = "Three concurrent agents make each other wait"
    measured = sorted(set(select(e.summary, workload="agent-write")["agents"]))
    three = min((a for a in measured if a >= 3), default=None)
    if three is None:
        return Claim(name, NOT_MEASURED, "", "01")
    share = e.m("agent-write", "sqlite-wal", "lock_wait_share", "transaction", three)
    pg_wait = _zero_if_nan(e.m("agent-write", "postgres", "pg_wait_share_Lock", agents=three))
    return Claim(
        name, HOLDS if share > WAITING_SHARE else FAILS,
        f"with {three} agents, sqlite-wal spends {_fmt(100 * share)}% of "
        f"transaction time waiting for the lock (threshold {WAITING_SHARE:.0%}); "
        f"postgres lock-wait samples {_fmt(100 * pg_wait)}%",
        "01-agent-write: lock-wait share")


def fts5_write_lock(e: Evidence) -> Claim:
    name = "FTS5 search suffers from the write lock; PostgreSQL searches freely"
    n = e.most_agents("search")
    se = {c: e.starved("search", c, "latency_p99_ms", "search", n)
          for c in ("sqlite-wal", "sqlite-rollback", "postgres")}
    if any(math.isnan(v) for v in se.values()):
        return Claim(name, NOT_MEASURED, "", "03")
    bar = max(BLOCKING_FACTOR * se["postgres"], BLOCKING_MIN_MS)
    verdict = (HOLDS if se["sqlite-wal"] >= bar else HOLDS_IF if se["sqlite-rollback"] >= bar
               else FAILS)
    return Claim(
        name, verdict,
        f"search p99 with {n} agents: sqlite-wal {_fmt(se['sqlite-wal'], ' ms')}, "
        f"sqlite-rollback {_fmt(se['sqlite-rollback'], ' ms')}, "
        f"postgres {_fmt(se['postgres'], ' ms')}"
        + (" (holds with the rollback journal only)" if verdict == HOLDS_IF else ""),
        "03-search: latency against writers")


def jsonb_gin(e: Evidence) -> Claim:
    return Claim("JSONB with GIN is faster for JSON queries", NOT_MEASURED,
                 "measured by the pytest-benchmark suite (make microbench), not this run", "-")


def sync_faster_single_threaded(e: Evidence) -> Claim:
    """Durability matched and not: WAL+NORMAL against async commit, FULL against default."""
    name = "SQLite's synchronous API is faster single-threaded"
    pairs = (("sqlite-wal", "postgres-async-commit"), ("sqlite-wal-full", "postgres"))
    rates = {c: e.m("agent-write", c, "ops_per_s", agents=1) for pair in pairs for c in pair}
    # A config that completed nothing in its window (a short run on a busy machine) gives
    # no ratio: the claim is then unmeasured, not a division by zero.
    idle = [c for c, rate in rates.items() if rate == 0]
    if idle:
        return Claim(name, NOT_MEASURED, f"{', '.join(idle)} completed no transaction "
                                         "with 1 agent", "01")
    ratios = [rates[a] / rates[b] for a, b in pairs]
    if any(math.isnan(r) for r in ratios):
        return Claim(name, NOT_MEASURED, "", "01")
    return Claim(
        name, HOLDS if min(ratios) > 1 else HOLDS_IF if max(ratios) > 1 else FAILS,
        f"1 agent, commits/s ratio SQLite/PostgreSQL at matched durability: "
        f"WAL+NORMAL vs async commit {_fmt(ratios[0])}x, FULL vs default {_fmt(ratios[1])}x",
        "01-agent-write: throughput")


def postgres_concurrent(e: Evidence) -> Claim:
    name = "PostgreSQL is better for concurrent workloads"
    n = e.most_agents("agent-write")
    pg, full, wal = (e.m("agent-write", c, "ops_per_s", agents=n)
                     for c in ("postgres", "sqlite-wal-full", "sqlite-wal"))
    if math.isnan(pg) or math.isnan(full):
        return Claim(name, NOT_MEASURED, "", "01")
    verdict = HOLDS if pg > max(full, wal) else HOLDS_IF if pg > full else FAILS
    return Claim(
        name, verdict,
        f"{n} agents, commits/s: postgres {_fmt(pg)}, sqlite-wal-full {_fmt(full)} "
        f"(durability matched), sqlite-wal {_fmt(wal)}",
        "01-agent-write: throughput")


def teams(e: Evidence) -> Claim:
    name = "SQLite does not work for teams of 2-50 users"
    n = e.most_agents("agent-write")
    # A lock error that db.atomic() absorbed by running the step again is still one.
    errs = {c: e.m("agent-write", c, "errors_total", agents=n)
            + _zero_if_nan(e.m("agent-write", c, "retries", agents=n))
            for c in ("sqlite-wal", "sqlite-naive")}
    p99 = e.m("agent-write", "sqlite-wal", "latency_p99_ms", "transaction", n)
    if any(math.isnan(v) for v in errs.values()):
        return Claim(name, NOT_MEASURED, "", "01")
    works = errs["sqlite-wal"] == 0
    verdict = HOLDS_IF if works and errs["sqlite-naive"] > 0 else FAILS if works else HOLDS
    return Claim(
        name, verdict,
        f"{n} writer processes on one file: sqlite-wal {int(errs['sqlite-wal'])} lock "
        f"errors, p99 {_fmt(p99, ' ms')}; sqlite-naive {int(errs['sqlite-naive'])} lock "
        "errors (failed or retried). "
        "Holds for users on other machines: SQLite has no network access",
        "01-agent-write: errors by type")


def zero_setup(e: Evidence) -> Claim:
    return Claim("Zero setup (SQLite)", NOT_MEASURED,
                 "not a performance claim: SQLite needs no server; storekit provisions a "
                 "throwaway PostgreSQL for tests", "-")


CLAIMS: list[Callable[[Evidence], Claim]] = [
    one_writer,
    readers_dont_block_readers,
    partial(writers_block, "rollback journal", "sqlite-rollback"),
    partial(writers_block, "WAL", "sqlite-wal"),
    postgres_no_blocking,
    three_agents_wait,
    fts5_write_lock,
    jsonb_gin,
    sync_faster_single_threaded,
    postgres_concurrent,
    teams,
    zero_setup,
]


def claims(summary: pd.DataFrame) -> list[Claim]:
    evidence = Evidence(summary)
    return [claim(evidence) for claim in CLAIMS]


def ledger(summary: pd.DataFrame) -> pd.DataFrame:
    table: pd.DataFrame = pd.DataFrame([c.__dict__ for c in claims(summary)])
    return table
