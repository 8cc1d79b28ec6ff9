"""Is the harness the bottleneck? fsync latency, and the harness against pgbench and a
bare sqlite3 loop on the same statement; writes results/extras/calibration-<time>.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from bench.cli.base import console
from bench.harness import results
from bench.investigations.calibrate import calibrate

HELP = "fsync latency and harness-vs-pgbench/sqlite3 ratios"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--clients", type=int, default=4)


def main(args: argparse.Namespace) -> int:
    report = calibrate(Path(args.results_dir), seconds=args.seconds, clients=args.clients)
    path = results.write_extra("calibration", {"seconds": args.seconds,
                                               "clients": args.clients, "results": [report]},
                               Path(args.results_dir))
    table = Table(title=f"Calibration (same machine, same run), written to {path}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in report.items():
        table.add_row(key, f"{value:,.3f}" if isinstance(value, float) else str(value))
    console.print(table)
    return 0
