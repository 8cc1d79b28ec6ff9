"""Summaries of raw samples: percentiles, fairness, one-second time series, histograms.

Percentiles come from the full samples (nearest rank), never from averages of averages.
Histograms use log-spaced buckets (HDR-style, about 4% wide) so CDFs can be drawn from a
few hundred numbers per run instead of every sample.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
ERROR_TYPES = ("busy", "serialization", "deadlock", "timeout", "unavailable", "other")
_BUCKETS_PER_DECADE = 60
_MIN_LATENCY = 1e-6


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values (NaN when there are none)."""
    if not sorted_values:
        return math.nan
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is outside 0..100")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def latency_summary(latencies: Iterable[float]) -> dict[str, float]:
    values = sorted(latencies)
    out = {f"p{p:g}": percentile(values, p) for p in PERCENTILES}
    out["max"] = float(values[-1]) if values else math.nan
    out["mean"] = sum(values) / len(values) if values else math.nan
    out["count"] = float(len(values))
    return out


def fairness(per_agent_ops: Sequence[int]) -> dict[str, float]:
    """The lowest and highest agent's share of completed operations, and their ratio."""
    total = sum(per_agent_ops)
    if not per_agent_ops or total == 0:
        return {"share_min": math.nan, "share_max": math.nan, "share_ratio": math.nan}
    lo, hi = min(per_agent_ops), max(per_agent_ops)
    return {
        "share_min": lo / total,
        "share_max": hi / total,
        "share_ratio": hi / lo if lo else math.inf,
    }


@dataclass
class Window:
    second: int
    ops: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)


def timeseries(starts: Sequence[float], latencies: Sequence[float], ok: Sequence[bool],
               duration: float) -> list[dict[str, float]]:
    """One row per one-second window of the measurement (by completion time)."""
    n = max(1, math.ceil(duration))
    windows = [Window(i) for i in range(n)]
    for start, latency, success in zip(starts, latencies, ok, strict=True):
        index = int(start + latency)
        if 0 <= index < n:
            w = windows[index]
            if success:
                w.ops += 1
                w.latencies.append(latency)
            else:
                w.errors += 1
    rows = []
    for w in windows:
        values = sorted(w.latencies)
        rows.append({"second": float(w.second), "ops": float(w.ops), "errors": float(w.errors),
                     "p50": percentile(values, 50), "p99": percentile(values, 99),
                     "max": values[-1] if values else math.nan})
    return rows


def bucket_of(latency: float) -> int:
    return math.floor(math.log10(max(latency, _MIN_LATENCY)) * _BUCKETS_PER_DECADE)


def bucket_upper(bucket: int) -> float:
    return float(10 ** ((bucket + 1) / _BUCKETS_PER_DECADE))


def histogram(latencies: Iterable[float]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for value in latencies:
        b = bucket_of(value)
        counts[b] = counts.get(b, 0) + 1
    return counts


def classify_error(exc: BaseException) -> str:
    """Map an exception to one of ERROR_TYPES, by storekit class first, then message."""
    import storekit

    text = str(exc).lower()
    if isinstance(exc, storekit.BusyError) or "database is locked" in text:
        return "busy"
    if "deadlock" in text:
        return "deadlock"
    if "could not serialize" in text or "serializ" in text:
        return "serialization"
    if isinstance(exc, storekit.PoolTimeout) or "timeout" in text:
        return "timeout"
    if isinstance(exc, storekit.DatabaseUnavailable):
        return "unavailable"
    return "other"


def aggregate_repetitions(values: Sequence[float]) -> dict[str, float]:
    """Median with min and max across repetitions (NaNs ignored)."""
    clean = sorted(v for v in values if not math.isnan(v))
    if not clean:
        return {"median": math.nan, "min": math.nan, "max": math.nan}
    mid = len(clean) // 2
    median = clean[mid] if len(clean) % 2 else (clean[mid - 1] + clean[mid]) / 2
    return {"median": median, "min": clean[0], "max": clean[-1]}
