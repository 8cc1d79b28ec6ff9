"""The adapter-overhead suite (tests/benchmarks with pytest-benchmark enabled): writes the
JSON and a ratios CSV to results/microbench/ (or --output-dir) and prints storekit/raw and
storekit/SQLAlchemy median ratios per operation and backend. Ratios are reported, never
asserted.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.investigations import micro

HELP = "adapter overhead against the raw drivers and SQLAlchemy"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="few rounds (CI smoke run)")
    p.add_argument("--output-dir", help="default: <results dir>/microbench")


def main(args: argparse.Namespace) -> int:
    out = Path(args.output_dir) if args.output_dir else Path(args.results_dir) / "microbench"
    return micro.run(args.quick, out)
