"""Where runs live: the committed reference run, ignored new runs, and `bench prune`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench import ROOT
from bench.cli import main
from bench.harness import results


def _write(folder: Path, run_id: str) -> Path:
    summary = [{"workload": "agent-write", "config": "sqlite-wal", "backend": "sqlite",
                "agents": 1, "rep": 0, "op": "all", "metric": "ops_per_s", "value": 1.0}]
    return results.write(folder / run_id, {"run_id": run_id, "plan": {"repetitions": 1}},
                         summary, [], [])


REF, OLD, NEW = "20260102T000000Z-ref0", "20260101T000000Z-old0", "20260103T000000Z-new0"


def test_the_reference_run_is_the_default_until_a_newer_local_run(tmp_path: Path) -> None:
    _write(tmp_path / "reference", REF)
    assert results.load(results_dir=tmp_path).path == tmp_path / "reference" / REF
    _write(tmp_path, OLD)  # an older local run does not displace the reference
    assert results.load(results_dir=tmp_path).run_id == REF
    _write(tmp_path, NEW)
    assert results.load(results_dir=tmp_path).run_id == NEW
    assert results.load("reference", tmp_path).run_id == REF
    assert results.load(REF, tmp_path).path == tmp_path / "reference" / REF
    assert results.run_ids(tmp_path) == [OLD, NEW]
    assert results.reference_ids(tmp_path) == [REF]


def test_no_reference_run_is_a_clear_error(tmp_path: Path) -> None:
    _write(tmp_path, NEW)
    with pytest.raises(FileNotFoundError, match=r"no benchmark runs in .*reference"):
        results.load("reference", tmp_path)
    with pytest.raises(FileNotFoundError, match=f"{NEW}"):
        results.load("nope", tmp_path)


def _prune(tmp_path: Path, *args: str) -> int:
    return main(["--results-dir", str(tmp_path), "prune", *args])


def test_prune_lists_by_default_and_removes_with_yes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for run_id in (OLD, NEW):
        _write(tmp_path, run_id)
    _write(tmp_path / "reference", REF)
    assert _prune(tmp_path, "--keep", "1") == 0
    assert "would remove" in capsys.readouterr().out
    assert results.run_ids(tmp_path) == [OLD, NEW]  # a dry run
    assert _prune(tmp_path, "--keep", "1", "--yes") == 0
    assert results.run_ids(tmp_path) == [NEW]
    assert _prune(tmp_path, "--keep", "0", "--yes") == 0
    assert results.run_ids(tmp_path) == []
    assert results.reference_ids(tmp_path) == [REF]  # --keep never touches the reference


def test_prune_removes_a_reference_run_only_with_force(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(tmp_path / "reference", REF)
    _write(tmp_path, NEW)
    assert _prune(tmp_path, REF, "--yes") == 2
    assert "--force" in capsys.readouterr().err
    assert results.reference_ids(tmp_path) == [REF]
    assert _prune(tmp_path, NEW, "--yes") == 0
    assert _prune(tmp_path, REF, "--force", "--yes") == 0
    assert results.reference_ids(tmp_path) == []
    assert results.run_ids(tmp_path) == []


@pytest.mark.parametrize(("args", "message"), [
    ([], "--keep"), (["nope"], "no run 'nope'"), (["--keep", "-1"], "--keep must be"),
])
def test_prune_errors_are_one_line(args: list[str], message: str, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert _prune(tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_new_runs_and_reports_are_ignored_and_the_reference_is_not() -> None:
    def ignored(path: str) -> bool:
        proc = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT,
                              check=False)
        return proc.returncode == 0

    assert ignored(f"results/{NEW}/summary.csv")
    assert ignored("results/extras/handoff-20260101T000000Z.json")
    assert ignored("results/microbench/20260101T000000Z.json")
    assert ignored(f"build/report/{NEW}/index.html")
    assert not ignored(f"results/reference/{REF}/summary.csv")
    assert not ignored(f"results/reference/{REF}/charts/01-throughput.png")
    assert ignored(f"results/reference/{REF}/raw/samples.csv.gz")
