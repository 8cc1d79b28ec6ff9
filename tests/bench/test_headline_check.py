"""`bench headline RUN --check/--write FILE...`: generated tables cannot drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.analysis.headline import TABLE_NAMES, tables
from bench.cli import main
from bench.harness import results

RUN = "20260101T000000Z-aaaa"


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    summary = [{"workload": "agent-write", "config": c, "backend": c.split("-")[0],
                "agents": a, "rep": 0, "op": "all", "metric": "ops_per_s", "value": v}
               for c, a, v in (("sqlite-wal", 1, 1000.0), ("sqlite-wal", 4, 1500.0),
                               ("postgres", 1, 300.0), ("postgres", 4, 900.0))]
    results.write(tmp_path / "reference" / RUN, {"run_id": RUN, "plan": {"repetitions": 1}},
                  summary, [], [])
    return tmp_path


def _headline(results_dir: Path, *args: str) -> int:
    return main(["--results-dir", str(results_dir), "headline", *args])


def _block(name: str, body: str) -> str:
    return f"<!-- headline:{name} -->\n{body}\n<!-- /headline:{name} -->\n"


def test_names_cover_every_table_headline_prints(results_dir: Path) -> None:
    found = tables(results.load("reference", results_dir))
    assert set(found) <= set(TABLE_NAMES)
    assert {"agent-write-throughput", "claims"} <= set(found)


def test_a_current_table_passes_and_a_drifted_one_fails_with_a_diff(
        results_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = "\n".join(tables(results.load("reference", results_dir))["agent-write-throughput"])
    doc = tmp_path / "doc.md"
    doc.write_text("# Results\n\n" + _block("agent-write-throughput", table) + "\nafter\n")
    assert _headline(results_dir, "reference", "--check", str(doc)) == 0
    doc.write_text(doc.read_text().replace("1,500", "1,234"))
    assert _headline(results_dir, "reference", "--check", str(doc)) == 1
    err = capsys.readouterr().err
    assert "-| sqlite-wal | 1,000 | 1,234 |" in err
    assert "+| sqlite-wal | 1,000 | 1,500 |" in err
    # The hint names what was checked against: the reference runs, not one of them.
    assert "python -m bench headline reference --write" in err
    assert _headline(results_dir, "reference", "--write", str(doc)) == 0
    assert _headline(results_dir, "reference", "--check", str(doc)) == 0
    text = doc.read_text()
    assert text.startswith("# Results\n\n<!-- headline:agent-write-throughput -->\n")
    assert text.endswith("<!-- /headline:agent-write-throughput -->\n\nafter\n")


def test_write_fills_an_empty_block(results_dir: Path, tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(_block("claims", ""))
    assert _headline(results_dir, "reference", "--check", str(doc)) == 1
    assert _headline(results_dir, "reference", "--write", str(doc)) == 0
    assert "| SQLite allows one writer at a time |" in doc.read_text()


def test_files_without_markers_pass_even_without_runs(tmp_path: Path) -> None:
    doc = tmp_path / "README.md"
    doc.write_text("# Nothing generated here\n")
    assert _headline(tmp_path / "empty", "reference", "--check", str(doc)) == 0


@pytest.mark.parametrize(("text", "message"), [
    (_block("no-such-table", "x"), "no table 'no-such-table'"),
    ("<!-- headline:claims -->\n| x |\n", "never closed"),
    ("<!-- /headline:claims -->\n", "closes no open block"),
    ("<!-- headline:claims -->\n<!-- headline:search-p50 -->\n", "opens inside"),
])
def test_malformed_blocks_are_one_line_errors(
        text: str, message: str, results_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(text)
    assert _headline(results_dir, "reference", "--check", str(doc)) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_markers_prints_blocks_the_check_accepts(
        results_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _headline(results_dir, "reference", "--markers") == 0
    doc = tmp_path / "doc.md"
    doc.write_text(capsys.readouterr().out)
    assert "<!-- headline:agent-write-throughput -->" in doc.read_text()
    assert _headline(results_dir, "reference", "--check", str(doc)) == 0
