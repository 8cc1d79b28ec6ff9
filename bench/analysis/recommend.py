"""The backend recommendation, computed from a run's measured capacity curves.

The claims ledger is bench.analysis.claims. HEADROOM is a named constant so a reader can
see, and argue with, how much of the measured capacity a plan may use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from bench.harness import results
from bench.harness.results import select
from bench.harness.workloads import WORKLOADS

HEADROOM = 0.7  # plan for at most 70% of the measured closed-loop capacity
DEFAULTS = ("sqlite-wal", "postgres")  # each backend as storekit configures it


def medians(summary: pd.DataFrame, workload: str, metric: str, op: str) -> pd.Series:
    """One metric's median over repetitions, indexed by (config, agents)."""
    s = select(summary, workload=workload, metric=metric, op=op)
    series: pd.Series = s.groupby(["config", "agents"])["value"].median()
    return series


def capacity(summary: pd.DataFrame, workload: str = "agent-write") -> pd.DataFrame:
    """Per config and agent count: median closed-loop operations/s and the p99 (ms) of the
    workload's main operation (for agent-write, the one the recommendation reads: commits/s
    and the write transaction's p99)."""
    a = medians(summary, workload, "ops_per_s", "all").rename("ops_per_s")
    b = medians(summary, workload, "latency_p99_ms", WORKLOADS[workload].main_op).rename(
        "p99_ms")
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
