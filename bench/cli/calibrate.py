"""Is the harness the bottleneck? fsync latency, and the harness against pgbench and a
bare sqlite3 loop on the same statement; writes results/extras/calibration-<time>.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.base import console, table
from bench.harness import results
from bench.investigations.calibrate import calibrate

HELP = "fsync latency and harness-vs-pgbench/sqlite3 ratios"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=5.0,
                   help="measured seconds of each loop (harness, bare sqlite3, pgbench)")
    p.add_argument("--clients", type=int, default=4,
                   help="pgbench clients and harness agents in the PostgreSQL comparison")


def main(args: argparse.Namespace) -> int:
    report = calibrate(Path(args.results_dir), seconds=args.seconds, clients=args.clients)
    path = results.write_extra("calibration", {"seconds": args.seconds,
                                               "clients": args.clients, "results": [report]},
                               Path(args.results_dir))
    out = table("Calibration (same machine, same run)", ("measure",), ("value",))
    for key, value in report.items():
        out.add_row(key, f"{value:,.3f}" if isinstance(value, float) else str(value))
    console.print(out)
    console.print(f"written: {path}", highlight=False)
    return 0
