"""A backend recommendation for a deployment scenario, from the runs that measured it.

Every run (local and reference) is evidence, the newest measurement of each cell winning;
--run restricts it to one run. The rules are in bench/analysis/scenarios.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.analysis.recommend import recommend
from bench.analysis.scenarios import Scenario
from bench.cli.base import CliError, console

HELP = "a backend recommendation for a deployment scenario, from the runs that measured it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agents", type=int, required=True, help="concurrent agents")
    p.add_argument("--think-ms", type=float, default=1000.0,
                   help="median model time per step in ms (0: closed loop)")
    p.add_argument("--rtt-ms", type=float, default=0.0,
                   help="round trip to PostgreSQL in ms (0: same machine)")
    p.add_argument("--machines", type=int, default=1,
                   help="machines the agents run on (more than one rules SQLite out)")
    p.add_argument("--needs-network", action="store_true",
                   help="agents on other machines: the same as --machines 2")
    p.add_argument("--needs-row-security", action="store_true",
                   help="rows visible per user, enforced by the database")
    p.add_argument("--latency-target-ms", type=float, default=50.0,
                   help="storage p99 per step the deployment can accept, in ms")
    p.add_argument("--run", help="only this run id, or 'reference' (unset: every run)")


def main(args: argparse.Namespace) -> int:
    if args.machines <= 0:  # not hidden by --needs-network's minimum of 2
        raise CliError(f"--machines must be a positive integer, got {args.machines}")
    try:
        scenario = Scenario(agents=args.agents, think_ms=args.think_ms, rtt_ms=args.rtt_ms,
                            machines=max(args.machines, 2 if args.needs_network else 1),
                            latency_target_ms=args.latency_target_ms,
                            needs_row_security=args.needs_row_security)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    console.print(recommend(scenario, run_id=args.run, results_dir=Path(args.results_dir)),
                  markup=False, highlight=False, soft_wrap=True)
    return 0
