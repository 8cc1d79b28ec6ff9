"""Measured cells per deployment scenario, and what they settle about an asked scenario.

A cell is one (config, agents, think_ms, rtt_ms) a run measured, with medians over its
repetitions. Runs written before the scenario columns existed have no think_ms or rtt_ms
columns: they measured think 0 (closed loop) and rtt 0 (loopback), so both read as 0.

Rules for an asked scenario (agents A, think T, round trip R), per config, in order:
1. Measured: a cell with exactly A, T and R answers (the newest run that measured it).
2. Bounded: storage time does not fall when a scenario gets harder (more agents, less think
   time, a longer round trip), so a measured cell at least as hard as the asked one that
   meets the target settles "meets", and a measured cell at most as hard that misses it
   settles "misses". The nearest such cell (agents compared on a log scale) is quoted.
3. Otherwise: not measured, with the `bench run` command that would measure it.
SQLite is a file on the same machine: the round trip to PostgreSQL does not apply to it, so
its cells match any R.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.harness import results
from bench.harness.runner import MAX_AGENTS, MAX_RTT_MS, MAX_THINK_MS
from bench.harness.workloads import WORKLOADS

STEP_WORKLOAD = "agent-step"  # agents as asyncio tasks that think, then write
SCENARIO_COLUMNS = ("think_ms", "rtt_ms")
LAG_LIMIT_MS = 10.0  # a run whose step-start lag p99 exceeds this measured the load generator
# The load generator's own step-start lag p99 (ms), under whichever name the run wrote it.
LAG_METRICS = ("step_lag_p99_ms", "step_start_lag_p99_ms", "start_lag_p99_ms", "lag_p99_ms")
LIMITED_METRIC = "load_generator_limited"  # 1 when the harness marked the run itself
ERROR_BUDGET = 0.001  # at most 0.1% of steps may fail after db.atomic()'s retries
KEY = ["config", "agents", "think_ms", "rtt_ms"]


@dataclass(frozen=True)
class Scenario:
    agents: int
    think_ms: float
    rtt_ms: float
    machines: int = 1
    latency_target_ms: float = 50.0
    needs_row_security: bool = False

    def __post_init__(self) -> None:
        # The bounds of `bench run` (its Plan): the command printed for an unmeasured
        # scenario must be one it accepts. NaN fails every comparison, so each is `not`.
        if not (0 < self.agents <= MAX_AGENTS) or not self.machines > 0:
            raise ValueError(f"agents must be from 1 to {MAX_AGENTS} and machines positive")
        if not (0 <= self.think_ms <= MAX_THINK_MS):
            raise ValueError(f"think time must be milliseconds from 0 to {MAX_THINK_MS}")
        if not (0 <= self.rtt_ms <= MAX_RTT_MS):
            raise ValueError(f"round-trip time must be milliseconds from 0 to {MAX_RTT_MS}")
        if not (0 < self.latency_target_ms < math.inf):
            raise ValueError("the latency target must be a positive number of milliseconds")


@dataclass(frozen=True)
class Judgement:
    config: str
    status: str  # MEETS, MISSES, NOT_MEASURED or RULED_OUT
    how: str  # why: the cell quoted and the rule used, or the reason it is ruled out
    cell: dict[str, Any] | None = None


MEETS, MISSES, NOT_MEASURED, RULED_OUT = "meets", "misses", "not measured", "ruled out"


def with_scenario(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with think_ms and rtt_ms columns (0 where a run predates them)."""
    frame: pd.DataFrame = summary.copy()
    for column in SCENARIO_COLUMNS:
        frame[column] = (pd.to_numeric(frame[column], errors="coerce").fillna(0.0)
                         if column in frame else 0.0)
    return frame


def main_op(summary: pd.DataFrame, workload: str) -> str:
    declared = WORKLOADS.get(workload)
    if declared is not None:
        return declared.main_op
    ops = set(summary.loc[summary["workload"] == workload, "op"])
    return next((op for op in ("storage", "step", "transaction") if op in ops), "all")


