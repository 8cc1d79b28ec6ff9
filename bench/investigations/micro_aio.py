"""The storekit.aio part of `python -m bench micro`: per-operation medians and ratios, and
the 1,000-task agent run, from the suite's JSON (benchmarks whose extra_info has
suite="aio": tests/benchmarks/test_aio_overhead.py and test_aio_agents.py).

One aio benchmark call is a batch of ops_per_call operations, so a median per operation
is the call's median / ops_per_call. Each operation is compared with its baseline: the
sync storekit API on SQLite (the issue's goal: at most 5x for a point select, 3x for the
read-then-write transaction), psycopg's AsyncConnection on PostgreSQL (at most 1.2x).
Reported, never asserted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

BASELINE = {"sqlite": "storekit", "postgres": "psycopg"}
AGENT_COLUMNS = ("tasks", "steps", "rounds", "throughput_tx_s", "sync_one_thread_tx_s",
                 "vs_sync_one_thread", "lag_p50_ms", "lag_p99_ms", "lag_max_ms", "errors",
                 "lost")


def _aio(json_path: Path) -> list[dict[str, Any]]:
    data = json.loads(json_path.read_text())
    return [b for b in data["benchmarks"] if b["extra_info"].get("suite") == "aio"]


def per_operation(json_path: Path) -> pd.DataFrame:
    """One row per (operation, backend, client): the median per operation, and its ratio
    to the backend's baseline client."""
    rows = [{"operation": b["extra_info"]["operation"], "backend": b["extra_info"]["backend"],
             "client": b["extra_info"]["client"],
             "median_us": b["stats"]["median"] * 1e6 / b["extra_info"]["ops_per_call"]}
            for b in _aio(json_path) if "ops_per_call" in b["extra_info"]]
    frame = pd.DataFrame(rows, columns=["operation", "backend", "client", "median_us"])
    base = {(r.operation, r.backend): r.median_us for r in frame.itertuples()
            if r.client == BASELINE.get(str(r.backend))}
    frame["baseline"] = [BASELINE.get(b, "") for b in frame["backend"]]
    frame["vs_baseline"] = [m / base[(o, b)] if (o, b) in base else float("nan")
                            for o, b, m in zip(frame["operation"], frame["backend"],
                                               frame["median_us"], strict=True)]
    ordered: pd.DataFrame = frame.sort_values(["backend", "operation", "client"])
    ordered.index = pd.RangeIndex(len(ordered))
    return ordered


def agent_runs(json_path: Path) -> pd.DataFrame:
    rows = [{"operation": b["extra_info"]["operation"], "backend": b["extra_info"]["backend"],
             **{k: b["extra_info"].get(k) for k in AGENT_COLUMNS}}
            for b in _aio(json_path) if "tasks" in b["extra_info"]]
    frame: pd.DataFrame = pd.DataFrame(rows, columns=["operation", "backend", *AGENT_COLUMNS])
    return frame


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def write_csvs(json_path: Path) -> None:
    """Both tables as CSV beside the JSON (nothing when the run had no aio benchmarks)."""
    ops, agents = per_operation(json_path), agent_runs(json_path)
    if not ops.empty:
        ops.to_csv(json_path.with_suffix(".aio.csv"), index=False, float_format="%.5g")
    if not agents.empty:
        agents.to_csv(json_path.with_suffix(".aio-agents.csv"), index=False,
                      float_format="%.5g")


def tables(json_path: Path) -> list[Table]:
    """The per-operation table and the agent-run table, for bench/cli/micro.py to show."""
    ops, agents = per_operation(json_path), agent_runs(json_path)
    out = []
    if not ops.empty:
        table = Table(title="storekit.aio per operation (median of batched calls)")
        for col in ("operation", "backend", "client", "median us", "vs baseline", "baseline"):
            table.add_column(col, justify="right" if col.startswith(("median", "vs")) else "left")
        for r in ops.itertuples():
            table.add_row(str(r.operation), str(r.backend), str(r.client),
                          _fmt(r.median_us, 1), _fmt(r.vs_baseline), str(r.baseline))
        out.append(table)
    if not agents.empty:
        table = Table(title="storekit.aio: concurrent agent-write tasks in one process"
                            " (medians of alternating sync and async rounds)")
        for col in ("operation", "backend", "tasks x steps", "rounds", "tx/s",
                    "sync 1 thread tx/s",
                    "ratio", "lag p50 ms", "lag p99 ms", "lag max ms", "errors", "lost"):
            table.add_column(col, justify="left" if col in ("operation", "backend") else "right")
        for r in agents.itertuples():
            table.add_row(str(r.operation), str(r.backend), f"{r.tasks} x {r.steps}",
                          _fmt(r.rounds, 0), _fmt(r.throughput_tx_s, 0),
                          _fmt(r.sync_one_thread_tx_s, 0),
                          _fmt(r.vs_sync_one_thread),
                          _fmt(r.lag_p50_ms), _fmt(r.lag_p99_ms), _fmt(r.lag_max_ms),
                          str(r.errors), str(r.lost))
        out.append(table)
    return out
