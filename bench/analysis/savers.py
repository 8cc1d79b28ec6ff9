"""LangGraph checkpointers side by side: storekit's saver against LangGraph's own, per
backend and process count, from a run of the langgraph workloads."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.harness import results

# Each langgraph workload is one saver; the comparisons are within a backend.
SAVERS = {
    "langgraph": "storekit (StorekitSaver, storekit.aio)",
    "langgraph-sqlite": "langgraph-checkpoint-sqlite AsyncSqliteSaver",
    "langgraph-sqlite-sync": "langgraph-checkpoint-sqlite SqliteSaver",
    "langgraph-postgres": "langgraph-checkpoint-postgres AsyncPostgresSaver",
}
RIVAL = {"sqlite": "langgraph-sqlite", "postgres": "langgraph-postgres"}  # the goal's yardstick
METRICS = {"steps_per_s": "steps/s", "checkpoint_put_p50_ms": "put p50 ms",
           "checkpoint_put_p99_ms": "put p99 ms", "checkpoint_put_max_ms": "put max ms",
           "errors_total": "errors", "errors_busy": "busy", "lost_writes": "lost"}


def find_run(results_dir: Path | None = None) -> results.Run | None:
    """The newest run holding the storekit saver's workload, among the local runs, the
    reference runs and the runs kept under reference/extras/ (of results_dir and of the
    repository's results folder)."""
    bases = {b / sub for b in {results_dir or results.RESULTS_DIR, results.RESULTS_DIR}
             for sub in ("", "extras", results.REFERENCE, f"{results.REFERENCE}/extras")}
    held = [p for base in bases if base.is_dir() for p in base.iterdir()
            if (p / "meta.json").is_file() and (p / "summary.csv").is_file()
            and "langgraph" in set(pd.read_csv(p / "summary.csv", usecols=["workload"])
                                   ["workload"])]
    if not held:
        return None
    newest = max(held, key=lambda p: p.name.removeprefix("langgraph-"))
    return results.load(str(newest.resolve()))


def table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (backend, saver, agents): the median of the repetitions of each metric,
    and steps/s as a ratio of LangGraph's async saver on the same backend."""
    rows = summary[summary["workload"].isin(list(SAVERS)) & (summary["op"] == "all")
                   & summary["metric"].isin(list(METRICS))]
    frame = (rows.groupby(["backend", "workload", "agents", "metric"])["value"].median()
             .unstack("metric").reindex(columns=list(METRICS)).reset_index())
    rival = frame[frame["workload"].isin(list(RIVAL.values()))].set_index(
        ["backend", "agents"])["steps_per_s"]
    frame["vs_langgraph"] = [
        s / rival.get((b, a), float("nan")) for b, a, s in
        zip(frame["backend"], frame["agents"], frame["steps_per_s"], strict=True)]
    frame["saver"] = frame["workload"].map(SAVERS)
    order = {w: i for i, w in enumerate(SAVERS)}
    ordered: pd.DataFrame = frame.sort_values(
        ["backend", "workload", "agents"], key=lambda c: c.map(order) if c.name == "workload"
        else c).reset_index(drop=True)
    return ordered


def markdown(frame: pd.DataFrame) -> str:
    """The table as docs/langgraph.md shows it."""
    lines = ["| backend | saver | agents | steps/s | vs LangGraph's async saver "
             "| checkpoint put p50 / p99 / max ms | errors (busy) | lost |",
             "|---|---|---|---|---|---|---|---|"]
    for r in frame.itertuples():
        lines.append(
            f"| {r.backend} | {r.saver} | {r.agents} | {r.steps_per_s:.1f} "
            f"| {r.vs_langgraph:.2f}x | {r.checkpoint_put_p50_ms:.1f} / "
            f"{r.checkpoint_put_p99_ms:.1f} / {r.checkpoint_put_max_ms:.1f} "
            f"| {r.errors_total:.0f} ({r.errors_busy:.0f}) | {r.lost_writes:.0f} |")
    return "\n".join(lines)
