"""bench handoff --wal-autocheckpoint: the WAL's peak under a small threshold is measured
there (it follows the scheduling, so no test asserts it)."""

from __future__ import annotations

import pytest

from bench.cli import main
from bench.investigations import handoff


def test_a_short_run_with_a_small_threshold_records_the_wal_peak() -> None:
    run = handoff.measure(agents=2, fair=True, seconds=0.3, wal_autocheckpoint=50)
    assert {s.agent for s in run.spans} == {0, 1}
    assert run.wal_peak_bytes > 0


@pytest.mark.parametrize("pages", ["0", "-5"])
def test_cli_rejects_a_threshold_below_one(pages: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["handoff", "--agents", "2", "--wal-autocheckpoint", pages,
                 "--no-write"]) == 2
    assert "--wal-autocheckpoint" in capsys.readouterr().err
