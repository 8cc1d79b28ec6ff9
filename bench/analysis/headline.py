"""The README's tables, generated from a run; `python -m bench headline` prints them.

Each table has a NAME (TABLE_NAMES) by which README.md and docs/*.md mark the copy they
show, so `python -m bench headline reference --check FILE...` can tell when it drifted
(bench.analysis.markers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.analysis import recommend, style
from bench.analysis.claims import NOT_MEASURED, claims
from bench.harness import results


@dataclass(frozen=True)
class MetricTable:
    name: str
    workload: str
    metric: str
    op: str
    title: str
    fmt: str


METRIC_TABLES = (
    MetricTable("agent-write-throughput", "agent-write", "ops_per_s", "all",
                "agent-write: committed transactions/s", "{:,.0f}"),
    MetricTable("agent-write-p99", "agent-write", "latency_p99_ms", "transaction",
                "agent-write: p99 latency (ms)", "{:,.1f}"),
    MetricTable("agent-write-retries", "agent-write", "retries", "all",
                "agent-write: conflicts retried by db.atomic() per run", "{:,.0f}"),
    MetricTable("agent-write-errors", "agent-write", "errors_total", "all",
                "agent-write: failed transactions per run (after retries)", "{:,.0f}"),
    MetricTable("read-while-write-reader-p99", "read-while-write", "latency_p99_ms",
                "point_read", "read-while-write: reader p99 latency (ms)", "{:,.2f}"),
    MetricTable("search-p50", "search", "latency_p50_ms", "search",
                "search: p50 latency (ms)", "{:,.2f}"),
)
TABLE_NAMES = (*(t.name for t in METRIC_TABLES), "agent-step", "fair-locking", "claims")


def medians(s: pd.DataFrame, workload: str, metric: str, op: str) -> pd.DataFrame:
    """One metric's median over repetitions: a row per config, a column per agent count."""
    series = recommend.medians(s, workload, metric, op)
    if series.empty:
        empty: pd.DataFrame = pd.DataFrame()
        return empty
    table: pd.DataFrame = series.unstack("agents")
    return table


def metric_table(s: pd.DataFrame, spec: MetricTable, repetitions: object,
                 runs_dir: Path | None = None) -> list[str]:
    table = medians(s, spec.workload, spec.metric, spec.op)
    if table.empty:
        return []  # a run from before the metric existed
    lines = [f"**{spec.title}** (median of {repetitions} runs)\n",
             "| config | " + " | ".join(f"{a} agents" for a in table.columns) + " |",
             "|---|" + "---|" * len(table.columns)]
    for config, row in table.iterrows():
        cells = [spec.fmt.format(v) if pd.notna(v) else "-" for v in row]
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
    if runs_dir is not None:
        lines += ceiling_rows(spec, [int(a) for a in table.columns], runs_dir)
    lines.append("")
    return lines


def ceiling_rows(spec: MetricTable, agents: list[int], runs_dir: Path) -> list[str]:
    """Under a PostgreSQL throughput table: pgbench running the same transaction at the
    same agent counts, from the latest `bench calibrate` beside the run (results/extras for
    a local run, results/reference/extras for a reference run), so a reader sees how much
    of a difference is the Python client. Beside the run, not anywhere under results/: a
    local calibration must not change the reference run's tables."""
    if spec.metric != "ops_per_s":
        return []
    from bench.investigations.calibrate import pgbench_ceiling

    ceiling = pgbench_ceiling(runs_dir)
    cells = [ceiling.get((spec.workload, a)) for a in agents]
    if all(c is None for c in cells):
        return []
    return ["| pgbench, same transaction (bench calibrate) | "
            + " | ".join(spec.fmt.format(c) if c is not None else "-" for c in cells) + " |"]


def claims_table(s: pd.DataFrame) -> list[str]:
    judged = claims(s)
    if all(c.verdict == NOT_MEASURED for c in judged):
        return []  # a run of other workloads (agent-step) judges none of them
    lines = ["**Claims of the seed document**\n", "| claim | verdict | evidence |", "|---|---|---|"]
    lines += [f"| {c.claim} | {c.verdict} | {c.evidence} |" for c in judged]
    return lines


def tables(run: results.Run) -> dict[str, list[str]]:
    """Each table's lines by name, in print order; a table the run cannot fill is absent."""
    s = run.summary
    out = {t.name: metric_table(s, t, run.meta["plan"]["repetitions"], run.path.parent)
           for t in METRIC_TABLES}
    out["agent-step"] = agent_step_table(s)
    out["fair-locking"] = fair_locking_table(s)
    out["claims"] = claims_table(s)
    return {name: lines for name, lines in out.items() if lines}


def headline(run: results.Run) -> str:
    return "\n".join(line for lines in tables(run).values() for line in lines)


def agent_step_table(s: pd.DataFrame) -> list[str]:
    """agent-step: storage p99 per step and steps/s, a row per (config, round trip), a
    column per agent count; * marks a run the load generator limited."""
    from bench.analysis import scenarios

    cells = scenarios.cells(s, "agent-step")
    if cells.empty:
        return []
    thinks = sorted({float(t) for t in cells["think_ms"]})
    agents = sorted({int(a) for a in cells["agents"]})
    lines = [f"**agent-step: storage p99 per step (ms) and steps/s** (agents thinking"
             f" {', '.join(f'{t:,.0f}' for t in thinks)} ms per step; median of the"
             " repetitions; * the load generator lagged)\n",
             "| config | round trip | " + " | ".join(f"{a:,} agents" for a in agents) + " |",
             "|---|---|" + "---|" * len(agents)]
    for (config, _), group in cells.groupby(["config", "rtt_ms"], sort=True):
        by_agents = {int(r["agents"]): r for _, r in group.iterrows()}
        row = []
        for a in agents:
            r = by_agents.get(a)
            row.append("-" if r is None else
                       f"{r['p99_ms']:,.1f} ms, {r['ops_per_s']:,.0f}/s"
                       + ("*" if r["limited"] else ""))
        rtt_ms = float(group["rtt_ms"].iloc[0])
        lines.append(f"| {config} | {rtt_ms:g} ms | " + " | ".join(row) + " |")
    lines.append("")
    return lines


def fair_locking_table(s: pd.DataFrame) -> list[str]:
    """sqlite-wal (fair hand-off) against sqlite-wal-stock, per agent count."""
    pair = style.FAIR_PAIR
    if not set(pair) <= set(results.select(s, workload="agent-write")["config"]):
        return []
    cols = {}
    for metric, op, label in (("ops_per_s", "all", "commits/s"),
                              ("fairness_share_ratio", "all", "share max/min"),
                              ("latency_p99.9_ms", "transaction", "p99.9 ms"),
                              ("latency_max_ms", "transaction", "max ms")):
        table = medians(s, "agent-write", metric, op)
        for config, mode in zip(pair, ("fair", "stock"), strict=True):
            cols[f"{label} {mode}"] = table.loc[config]
    table = pd.DataFrame(cols)
    table.insert(2, "fair/stock", table["commits/s fair"] / table["commits/s stock"])
    lines = ["**agent-write: fair hand-off (sqlite-wal) against the stock busy handler "
             "(sqlite-wal-stock)** (medians)\n",
             "| agents | " + " | ".join(table.columns) + " |",
             "|---|" + "---|" * len(table.columns)]
    for agents, row in table.iterrows():
        cells = [f"{v:,.0f}" if v >= 100 else f"{v:,.2f}" if v < 10 else f"{v:,.1f}"
                 for v in row]
        lines.append(f"| {agents} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines
