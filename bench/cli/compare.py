"""Two runs side by side: medians of throughput, p99 and errors, and their ratio."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from bench.cli.base import console
from bench.harness import results

HELP = "compare two runs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_a")
    p.add_argument("run_b")


def main(args: argparse.Namespace) -> int:
    a = results.load(args.run_a, Path(args.results_dir))
    b = results.load(args.run_b, Path(args.results_dir))
    keys = ["workload", "config", "agents", "op", "metric"]
    wanted = {"ops_per_s", "latency_p99_ms", "errors_total"}
    ma = a.summary[a.summary["metric"].isin(wanted)].groupby(keys)["value"].median()
    mb = b.summary[b.summary["metric"].isin(wanted)].groupby(keys)["value"].median()
    joined = ma.to_frame("a").join(mb.to_frame("b"), how="inner")
    table = Table(title=f"{a.run_id} (A) vs {b.run_id} (B), medians")
    for col in (*keys, "A", "B", "B/A"):
        table.add_column(col)
    for idx, row in joined.iterrows():
        ratio = row["b"] / row["a"] if row["a"] else float("nan")
        table.add_row(*(str(x) for x in idx), f"{row['a']:,.2f}", f"{row['b']:,.2f}",
                      f"{ratio:.2f}")
    console.print(table)
    return 0
