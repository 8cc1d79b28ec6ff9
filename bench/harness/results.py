"""Versioned result files, and load() for notebooks and reports.

results/reference/<run_id>/  the committed reference run (a run is committed on purpose)
results/<run_id>/            new runs; git-ignored, removed with `python -m bench prune`
results/extras/              JSON of the investigations (calibrate, handoff, wakeup, extras)

Each run folder holds:
  meta.json        schema_version, environment, settings, profile, masked URLs; also
                   skipped (why grid combinations were not run, e.g. SQLite at rtt > 0),
                   network (per PostgreSQL run: its spec, rtt_target_ms and the measured
                   rtt_measured_p50_ms / rtt_measured_p99_ms of SELECT 1 through the proxy),
                   pgbouncer (pool_mode, default_pool_size, masked url) or null
  summary.csv      tidy: one row per (workload, config, agents, think_ms, rtt_ms, rep, op,
                   metric), and limited_by on every row (see SCENARIO_COLUMNS)
  timeseries.csv   one-second windows per run
  histograms.csv.gz  log-bucketed latency counts per run and operation (for CDFs); runs
                   written before it was compressed have histograms.csv, which load() reads
  raw/samples.csv.gz  every sample (not committed for reference runs)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench import ROOT

SCHEMA_VERSION = 1
RESULTS_DIR = Path(os.environ.get("STOREKIT_RESULTS_DIR", ROOT / "results"))
REFERENCE = "reference"  # the folder, under the results folder, of committed runs
SUMMARY_KEYS = ["workload", "config", "backend", "agents", "think_ms", "rtt_ms", "rep", "op",
                "metric", "value", "limited_by"]
# Columns added after the first runs were written, with the value older runs stand for:
#   think_ms    median think time between an agent's steps (lognormal; 0 = closed loop;
#               only asyncio workloads such as agent-step think)
#   rtt_ms      round trip added between the agents and PostgreSQL by the delay proxy
#               (0 = direct; SQLite runs are always 0)
#   limited_by  "load generator" when the run's step-start lag p99 exceeded 10 ms, or an
#               agent made its first measured attempt only after the window closed (the
#               harness could not keep its schedule: the figures measure it, not the
#               store), else empty
# Metrics of the agent-step workload (op "step" unless noted; op "all" for run-wide ones):
#   ops_per_s (steps/s), latency_{p50,p90,p99,p99.9,max,mean}_ms (storage time per step:
#   context reads, the transaction, the notify), commit_p50/p99_ms; op "all": retries,
#   conflicts (steps that needed a retry), errors_*, acked_writes, lost_writes,
#   step_lag_{p50,p99,max}_ms, notifications, notify_latency_{p50,p99,max}_ms.
# Every PostgreSQL run (any workload), op "all": rtt_measured_p50_ms, rtt_measured_p99_ms.
SCENARIO_COLUMNS: dict[str, Any] = {"think_ms": 0, "rtt_ms": 0, "limited_by": ""}


@dataclass
class Run:
    run_id: str
    path: Path
    meta: dict[str, Any]
    summary: pd.DataFrame
    timeseries: pd.DataFrame
    histograms: pd.DataFrame

    def metric(self, metric: str, op: str = "all") -> pd.DataFrame:
        """Rows of one metric, one per (workload, config, agents, rep)."""
        rows: pd.DataFrame = select(self.summary, metric=metric, op=op).copy()
        return rows


def select(frame: pd.DataFrame, **where: object) -> pd.DataFrame:
    """The rows of a summary (or time series, histograms) whose columns equal the given
    values, e.g. select(s, workload="search", op="search"); a None value filters nothing."""
    mask = pd.Series(True, index=frame.index)
    for column, value in where.items():
        if value is not None:
            mask &= frame[column] == value
    rows: pd.DataFrame = frame[mask]
    return rows


def write(path: Path, meta: dict[str, Any], summary: list[dict[str, Any]],
          timeseries: list[dict[str, Any]], histograms: list[dict[str, Any]],
          samples: pd.DataFrame | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    meta = {"schema_version": SCHEMA_VERSION, **meta}
    (path / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    frame = _with_scenario_columns(pd.DataFrame(summary, columns=SUMMARY_KEYS))
    frame.to_csv(path / "summary.csv", index=False)
    pd.DataFrame(timeseries).to_csv(path / "timeseries.csv", index=False)
    # The largest file of a run (6.5 MB as text for a full profile, 0.5 MB compressed).
    pd.DataFrame(histograms).to_csv(path / "histograms.csv.gz", index=False,
                                    compression="gzip")
    if samples is not None:
        (path / "raw").mkdir(exist_ok=True)
        samples.to_csv(path / "raw" / "samples.csv.gz", index=False, compression="gzip")
    return path


def run_ids(results_dir: Path | None = None) -> list[str]:
    """Local (new) run ids, oldest first (ids start with a sortable UTC timestamp)."""
    folder = results_dir or RESULTS_DIR
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "meta.json").is_file())


def reference_ids(results_dir: Path | None = None) -> list[str]:
    """The committed reference run ids, oldest first."""
    return run_ids((results_dir or RESULTS_DIR) / REFERENCE)


def locate(run_id: str | None = None, results_dir: Path | None = None) -> Path:
    """A run's folder. None: the newest run, local or reference (so the reference run
    unless a newer local run exists); "reference": the newest reference run; else the
    named run, looked up among local runs, then reference runs."""
    folder = results_dir or RESULTS_DIR
    local, reference = run_ids(folder), reference_ids(folder)
    if run_id is None or run_id == REFERENCE:
        candidates = reference if run_id == REFERENCE else local + reference
        if not candidates:
            where = folder / REFERENCE if run_id == REFERENCE else folder
            raise FileNotFoundError(f"no benchmark runs in {where}; run `python -m bench run`")
        newest = max(candidates)
        return folder / (newest if newest in local else f"{REFERENCE}/{newest}")
    for path in (folder / run_id, folder / REFERENCE / run_id):
        if (path / "meta.json").is_file():
            return path
    known = ", ".join(local + [f"{i} (reference)" for i in reference]) or "none"
    raise FileNotFoundError(f"no run {run_id!r} in {folder}; runs: {known}")


# One function per old version, each returning the next version's (meta, summary). Empty
# while schema_version 1 is the only one written; load() applies them in order.
UPGRADES: dict[int, Any] = {}


def _upgrade(meta: dict[str, Any], summary: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    version = meta.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ValueError(
            f"results schema_version {version!r} is not one this kit reads (1..{SCHEMA_VERSION})"
        )
    while version < SCHEMA_VERSION:
        meta, summary = UPGRADES[version](meta, summary)
        version = meta["schema_version"]
    return meta, summary


def _with_scenario_columns(summary: pd.DataFrame) -> pd.DataFrame:
    """Every SUMMARY_KEYS column, in order: a run written before a column existed gets
    the value it stands for (think 0, rtt 0, not limited by the load generator)."""
    for column, value in SCENARIO_COLUMNS.items():
        if column not in summary.columns:
            summary[column] = value
        elif summary[column].isna().any():  # cast first: "" into a float column (all NaN)
            kind = object if isinstance(value, str) else summary[column].dtype
            summary[column] = summary[column].astype(kind).fillna(value)
    extra = [c for c in summary.columns if c not in SUMMARY_KEYS]
    ordered: pd.DataFrame = summary[[c for c in SUMMARY_KEYS if c in summary.columns] + extra]
    return ordered


def load(run_id: str | None = None, results_dir: Path | None = None) -> Run:
    """A run (see locate(): by default the newest) as pandas DataFrames."""
    path = locate(run_id, results_dir)
    meta = json.loads((path / "meta.json").read_text())
    summary = pd.read_csv(path / "summary.csv")
    meta, summary = _upgrade(meta, summary)
    summary = _with_scenario_columns(summary)

    def optional(*names: str) -> pd.DataFrame:
        """The first of `names` that exists; empty if none does or it holds no rows."""
        frame: pd.DataFrame = pd.DataFrame()
        for file in (path / name for name in names):
            if file.is_file():
                with contextlib.suppress(pd.errors.EmptyDataError):  # written with no rows
                    frame = pd.read_csv(file)
                break
        return frame

    return Run(path.name, path, meta, summary, optional("timeseries.csv"),
               optional("histograms.csv.gz", "histograms.csv"))


def write_extra(name: str, payload: dict[str, Any], results_dir: Path | None = None) -> Path:
    """An investigation's figures as results/extras/<name>-<UTC time>.json, with the
    machine and versions they were measured on."""
    from bench.harness.environment import describe

    out = (results_dir or RESULTS_DIR) / "extras"
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"{name}-{stamp}.json"
    payload = {"schema_version": 1, **payload, **describe(out, ROOT)}
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path
