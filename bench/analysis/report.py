"""Execute the notebooks for a run and write an HTML report: a build output.

The notebooks are the jupytext py:percent sources in notebooks/ (one source each). Each is
read with jupytext, gets a papermill-style parameters cell, and runs headless with
nbclient in a kernel whose working directory is notebooks/ and whose PYTHONPATH starts at
the repository root (bench is not installed). The executed notebooks, their HTML and the
charts go to build/report/<run_id>/, which git ignores.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jupytext
import nbformat
from nbclient import NotebookClient

from bench import ROOT
from bench.analysis import index_page
from bench.harness import results
from bench.harness.workloads import WORKLOADS

NOTEBOOKS = ROOT / "notebooks"
REPORTS = ROOT / "build" / "report"
# A notebook charts a workload; a run without it gets a note instead of empty charts.
NEEDS = {book: w.name for w in WORKLOADS.values() for book in w.notebooks}
# A notebook may also name the workload it needs in its own source (a line
# `# needs-workload: NAME`), for a workload that does not list it yet.
NEEDS_MARK = "# needs-workload:"


def needs(path: Path) -> str | None:
    """The workload a notebook needs: its own declaration, else the workloads' lists."""
    for line in path.read_text().splitlines()[:30]:
        if line.startswith(NEEDS_MARK):
            return line.removeprefix(NEEDS_MARK).strip()
    return NEEDS.get(path.stem)


def sources(folder: Path = NOTEBOOKS) -> list[Path]:
    """The notebook sources, in report order."""
    return sorted(folder.glob("[0-9][0-9]-*.py"))


def _inject(nb: nbformat.NotebookNode, params: Mapping[str, object]) -> None:
    code = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(code, metadata={"tags": ["injected-parameters"]})
    for i, existing in enumerate(nb.cells):
        if "parameters" in existing.get("metadata", {}).get("tags", []):
            nb.cells.insert(i + 1, cell)
            return
    nb.cells.insert(0, cell)


def kernel_env() -> dict[str, str]:
    """The report's environment with the repository root first on PYTHONPATH."""
    path = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(path))}


def execute_notebook(path: Path, out_dir: Path, params: Mapping[str, object],
                     timeout: int = 600) -> Path:
    nb = jupytext.read(path)
    _inject(nb, params)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}},
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])
    client.execute(env=kernel_env())
    target = out_dir / f"{path.stem}.ipynb"
    nbformat.write(nb, target)
    return target


def to_html(notebook: Path) -> Path:
    """The notebook as a page for a reader: outputs only, code cells hidden."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_filename(str(notebook))
    target = notebook.with_suffix(".html")
    target.write_text(body)
    return target


def index_html(run: results.Run, pages: list[Path], skipped: list[str],
               charts: list[Path], latency_target_ms: float = 50.0) -> str:
    """The report's first page (see bench.analysis.index_page)."""
    return index_page.render(run, pages, skipped, charts, latency_target_ms)


# progress(done, total, notebook, note): note "" as a notebook starts, then what became of
# it ("12.3 s", or "skipped: ..."); done counts the notebooks finished.
Progress = Callable[[int, int, str, str], None]


def build_report(run_id: str | None = None, results_dir: Path | None = None,
                 notebooks: Path = NOTEBOOKS, output: Path | None = None,
                 save_charts: bool = False, latency_target_ms: float = 50.0,
                 progress: Progress | None = None) -> Path:
    """Run every notebook for a run; returns the report's index.html.

    save_charts also copies the charts (and claims.csv) into the run's own charts/ folder,
    to commit them with a reference run on purpose.
    """
    def tell(done: int, stem: str, note: str) -> None:
        if progress is not None:
            progress(done, len(books), stem, note)

    run = results.load(run_id, results_dir)
    out_dir = output or REPORTS / run.run_id
    charts = out_dir / "charts"
    charts.mkdir(parents=True, exist_ok=True)
    params: dict[str, Any] = {"RUN_ID": run.run_id, "RESULTS_DIR": str(run.path.parent),
                              "OUTPUT_DIR": str(charts)}
    pages = []
    skipped = []
    workloads = set(run.summary["workload"])
    books = sources(notebooks)
    for done, path in enumerate(books, 1):
        needed = needs(path)
        if needed is not None and needed not in workloads:
            skipped.append(f"{path.stem} (this run has no {needed} workload)")
            tell(done, path.stem, f"skipped: run {run.run_id} has no {needed} workload")
            continue
        tell(done - 1, path.stem, "")
        start = time.perf_counter()
        executed = execute_notebook(path, out_dir, params)
        pages.append(to_html(executed))
        tell(done, path.stem, f"{time.perf_counter() - start:.1f} s")
    made = index_page.charts(run, charts, latency_target_ms)
    index = out_dir / "index.html"
    index.write_text(index_html(run, pages, skipped, made, latency_target_ms))
    if save_charts:
        (run.path / "charts").mkdir(exist_ok=True)
        for chart in charts.iterdir():
            shutil.copy2(chart, run.path / "charts" / chart.name)
    return index
