"""Execute the notebooks (notebooks/*.py, jupytext) for a run and write an HTML report.

The report is a build output: build/report/<run_id>/index.html, the executed notebooks,
their HTML and charts/, all git-ignored. --save-charts also copies the charts into the
run's own charts/ folder (to commit them with a reference run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bench.analysis.report import build_report
from bench.cli.base import console, err

HELP = "execute the notebooks for a run into build/report/<run_id>/"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", nargs="?",
                   help="run id, or 'reference' (default: the newest run, local or reference)")
    p.add_argument("--output", help="folder for the report (default: build/report/<run_id>)")
    p.add_argument("--save-charts", action="store_true",
                   help="also copy the charts into <run>/charts/")


def main(args: argparse.Namespace) -> int:
    # A notebook takes seconds: a bar in a terminal, a line per notebook in a log.
    plain = not err.is_terminal
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} notebooks"), TimeElapsedColumn(),
                  console=err, disable=plain) as bar:
        task = bar.add_task("starting", total=None)

        def progress(done: int, total: int, notebook: str, note: str) -> None:
            bar.update(task, total=total, completed=done,
                       description=notebook if not note else "")
            if plain and note:
                print(f"notebook {done}/{total} {notebook}: {note}", file=sys.stderr,
                      flush=True)

        path = build_report(args.run_id, Path(args.results_dir),
                            output=Path(args.output) if args.output else None,
                            save_charts=args.save_charts, progress=progress)
        bar.update(task, description="done")
    console.print(f"Report: {path}")
    return 0