def _median(s: pd.DataFrame, metric: str, op: str, name: str) -> pd.Series:
    rows = s[(s["metric"] == metric) & (s["op"] == op)]
    series: pd.Series = rows.groupby(KEY)["value"].median().rename(name)
    return series


def cells(summary: pd.DataFrame, workload: str = STEP_WORKLOAD) -> pd.DataFrame:
    """One row per measured cell of a workload: medians of throughput (ops_per_s), the main
    operation's p99, errors, lost writes, the load generator's lag, and whether it lagged."""
    s = with_scenario(summary)
    s = s[s["workload"] == workload]
    columns = [*KEY, "backend", "ops_per_s", "p99_ms", "errors", "acked", "lost",
               "lag_p99_ms", "limited", "reps"]
    if s.empty:
        empty: pd.DataFrame = pd.DataFrame(columns=columns)
        return empty
    parts = [_median(s, "ops_per_s", "all", "ops_per_s"),
             _median(s, "latency_p99_ms", main_op(s, workload), "p99_ms"),
             _median(s, "errors_total", "all", "errors"),
             _median(s, "acked_writes", "all", "acked"),
             _median(s, "lost_writes", "all", "lost"),
             _median(s, LIMITED_METRIC, "all", "limited_flag")]
    lags = [_median(s, m, "all", "lag_p99_ms") for m in LAG_METRICS]
    parts.append(next((lag for lag in lags if not lag.empty), lags[0]))
    table = pd.concat(parts, axis=1)
    table["reps"] = s.groupby(KEY)["rep"].nunique()
    if "limited_by" in s.columns:  # the harness's own mark (bench.harness.results)
        table["marked"] = s.groupby(KEY)["limited_by"].agg(
            lambda v: any(isinstance(x, str) and x for x in v))
    else:
        table["marked"] = False
    table["backend"] = s.groupby(KEY)["backend"].first()
    table = table.reset_index()
    table = table[table["p99_ms"].notna()]
    for column in ("errors", "lost", "acked"):
        table[column] = table[column].fillna(0.0)
    table["limited"] = ((table["lag_p99_ms"].fillna(0.0) > LAG_LIMIT_MS)
                        | (table["limited_flag"].fillna(0.0) > 0)
                        | table["marked"].fillna(False).astype(bool))
    result: pd.DataFrame = table[columns]
    return result


def meets_target(cell: pd.Series | dict[str, Any], target_ms: float) -> bool:
    """Storage p99 within the target, no lost write, and failures within ERROR_BUDGET."""
    steps = float(cell["acked"]) + float(cell["errors"])
    error_share = float(cell["errors"]) / steps if steps > 0 else 0.0
    return bool(float(cell["p99_ms"]) <= target_ms and float(cell["lost"]) == 0
                and error_share <= ERROR_BUDGET)


def evidence(results_dir: Path | None = None, run_id: str | None = None,
             workload: str = STEP_WORKLOAD) -> pd.DataFrame:
    """Cells from one run (run_id) or from every run, local and reference, keeping the
    newest run's measurement of each cell; a run_id column says which run."""
    folder = results_dir or results.RESULTS_DIR
    if run_id is not None:
        ids = [results.locate(run_id, folder).name]
    else:
        ids = sorted(set(results.run_ids(folder)) | set(results.reference_ids(folder)))
    frames = []
    for rid in ids:
        run = results.load(rid, folder)
        found = cells(run.summary, workload)
        if not found.empty:
            frames.append(found.assign(run_id=rid))
    if not frames:
        none: pd.DataFrame = cells(pd.DataFrame(columns=results.SUMMARY_KEYS), workload)
        tagged: pd.DataFrame = none.assign(run_id="")
        return tagged
    table = pd.concat(frames, ignore_index=True)
    newest: pd.DataFrame = (table.sort_values("run_id")
                            .drop_duplicates(KEY, keep="last").reset_index(drop=True))
    return newest


