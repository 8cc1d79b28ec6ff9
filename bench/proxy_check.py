"""Measure the delay proxy against a direct connection: python -m bench.proxy_check URL.

Prints p50/p99 of a no-op statement (SELECT 1) per round trip, direct and through the
proxy at each --rtt-ms, with the proxy's added time and its error against the target.
Numbers from a shared machine are rough: rerun on a quiet one before quoting them.
"""

from __future__ import annotations

import argparse
import statistics

from bench.proxy import proxied_url, round_trips


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.proxy_check")
    parser.add_argument("url", help="a postgresql:// URL reachable over TCP")
    parser.add_argument("--rtt-ms", default="0,1,5,20")
    parser.add_argument("-n", type=int, default=1000, help="statements per measurement")
    args = parser.parse_args(argv)
    direct = round_trips(args.url, args.n)
    base = statistics.median(direct) * 1000.0
    print(f"{'target ms':>10} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'error':>7}")
    print(f"{'direct':>10} {base:8.3f} {_p(direct, 0.99):8.3f}")
    for rtt in (float(x) for x in args.rtt_ms.split(",")):
        with proxied_url(args.url, rtt) as url:
            samples = round_trips(url, args.n)
        p50 = statistics.median(samples) * 1000.0
        added = p50 - base
        error = f"{(added - rtt) / rtt:+.1%}" if rtt else ""
        print(f"{rtt:10g} {p50:8.3f} {_p(samples, 0.99):8.3f} {added:10.3f} {error:>7}")


if __name__ == "__main__":
    main()
