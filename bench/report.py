"""python -m bench report: execute the notebooks for a run and write an HTML report.

Each notebook is executed headless with nbclient after a papermill-style parameters cell
is injected, so the notebooks in git stay output-free while the report has everything.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from bench import results

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
# A notebook charts one workload; a run without it gets a note instead of empty charts.
NEEDS = {"00-recommendation": "agent-write", "01-agent-write": "agent-write",
         "02-read-while-write": "read-while-write", "03-search": "search"}


def _inject(nb: nbformat.NotebookNode, params: Mapping[str, object]) -> None:
    code = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(code, metadata={"tags": ["injected-parameters"]})
    for i, existing in enumerate(nb.cells):
        if "parameters" in existing.get("metadata", {}).get("tags", []):
            nb.cells.insert(i + 1, cell)
            return
    nb.cells.insert(0, cell)


def execute_notebook(path: Path, out_dir: Path, params: Mapping[str, object],
                     timeout: int = 600) -> Path:
    nb = nbformat.read(path, as_version=4)
    _inject(nb, params)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}},
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])
    client.execute()
    target = out_dir / path.name
    nbformat.write(nb, target)
    return target


def to_html(notebook: Path) -> Path:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(notebook))
    target = notebook.with_suffix(".html")
    target.write_text(body)
    return target


def build_report(run_id: str | None = None, results_dir: Path | None = None,
                 notebooks: Path = NOTEBOOKS) -> Path:
    run = results.load(run_id, results_dir)
    out_dir = run.path / "report"
    charts = out_dir / "charts"
    charts.mkdir(parents=True, exist_ok=True)
    params = {"RUN_ID": run.run_id, "RESULTS_DIR": str(run.path.parent),
              "OUTPUT_DIR": str(charts)}
    pages = []
    skipped = []
    workloads = set(run.summary["workload"])
    for path in sorted(notebooks.glob("*.ipynb")):
        needed = NEEDS.get(path.stem)
        if needed is not None and needed not in workloads:
            skipped.append(f"{path.stem} (this run has no {needed} workload)")
            continue
        executed = execute_notebook(path, out_dir, params)
        pages.append(to_html(executed))
    links = "\n".join(f'<li><a href="{p.name}">{html.escape(p.stem)}</a></li>' for p in pages)
    links += "".join(f"<li>not run: {html.escape(s)}</li>" for s in skipped)
    images = "\n".join(f'<img src="charts/{c.name}" style="max-width:100%">'
                       for c in sorted(charts.glob("00-*.png")))
    index = out_dir / "index.html"
    index.write_text(
        f"<html><head><meta charset='utf-8'><title>storekit run {run.run_id}</title></head>"
        f"<body><h1>SQLite or PostgreSQL: run {run.run_id}</h1><ul>{links}</ul>{images}"
        "</body></html>")
    return index
