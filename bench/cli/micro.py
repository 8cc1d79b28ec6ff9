"""The adapter-overhead suite (tests/benchmarks with pytest-benchmark enabled): writes the
JSON and a ratios CSV to results/microbench/ (or --output-dir) and prints storekit/raw and
storekit/SQLAlchemy median ratios per operation and backend. Ratios are reported, never
asserted.

--quick is the smoke run `make test` makes: its ratios are noise at that size, so it
prints one line and writes the table to a .txt file beside the JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from rich.table import Table

from bench.cli.base import BenchConsole, console, table
from bench.investigations import micro, micro_aio

HELP = "adapter overhead against the raw drivers and SQLAlchemy"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="few rounds, a smoke run (CI): one line, the table to a file")
    p.add_argument("--output-dir", help="default: <results dir>/microbench")


def ratio_table(frame: pd.DataFrame, title: str) -> Table:
    # Spaced headers wrap between words in a narrow terminal rather than inside one.
    out = table(title, ("operation", "backend"),
                ("ms", "raw ms", "x raw", "added us", "budget us", "x SQLAlchemy"))
    for _, r in frame.iterrows():
        mark = "" if r["within_budget"] else "!"
        out.add_row(r["operation"], r["backend"], _ms(r["storekit"]), _ms(r["raw"]),
                    f"{r['storekit/raw']:.2f}", f"{_us(r['added_us'], '+')}{mark}",
                    _us(r["budget_us"], ""), f"{r['storekit/sqlalchemy']:.2f}")
    return out


# Four significant digits at most: the table stays within 100 columns, headers whole.
def _ms(value: float) -> str:
    return f"{value:.4f}" if value < 10 else f"{value:.1f}"


def _us(value: float, sign: str) -> str:
    return f"{value:{sign}.1f}" if abs(value) < 1000 else f"{value:{sign}.0f}"


def show(json_path: Path, quick: bool) -> None:
    """The ratio table: printed, or for the smoke run written beside the JSON."""
    title = (f"Adapter overhead, medians from one session ({json_path.name}): storekit's"
             " ms, x the raw driver's and SQLAlchemy's; added us ending in ! is over its budget")
    out = [ratio_table(micro.ratios(json_path), title), *micro_aio.tables(json_path)]
    if not quick:
        for t in out:
            console.print(t)
        console.print(f"JSON: {json_path}", highlight=False)
        return
    text = json_path.with_suffix(".txt")
    with text.open("w") as f:
        for t in out:
            BenchConsole(file=f).print(t)
    count = len(json.loads(json_path.read_text())["benchmarks"])
    console.print(f"microbench smoke: {count} benchmarks ok, table in {text}", highlight=False)


def main(args: argparse.Namespace) -> int:
    out = Path(args.output_dir) if args.output_dir else Path(args.results_dir) / "microbench"
    code, json_path = micro.run(args.quick, out)
    if json_path is not None:
        show(json_path, args.quick)
    return code
