"""python -m bench.headline [RUN_ID]: the README's tables, generated from a run."""

from __future__ import annotations

import sys

import pandas as pd

from bench import recommend, results, style


def medians(s: pd.DataFrame, workload: str, metric: str, op: str) -> pd.DataFrame:
    """One metric's median over repetitions: a row per config, a column per agent count."""
    series = recommend.medians(s, workload, metric, op)
    if series.empty:
        empty: pd.DataFrame = pd.DataFrame()
        return empty
    table: pd.DataFrame = series.unstack("agents")
    return table


def headline(run: results.Run) -> str:
    s = run.summary
    lines = []
    for workload, metric, op, title, fmt in (
        ("agent-write", "ops_per_s", "all", "agent-write: committed transactions/s", "{:,.0f}"),
        ("agent-write", "latency_p99_ms", "transaction", "agent-write: p99 latency (ms)",
         "{:,.1f}"),
        ("agent-write", "retries", "all",
         "agent-write: conflicts retried by db.atomic() per run", "{:,.0f}"),
        ("agent-write", "errors_total", "all",
         "agent-write: failed transactions per run (after retries)", "{:,.0f}"),
        ("read-while-write", "latency_p99_ms", "point_read",
         "read-while-write: reader p99 latency (ms)", "{:,.2f}"),
        ("search", "latency_p50_ms", "search", "search: p50 latency (ms)", "{:,.2f}"),
    ):
        table = medians(s, workload, metric, op)
        if table.empty:
            continue  # a run from before the metric existed
        lines.append(f"**{title}** (median of {run.meta['plan']['repetitions']} runs)\n")
        lines.append("| config | " + " | ".join(f"{a} agents" for a in table.columns) + " |")
        lines.append("|---|" + "---|" * len(table.columns))
        for config, row in table.iterrows():
            cells = [fmt.format(v) if pd.notna(v) else "-" for v in row]
            lines.append(f"| {config} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.extend(fair_locking_table(s))
    lines.append("**Claims of the seed document**\n")
    lines.append("| claim | verdict | evidence |")
    lines.append("|---|---|---|")
    for c in recommend.claims(s):
        lines.append(f"| {c.claim} | {c.verdict} | {c.evidence} |")
    return "\n".join(lines)


def fair_locking_table(s: pd.DataFrame) -> list[str]:
    """sqlite-wal (fair hand-off) against sqlite-wal-stock, per agent count."""
    pair = style.FAIR_PAIR
    if not set(pair) <= set(s[s["workload"] == "agent-write"]["config"]):
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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        run = results.load(args[0] if args else None)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(headline(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
