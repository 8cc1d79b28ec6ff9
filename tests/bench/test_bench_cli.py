"""The harness end to end: every workload on every config briefly, and CLI errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import ROOT
from bench.cli import main
from bench.harness import results
from bench.harness.agent import AgentContext, drive
from bench.harness.configs import CONFIGS, DEFAULT_CONFIGS
from bench.harness.workloads import agent_write


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """python -m bench from the repository root, as the README runs it (bench is not
    installed: the root on sys.path is what finds it)."""
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=600,
                          check=False, cwd=ROOT)


@pytest.fixture(scope="module")
def short_run(storekit_postgres_url: str, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("results")
    proc = _run(["--results-dir", str(out), "run", "--agents", "2", "--duration", "0.6",
                 "--repetitions", "1", "--corpus", "300"],
                env={"STOREKIT_BENCH_POSTGRES_URL": storekit_postgres_url})
    return proc, out


def test_every_workload_on_every_config(short_run: tuple[subprocess.CompletedProcess[str], Path]
                                        ) -> None:
    proc, out = short_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = results.load(results_dir=out)
    s = run.summary
    combos = set(zip(s["workload"], s["config"], strict=True))
    assert combos == {(w, c) for w in ("agent-write", "read-while-write", "search")
                      for c in (c.name for c in DEFAULT_CONFIGS)}
    ops = s[(s["metric"] == "ops_per_s") & (s["op"] == "all")]
    assert (ops["value"] > 0).all(), ops
    assert (s[s["metric"] == "lost_writes"]["value"] == 0).all()
    assert (s[s["metric"] == "acked_writes"]["value"] > 0).all()
    for metric in ("latency_p99_ms", "latency_p99.9_ms", "fairness_share_min"):
        assert metric in set(s["metric"]), metric
    assert "staleness_p99" in set(s[s["workload"] == "read-while-write"]["metric"])
    assert "freshness_p50" in set(s[s["workload"] == "search"]["metric"])
    assert any(m.startswith("pg_wait_share_") for m in s[s["backend"] == "postgres"]["metric"])
    meta = run.meta
    assert meta["schema_version"] == results.SCHEMA_VERSION
    assert meta["machine"]["cores"] >= 1
    assert meta["machine"]["fsync"]["fdatasync_p50_s"] > 0
    assert meta["configs"]["sqlite-naive"]["settings"]["begin"] == "BEGIN DEFERRED"
    assert meta["configs"]["postgres-async-commit"]["settings"]["synchronous_commit"] == "off"
    assert meta["configs"]["postgres"]["settings"]["synchronous_commit"] == "on"
    assert meta["verification"]["ok"] is True
    assert not run.timeseries.empty
    assert not run.histograms.empty
    assert "Results:" in proc.stdout


def test_no_password_in_any_output(storekit_postgres_url: str,
                                   short_run: tuple[subprocess.CompletedProcess[str], Path]
                                   ) -> None:
    proc, out = short_run
    password = storekit_postgres_url.split("//", 1)[1].split("@", 1)[0].partition(":")[2]
    assert password
    assert password not in proc.stdout + proc.stderr
    for file in out.rglob("*"):
        if file.is_file():
            data = file.read_bytes()
            if file.suffix == ".gz":
                import gzip

                data = gzip.decompress(data)
            assert password.encode() not in data, file


def test_threads_mode_and_open_loop(storekit_postgres_url: str, tmp_path: Path) -> None:
    proc = _run(["--results-dir", str(tmp_path), "run", "--workload", "agent-write",
                 "--config", "sqlite-wal,postgres", "--agents", "3", "--duration", "1",
                 "--repetitions", "1", "--workers", "threads", "--rate", "150"],
                env={"STOREKIT_BENCH_POSTGRES_URL": storekit_postgres_url})
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = results.load(results_dir=tmp_path).summary
    ops = s[(s["metric"] == "ops_per_s") & (s["op"] == "all")]["value"]
    # Open loop at 150/s: the rate is held, not exceeded.
    assert ((ops > 50) & (ops < 170)).all(), ops.tolist()


def test_verification_catches_a_lost_write(tmp_path: Path) -> None:
    import time

    url = f"sqlite:///{tmp_path / 'v.db'}"
    config = CONFIGS["sqlite-wal"]
    with config.open(url) as db:
        agent_write.setup(db, {})
        agent_write.prepare(db, 1, ["writer"])
        ctx = AgentContext(0, "writer", 1, time.time(), 0.0, 0.3, None, seed=1)
        result = drive(ctx, agent_write.operation(db, ctx))
        assert agent_write.verify(db, 1, [result])["lost"] == 0
        db.run("DELETE FROM results WHERE id = (SELECT MAX(id) FROM results)")
        check = agent_write.verify(db, 1, [result])
    assert check["lost"] == 1
    assert "missing" in check["detail"]


def test_verification_catches_a_lost_update(tmp_path: Path) -> None:
    """A step counter one short of the acknowledged steps is a lost update."""
    import time

    url = f"sqlite:///{tmp_path / 'u.db'}"
    with CONFIGS["sqlite-wal"].open(url) as db:
        agent_write.setup(db, {})
        agent_write.prepare(db, 1, ["writer"])
        ctx = AgentContext(0, "writer", 1, time.time(), 0.0, 0.3, None, seed=1)
        result = drive(ctx, agent_write.operation(db, ctx))
        steps = len(result.acked)
        assert db.get("SELECT runs FROM agents") == {"runs": steps}
        assert agent_write.verify(db, 1, [result])["lost"] == 0
        db.run("UPDATE agents SET runs = runs - 1")
        check = agent_write.verify(db, 1, [result])
        assert "lost updates" in check["detail"]
    assert check["lost"] == 1
    assert f"{steps - 1} vs {steps}" in check["detail"]
    assert agent_write.extra_metrics([result]) == {"retries": 0.0}


def test_postgres_configs_differ_only_in_isolation(storekit_postgres_url: str) -> None:
    from storekit.testing import isolated_schema

    with isolated_schema(storekit_postgres_url) as url:
        for name, level in (("postgres", "serializable"),
                            ("postgres-read-committed", "read committed")):
            with CONFIGS[name].open(url) as db, db.transaction() as tx:
                row = tx.get("SHOW transaction_isolation")
                assert row == {"transaction_isolation": level}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--workload", "nope"], "unknown workload nope; valid: agent-"),
        (["run", "--config", "mysql"], "valid: sqlite-wal"),
        (["run", "--agents", "0"], "positive"),
        (["run", "--agents", "-2"], "positive"),
        (["run", "--agents", "x"], "integers"),
        (["run", "--duration", "0"], "--duration must be positive"),
        (["run", "--rate", "-5"], "--rate must be positive"),
        (["run", "--repetitions", "0"], "--repetitions must be positive"),
        (["compare", "nope", "nope2"], "no run 'nope'"),
    ],
)
def test_cli_errors_are_one_line(args: list[str], message: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--results-dir", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_no_postgres_prints_the_three_fixes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from storekit import testing

    monkeypatch.delenv("STOREKIT_BENCH_POSTGRES_URL", raising=False)
    monkeypatch.delenv("STOREKIT_TEST_POSTGRES_URL", raising=False)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    monkeypatch.setattr(testing, "find_pg_bin", lambda: None)  # as on a machine without them
    code = main(["--results-dir", str(tmp_path), "run", "--config", "postgres",
                 "--workload", "agent-write", "--agents", "1", "--repetitions", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "STOREKIT_TEST_POSTGRES_URL" in err
    assert "Docker" in err
    assert "Traceback" not in err


def test_report_executes_every_notebook_with_data(
        short_run: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path) -> None:
    """The notebooks run headless on a run CI made; style.save() refuses empty charts."""
    from bench.analysis.claims import FAILS, HOLDS, HOLDS_IF, NOT_MEASURED, ledger
    from bench.analysis.report import sources

    _, out = short_run
    report = tmp_path / "report"
    # As `make bench` runs it: a subprocess from the root, with no PYTHONPATH, so the
    # kernel (started in notebooks/) finds bench only through the report's own setting.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-m", "bench", "--results-dir", str(out), "report",
                           "--output", str(report)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Report: {report / 'index.html'}" in proc.stdout.replace("\n", "")
    executed = sorted(p.stem for p in report.glob("*.ipynb"))
    # 04-deployment needs the agent-step workload, which this run does not have.
    assert executed == [p.stem for p in sources() if p.stem != "04-deployment"]
    assert len(executed) == 5  # 05-langgraph finds the committed LangGraph run
    index = (report / "index.html").read_text()
    assert "not run: 04-deployment" in index
    assert "writing flat out" in index  # the verdict, from agent-write
    charts = {p.stem for p in (report / "charts").glob("*.png")}
    assert {"00-decision", "00-headline", "01-throughput", "01-latency", "01-lock-wait",
            "02-reader-cdf", "02-timeseries", "03-search-latency"} <= charts
    claims = (report / "charts" / "claims.csv").read_text()
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(claims)))
    # How many claims a short run measures depends on what the machine got through in
    # 0.6 s; the ledger the report wrote must be the one the run's data determines.
    expected = ledger(results.load(results_dir=out).summary)
    assert [(r["claim"], r["verdict"], r["evidence"]) for r in rows] == [
        (c.claim, c.verdict, c.evidence) for c in expected.itertuples()]
    assert {r["verdict"] for r in rows} <= {HOLDS, HOLDS_IF, FAILS, NOT_MEASURED}
    # Claims needing a 1-agent baseline stay unmeasured in this 2-agent run.
    by_claim = {r["claim"]: r["verdict"] for r in rows}
    assert by_claim["SQLite allows one writer at a time"] == NOT_MEASURED
    assert by_claim["SQLite's synchronous API is faster single-threaded"] == NOT_MEASURED
    assert (report / "00-recommendation.html").stat().st_size > 10_000


def test_recommend_command(short_run: tuple[subprocess.CompletedProcess[str], Path],
                           capsys: pytest.CaptureFixture[str]) -> None:
    _, out = short_run
    assert main(["--results-dir", str(out), "recommend", "--agents", "2",
                 "--think-ms", "0", "--needs-row-security"]) == 0
    text = capsys.readouterr().out
    # This run has no agent-step workload: nothing measured the scenario.
    assert text.startswith("Recommendation: not measured")
    assert "sqlite-wal: ruled out: row-level security" in text
    assert ("python -m bench run --workload agent-step --config postgres,postgres-pgbouncer "
            "--agents 2 --think-ms 0 --rtt-ms 0") in text


def test_calibration_workload_verifies_too(tmp_path: Path) -> None:
    import time

    from bench.harness.workloads import single_insert

    with CONFIGS["sqlite-wal"].open(f"sqlite:///{tmp_path / 's.db'}") as db:
        single_insert.setup(db, {})
        single_insert.prepare(db, 1, ["writer"])
        ctx = AgentContext(0, "writer", 1, time.time(), 0.0, 0.2, None, seed=1)
        result = drive(ctx, single_insert.operation(db, ctx))
        assert single_insert.verify(db, 1, [result]) == {"acked": len(result.acked), "lost": 0,
                                                          "detail": ""}
        db.run("DELETE FROM bench_insert WHERE id = (SELECT MAX(id) FROM bench_insert)")
        assert single_insert.verify(db, 1, [result])["lost"] == 1


def test_headline_compares_fair_and_stock_locking(
        short_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    from bench.analysis.headline import headline

    _, out = short_run
    text = headline(results.load(results_dir=out))
    table = text.split("fair hand-off (sqlite-wal) against the stock busy handler")[1]
    row = next(line for line in table.splitlines() if line.startswith("| 2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 10  # agents, two throughputs, their ratio, three pairs
    fair, stock, ratio = (float(c.replace(",", "")) for c in cells[1:4])
    assert ratio == pytest.approx(fair / stock, rel=0.05)
