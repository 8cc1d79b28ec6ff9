"""The delay proxy against a direct connection: p50/p99 of a no-op statement (SELECT 1)
per round trip, direct and through the proxy at each --rtt-ms, with the proxy's added time
and its error against the target. Numbers from a busy machine are rough."""

from __future__ import annotations

import argparse

from bench.cli.base import CliError
from bench.harness import arglist
from bench.investigations.proxy_check import measure

HELP = "the delay proxy's added round-trip time and accuracy"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", help="a postgresql:// URL reachable over TCP")
    p.add_argument("--rtt-ms", default="0,1,5,20",
                   help="comma-separated round trips to simulate (default: %(default)s)")
    p.add_argument("-n", type=int, default=1000,
                   help="statements per measurement (default: %(default)s)")


def main(args: argparse.Namespace) -> int:
    try:
        rtts = arglist.numbers(args.rtt_ms, float, "--rtt-ms", 0.0)
    except ValueError as exc:
        raise CliError(f"{exc} (milliseconds)") from None
    if args.n <= 0:
        raise CliError("-n must be positive")
    for line in measure(args.url, rtts, args.n):
        print(line)
    return 0
