"""bench wakeup: a real ping-pong between two processes, and its argument checks."""

from __future__ import annotations

import pytest

from bench.cli import main
from bench.investigations import wakeup


def test_every_round_measures_a_wake_up_after_the_write() -> None:
    latencies = wakeup.measure(sleep_s=0.001, rounds=20)
    assert len(latencies) == 20
    # The woken process reads the clock after the writer did: never before it.
    assert all(0 <= x < 5.0 for x in latencies)


def test_summary_orders_the_percentiles() -> None:
    found = wakeup.summarise([0.000010, 0.000020, 0.000030, 0.000100])
    assert found["p50_us"] == pytest.approx(25.0)
    assert found["p90_us"] == pytest.approx(100.0)
    assert found["mean_us"] == pytest.approx(40.0)
    with pytest.raises(ValueError, match="no rounds"):
        wakeup.summarise([])


@pytest.mark.parametrize("argv", [["--sleeps", "x"], ["--sleeps", "-1"], ["--rounds", "0"]])
def test_bad_arguments_get_one_clear_error(argv: list[str],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["wakeup", *argv, "--no-write"]) == 2
    assert "error:" in capsys.readouterr().err


def test_the_command_prints_a_row_per_sleep(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["wakeup", "--sleeps", "0.5,1", "--rounds", "5", "--no-write"]) == 0
    out = capsys.readouterr().out
    assert "Wake-up latency" in out
    assert "0.5" in out


def test_the_woken_process_exits_when_the_measuring_side_stops() -> None:
    # With no rounds the child sees end-of-file at once; measure() returns after reaping it.
    assert wakeup.measure(sleep_s=0.001, rounds=0) == []
