"""Is the harness the bottleneck? fsync latency, and the harness against pgbench and a
bare sqlite3 loop running each workload's write transaction, at 1, 4 and 16 agents;
writes results/extras/calibration-<time>.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.base import CliError, console, table
from bench.harness import results
from bench.investigations.calibrate import AGENTS, calibrate
from bench.investigations.calibrate_tx import WRITE_TXS

HELP = "harness vs pgbench / bare sqlite3 on each workload's write transaction"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=5.0,
                   help="measured seconds per run (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=2,
                   help="alternating baseline/harness pairs per point (default: %(default)s)")
    p.add_argument("--agents", default=",".join(map(str, AGENTS)),
                   help="agent counts, comma-separated (default: %(default)s)")
    p.add_argument("--backend", choices=("all", "sqlite", "postgres"), default="all",
                   help="which backends to calibrate (default: %(default)s)")
    p.add_argument("--workload", default="all",
                   help=f"workloads, comma-separated, of: {', '.join(WRITE_TXS)}"
                        " (default: all)")


def _tps(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.2f}"


def main(args: argparse.Namespace) -> int:
    agents = tuple(int(a) for a in str(args.agents).split(",") if a.strip())
    workloads = None if args.workload == "all" else [
        w.strip() for w in args.workload.split(",") if w.strip()]
    unknown = [w for w in workloads or [] if w not in WRITE_TXS]
    if unknown or not agents or min(agents) <= 0:
        raise CliError(f"unknown workload {unknown} or bad --agents {args.agents!r}")
    report = calibrate(Path(args.results_dir), seconds=args.seconds, rounds=args.rounds,
                       agents=agents, workloads=workloads, progress=console.print,
                       backends=("sqlite", "postgres") if args.backend == "all"
                       else (args.backend,))
    path = results.write_extra("calibration", report, Path(args.results_dir))
    out = table(f"Harness vs the same transaction with nothing around it; {path}",
                ("workload", "backend"),
                ("agents", "baseline", "baseline tps", "psycopg tps", "storekit stock tps",
                 "storekit tps", "harness tps", "harness / baseline", "psycopg / baseline",
                 "storekit / driver", "stock / driver", "fair / stock",
                 "harness / storekit"))
    for r in report["ratios"]:
        out.add_row(r["workload"], r["backend"], str(r["agents"]), r["baseline"],
                    f"{r['baseline_tps']:,.0f}", _tps(r.get("driver_tps")),
                    _tps(r.get("stock_tps")), _tps(r.get("storekit_tps")),
                    f"{r['harness_tps']:,.0f}", f"{r['ratio']:.2f}",
                    _ratio(r.get("driver_ratio")), _ratio(r.get("storekit_ratio")),
                    _ratio(r.get("stock_ratio")), _ratio(r.get("fair_ratio")),
                    _ratio(r.get("harness_ratio")))
    console.print(out)
    console.print("driver: plain psycopg on PostgreSQL, bare sqlite3 on SQLite. psycopg /"
                  " baseline x storekit / driver x harness / storekit = harness / baseline."
                  " On SQLite storekit / driver = stock / driver (the storekit loop without"
                  " fair locking: the adapter's calls) x fair / stock (taking turns across"
                  " processes).")
    console.print(f"fdatasync p50 {report['fdatasync_p50_ms']:.3f} ms;"
                  f" {'; '.join(report['skipped'])}")
    return 0
