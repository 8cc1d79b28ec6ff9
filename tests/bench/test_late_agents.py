"""An agent that starts after its measurement window (a loaded machine) still measures one
attempt and marks the run: a working store never reports 0 ops/s for that reason."""

from __future__ import annotations

import time
from pathlib import Path

from bench.harness.agent import AgentContext, drive
from bench.harness.configs import CONFIGS
from bench.harness.runner import LIMITED_BY_LOAD_GENERATOR, Outcome, RunSpec, summarise
from bench.harness.workloads import agent_write


def test_a_late_agent_measures_one_attempt_and_is_marked(tmp_path: Path) -> None:
    with CONFIGS["sqlite-wal"].open(f"sqlite:///{tmp_path / 'late.db'}") as db:
        agent_write.setup(db, {})
        agent_write.prepare(db, 1, ["writer"])
        # The window (warm-up 0.1 s, then 0.2 s) closed a second before the agent began,
        # exactly what a process scheduled late on a loaded machine sees.
        ctx = AgentContext(0, "writer", 1, time.time() - 1.3, 0.1, 0.2, None, seed=1)
        result = drive(ctx, agent_write.operation(db, ctx))
        verification = agent_write.verify(db, 1, [result])
    assert result.late
    assert result.counts == {"transaction": 1}
    assert verification["lost"] == 0
    outcome = Outcome(RunSpec("agent-write", "sqlite-wal", 1, 0), [result], verification)
    rows, _, _ = summarise(outcome, ctx.duration)
    ops = [r["value"] for r in rows if r["metric"] == "ops_per_s" and r["op"] == "all"]
    assert ops == [1 / ctx.duration]
    assert {r["limited_by"] for r in rows} == {LIMITED_BY_LOAD_GENERATOR}


def test_an_open_loop_agent_counts_its_slots_exactly(tmp_path: Path) -> None:
    """Open loop: every scheduled slot in the window runs, however late, and no more: 4/s
    for 1 s is 4 measured operations on any machine, and not an extra one."""
    with CONFIGS["sqlite-wal"].open(f"sqlite:///{tmp_path / 'on.db'}") as db:
        agent_write.setup(db, {})
        agent_write.prepare(db, 1, ["writer"])
        ctx = AgentContext(0, "writer", 1, time.time() + 0.5, 0.0, 1.0, 4.0, seed=1)
        result = drive(ctx, agent_write.operation(db, ctx))
    assert not result.late
    assert result.counts == {"transaction": 4}, result.counts
