"""Where the write lock's time goes when SQLite writer processes take turns: agent-write's
transaction in N processes on one WAL file, fair hand-off and the stock busy handler
interleaved (see bench/investigations/handoff.py). Writes results/extras/handoff-<time>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench.cli.base import CliError, console
from bench.harness import arglist, results
from bench.investigations.handoff import measure, summarise, table

HELP = "write-lock turns between SQLite writer processes, fair vs stock"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agents", default="4,16", help="comma-separated process counts")
    p.add_argument("--seconds", type=float, default=3.0,
                   help="measured seconds per (process count, mode)")
    p.add_argument("--repetitions", type=int, default=3,
                   help="rounds of every (process count, mode), interleaved")
    p.add_argument("--wal-autocheckpoint", type=int, default=1000, metavar="PAGES",
                   help="checkpoint threshold (a small one shows whether the WAL restarts)")
    p.add_argument("--no-write", action="store_true", help="print only, no results file")


def main(args: argparse.Namespace) -> int:
    try:
        counts = arglist.numbers(args.agents, int, "--agents", 2)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.seconds <= 0 or args.repetitions <= 0 or args.wal_autocheckpoint <= 0:
        raise CliError("--seconds, --repetitions and --wal-autocheckpoint must be positive")
    rows: list[dict[str, Any]] = []
    for rep in range(args.repetitions):
        for agents in counts:
            for fair in (True, False):  # interleaved, so drift hits both modes alike
                run = measure(agents, fair, args.seconds, args.wal_autocheckpoint)
                found = summarise(run.spans)
                rows.append({"agents": agents, "mode": "fair" if fair else "stock",
                             "rep": rep, **found, "wal_peak_mb": run.wal_peak_bytes / 2**20})
                print(f"rep {rep + 1} agents {agents} {rows[-1]['mode']}: "
                      f"{found['commits_per_s']:,.0f} commits/s", file=sys.stderr)
    console.print(table(rows))
    if not args.no_write:
        path = results.write_extra("handoff", {
            "benchmark": "write-lock turns: agent-write transaction, fair vs stock",
            "seconds": args.seconds, "repetitions": args.repetitions,
            "wal_autocheckpoint": args.wal_autocheckpoint, "results": rows},
            Path(args.results_dir))
        print(f"written: {path}")
    return 0
