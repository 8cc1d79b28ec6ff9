"""How long a sleeping process takes to run again once another process wakes it: two
processes play ping-pong over pipes (see bench/investigations/wakeup.py). Writes
results/extras/wakeup-<time>.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.cli.base import CliError, console
from bench.harness import arglist, results
from bench.investigations.wakeup import measure, summarise, table

HELP = "process wake-up latency by time asleep"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sleeps", default="0.5,2,10,40", help="comma-separated milliseconds")
    p.add_argument("--rounds", type=int, default=200,
                   help="ping-pong round trips per sleep time")
    p.add_argument("--no-write", action="store_true", help="print only, no results file")


def main(args: argparse.Namespace) -> int:
    try:
        sleeps = arglist.numbers(args.sleeps, float, "--sleeps", 0.0)
    except ValueError as exc:
        raise CliError(f"{exc} (milliseconds)") from None
    if args.rounds <= 0:
        raise CliError("--rounds must be positive")
    rows: list[dict[str, Any]] = [
        {"sleep_ms": sleep_ms, **summarise(measure(sleep_ms / 1000, args.rounds))}
        for sleep_ms in sleeps]
    console.print(table(rows))
    if not args.no_write:
        path = results.write_extra("wakeup", {"benchmark": "process wake-up latency over pipes",
                                              "rounds": args.rounds, "results": rows},
                                   Path(args.results_dir))
        print(f"written: {path}")
    return 0
