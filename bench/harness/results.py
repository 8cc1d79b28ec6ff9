"""Versioned result files, and load() for notebooks and reports.

results/reference/<run_id>/  the committed reference run (a run is committed on purpose)
results/<run_id>/            new runs; git-ignored, removed with `python -m bench prune`
results/extras/              JSON of the investigations (calibrate, handoff, wakeup, extras)

Each run folder holds:
  meta.json        schema_version, environment, settings, profile, masked URLs
  summary.csv      tidy: one row per (workload, config, agents, rep, op, metric)
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
SUMMARY_KEYS = ["workload", "config", "backend", "agents", "rep", "op", "metric", "value"]


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
    pd.DataFrame(summary, columns=SUMMARY_KEYS).to_csv(path / "summary.csv", index=False)
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


def load(run_id: str | None = None, results_dir: Path | None = None) -> Run:
    """A run (see locate(): by default the newest) as pandas DataFrames."""
    path = locate(run_id, results_dir)
    meta = json.loads((path / "meta.json").read_text())
    summary = pd.read_csv(path / "summary.csv")
    meta, summary = _upgrade(meta, summary)

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
