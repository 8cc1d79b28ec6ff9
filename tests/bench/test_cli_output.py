"""What the CLI prints: names never shortened (piped or in a narrow terminal), comparisons
that say what they compare, help that describes every option, and progress in a log."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

from bench import ROOT
from bench.cli import COMMANDS, main, parser
from bench.harness import results
from bench.harness.configs import CONFIGS
from bench.harness.runner import PROFILES
from bench.harness.workloads import WORKLOADS

RESULTS = ROOT / "results"
# The closed-loop reference run (the one with the agent-write workload these tables show).
REFERENCE = next(i for i in reversed(results.reference_ids(RESULTS))
                 if "agent-write" in set(results.load(i, RESULTS).summary["workload"]))
NAMES = [*CONFIGS, *WORKLOADS]


def _bench(args: list[str], env: dict[str, str] | None = None,
           timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """python -m bench with stdout and stderr piped, as `| cat` or a log file has them;
    COLUMNS=80 stands for the terminal the pipe's reader sits in."""
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True,
                          text=True, env={**os.environ, "COLUMNS": "80", **(env or {})},
                          timeout=timeout, check=False, cwd=ROOT)


def _whole(name: str, text: str) -> bool:
    """The name appears unbroken, not as part of a longer name."""
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) is not None


def _render(renderable: Table, width: int | None) -> str:
    """In a terminal of `width` columns, or (None) into a file."""
    from bench.cli.base import BenchConsole

    out = io.StringIO()
    if width is None:
        BenchConsole(file=out).print(renderable)
    else:
        Console(file=out, width=width, force_terminal=True, color_system=None).print(renderable)
    return out.getvalue()


def _reference_copy(tmp: Path, name: str, workloads: set[str] | None = None,
                    **plan: object) -> None:
    """A run under tmp/name: the reference run's meta and summary, optionally narrowed to
    some workloads and with other plan settings."""
    source = results.locate(REFERENCE, RESULTS)
    target = tmp / name
    target.mkdir(parents=True)
    meta = json.loads((source / "meta.json").read_text())
    meta["run_id"] = name
    meta["plan"].update(plan)
    (target / "meta.json").write_text(json.dumps(meta))
    summary = results.load(REFERENCE, RESULTS).summary
    if workloads is not None:
        summary = summary[summary["workload"].isin(workloads)]
    summary.to_csv(target / "summary.csv", index=False)


# -- 1. names are never shortened -------------------------------------------------------

def test_list_piped_shows_every_name_whole_and_profiles_as_a_table() -> None:
    proc = _bench(["list"])
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout
    for name in NAMES:
        assert _whole(name, proc.stdout), name
    # Profiles as rows of a table, not a Python dict.
    assert "{" not in proc.stdout
    assert "'agents'" not in proc.stdout
    for name, profile in PROFILES.items():
        row = next(line for line in proc.stdout.splitlines() if _whole(name, line))
        assert ",".join(map(str, profile["agents"])) in row
        assert f"{profile['corpus']:,}" in row


def _tables() -> dict[str, Table]:
    from bench.cli import compare
    from bench.cli import list as list_cmd
    from bench.cli.micro import ratio_table
    from bench.cli.run import summary_table
    from bench.investigations.micro import ratios

    run = results.load(REFERENCE, RESULTS)
    micro_json = sorted((RESULTS / "reference" / "microbench").glob("*Z.json"))[-1]
    configs, workloads, profiles = list_cmd.tables()
    return {"list configs": configs, "list workloads": workloads, "list profiles": profiles,
            "run summary": summary_table(run), "compare": compare.comparison(run, run),
            "microbench": ratio_table(ratios(micro_json), "microbench")}


@pytest.mark.parametrize("width", [60, 100, 200, None])
def test_tables_never_shorten_names(width: int | None) -> None:
    for what, table in _tables().items():
        text = _render(table, width)
        assert "…" not in text, what
        if width is not None:
            assert max(len(line) for line in text.splitlines()) <= width, what
        # Names whose columns fit the terminal stay whole; only wider tables than the names
        # themselves can hold (the run summary and compare at 60 columns) fold them.
        if width is None or width >= 100 or what.startswith(("list", "micro")):
            cells = [c for column in table.columns if column.no_wrap for c in column._cells]
            assert cells, what
            for name in cells:
                assert _whole(str(name), text), (what, width, name)


