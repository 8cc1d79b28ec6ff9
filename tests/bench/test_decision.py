"""The recommendation per scenario, the decision map and the report index, on small
synthetic runs (hand-made summaries: nothing is timed)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bench.analysis import decision_map, recommend, scenarios
from bench.analysis.scenarios import MEETS, MISSES, NOT_MEASURED, RULED_OUT, Scenario
from bench.harness import results
from bench.harness.workloads import WORKLOADS

STEP = scenarios.STEP_WORKLOAD
# The storage operation's name as the agent-step workload declares it, once it exists.
OP = WORKLOADS[STEP].main_op if STEP in WORKLOADS else "step"

# (config, agents, think_ms, rtt_ms, storage p99 ms); SQLite has no round trip.
GRID = [("sqlite-wal", a, 1000, 0, p) for a, p in ((10, 2.0), (100, 4.0), (1000, 30.0))]
GRID += [("postgres", a, 1000, r, p) for a, r, p in (
    (10, 0, 3.0), (100, 0, 6.0), (1000, 0, 40.0),
    (10, 5, 20.0), (100, 5, 35.0), (1000, 5, 400.0))]


def summary_rows(grid: list[tuple[str, int, float, float, float]], workload: str = STEP,
                 op: str = OP, reps: int = 3, lag_ms: float = 1.0) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for config, agents, think, rtt, p99 in grid:
        for rep in range(reps):
            base = {"workload": workload, "config": config, "backend": config.split("-")[0],
                    "agents": agents, "rep": rep, "think_ms": think, "rtt_ms": rtt}
            for metric, mop, value in (
                    ("ops_per_s", "all", agents * 0.9), ("latency_p99_ms", op, p99),
                    ("latency_p50_ms", op, p99 / 4), ("errors_total", "all", 0.0),
                    ("acked_writes", "all", agents * 30.0), ("lost_writes", "all", 0.0),
                    ("start_lag_p99_ms", "all", lag_ms)):
                rows.append({**base, "op": mop, "metric": metric, "value": value})
    return rows


def write_run(folder: Path, run_id: str, rows: list[dict[str, object]],
              drop_scenario_columns: bool = False) -> Path:
    meta = {"run_id": run_id, "plan": {"repetitions": 3, "duration": 10, "warmup": 1},
            "machine": {"cores": 2, "cpu": "synthetic"}}
    path = results.write(folder / run_id, meta, [], [], [])
    frame = pd.DataFrame(rows)
    if drop_scenario_columns:
        frame = frame.drop(columns=["think_ms", "rtt_ms"])
    frame.to_csv(path / "summary.csv", index=False)  # with the scenario columns
    return path


@pytest.fixture
def grid_dir(tmp_path: Path) -> Path:
    write_run(tmp_path, "20270101T000000Z-grid", summary_rows(GRID))
    return tmp_path


def judged(folder: Path, sc: Scenario) -> dict[str, str]:
    table = scenarios.evidence(folder)
    return {j.config: j.status for j in recommend.judgements(table, sc)}


def test_measured_cell_answers(grid_dir: Path) -> None:
    sc = Scenario(agents=100, think_ms=1000, rtt_ms=5)
    assert judged(grid_dir, sc) == {"sqlite-wal": MEETS, "postgres": MEETS,
                                    "postgres-pgbouncer": NOT_MEASURED}
    text = recommend.recommend(sc, results_dir=grid_dir)
    assert text.splitlines()[0].startswith("Recommendation: SQLite")
    assert "PostgreSQL also meets the target" in text
    assert "measured at 100 agents, think 1000 ms, rtt 5 ms" in text
    # 1,000 agents 5 ms away: PostgreSQL's p99 is 400 ms; SQLite still meets.
    assert judged(grid_dir, Scenario(1000, 1000, 5))["postgres"] == MISSES


def test_between_measured_cells_is_bounded_by_monotonicity(grid_dir: Path) -> None:
    # 500 agents: 1,000 agents at rtt 0 meets, so 500 does (a harder cell meets).
    assert judged(grid_dir, Scenario(500, 1000, 0))["postgres"] == MEETS
    # 500 agents 5 ms away: 100 meets, 1,000 misses: not settled.
    assert judged(grid_dir, Scenario(500, 1000, 5))["postgres"] == NOT_MEASURED
    # 2 ms: 1,000 agents at 5 ms misses but 1,000 at 0 ms meets: not settled; at 100 agents
    # the 5 ms cell meets, so 2 ms meets.
    assert judged(grid_dir, Scenario(1000, 1000, 2))["postgres"] == NOT_MEASURED
    assert judged(grid_dir, Scenario(100, 1000, 2))["postgres"] == MEETS
    # Beyond every measurement, and an easier cell that already misses.
    assert judged(grid_dir, Scenario(5000, 1000, 0))["postgres"] == NOT_MEASURED
    assert judged(grid_dir, Scenario(2000, 1000, 20))["postgres"] == MISSES


def test_not_measured_says_so_and_prints_the_command(grid_dir: Path) -> None:
    """The old answer was "neither measured config meets the target" when the run simply
    had no cell at the asked agent count."""
    sc = Scenario(agents=5000, think_ms=800, rtt_ms=5)
    text = recommend.recommend(sc, results_dir=grid_dir)
    first = text.splitlines()[0]
    assert first.startswith("Recommendation: not measured")
    assert "neither" not in first
    command = ("python -m bench run --workload agent-step --config "
               "sqlite-wal,postgres-pgbouncer --agents 5000 --think-ms 800 --rtt-ms 5")
    assert f"To measure it: {command}" in text
    # PostgreSQL is settled: 1,000 agents thinking longer already missed at 5 ms.
    assert "postgres: misses: an easier scenario already misses" in text
    text = recommend.recommend(Scenario(5000, 800, 0), results_dir=grid_dir)
    assert "--config sqlite-wal,postgres,postgres-pgbouncer --agents 5000" in text


def test_no_agent_step_run_at_all(tmp_path: Path) -> None:
    rows = summary_rows([("sqlite-wal", 16, 0, 0, 5.0)], workload="agent-write",
                        op="transaction")
    write_run(tmp_path, "20270101T000000Z-aw", rows, drop_scenario_columns=True)
    text = recommend.recommend(Scenario(16, 0, 0), results_dir=tmp_path)
    assert text.startswith("Recommendation: not measured")
    assert "--agents 16 --think-ms 0 --rtt-ms 0" in text


def test_more_than_one_machine_rules_sqlite_out(grid_dir: Path) -> None:
    sc = Scenario(agents=100, think_ms=1000, rtt_ms=0, machines=3)
    found = {j.config: j for j in recommend.judgements(scenarios.evidence(grid_dir), sc)}
    assert found["sqlite-wal"].status == RULED_OUT
    assert "network access" in found["sqlite-wal"].how
    text = recommend.recommend(sc, results_dir=grid_dir)
    assert text.splitlines()[0] == "Recommendation: PostgreSQL"
    assert "3 machines need network access" in text
    # The command measures only the backends in play.
    text = recommend.recommend(Scenario(5000, 1000, 0, machines=3), results_dir=grid_dir)
    assert "--config postgres,postgres-pgbouncer " in text
    # One machine keeps both in play.
    assert judged(grid_dir, Scenario(100, 1000, 0, machines=1))["sqlite-wal"] == MEETS


def test_row_security_rules_sqlite_out(grid_dir: Path) -> None:
    sc = Scenario(agents=10, think_ms=1000, rtt_ms=0, needs_row_security=True)
    found = {j.config: j for j in recommend.judgements(scenarios.evidence(grid_dir), sc)}
    assert found["sqlite-wal"].status == RULED_OUT
    assert "row-level security" in found["sqlite-wal"].how
    assert recommend.recommend(sc, results_dir=grid_dir).startswith(
        "Recommendation: PostgreSQL")


def test_neither_only_when_measured(grid_dir: Path) -> None:
    sc = Scenario(agents=1000, think_ms=1000, rtt_ms=5, latency_target_ms=10, machines=2)
    found = judged(grid_dir, sc)
    assert found["postgres"] == MISSES
    # PgBouncer was never measured: that is "not measured", not "neither".
    assert recommend.recommend(sc, results_dir=grid_dir).startswith(
        "Recommendation: not measured")


def test_older_runs_without_scenario_columns_read_as_zero(tmp_path: Path) -> None:
    rows = summary_rows([("postgres", 8, 0, 0, 5.0)])
    write_run(tmp_path, "20270101T000000Z-old", rows, drop_scenario_columns=True)
    table = scenarios.evidence(tmp_path)
    assert table[["think_ms", "rtt_ms"]].to_numpy().tolist() == [[0.0, 0.0]]
    assert judged(tmp_path, Scenario(8, 0, 0))["postgres"] == MEETS


def test_newest_run_wins_per_cell(tmp_path: Path) -> None:
    write_run(tmp_path, "20270101T000000Z-aaaa", summary_rows([("postgres", 8, 0, 0, 500.0)]))
    write_run(tmp_path, "20270102T000000Z-bbbb", summary_rows([("postgres", 8, 0, 0, 5.0)]))
    write_run(tmp_path / results.REFERENCE, "20270103T000000Z-cccc",
              summary_rows([("postgres", 16, 0, 0, 5.0)]))
    table = scenarios.evidence(tmp_path)
    assert dict(zip(table["agents"], table["run_id"], strict=True)) == {
        8: "20270102T000000Z-bbbb", 16: "20270103T000000Z-cccc"}


def test_load_generator_limited_cells_are_flagged(tmp_path: Path) -> None:
    write_run(tmp_path, "20270101T000000Z-lag",
              summary_rows([("sqlite-wal", 1000, 1000, 0, 5.0)], lag_ms=80.0))
    table = scenarios.evidence(tmp_path)
    assert table["limited"].tolist() == [True]
    text = recommend.recommend(Scenario(1000, 1000, 0), results_dir=tmp_path)
    assert "load generator lagged" in text


def test_decision_map_cells(grid_dir: Path) -> None:
    table = scenarios.evidence(grid_dir)
    grid = decision_map.grid(table, think_ms=1000, target_ms=50)
    assert list(grid.index) == [0.0, 5.0]
    assert list(grid.columns) == [10, 100, 1000]
    assert grid.loc[0.0, 1000] == ("sqlite-wal", "postgres")  # both meet
    assert grid.loc[5.0, 1000] == ("sqlite-wal",)  # SQLite has no round trip
    sparse = table[~((table["config"] == "postgres") & (table["agents"] == 100)
                     & (table["rtt_ms"] == 5))]
    sparse = sparse[sparse["config"] == "postgres"]
    grid = decision_map.grid(sparse, think_ms=1000, target_ms=50)
    assert grid.loc[5.0, 100] is None  # not measured: left empty
    assert grid.loc[5.0, 1000] == ()  # measured, nothing meets
    full = scenarios.evidence(grid_dir)
    gap = full[~((full["config"] == "postgres") & (full["agents"] == 10) & (full["rtt_ms"] == 5))]
    # SQLite measured that cell, PostgreSQL did not: the map says so.
    assert decision_map.unmeasured(gap, 1000, 5.0, 10) == ["postgres"]
    assert decision_map.unmeasured(gap, 1000, 0.0, 10) == []


def test_decision_map_chart_ticks_at_measured_values(grid_dir: Path, tmp_path: Path) -> None:
    table = scenarios.evidence(grid_dir)
    fig, ax = decision_map.plot(table, think_ms=1000, target_ms=50)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["10", "100", "1,000"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0 ms", "5 ms"]
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # 0 ms on top
    from bench.analysis import style

    style.save(fig, "map", str(tmp_path))
    assert (tmp_path / "map.png").stat().st_size > 0


def test_agent_axis_labels_and_gaps() -> None:
    from bench.analysis import style

    fig, ax = style.figure("t", "agents", "y")
    measured = [1, 2, 4, 8, 16]
    style.plot_measured(ax, pd.Series([1.0, 2.0, 5.0], index=[1, 2, 16]), measured,
                        **style.line("sqlite-wal"))
    style.agent_axis(ax, measured)
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8", "16"]
    y = ax.lines[0].get_ydata()
    assert pd.isna(y[2])
    assert pd.isna(y[3])
    assert not [t for t in ax.get_xticklabels(minor=True) if t.get_text()]


def test_report_index_states_the_verdict(grid_dir: Path) -> None:
    from bench.analysis import report

    run = results.load(results_dir=grid_dir)
    page = report.index_html(run, pages=[], skipped=["04-x (no y)"], charts=[])
    body = page.split("<body>", 1)[1]
    # The verdict comes right after the title, as one sentence.
    verdict = body.split('<p class="verdict">', 1)[1].split("</p>", 1)[0]
    assert body.index("verdict") < body.index("Decision map") < body.index("Headline")
    assert verdict.count(". ") == 0
    assert verdict.endswith(".")
    assert "SQLite up to 1,000 agents" in verdict
    assert "PostgreSQL up to 1,000 agents at 0 ms, 100 agents at 5 ms" in verdict
    for reason in ("Network access", "Row-level security", "Native notifications"):
        assert reason in body
    assert 'class="misses">400.0 ms' in body  # 1,000 agents 5 ms away
    assert "not run: 04-x (no y)" in body


def test_a_run_without_step_cells_reads_agent_write(tmp_path: Path) -> None:
    from bench.analysis import index_page

    rows = summary_rows([("sqlite-wal", n, 0, 0, p) for n, p in ((1, 1.0), (16, 30.0))]
                        + [("postgres", n, 0, 0, p) for n, p in ((1, 3.0), (16, 80.0))],
                        workload="agent-write", op="transaction")
    write_run(tmp_path, "20270101T000000Z-aw", rows, drop_scenario_columns=True)
    run = results.load(results_dir=tmp_path)
    page = index_page.render(run, [], [], index_page.charts(run, tmp_path, 50.0))
    assert "writing flat out" in page
    assert "SQLite up to 16 agents; PostgreSQL up to 1 agent, and at 16 agents SQLite " \
        "commits 1.0x" in page
    assert (tmp_path / "index-decision-map.png").is_file()


def test_headline_agent_step_table(grid_dir: Path) -> None:
    from bench.analysis import headline

    run = results.load("20270101T000000Z-grid", grid_dir)
    lines = headline.tables(run)["agent-step"]
    text = "\n".join(lines)
    assert "| config | round trip | 10 agents | 100 agents | 1,000 agents |" in text
    assert "| postgres | 5 ms | 20.0 ms, 9/s | 35.0 ms, 90/s | 400.0 ms, 900/s |" in text
    # SQLite has one row (no round trip), and every measured cell is filled.
    assert [line.split(" | ")[0] for line in lines if line.startswith("| sqlite")] == [
        "| sqlite-wal"]
