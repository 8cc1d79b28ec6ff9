"""Versioned result files, and load() for notebooks and reports.

results/<run_id>/
  meta.json        schema_version, environment, settings, profile, masked URLs
  summary.csv      tidy: one row per (workload, config, agents, rep, op, metric)
  timeseries.csv   one-second windows per run
  histograms.csv.gz  log-bucketed latency counts per run and operation (for CDFs); runs
                   written before it was compressed have histograms.csv, which load() reads
  raw/samples.csv.gz  every sample (not committed for reference runs)
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

SCHEMA_VERSION = 1
RESULTS_DIR = Path(os.environ.get("STOREKIT_RESULTS_DIR", Path.cwd() / "results"))
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
        s = self.summary
        rows: pd.DataFrame = s[(s["metric"] == metric) & (s["op"] == op)].copy()
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
    """Run ids, oldest first (ids start with a sortable UTC timestamp)."""
    folder = results_dir or RESULTS_DIR
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "meta.json").is_file())


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
    """The newest run, or the named one, as pandas DataFrames."""
    folder = results_dir or RESULTS_DIR
    ids = run_ids(folder)
    if run_id is None:
        if not ids:
            raise FileNotFoundError(f"no benchmark runs in {folder}; run `python -m bench run`")
        run_id = ids[-1]
    path = folder / run_id
    if not (path / "meta.json").is_file():
        raise FileNotFoundError(f"no run {run_id!r} in {folder}; runs: {', '.join(ids) or 'none'}")
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

    return Run(run_id, path, meta, summary, optional("timeseries.csv"),
               optional("histograms.csv.gz", "histograms.csv"))
