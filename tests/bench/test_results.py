"""Result files: schema round trip and load()."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bench.harness import results


def _write(folder: Path, run_id: str) -> Path:
    summary = [{"workload": "agent-write", "config": "sqlite-wal", "backend": "sqlite",
                "agents": 4, "rep": r, "op": "all", "metric": "ops_per_s", "value": 100.0 + r}
               for r in range(3)]
    series = [{"workload": "agent-write", "config": "sqlite-wal", "agents": 4, "rep": 0,
               "op": "transaction", "second": 0.0, "ops": 10.0, "errors": 0.0}]
    hist = [{"workload": "agent-write", "config": "sqlite-wal", "agents": 4, "rep": 0,
             "op": "transaction", "upper_s": 0.001, "count": 10}]
    samples = pd.DataFrame({"latency_s": [0.001, 0.002]})
    return results.write(folder / run_id, {"run_id": run_id, "plan": {"repetitions": 3}},
                         summary, series, hist, samples)


def test_round_trip_and_newest(tmp_path: Path) -> None:
    _write(tmp_path, "20260101T000000Z-aaaa")
    _write(tmp_path, "20260102T000000Z-bbbb")
    run = results.load(results_dir=tmp_path)
    assert run.run_id == "20260102T000000Z-bbbb"
    assert run.meta["schema_version"] == results.SCHEMA_VERSION
    assert list(run.summary.columns) == results.SUMMARY_KEYS
    assert run.metric("ops_per_s")["value"].tolist() == [100.0, 101.0, 102.0]
    assert len(run.timeseries) == 1
    assert int(run.histograms["count"].sum()) == 10
    assert (run.path / "histograms.csv.gz").is_file()
    assert (run.path / "raw" / "samples.csv.gz").is_file()
    older = results.load("20260101T000000Z-aaaa", tmp_path)
    assert older.run_id == "20260101T000000Z-aaaa"


def test_missing_runs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no benchmark runs"):
        results.load(results_dir=tmp_path)
    _write(tmp_path, "20260101T000000Z-aaaa")
    with pytest.raises(FileNotFoundError, match="20260101T000000Z-aaaa"):
        results.load("nope", tmp_path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "20260101T000000Z-aaaa")
    meta = json.loads((path / "meta.json").read_text())
    meta["schema_version"] = results.SCHEMA_VERSION + 1
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="schema_version"):
        results.load(results_dir=tmp_path)


def test_older_schema_goes_through_upgrades(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    path = _write(tmp_path, "20260101T000000Z-aaaa")
    meta = json.loads((path / "meta.json").read_text())
    meta["schema_version"] = 0
    (path / "meta.json").write_text(json.dumps(meta))
    monkeypatch.setattr(results, "UPGRADES", {
        0: lambda m, s: ({**m, "schema_version": 1, "upgraded": True}, s)})
    assert results.load(results_dir=tmp_path).meta["upgraded"] is True


def test_notebooks_have_one_source_each_with_a_parameters_cell() -> None:
    """The jupytext py:percent file is the notebook: no .ipynb beside it."""
    import jupytext

    from bench.analysis.report import NOTEBOOKS, sources

    books = sources()
    assert [b.stem for b in books] == ["00-recommendation", "01-agent-write",
                                       "02-read-while-write", "03-search", "04-deployment",
                                       "05-langgraph"]
    assert not list(NOTEBOOKS.glob("*.ipynb"))
    for book in books:
        nb = jupytext.read(book)
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), book.name


def test_runs_written_before_histograms_were_compressed_still_load(tmp_path: Path) -> None:
    path = _write(tmp_path, "20260101T000000Z-aaaa")
    hist = pd.read_csv(path / "histograms.csv.gz")
    (path / "histograms.csv.gz").unlink()
    hist.to_csv(path / "histograms.csv", index=False)
    assert int(results.load(results_dir=tmp_path).histograms["count"].sum()) == 10


def test_a_run_without_histogram_rows_loads_an_empty_frame(tmp_path: Path) -> None:
    path = _write(tmp_path, "20260101T000000Z-aaaa")
    pd.DataFrame().to_csv(path / "histograms.csv.gz", index=False, compression="gzip")
    assert results.load(results_dir=tmp_path).histograms.empty
