"""The claims ledger and the backend recommendation, computed from a run's summary.

Every verdict is a function of measured numbers, with the number beside it. Thresholds are
named constants so a reader can see, and argue with, what "holds" means here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench import results

HOLDS, HOLDS_IF, FAILS, NOT_MEASURED = (
    "holds", "holds only under a named setting", "does not hold", "not measured")
BLOCKING_FACTOR = 10.0  # "blocks" = reader p99 at least 10x PostgreSQL's (MVCC) ...
BLOCKING_MIN_MS = 5.0  # ... and at least 5 ms, so a fast path made slower is not "blocked"
WAITING_SHARE = 0.2  # "make each other wait" = over 20% of transaction time waiting
HEADROOM = 0.7  # plan for at most 70% of the measured closed-loop capacity
DEFAULTS = ("sqlite-wal", "postgres")  # each backend as storekit configures it


@dataclass(frozen=True)
class Claim:
    claim: str
    verdict: str
    evidence: str
    figure: str


def median_metric(summary: pd.DataFrame, workload: str, config: str, metric: str,
                  op: str = "all", agents: int | None = None) -> float:
    s = summary[(summary["workload"] == workload) & (summary["config"] == config)
                & (summary["metric"] == metric) & (summary["op"] == op)]
    if s.empty:
        return math.nan
    agents = int(s["agents"].max()) if agents is None else agents
    values = s[s["agents"] == agents]["value"]
    return float(values.median()) if not values.empty else math.nan


def medians(summary: pd.DataFrame, workload: str, metric: str, op: str) -> pd.Series:
    """One metric's median over repetitions, indexed by (config, agents)."""
    s = summary[(summary["workload"] == workload) & (summary["metric"] == metric)
                & (summary["op"] == op)]
    series: pd.Series = s.groupby(["config", "agents"])["value"].median()
    return series


def _max_agents(summary: pd.DataFrame, workload: str) -> int:
    s = summary[summary["workload"] == workload]
    return int(s["agents"].max()) if not s.empty else 0


def _starved(summary: pd.DataFrame, workload: str, config: str, metric: str, op: str,
             agents: int) -> float:
    """A latency metric, or infinity when the config ran but this op completed none
    within the window (readers starved by writers): the strongest case of blocking."""
    value = median_metric(summary, workload, config, metric, op, agents)
    if math.isnan(value) and not math.isnan(
            median_metric(summary, workload, config, "ops_per_s", "all", agents)):
        return math.inf
    return value