def _distance(cell: pd.Series, sc: Scenario) -> float:
    return (abs(math.log(float(cell["agents"]) / sc.agents))
            + abs(float(cell["think_ms"]) - sc.think_ms) / 1000.0
            + abs(float(cell["rtt_ms"]) - sc.rtt_ms) / 10.0)


def describe(cell: dict[str, Any], rtt_applies: bool = True) -> str:
    where = f", rtt {cell['rtt_ms']:g} ms" if rtt_applies else ""
    text = (f"{int(cell['agents']):,} agents, think {cell['think_ms']:g} ms{where}"
            f" (run {cell.get('run_id') or '?'}): {cell['ops_per_s']:,.0f} steps/s, "
            f"storage p99 {cell['p99_ms']:.1f} ms")
    if cell["errors"]:
        text += f", {cell['errors']:,.0f} failed steps"
    if cell["limited"]:
        text += (f"; the load generator lagged (start lag p99 {cell['lag_p99_ms']:.0f} ms > "
                 f"{LAG_LIMIT_MS:g} ms), so this measured the harness as much as the store")
    return text


def judge(table: pd.DataFrame, config: str, sc: Scenario) -> Judgement:
    """What the measured cells of one config settle about the scenario (module rules)."""
    rows = table[table["config"] == config]
    rtt_applies = not (rows["backend"] == "sqlite").any()
    rtt = rows["rtt_ms"] if rtt_applies else pd.Series(sc.rtt_ms, index=rows.index)
    exact = rows[(rows["agents"] == sc.agents) & (rows["think_ms"] == sc.think_ms)
                 & (rtt == sc.rtt_ms)]
    target = sc.latency_target_ms
    if not exact.empty:
        # SQLite measured at several round trips (none applies): the worst one answers.
        cell = exact.sort_values("p99_ms").iloc[-1].to_dict()
        ok = meets_target(cell, target)
        return Judgement(config, MEETS if ok else MISSES,
                         f"measured at {describe(cell, rtt_applies)}", cell)
    harder = rows[(rows["agents"] >= sc.agents) & (rows["think_ms"] <= sc.think_ms)
                  & (rtt >= sc.rtt_ms)]
    harder = harder[[meets_target(r, target) for _, r in harder.iterrows()]]
    if not harder.empty:
        cell = _nearest(harder, sc)
        return Judgement(config, MEETS, "a harder scenario meets the target, measured at "
                         f"{describe(cell, rtt_applies)}", cell)
    easier = rows[(rows["agents"] <= sc.agents) & (rows["think_ms"] >= sc.think_ms)
                  & (rtt <= sc.rtt_ms)]
    easier = easier[[not meets_target(r, target) for _, r in easier.iterrows()]]
    if not easier.empty:
        cell = _nearest(easier, sc)
        return Judgement(config, MISSES, "an easier scenario already misses the target, "
                         f"measured at {describe(cell, rtt_applies)}", cell)
    if rows.empty:
        return Judgement(config, NOT_MEASURED, "no run measured this config")
    return Judgement(config, NOT_MEASURED, "no measured cell settles it (measured agents "
                     f"{_values(rows['agents'])}, think {_values(rows['think_ms'])} ms"
                     + (f", rtt {_values(rows['rtt_ms'])} ms" if rtt_applies else "") + ")")


def _nearest(rows: pd.DataFrame, sc: Scenario) -> dict[str, Any]:
    order = sorted(rows.index, key=lambda i: _distance(rows.loc[i], sc))
    cell: dict[str, Any] = rows.loc[order[0]].to_dict()
    return cell


def _values(series: pd.Series) -> str:
    return ", ".join(f"{v:g}" for v in sorted(set(series.astype(float))))


def run_command(sc: Scenario, configs: list[str]) -> str:
    """The `bench run` command that measures the scenario for these configs."""
    return (f"python -m bench run --workload {STEP_WORKLOAD} --config {','.join(configs)} "
            f"--agents {sc.agents} --think-ms {sc.think_ms:g} --rtt-ms {sc.rtt_ms:g}")
