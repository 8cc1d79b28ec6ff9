"""The langgraph workload on each saver, briefly, through `python -m bench run`; and its
verification finds a checkpoint that vanished after its invocation was acknowledged."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import ROOT
from bench.harness import results
from bench.harness.agent import AgentContext, AgentResult
from bench.harness.configs import CONFIGS
from bench.harness.workloads import WORKLOADS

SAVERS = {"langgraph": ("sqlite-wal", "postgres"), "langgraph-sqlite": ("sqlite-wal",),
          "langgraph-sqlite-sync": ("sqlite-wal",), "langgraph-postgres": ("postgres",)}
CHECKPOINTS_PER_INVOKE = 5  # input, start and one per node (think, act, respond)


def test_every_saver_runs_and_loses_nothing(storekit_postgres_url: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--results-dir", str(tmp_path), "run",
         "--workload", ",".join(SAVERS), "--config", "sqlite-wal,postgres", "--agents", "2",
         "--duration", "0.6", "--warmup", "0.2", "--repetitions", "1", "--no-samples"],
        capture_output=True, text=True, timeout=600, check=False, cwd=ROOT,
        env={**os.environ, "STOREKIT_BENCH_POSTGRES_URL": storekit_postgres_url})
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = results.load(results_dir=tmp_path).summary
    # Each saver on its own configs only: LangGraph's SQLite savers never on PostgreSQL.
    assert set(zip(s["workload"], s["config"], strict=True)) == {
        (w, c) for w, configs in SAVERS.items() for c in configs}
    for (workload, config), group in s.groupby(["workload", "config"]):
        value = dict(zip(group["metric"], group["value"], strict=False))
        where = f"{workload} on {config}"
        assert value["lost_writes"] == 0, where
        assert value["acked_writes"] > 0, where
        assert value["acked_writes"] % CHECKPOINTS_PER_INVOKE == 0, where
        assert value["steps_per_s"] > 0, where
        for stat in ("p50", "p99", "max"):
            assert value[f"checkpoint_put_{stat}_ms"] > 0, where
            assert value[f"checkpoint_writes_{stat}_ms"] > 0, where
        assert "errors_busy" in value, where  # "database is locked" is counted as busy


@pytest.mark.parametrize("workload", ["langgraph", "langgraph-sqlite", "langgraph-sqlite-sync"])
def test_verification_finds_a_vanished_checkpoint(workload: str, tmp_path: Path) -> None:
    declared = WORKLOADS[workload]
    url = f"sqlite:///{tmp_path / 'lg.db'}"
    with CONFIGS["sqlite-wal"].open(url) as db:
        declared.setup(db, {})
        declared.prepare(db, 1, ["writer"])
        ctx = AgentContext(0, "writer", 1, time.time(), 0.0, 1.0, None, seed=1)
        op = declared.operation(db, ctx)
        acks = [op(seq).ack for seq in range(3)]
        del op  # closes the agent's saver and event loop
        gc.collect()
        result = AgentResult(0, "writer", acked=acks)
        assert declared.verify(db, 1, [result]) == {
            "acked": 3 * CHECKPOINTS_PER_INVOKE, "lost": 0, "detail": ""}
        table = "langgraph_checkpoints" if workload == "langgraph" else "checkpoints"
        _, ids = acks[1]
        db.run(f"DELETE FROM {table} WHERE checkpoint_id = ?", (ids[2],))
        found = declared.verify(db, 1, [result])
        assert found["lost"] == 1
        assert ids[2] in found["detail"]
