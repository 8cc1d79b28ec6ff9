"""How long a sleeping process takes to run again once another process wakes it.

python -m bench wakeup [--sleeps 0.5,2,10,40] [--rounds 200]

Two processes play ping-pong over pipes: one sleeps for the given time, notes the clock and
writes a byte; the other, blocked reading, notes the clock as soon as it runs. Under fair
hand-off every change of writer process wakes a process (and then its writer thread) that
has slept for a whole round of the queue, about 40 ms with 16 writers, so this is the
machine's part of the cost of a turn. Writes results/extras/wakeup-<time>.json.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from rich.table import Table


def measure(sleep_s: float, rounds: int) -> list[float]:
    """Seconds from the write to the woken process running, one per round.

    The sleeper is the child: it blocks in read() for sleep_s before each byte arrives,
    as a queued writer does between turns. time.monotonic() is one clock for both
    processes on Linux.
    """
    ping_r, ping_w = os.pipe()
    pong_r, pong_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the woken side: report when it ran, until the other side closes
        try:
            os.close(ping_w)  # or its own copy would keep the end-of-file from coming
            while os.read(ping_r, 1):
                os.write(pong_w, time.monotonic().hex().encode().ljust(32))
        finally:
            os._exit(0)
    latencies = []
    try:
        for _ in range(rounds):
            time.sleep(sleep_s)
            sent = time.monotonic()
            os.write(ping_w, b"x")
            woke = float.fromhex(os.read(pong_r, 32).decode().strip())
            latencies.append(woke - sent)
    finally:
        os.close(ping_w)  # the child reads end-of-file and exits, even after an error here
        os.waitpid(pid, 0)
        for fd in (ping_r, pong_r, pong_w):
            os.close(fd)
    return latencies


def summarise(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        raise ValueError("no rounds measured")
    ordered = sorted(latencies)
    return {"p50_us": statistics.median(ordered) * 1e6,
            "p90_us": ordered[int(len(ordered) * 0.9)] * 1e6,
            "mean_us": statistics.fmean(ordered) * 1e6}


def table(rows: list[dict[str, Any]]) -> Table:
    out = Table(title="Wake-up latency by time asleep")
    for col in ("slept ms", "p50 µs", "p90 µs", "mean µs"):
        out.add_column(col, justify="right")
    for row in rows:
        out.add_row(f"{row['sleep_ms']:g}", *(f"{row[k]:.1f}"
                                              for k in ("p50_us", "p90_us", "mean_us")))
    return out
