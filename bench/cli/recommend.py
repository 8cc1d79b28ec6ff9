"""A backend recommendation for a workload, from a run's measured capacity curves.

The run is the newest one (the reference run unless a newer local run exists), or --run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.analysis.recommend import recommend
from bench.cli.base import console

HELP = "a backend recommendation from the newest results"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agents", type=int, required=True,
                   help="concurrent agents (processes) writing")
    p.add_argument("--writes-per-agent", type=float, required=True,
                   help="writes per second per agent")
    p.add_argument("--readers", type=int, default=0,
                   help="concurrent readers besides them (stated in the output; the "
                        "decision rests on the writes)")
    p.add_argument("--needs-network", action="store_true",
                   help="clients on other machines than the database")
    p.add_argument("--needs-row-security", action="store_true",
                   help="rows visible per user, enforced by the database")
    p.add_argument("--latency-target-ms", type=float, default=50.0,
                   help="the write p99 the workload can accept, in milliseconds")
    p.add_argument("--run", help="run id, or 'reference' (default: newest)")


def main(args: argparse.Namespace) -> int:
    console.print(recommend(agents=args.agents, writes_per_agent=args.writes_per_agent,
                            readers=args.readers, needs_network=args.needs_network,
                            needs_row_security=args.needs_row_security,
                            latency_target_ms=args.latency_target_ms,
                            run_id=args.run, results_dir=Path(args.results_dir)))
    return 0
