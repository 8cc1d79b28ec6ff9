"""python -m bench.headline [RUN_ID]: the README's tables, generated from a run."""

from __future__ import annotations

import sys

import pandas as pd

from bench import recommend, results


def headline(run: results.Run) -> str:
    s = run.summary
    lines = []
    for workload, metric, op, title, fmt in (
        ("agent-write", "ops_per_s", "all", "agent-write: committed transactions/s", "{:,.0f}"),
        ("agent-write", "latency_p99_ms", "transaction", "agent-write: p99 latency (ms)",
         "{:,.1f}"),
        ("read-while-write", "latency_p99_ms", "point_read",
         "read-while-write: reader p99 latency (ms)", "{:,.2f}"),
        ("search", "latency_p50_ms", "search", "search: p50 latency (ms)", "{:,.2f}"),
    ):
        f = s[(s["workload"] == workload) & (s["metric"] == metric) & (s["op"] == op)]
        table = f.groupby(["config", "agents"])["value"].median().unstack("agents")
        lines.append(f"**{title}** (median of {run.meta['plan']['repetitions']} runs)\n")
        lines.append("| config | " + " | ".join(f"{a} agents" for a in table.columns) + " |")
        lines.append("|---|" + "---|" * len(table.columns))
        for config, row in table.iterrows():
            cells = [fmt.format(v) if pd.notna(v) else "-" for v in row]
            lines.append(f"| {config} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("**Claims of the seed document**\n")
    lines.append("| claim | verdict | evidence |")
    lines.append("|---|---|---|")
    for c in recommend.claims(s):
        lines.append(f"| {c.claim} | {c.verdict} | {c.evidence} |")
    return "\n".join(lines)


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
