"""The agent-step workload (asyncio agents in worker processes), the think/rtt scenario
dimensions, the postgres-pgbouncer config and the deployment profile.

Runs are short and few agents think briefly: what is asserted is what the data
determines (counts, invariants, presence of metrics, a round trip never shorter than the
delay added), never a speed."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench.harness import results
from bench.harness.configs import CONFIGS, DEFAULT_CONFIGS
from bench.harness.runner import PROFILES, Plan, Runner, RunSpec, execute, summarise
from bench.harness.workloads import WORKLOADS
from bench.harness.workloads.agent_step import AGENT_ID_STRIDE

SHORT = {"duration": 1.0, "warmup": 0.5, "repetitions": 1, "corpus": 0, "task_workers": 2,
         "keep_samples": False}
RTT = 5


@pytest.fixture(scope="module")
def deployment_run(storekit_postgres_url: str, tmp_path_factory: pytest.TempPathFactory
                   ) -> results.Run:
    """One small grid: 3 configs x rtt 0/5 ms x think 20 ms, 5 agents, 2 workers."""
    out = tmp_path_factory.mktemp("results")
    plan = Plan(workloads=["agent-step"],
                configs=[CONFIGS[n] for n in ("sqlite-wal", "postgres", "postgres-pgbouncer")],
                agents=[5], think_ms=[20], rtt_ms=[0, RTT], **SHORT)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STOREKIT_BENCH_POSTGRES_URL", storekit_postgres_url)
        out_dir, failures = execute(plan, out)
    assert failures == []
    return results.load(out_dir.name, out)


def _value(run: results.Run, metric: str, op: str = "all", **where: Any) -> list[float]:
    rows = results.select(run.summary, metric=metric, op=op, **where)
    return [float(v) for v in rows["value"]]


def test_every_config_runs_and_loses_nothing(deployment_run: results.Run) -> None:
    s = deployment_run.summary
    runs = set(zip(s["config"], s["rtt_ms"], s["think_ms"], strict=True))
    assert runs == {("sqlite-wal", 0, 20), ("postgres", 0, 20), ("postgres", RTT, 20),
                    ("postgres-pgbouncer", 0, 20), ("postgres-pgbouncer", RTT, 20)}
    assert _value(deployment_run, "lost_writes") == [0.0] * 5
    assert all(v > 0 for v in _value(deployment_run, "acked_writes"))
    assert all(v > 0 for v in _value(deployment_run, "ops_per_s", op="step"))
    for metric in ("latency_p50_ms", "latency_p99_ms", "latency_p99.9_ms", "latency_max_ms"):
        assert len(_value(deployment_run, metric, op="step")) == 5, metric
    for metric in ("retries", "conflicts", "errors_total", "step_lag_p50_ms", "step_lag_p99_ms",
                   "step_lag_max_ms", "notifications", "notify_latency_p50_ms"):
        values = _value(deployment_run, metric)
        assert len(values) == 5, metric
        assert all(not math.isnan(v) and v >= 0 for v in values), (metric, values)
    # Every step notified its team; the listeners (LISTEN on the direct server behind
    # PgBouncer) heard from the measurement.
    assert all(v > 0 for v in _value(deployment_run, "notifications"))
    assert set(s["limited_by"]) <= {"", "load generator"}
    assert deployment_run.meta["plan"]["think_ms"] == [20]


def test_sqlite_skips_network_distance_and_says_so(deployment_run: results.Run) -> None:
    skipped = deployment_run.meta["skipped"]
    assert len(skipped) == 1
    assert "sqlite-wal" in skipped[0]
    assert f"rtt_ms={RTT}" in skipped[0]
    sqlite = results.select(deployment_run.summary, config="sqlite-wal")
    assert set(sqlite["rtt_ms"]) == {0}
    assert _value(deployment_run, "rtt_measured_p50_ms", config="sqlite-wal") == []


def test_each_postgres_run_records_the_round_trip_it_measured(
        deployment_run: results.Run) -> None:
    network = deployment_run.meta["network"]
    assert sorted((n["config"], n["rtt_target_ms"]) for n in network) == [
        ("postgres", 0), ("postgres", RTT), ("postgres-pgbouncer", 0),
        ("postgres-pgbouncer", RTT)]
    for entry in network:
        assert entry["rtt_measured_p99_ms"] >= entry["rtt_measured_p50_ms"] > 0
        if entry["rtt_target_ms"]:
            # The proxy never delivers early: half the round trip each way, at least.
            assert entry["rtt_measured_p50_ms"] >= RTT
        measured = _value(deployment_run, "rtt_measured_p50_ms", config=entry["config"],
                          rtt_ms=entry["rtt_target_ms"])
        assert measured == [pytest.approx(entry["rtt_measured_p50_ms"])]


def test_pgbouncer_config_is_provisioned_and_pooled(deployment_run: results.Run) -> None:
    meta = deployment_run.meta
    assert meta["pgbouncer"]["pool_mode"] == "transaction"
    assert "***" in meta["pgbouncer"]["url"]
    assert meta["configs"]["postgres-pgbouncer"]["settings"]["pooler"] == "transaction"
    assert "pooler" not in meta["configs"]["postgres"]["settings"]


def test_plan_expansion() -> None:
    plan = Plan(workloads=["agent-step", "agent-write"],
                configs=[CONFIGS["sqlite-wal"], CONFIGS["postgres"]], agents=[2],
                think_ms=[0, 1000.0], rtt_ms=[0, 1, 5], duration=1.0, warmup=0.0,
                repetitions=2, corpus=0)
    specs = plan.specs()
    assert all(s.rtt_ms == 0 for s in specs if s.config == "sqlite-wal")
    assert all(s.think_ms == 0 for s in specs if s.workload == "agent-write")
    # agent-step: sqlite 2 thinks x 1 rtt, postgres 2 x 3; agent-write: sqlite 1, postgres 3.
    assert len(specs) == 2 * (2 + 6 + 1 + 3)
    assert RunSpec("agent-step", "postgres", 2, 1, 1000, 5) in specs
    assert {s.think_ms for s in specs} == {0, 1000}
    assert all(isinstance(s.think_ms, int) for s in specs)  # 1000.0 -> 1000
    skipped = plan.skipped()
    grid = 2 * 3 * 2 * 2 * 2  # repetitions x rtt x think x workloads x configs
    assert sum(int(line.split()[0]) for line in skipped) == grid - len(specs)
    assert any("SQLite" in line for line in skipped)
    assert any("agent-write at think_ms=1000" in line for line in skipped)
    with pytest.raises(ValueError, match="round trips"):
        Plan(workloads=["agent-step"], configs=[CONFIGS["postgres"]], agents=[1],
             rtt_ms=[-1], duration=1.0, warmup=0.0, repetitions=1, corpus=0)
    with pytest.raises(ValueError, match="think"):
        Plan(workloads=["agent-step"], configs=[CONFIGS["postgres"]], agents=[1],
             think_ms=[-5], duration=1.0, warmup=0.0, repetitions=1, corpus=0)


def test_deployment_profile_and_defaults() -> None:
    from bench.cli import run

    parser = argparse.ArgumentParser()
    run.add_arguments(parser)
    plan = run.build_plan(parser.parse_args(["--profile", "deployment"]))
    assert [c.name for c in plan.configs] == ["sqlite-wal", "postgres", "postgres-pgbouncer"]
    assert plan.workloads == ["agent-step"]
    specs = plan.specs()
    assert len(specs) == 3 * (1 + 4 + 4)
    assert {(s.agents, s.think_ms) for s in specs} == {(10, 1000), (100, 1000), (1000, 1000)}
    assert plan.seconds() <= 15 * 60
    assert len(plan.skipped()) == 3  # sqlite-wal at 1, 5 and 20 ms
    # The new workload and config are asked for by name, not part of `all`.
    quick = run.build_plan(parser.parse_args(["--rtt-ms", "0,2.5", "--think-ms", "0"]))
    assert quick.rtt_ms == [0, 2.5]
    assert "agent-step" not in quick.workloads
    assert quick.configs == DEFAULT_CONFIGS
    assert "postgres-pgbouncer" not in [c.name for c in DEFAULT_CONFIGS]
    assert PROFILES["deployment"]["think_ms"] == [1000]


def test_summary_rows_carry_the_scenario_and_old_runs_load(tmp_path: Path) -> None:
    old = tmp_path / "20260101T000000Z-aaaa"
    results.write(old, {"run_id": old.name, "plan": {"repetitions": 1}},
                  [{"workload": "agent-write", "config": "sqlite-wal", "backend": "sqlite",
                    "agents": 2, "rep": 0, "op": "all", "metric": "ops_per_s", "value": 1.0}],
                  [], [])
    summary = pd.read_csv(old / "summary.csv")
    summary.drop(columns=["think_ms", "rtt_ms", "limited_by"]).to_csv(
        old / "summary.csv", index=False)  # as written before these columns existed
    run = results.load(old.name, tmp_path)
    assert list(run.summary.columns) == results.SUMMARY_KEYS
    row = run.summary.iloc[0]
    assert (row["think_ms"], row["rtt_ms"], row["limited_by"]) == (0, 0, "")


def test_verify_detects_a_lost_write_and_a_lost_update(tmp_path: Path) -> None:
    plan = Plan(workloads=["agent-step"], configs=[CONFIGS["sqlite-wal"]], agents=[3],
                think_ms=[10], **SHORT)
    runner = Runner(plan, None, tmp_path)
    module = WORKLOADS["agent-step"]
    try:
        outcome = runner.run_one(RunSpec("agent-step", "sqlite-wal", 3, 0, 10, 0))
        rows = {r["metric"]: r["value"] for r in summarise(outcome, plan.duration)[0]
                if r["op"] == "all"}
        assert rows["lost_writes"] == 0
        assert len({a.agent for a in outcome.results}) == 3
        lags = [x for r in outcome.results for x in r.lag]
        assert len(lags) == sum(len(r.latency) for r in outcome.results) > 0
        url = runner.urls[("sqlite-wal", "agent-step")]
        acked = sorted(a for r in outcome.results for a in r.acked)
        run_key = runner.run_key
        with CONFIGS["sqlite-wal"].open(url) as db:
            # The invariant, directly: every agent's counter is its committed steps.
            low = run_key * AGENT_ID_STRIDE
            total = db.get("SELECT sum(steps) AS n FROM agents WHERE id >= ?", (low,))
            assert total == {"n": len(acked)}
            clean = module.verify(db, run_key, outcome.results)
            assert clean["lost"] == 0
            who, seq = acked[-1]
            db.run("DELETE FROM results WHERE agent_id = ? AND seq = ?", (who, seq))
            lost_row = module.verify(db, run_key, outcome.results)
            assert lost_row["lost"] >= 1
            assert str(who) in lost_row["detail"]
            db.run("INSERT INTO results (run_key, agent_id, seq, doc) VALUES (?, ?, ?, '{}')",
                   (run_key, who, seq))
            assert module.verify(db, run_key, outcome.results)["lost"] == 0
            db.run("UPDATE agents SET steps = steps - 1 WHERE id = ?", (who,))
            lost_update = module.verify(db, run_key, outcome.results)
            assert lost_update["lost"] == 1
            assert "lost updates" in lost_update["detail"]
    finally:
        runner.close()


def test_each_repetition_starts_a_cell_with_another_workload_and_config() -> None:
    plan = Plan(workloads=["langgraph", "langgraph-postgres"], configs=[CONFIGS["postgres"]],
                agents=[1, 4], duration=1.0, warmup=0.0, repetitions=3, corpus=0)
    specs = plan.specs()
    firsts = {}
    for s in specs:
        firsts.setdefault((s.rep, s.agents), s.workload)
    assert [firsts[(rep, 4)] for rep in range(3)] == [
        "langgraph", "langgraph-postgres", "langgraph"]
    assert len(specs) == 3 * 2 * 2  # every run is still there
    both = Plan(workloads=["agent-write"], configs=[CONFIGS["sqlite-wal"], CONFIGS["postgres"]],
                agents=[1], duration=1.0, warmup=0.0, repetitions=2, corpus=0).specs()
    assert [s.config for s in both] == ["sqlite-wal", "postgres", "postgres", "sqlite-wal"]
