"""bench handoff: the turn accounting, and a short real run of both modes."""

from __future__ import annotations

import pytest

from bench.cli import main
from bench.investigations import handoff
from bench.investigations.handoff import Span, summarise


def test_summary_counts_turns_idle_time_and_cold_first_transactions() -> None:
    # Agent 0 commits twice, agent 1 twice, agent 0 once: two turn changes.
    spans = [
        Span(0.0, 0.0, 0.010, 0), Span(0.010, 0.010, 0.0105, 0),
        Span(0.0, 0.0125, 0.0325, 1), Span(0.0325, 0.0325, 0.033, 1),
        Span(0.0105, 0.037, 0.057, 0),
    ]
    found = summarise(spans)
    assert found["turns_per_s"] == pytest.approx(2 / 0.057)
    assert found["commits_per_s"] == pytest.approx(5 / 0.057)
    assert found["commits_per_turn"] == pytest.approx(2.5)
    assert found["handoff_gap_p50_us"] == pytest.approx(3000)  # idle 2 ms, then 4 ms
    assert found["first_of_turn_p50_us"] == pytest.approx(20_000)
    assert found["rest_of_turn_p50_us"] == pytest.approx(500)
    assert found["long_tx_share"] == pytest.approx(0.050 / 0.057)  # the 0.5 ms ones left out
    assert found["latency_p999_ms"] == pytest.approx(46.5)  # asked 10.5 ms, done at 57 ms


def test_an_overlap_after_commit_counts_as_no_idle_time() -> None:
    # Agent 0 read the clock after agent 1 already held the lock: not negative idle time.
    spans = [Span(0.0, 0.0, 0.004, 0), Span(0.0, 0.002, 0.006, 1)]
    assert summarise(spans)["handoff_gap_p50_us"] == 0.0


def test_summary_needs_two_transactions() -> None:
    with pytest.raises(ValueError, match="two transactions"):
        summarise([Span(0.0, 0.0, 0.001, 0)])


@pytest.mark.parametrize("fair", [True, False])
def test_a_short_run_records_every_agents_transactions(fair: bool) -> None:
    run = handoff.measure(agents=3, fair=fair, seconds=0.3)
    spans = run.spans
    assert run.wal_peak_bytes > 0
    assert {s.agent for s in spans} == {0, 1, 2}
    assert all(s.asked <= s.got <= s.done for s in spans)
    found = summarise(spans)
    assert found["commits_per_s"] > 0
    assert found["turns_per_s"] > 0


def test_cli_rejects_a_single_agent(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["handoff", "--agents", "1"]) == 2
    assert "--agents" in capsys.readouterr().err