def _zero_if_nan(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def _fmt(x: float, unit: str = "") -> str:
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "none completed"
    return f"{x:,.3g}{unit}" if abs(x) < 100 else f"{x:,.0f}{unit}"


def claims(summary: pd.DataFrame) -> list[Claim]:
    s = summary
    out: list[Claim] = []
    aw_n = _max_agents(s, "agent-write")
    rw_n = _max_agents(s, "read-while-write")
    se_n = _max_agents(s, "search")

    def m(workload: str, config: str, metric: str, op: str = "all",
          agents: int | None = None) -> float:
        return median_metric(s, workload, config, metric, op, agents)

    # 1. One writer at a time.
    one = m("agent-write", "sqlite-wal", "ops_per_s", agents=1)
    many = m("agent-write", "sqlite-wal", "ops_per_s", agents=aw_n)
    wait = m("agent-write", "sqlite-wal", "lock_wait_share", "transaction", aw_n)
    if math.isnan(one) or math.isnan(many):
        out.append(Claim("SQLite allows one writer at a time", NOT_MEASURED, "", "01"))
    else:
        serial = many <= 1.5 * one or wait > WAITING_SHARE
        out.append(Claim(
            "SQLite allows one writer at a time", HOLDS if serial else FAILS,
            f"sqlite-wal commits/s {_fmt(one)} with 1 agent, {_fmt(many)} with {aw_n}; "
            f"{_fmt(100 * wait)}% of transaction time waiting for the write lock",
            "01-agent-write: throughput and lock-wait share"))
    out.append(Claim("Readers don't block readers", NOT_MEASURED,
                     "no read-only workload in this run (WAL and MVCC both allow it by design)",
                     "-"))
    # 3. Writers block everything, per journal mode: readers either wait (latency) or get
    # far fewer reads through than WAL readers do beside the same writers (throughput).
    wal_reads = m("read-while-write", "sqlite-wal", "ops_per_s", "point_read", rw_n)
    for mode, config in (("rollback journal", "sqlite-rollback"), ("WAL", "sqlite-wal")):
        p99 = _starved(s, "read-while-write", config, "latency_p99_ms", "point_read", rw_n)
        reads = _zero_if_nan(m("read-while-write", config, "ops_per_s", "point_read", rw_n))
        pg = m("read-while-write", "postgres", "latency_p99_ms", "point_read", rw_n)
        if math.isnan(p99) or math.isnan(pg):
            out.append(Claim(f"SQLite writers block everything ({mode})", NOT_MEASURED, "",
                             "02"))
            continue
        slow = p99 >= max(BLOCKING_FACTOR * pg, BLOCKING_MIN_MS)
        starved = config != "sqlite-wal" and reads * BLOCKING_FACTOR <= wal_reads
        out.append(Claim(
            f"SQLite writers block everything ({mode})", HOLDS if slow or starved else FAILS,
            f"{config}: reader p99 {_fmt(p99, ' ms')}, {_fmt(reads)} point reads/s while "
            f"writers run ({rw_n} agents; sqlite-wal readers {_fmt(wal_reads)}/s); "
            f"postgres reader p99 {_fmt(pg, ' ms')}",
            "02-read-while-write: reader latency CDF and p99"))
    # 4. PostgreSQL readers and writers don't block each other.
    pg_read = m("read-while-write", "postgres", "latency_p99_ms", "point_read", rw_n)
    pg_lock = m("read-while-write", "postgres", "pg_wait_share_Lock", agents=rw_n)
    if math.isnan(pg_read):
        out.append(Claim("PostgreSQL readers and writers don't block each other",
                         NOT_MEASURED, "", "02"))
    else:
        lock_share = 0.0 if math.isnan(pg_lock) else pg_lock
        out.append(Claim(
            "PostgreSQL readers and writers don't block each other",
            HOLDS if lock_share < 0.05 else FAILS,
            f"postgres reader p99 {_fmt(pg_read, ' ms')} with {rw_n} agents; "
            f"{_fmt(100 * lock_share)}% of sampled backends waiting on locks",
            "02-read-while-write"))
    # 5. Three concurrent agents make each other wait.
    three = min((a for a in sorted(set(s[s["workload"] == "agent-write"]["agents"])) if a >= 3),
                default=None)
    if three is None:
        out.append(Claim("Three concurrent agents make each other wait", NOT_MEASURED, "",
                         "01"))
    else:
        shares = {c: m("agent-write", c, "lock_wait_share", "transaction", three)
                  for c in ("sqlite-wal", "sqlite-naive")}
        pg_wait = m("agent-write", "postgres", "pg_wait_share_Lock", agents=three)
        waits = shares["sqlite-wal"] > WAITING_SHARE
        out.append(Claim(
            "Three concurrent agents make each other wait",
            HOLDS if waits else FAILS,
            f"with {three} agents, sqlite-wal spends {_fmt(100 * shares['sqlite-wal'])}% of "
            f"transaction time waiting for the lock (threshold {WAITING_SHARE:.0%}); "
            f"postgres lock-wait samples {_fmt(100 * (0 if math.isnan(pg_wait) else pg_wait))}%",
            "01-agent-write: lock-wait share"))
    # 6. FTS5 suffers from the write lock; PostgreSQL searches freely.
    se = {c: _starved(s, "search", c, "latency_p99_ms", "search", se_n)
          for c in ("sqlite-wal", "sqlite-rollback", "postgres")}
    if any(math.isnan(v) for v in se.values()):
        out.append(Claim("FTS5 search suffers from the write lock; PostgreSQL searches freely",
                         NOT_MEASURED, "", "03"))
    else:
        bar = max(BLOCKING_FACTOR * se["postgres"], BLOCKING_MIN_MS)
        wal_suffers = se["sqlite-wal"] >= bar
        rollback_suffers = se["sqlite-rollback"] >= bar
        verdict = HOLDS if wal_suffers else HOLDS_IF if rollback_suffers else FAILS
        out.append(Claim(
            "FTS5 search suffers from the write lock; PostgreSQL searches freely", verdict,
            f"search p99 with {se_n} agents: sqlite-wal {_fmt(se['sqlite-wal'], ' ms')}, "
            f"sqlite-rollback {_fmt(se['sqlite-rollback'], ' ms')}, "
            f"postgres {_fmt(se['postgres'], ' ms')}"
            + (" (holds with the rollback journal only)" if verdict == HOLDS_IF else ""),
            "03-search: latency against writers"))
    out.append(Claim("JSONB with GIN is faster for JSON queries", NOT_MEASURED,
                     "measured by the pytest-benchmark suite (make microbench), not this run",
                     "-"))
    # 8. Synchronous SQLite is faster single-threaded (durability matched and not).
    pairs = (("sqlite-wal", "postgres-async-commit"), ("sqlite-wal-full", "postgres"))
    ratios = [m("agent-write", a, "ops_per_s", agents=1) / m("agent-write", b, "ops_per_s",
                                                                agents=1) for a, b in pairs]
    if any(math.isnan(r) for r in ratios):
        out.append(Claim("SQLite's synchronous API is faster single-threaded", NOT_MEASURED,
                         "", "01"))
    else:
        out.append(Claim(
            "SQLite's synchronous API is faster single-threaded",
            HOLDS if min(ratios) > 1 else HOLDS_IF if max(ratios) > 1 else FAILS,
            f"1 agent, commits/s ratio SQLite/PostgreSQL at matched durability: "
            f"WAL+NORMAL vs async commit {_fmt(ratios[0])}x, FULL vs default {_fmt(ratios[1])}x",
            "01-agent-write: throughput"))
    # 9. PostgreSQL is better for concurrent workloads.
    pg = m("agent-write", "postgres", "ops_per_s", agents=aw_n)
    full = m("agent-write", "sqlite-wal-full", "ops_per_s", agents=aw_n)
    wal = m("agent-write", "sqlite-wal", "ops_per_s", agents=aw_n)
    if math.isnan(pg) or math.isnan(full):
        out.append(Claim("PostgreSQL is better for concurrent workloads", NOT_MEASURED, "",
                         "01"))
    else:
        verdict = HOLDS if pg > max(full, wal) else HOLDS_IF if pg > full else FAILS
        out.append(Claim(
            "PostgreSQL is better for concurrent workloads", verdict,
            f"{aw_n} agents, commits/s: postgres {_fmt(pg)}, sqlite-wal-full {_fmt(full)} "
            f"(durability matched), sqlite-wal {_fmt(wal)}",
            "01-agent-write: throughput"))
    # 10. SQLite does not work for teams of 2-50 users.
    # A lock error that db.atomic() absorbed by running the step again is still one.
    errs = {c: m("agent-write", c, "errors_total", agents=aw_n)
            + _zero_if_nan(m("agent-write", c, "retries", agents=aw_n))
            for c in ("sqlite-wal", "sqlite-naive")}
    p99 = m("agent-write", "sqlite-wal", "latency_p99_ms", "transaction", aw_n)
    if any(math.isnan(v) for v in errs.values()):
        out.append(Claim("SQLite does not work for teams of 2-50 users", NOT_MEASURED, "",
                         "01"))
    else:
        works = errs["sqlite-wal"] == 0
        verdict = HOLDS_IF if works and errs["sqlite-naive"] > 0 else FAILS if works else HOLDS
        out.append(Claim(
            "SQLite does not work for teams of 2-50 users", verdict,
            f"{aw_n} writer processes on one file: sqlite-wal {int(errs['sqlite-wal'])} lock "
            f"errors, p99 {_fmt(p99, ' ms')}; sqlite-naive {int(errs['sqlite-naive'])} lock "
            "errors (failed or retried). "
            "Holds for users on other machines: SQLite has no network access",
            "01-agent-write: errors by type"))
    out.append(Claim("Zero setup (SQLite)", NOT_MEASURED,
                     "not a performance claim: SQLite needs no server; storekit provisions a "
                     "throwaway PostgreSQL for tests", "-"))
    return out


def ledger(summary: pd.DataFrame) -> pd.DataFrame:
    table: pd.DataFrame = pd.DataFrame([c.__dict__ for c in claims(summary)])
    return table


def capacity(summary: pd.DataFrame, workload: str = "agent-write") -> pd.DataFrame:
    """Per config and agent count: median closed-loop commits/s and write p99 (ms)."""
    main_op = {"agent-write": "transaction", "read-while-write": "update", "search": "append"}
    a = medians(summary, workload, "ops_per_s", "all").rename("ops_per_s")
    b = medians(summary, workload, "latency_p99_ms", main_op[workload]).rename("p99_ms")
    table: pd.DataFrame = pd.concat([a, b], axis=1).reset_index()
    return table


def feasible(cap: pd.DataFrame, config: str, agents: int, writes_per_agent: float,
             target_ms: float) -> tuple[bool, dict[str, Any] | None]:
    """Whether a config's measured curve covers `agents` at this rate within the target.

    Uses the smallest measured agent count >= agents (pessimistic), needs the demand to fit
    within HEADROOM of that closed-loop capacity, and the p99 measured there under target.
    """
    rows = cap[(cap["config"] == config) & (cap["agents"] >= agents)].sort_values("agents")
    if rows.empty:
        return False, None
    row = rows.iloc[0].to_dict()
    demand = agents * writes_per_agent
    ok = demand <= HEADROOM * row["ops_per_s"] and row["p99_ms"] <= target_ms
    return bool(ok), row


def decide(cap: pd.DataFrame, agents: int, writes_per_agent: float, target_ms: float,
           candidates: tuple[str, ...] = DEFAULTS) -> str:
    for config in candidates:
        if feasible(cap, config, agents, writes_per_agent, target_ms)[0]:
            return config
    return "neither"


def recommend(*, agents: int, writes_per_agent: float, readers: int = 0,
              needs_network: bool = False, needs_row_security: bool = False,
              latency_target_ms: float = 50.0, run_id: str | None = None,
              results_dir: Path | None = None) -> str:
    if agents <= 0 or writes_per_agent <= 0 or readers < 0 or latency_target_ms <= 0:
        raise ValueError("agents, writes per agent and the latency target must be positive")
    run = results.load(run_id, results_dir)
    cap = capacity(run.summary)
    choice = decide(cap, agents, writes_per_agent, latency_target_ms)
    lines = [f"Workload: {agents} agents x {writes_per_agent:g} writes/s"
             f" (+{readers} readers), write p99 target {latency_target_ms:g} ms",
             f"Evidence: run {run.run_id} on {run.meta.get('machine', {}).get('cpu', '?')}, "
             f"{run.meta.get('machine', {}).get('cores', '?')} cores"]
    for config in DEFAULTS:
        ok, row = feasible(cap, config, agents, writes_per_agent, latency_target_ms)
        if row is None:
            lines.append(f"  {config}: no measurement at >= {agents} agents")
        else:
            lines.append(f"  {config}: measured at {int(row['agents'])} agents "
                         f"{row['ops_per_s']:,.0f} commits/s, write p99 {row['p99_ms']:.1f} ms "
                         f"-> {'meets' if ok else 'misses'} the target")
    reasons = []
    if needs_network:
        reasons.append("network access: SQLite is a local file (network filesystems break its "
                       "locking); use PostgreSQL")
    if needs_row_security:
        reasons.append("row-level security: only PostgreSQL has it")
    if reasons:
        choice = "postgres"
    speed = {"sqlite-wal": "SQLite (storekit defaults: WAL, synchronous=NORMAL)",
             "postgres": "PostgreSQL", "neither": "neither measured config meets the target"}
    lines.insert(0, f"Recommendation: {speed[choice]}")
    lines += [f"Overrides speed: {r}" for r in reasons]
    lines.append("Also consider: LISTEN/NOTIFY is native on PostgreSQL and emulated (polling, "
                 "one machine) on SQLite; SQLite needs no server to set up.")
    return "\n".join(lines)
