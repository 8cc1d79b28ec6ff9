"""The LangGraph saver comparison: the table from a committed run, finding that run, and
the notebook with and without one."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from bench.analysis import report, savers
from bench.harness import results

RUN = "langgraph-20261128T122301Z-1bd3"
COMMITTED = results.RESULTS_DIR / results.REFERENCE / "extras" / RUN


def test_table_has_one_row_per_saver_backend_and_count() -> None:
    frame = savers.table(results.load(str(COMMITTED)).summary)
    assert len(frame) == 15  # 2 savers on postgres, 3 on sqlite, x 3 process counts
    mine = frame[(frame["workload"] == "langgraph") & (frame["backend"] == "sqlite")]
    rival = frame[(frame["workload"] == "langgraph-sqlite") & (frame["backend"] == "sqlite")]
    for (_, m), (_, r) in zip(mine.iterrows(), rival.iterrows(), strict=True):
        assert m["vs_langgraph"] == pytest.approx(m["steps_per_s"] / r["steps_per_s"])
    assert set(frame.loc[frame["workload"] == "langgraph-postgres", "vs_langgraph"]) == {1.0}
    table = savers.markdown(frame)
    assert table.count("\n") == 16
    assert "| sqlite | storekit (StorekitSaver" in table


def test_find_run_looks_under_reference_extras(tmp_path: Path) -> None:
    extras = tmp_path / results.REFERENCE / "extras" / "langgraph-29990101T000000Z-0000"
    shutil.copytree(COMMITTED, extras)
    found = savers.find_run(tmp_path)
    assert found is not None
    assert found.path == extras.resolve()


def test_find_run_answers_none_without_a_langgraph_run(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path / "none")
    assert savers.find_run(tmp_path) is None


def test_notebook_runs_on_the_committed_run(tmp_path: Path) -> None:
    out = report.execute_notebook(report.NOTEBOOKS / "05-langgraph.py", tmp_path,
                                  {"RUN_ID": str(COMMITTED), "RESULTS_DIR": None,
                                   "OUTPUT_DIR": str(tmp_path)})
    text = "".join(o.get("text", "") for c in nbformat.read(out, 4).cells
                   for o in c.get("outputs", []))
    assert "sqlite, 16 processes" in text
    assert "postgres, 1 processes" in text
    assert {p.name for p in tmp_path.glob("*.png")} == {"05-steps_per_s.png",
                                                         "05-checkpoint_put_p99_ms.png"}
