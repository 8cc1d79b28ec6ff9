"""The backend recommendation for a deployment scenario, from the runs that measured it.

The rules that decide which measured cells answer a scenario are in bench.analysis.scenarios;
the claims ledger is bench.analysis.claims. Speed decides only among the backends the
scenario leaves in play: more than one machine needs network access, which a SQLite file
does not give, and row-level security exists only in PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.analysis import scenarios
from bench.analysis.scenarios import MEETS, MISSES, NOT_MEASURED, RULED_OUT, Judgement, Scenario
from bench.harness.results import select
from bench.harness.workloads import WORKLOADS

# Each backend as storekit configures it, in order of preference when several meet the
# target: SQLite needs no server, and a pooler is one more process to run.
DEFAULTS = ("sqlite-wal", "postgres", "postgres-pgbouncer")
NAMES = {"sqlite-wal": "SQLite (storekit defaults: WAL, synchronous=NORMAL)",
         "postgres": "PostgreSQL",
         "postgres-pgbouncer": "PostgreSQL behind PgBouncer (transaction pooling)"}


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


def ruled_out(sc: Scenario, config: str) -> str | None:
    """Why the scenario rules a config out whatever its speed, or None."""
    if not config.startswith("sqlite"):
        return None
    if sc.machines > 1:
        return (f"{sc.machines} machines need network access: SQLite is a file on one "
                "machine (a network filesystem breaks its locking)")
    if sc.needs_row_security:
        return "row-level security: only PostgreSQL has it"
    return None


def judgements(table: pd.DataFrame, sc: Scenario,
               candidates: tuple[str, ...] = DEFAULTS) -> list[Judgement]:
    out = []
    for config in candidates:
        reason = ruled_out(sc, config)
        out.append(Judgement(config, RULED_OUT, reason) if reason
                   else scenarios.judge(table, config, sc))
    return out


def verdict(found: list[Judgement], sc: Scenario) -> tuple[str, str | None]:
    """The recommendation's first line, and the command to measure what is missing."""
    meeting = [j for j in found if j.status == MEETS]
    missing = [j.config for j in found if j.status == NOT_MEASURED]
    command = scenarios.run_command(sc, missing) if missing else None
    if meeting:
        text = NAMES.get(meeting[0].config, meeting[0].config)
        if len(meeting) > 1:
            others = ", ".join(NAMES.get(j.config, j.config) for j in meeting[1:])
            why = ("SQLite needs no server" if meeting[0].config.startswith("sqlite")
                   else "a direct connection is one process fewer to run")
            verb = "meets" if len(meeting) == 2 else "meet"
            text += f"; {others} also {verb} the target, and {why}"
        return f"Recommendation: {text}", command
    if missing:
        return ("Recommendation: not measured: no run measured this scenario closely enough "
                f"to decide for {', '.join(missing)}"), command
    if all(j.status == RULED_OUT for j in found):
        return "Recommendation: none of the measured backends is in play", None
    return ("Recommendation: neither backend meets the target in this scenario (measured); "
            "raise the target, or spread the agents over more stores"), None


def recommend(scenario: Scenario, *, run_id: str | None = None,
              results_dir: Path | None = None) -> str:
    """The answer to a scenario, from every run (or one run) and the rules in scenarios."""
    sc = scenario
    table = scenarios.evidence(results_dir, run_id)
    found = judgements(table, sc)
    first, command = verdict(found, sc)
    machines = "one machine" if sc.machines == 1 else f"{sc.machines} machines"
    lines = [first,
             f"Scenario: {sc.agents:,} agents thinking {sc.think_ms:g} ms per step, "
             f"PostgreSQL {sc.rtt_ms:g} ms away (round trip), {machines}; storage p99 target "
             f"{sc.latency_target_ms:g} ms"
             + ("; row-level security needed" if sc.needs_row_security else "")]
    runs = sorted(set(table["run_id"])) if not table.empty else []
    lines.append(f"Evidence: {scenarios.STEP_WORKLOAD} cells from "
                 + (f"{len(runs)} run(s), newest {runs[-1]}" if runs else "no run"))
    for j in found:
        lines.append(f"  {j.config}: {j.status}: {j.how}")
    if command:
        lines.append(f"To measure it: {command}")
    lines.append("Also consider: LISTEN/NOTIFY is native on PostgreSQL and emulated (polling, "
                 "one machine) on SQLite; SQLite needs no server to set up.")
    return "\n".join(lines)


__all__ = ["DEFAULTS", "MEETS", "MISSES", "NOT_MEASURED", "RULED_OUT", "Scenario", "capacity",
           "judgements", "medians", "recommend", "ruled_out", "verdict"]