@pytest.mark.parametrize("width", [100, 200, None])
def test_headers_wrap_between_words(width: int | None) -> None:
    for what, table in _tables().items():
        text = _render(table, width)
        for column in table.columns:
            for word in str(column.header).split():
                assert _whole(word, text), (what, width, column.header)


# -- 2. bench compare ---------------------------------------------------------------------

def test_compare_one_row_per_workload_config_agents(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    _reference_copy(tmp_path, "a")
    _reference_copy(tmp_path, "b")
    assert main(["--results-dir", str(tmp_path), "compare", "a", "b"]) == 0
    out = capsys.readouterr().out
    summary = results.load(REFERENCE, RESULTS).summary
    keys = summary[["workload", "config", "agents"]].drop_duplicates()
    rows = [line for line in out.splitlines()
            if any(_whole(w, line) for w in set(summary["workload"]))]
    assert len(rows) == len(keys)
    assert "nan" not in out.lower()
    assert "measured differently" not in out  # same settings: nothing to flag
    # 0/0 errors read as 0, a ratio of two zeros as "-".
    assert "0 -> 0" in out


def test_compare_says_when_nothing_overlaps(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    _reference_copy(tmp_path, "a", workloads={"agent-write"})
    _reference_copy(tmp_path, "b", workloads={"search"})
    assert main(["--results-dir", str(tmp_path), "compare", "a", "b"]) == 2
    captured = capsys.readouterr()
    assert "share no (workload, config, agents)" in captured.err
    assert "agent-write" in captured.err
    assert "search" in captured.err


def test_compare_flags_settings_that_differ(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    _reference_copy(tmp_path, "a")
    _reference_copy(tmp_path, "b", workers="threads", duration=1.0, repetitions=3)
    assert main(["--results-dir", str(tmp_path), "compare", "a", "b"]) == 0
    out = capsys.readouterr().out
    flagged = out.split("medians", 1)[0]
    assert "measured differently" in flagged
    assert "worker mode: A processes, B threads" in flagged
    assert "duration (s): A 3.0, B 1.0" in flagged
    assert "repetitions: A 5, B 3" in flagged
    assert "warm-up" not in flagged  # the same in both


# -- 5. help ---------------------------------------------------------------------------------

def test_run_help_describes_every_option_and_keeps_names_whole() -> None:
    proc = _bench(["run", "--help"], env={"COLUMNS": "60"})
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for name in NAMES:
        assert _whole(name, text), name
    flat = " ".join(text.split())
    assert re.search(r"--profile \{quick,full[a-z,]*\} a preset of agent counts", flat)
    assert "(default: quick)" in flat
    assert "(default: processes)" in flat
    assert re.search(r"--repetitions REPETITIONS \w", flat)
    assert re.search(r"--results-dir RESULTS_DIR the results folder", flat)


def _subparsers() -> dict[str, object]:
    import argparse

    found: dict[str, object] = {}

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found[f"{path} {name}".strip()] = sub
                    walk(sub, f"{path} {name}")
    walk(parser(), "")
    return found


def test_every_option_of_every_command_has_help_and_a_shown_default() -> None:
    import argparse

    subs = _subparsers()
    assert set(COMMANDS) <= set(subs)
    for name, sub in subs.items():
        assert isinstance(sub, argparse.ArgumentParser)
        text = " ".join(sub.format_help().split())
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, (name, action.dest)
            if action.option_strings and action.default not in (None, False,
                                                                 argparse.SUPPRESS):
                assert f"default: {action.default}" in text, (name, action.dest)


# -- 3. make test's smoke microbench ---------------------------------------------------------

def test_quick_microbench_prints_one_line_and_writes_the_table(tmp_path: Path) -> None:
    proc = _bench(["micro", "--quick", "--output-dir", str(tmp_path)],
                  env={"CI": "true"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout[:2000]
    match = re.fullmatch(r"microbench smoke: (\d+) benchmarks ok, table in (\S+\.txt)", lines[0])
    assert match, lines[0]
    data = json.loads(next(tmp_path.glob("*-quick.json")).read_text())
    assert int(match[1]) == len(data["benchmarks"])
    table = Path(match[2]).read_text()
    assert "x raw" in table
    assert "x SQLAlchemy" in table
    assert "added us" in table
    assert "…" not in table
    for bench in data["benchmarks"]:
        assert _whole(bench["extra_info"]["operation"], table)


# -- 4. progress in a log ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(storekit_postgres_url: str, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("results")
    # The longest names, the ones cut before.
    proc = _bench(["--results-dir", str(out), "run", "--workload", "agent-write",
                   "--config", "sqlite-wal-stock,postgres-async-commit", "--agents", "1,2",
                   "--duration", "0.3", "--warmup", "0", "--repetitions", "1", "--no-samples"],
                  env={"STOREKIT_BENCH_POSTGRES_URL": storekit_postgres_url})
    return proc, out


def test_run_piped_prints_a_line_per_finished_run(
        tiny_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, _ = tiny_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("run ")]
    expected = {(config, agents) for config in ("sqlite-wal-stock", "postgres-async-commit")
                for agents in (1, 2)}
    seen = set()
    for i, line in enumerate(lines, 1):
        # A loaded machine may finish no transaction in 0.3 s: the line says so then.
        m = re.match(rf"run {i}/4: agent-write (\S+) agents=(\d) rep=1: [\d,.]+ ops/s, "
                     r"(p99 [\d,.]+ ms \(transaction\)|no transaction completed), [\d,]+ errors",
                     line)
        assert m, line
        seen.add((m[1], int(m[2])))
    assert seen == expected
    # The summary table, piped: every name whole on its row.
    for config in ("sqlite-wal-stock", "postgres-async-commit"):
        assert sum(_whole(config, line) and "agent-write" in line
                   for line in proc.stdout.splitlines()) == 2, proc.stdout


def test_report_piped_prints_a_line_per_notebook(
        tiny_run: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path) -> None:
    from bench.analysis.report import sources

    proc, out = tiny_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = _bench(["--results-dir", str(out), "report", "--output", str(tmp_path)])
    assert report.returncode == 0, report.stderr[-3000:]
    books = [p.stem for p in sources()]
    lines = [line for line in report.stderr.splitlines() if line.startswith("notebook ")]
    assert [line.split(":")[0] for line in lines] == [
        f"notebook {i}/{len(books)} {stem}" for i, stem in enumerate(books, 1)]
    # This run has agent-write only: the other workloads' notebooks say why they are skipped.
    assert any("skipped" in line and "search" in line for line in lines)
    assert any(re.search(r"01-agent-write: [\d.]+ s$", line) for line in lines)
    shutil.rmtree(tmp_path, ignore_errors=True)


# -- the notebooks' results folder ---------------------------------------------------------

def test_notebooks_find_the_results_from_their_own_folder() -> None:
    """A lab kernel starts in notebooks/ with the root on PYTHONPATH (make lab sets it);
    a notebook's default RESULTS_DIR=None must still find the repository's results/."""
    code = ("from bench.analysis import style; run = style.load(None, None); "
            "print(run.path.resolve())")
    env = {k: v for k, v in os.environ.items() if k != "STOREKIT_RESULTS_DIR"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "notebooks",
                          env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert Path(proc.stdout.strip()).is_relative_to(RESULTS.resolve())


def test_claims_of_a_run_where_a_config_completed_nothing() -> None:
    """A short run on a busy machine can finish no transaction on one config: the ledger
    says so rather than dividing by zero (which stopped the report's first notebook)."""
    from bench.analysis.claims import NOT_MEASURED, ledger

    summary = results.load(REFERENCE, RESULTS).summary.copy()
    idle = ((summary["config"] == "postgres-async-commit") & (summary["agents"] == 1)
            & (summary["metric"] == "ops_per_s"))
    summary.loc[idle, "value"] = 0.0
    rows = ledger(summary).set_index("claim")
    row = rows.loc["SQLite's synchronous API is faster single-threaded"]
    assert row["verdict"] == NOT_MEASURED
    assert "postgres-async-commit completed no transaction" in row["evidence"]
