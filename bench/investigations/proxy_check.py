"""Measure the delay proxy against a direct connection (python -m bench proxy URL).

Prints p50/p99 of a no-op statement (SELECT 1) per round trip, direct and through the
proxy at each --rtt-ms, with the proxy's added time and its error against the target.
Numbers from a shared machine are rough: rerun on a quiet one before quoting them.
"""

from __future__ import annotations

import statistics

from bench.harness.proxy import proxied_url, round_trips


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0


def measure(url: str, rtts: list[float], n: int) -> list[str]:
    """One line per measurement: direct, then through the proxy at each round trip."""
    direct = round_trips(url, n)
    base = statistics.median(direct) * 1000.0
    lines = [f"{'target ms':>10} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'error':>7}",
             f"{'direct':>10} {base:8.3f} {_p(direct, 0.99):8.3f}"]
    for rtt in rtts:
        with proxied_url(url, rtt) as through:
            samples = round_trips(through, n)
        p50 = statistics.median(samples) * 1000.0
        added = p50 - base
        error = f"{(added - rtt) / rtt:+.1%}" if rtt else ""
        lines.append(f"{rtt:10g} {p50:8.3f} {_p(samples, 0.99):8.3f} {added:10.3f} {error:>7}")
    return lines
