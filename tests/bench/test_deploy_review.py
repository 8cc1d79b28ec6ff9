"""Hostile scenario values for `bench run` and `bench recommend`: each is refused with one
error line before anything runs, and recommend never prints a `bench run` command that
run would refuse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HANG = 120.0  # a guard against hanging only


def _bench(*args: str, results: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args, "--results-dir", str(results)],
                          cwd=ROOT, capture_output=True, text=True, timeout=HANG)


@pytest.mark.parametrize("bad", [
    ["--think-ms", "inf"], ["--think-ms", "nan"], ["--think-ms", "1e12"],
    ["--rtt-ms", "nan"], ["--rtt-ms", "inf"], ["--agents", "10000000"],
    ["--rtt-ms", "0,inf"],
])
def test_run_refuses_before_running(bad: list[str], tmp_path: Path) -> None:
    r = _bench("run", "--workload", "agent-step", "--config", "sqlite-wal", "--duration",
               "0.1", "--warmup", "0", "--repetitions", "1", *bad, results=tmp_path)
    assert r.returncode != 0
    assert r.stderr.strip().startswith("error:")
    assert len(r.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # no run directory: nothing ran


@pytest.mark.parametrize("bad", [
    ["--think-ms", "nan"], ["--think-ms", "inf"], ["--rtt-ms", "nan"], ["--rtt-ms", "1e9"],
    ["--machines", "0"], ["--machines", "-2"], ["--latency-target-ms", "nan"],
    ["--latency-target-ms", "inf"], ["--agents", "10000000"],
])
def test_recommend_refuses(bad: list[str], tmp_path: Path) -> None:
    args = ["--agents", "5", *bad] if "--agents" not in bad else bad
    r = _bench("recommend", *args, results=tmp_path)
    assert r.returncode != 0, r.stdout
    assert r.stderr.strip().startswith("error:")
    assert "To measure it" not in r.stdout


@pytest.mark.parametrize("scenario", [
    ["--agents", "100000", "--think-ms", "600000", "--rtt-ms", "60000"],
    ["--agents", "3", "--think-ms", "0", "--rtt-ms", "0", "--machines", "4"],
])
def test_recommend_prints_a_command_run_accepts(scenario: list[str], tmp_path: Path) -> None:
    r = _bench("recommend", *scenario, results=tmp_path)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("To measure it: "))
    command = line.removeprefix("To measure it: python -m bench ").split()
    # --duration 0 is refused after the scenario values pass: nothing runs
    checked = _bench(*command, "--duration", "0", results=tmp_path)
    assert "duration" in checked.stderr, checked.stderr
