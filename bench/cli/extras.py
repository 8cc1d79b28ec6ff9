"""Benchmarks outside the agent workloads: migration speed and notification latency.

python -m bench extras migration [--rows 1000000] [--docs 50000]
python -m bench extras notify [--messages 500] [--listeners 1,4]
Each writes results/extras/<name>-<time>.json and prints its rows. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.cli.base import CliError, HelpFormatter
from bench.harness import arglist, results

HELP = "migration speed and notification latency"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="extra", required=True)
    m = sub.add_parser("migration", help="SQLite -> PostgreSQL migration speed",
                       formatter_class=HelpFormatter)
    m.add_argument("--rows", type=int, default=1_000_000,
                   help="rows of the narrow table migrated")
    m.add_argument("--docs", type=int, default=50_000,
                   help="rows of the JSON document table migrated")
    n = sub.add_parser("notify", help="notification delivery latency",
                       formatter_class=HelpFormatter)
    n.add_argument("--messages", type=int, default=500,
                   help="notifications sent per listener count and backend")
    n.add_argument("--listeners", default="1,4", help="comma-separated listener counts")


def main(args: argparse.Namespace) -> int:
    from bench.investigations import extras

    if args.extra == "migration":
        if args.rows <= 0 or args.docs <= 0:
            raise CliError("--rows and --docs must be positive")
        payload = extras.migration(args.rows, args.docs)
    else:
        try:
            counts = arglist.numbers(args.listeners, int, "--listeners", 1)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        if args.messages <= 0:
            raise CliError("--messages must be positive")
        payload = extras.notify_latency(args.messages, counts)
    for row in payload["results"]:
        print(json.dumps(row))
    print(f"written: {results.write_extra(args.extra, payload, Path(args.results_dir))}")
    return 0
