"""Unit tests for the harness's summaries."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import storekit
from bench.harness import metrics


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert metrics.percentile(values, 50) == 50
    assert metrics.percentile(values, 99) == 99
    assert metrics.percentile(values, 99.9) == 100
    assert metrics.percentile(values, 0) == 1
    assert math.isnan(metrics.percentile([], 50))
    with pytest.raises(ValueError, match="outside"):
        metrics.percentile(values, 101)


@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), min_size=1))
def test_percentiles_are_ordered_samples(values: list[float]) -> None:
    s = metrics.latency_summary(values)
    assert s["p50"] <= s["p90"] <= s["p99"] <= s["p99.9"] <= s["max"]
    assert s["p99.9"] in values
    assert s["count"] == len(values)


def test_fairness_shares() -> None:
    f = metrics.fairness([10, 30, 60])
    assert f["share_min"] == pytest.approx(0.1)
    assert f["share_max"] == pytest.approx(0.6)
    assert f["share_ratio"] == pytest.approx(6.0)
    assert metrics.fairness([0, 5])["share_ratio"] == math.inf
    assert math.isnan(metrics.fairness([])["share_min"])


def test_timeseries_windows_by_completion() -> None:
    rows = metrics.timeseries(starts=[0.1, 0.5, 1.2, 1.9, 2.5],
                              latencies=[0.1, 0.6, 0.1, 0.05, 0.1],
                              ok=[True, True, True, False, True], duration=3)
    assert [r["ops"] for r in rows] == [1, 2, 1]
    assert [r["errors"] for r in rows] == [0, 1, 0]
    assert rows[1]["max"] == pytest.approx(0.6)


def test_histogram_buckets_bound_their_values() -> None:
    values = [1e-4, 1.1e-4, 5e-3, 0.2, 1.5]
    hist = metrics.histogram(values)
    assert sum(hist.values()) == len(values)
    for v in values:
        upper = metrics.bucket_upper(metrics.bucket_of(v))
        assert v < upper <= v * 1.05


def test_error_classification() -> None:
    assert metrics.classify_error(storekit.BusyError("database is locked")) == "busy"
    assert metrics.classify_error(storekit.OperationalError(
        "could not serialize access due to concurrent update")) == "serialization"
    assert metrics.classify_error(storekit.OperationalError("deadlock detected")) == "deadlock"
    assert metrics.classify_error(storekit.PoolTimeout("no connection")) == "timeout"
    assert metrics.classify_error(storekit.DatabaseUnavailable("gone")) == "unavailable"
    assert metrics.classify_error(storekit.UniqueViolation("dup")) == "other"


def test_repetitions_median_min_max() -> None:
    assert metrics.aggregate_repetitions([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0,
                                                              "max": 3.0}
    assert metrics.aggregate_repetitions([1.0, 4.0])["median"] == 2.5
    assert math.isnan(metrics.aggregate_repetitions([math.nan])["median"])
