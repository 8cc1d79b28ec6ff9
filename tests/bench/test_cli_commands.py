"""One entry point: every command of `python -m bench` parses and documents itself."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench import ROOT
from bench.cli import COMMANDS, parser

EXPECTED = {"run", "report", "list", "compare", "recommend", "headline", "calibrate",
            "handoff", "wakeup", "micro", "extras", "prune", "soak", "proxy"}


def test_the_commands() -> None:
    assert set(COMMANDS) == EXPECTED


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert f"python -m bench {command}" in capsys.readouterr().out


def test_python_m_bench_from_the_root_lists_the_commands() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert all(c in proc.stdout for c in EXPECTED)
