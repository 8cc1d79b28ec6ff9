"""Print the README's tables for a run, or check/rewrite the copies in Markdown files.

RUN is a run id, 'reference' or omitted (the newest run). With 'reference', --check and
--write take each table from the newest committed reference run that has it (the
closed-loop run has the agent-write tables, the deployment run the agent-step one).
With --check, every block in the files, a line `<!-- headline:NAME -->`, the table, and a
line `<!-- /headline:NAME -->`, must equal the table NAME this command prints for RUN;
a block that differs is shown as a diff and the exit code is 1. --write rewrites the
blocks instead. Files without blocks pass. Table names:
  agent-write-throughput, agent-write-p99, agent-write-retries, agent-write-errors,
  read-while-write-reader-p99, search-p50, agent-step, fair-locking, claims
(--markers prints the tables with their markers, ready to paste).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.analysis import markers
from bench.analysis.headline import headline, tables
from bench.cli.base import CliError
from bench.harness import results

HELP = "the README's tables from a run; --check/--write the copies in Markdown files"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", nargs="?", metavar="RUN",
                   help="run id or 'reference' (default: the newest run)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", nargs="+", metavar="FILE", type=Path,
                      help="fail with a diff when a marked table differs from RUN's")
    mode.add_argument("--write", nargs="+", metavar="FILE", type=Path,
                      help="rewrite the marked tables in these files from RUN")
    mode.add_argument("--markers", action="store_true",
                      help="print each table between its markers")


def main(args: argparse.Namespace) -> int:
    try:
        if (args.check or args.write) and not any(
                markers.find_blocks(path.read_text().splitlines(), str(path))
                for path in args.check or args.write):
            return 0  # nothing marked: no run needed
        run = results.load(args.run_id, Path(args.results_dir))
        found = tables(run)
        if args.run_id == results.REFERENCE and (args.check or args.write):
            found = reference_tables(Path(args.results_dir))
        if args.check:
            # With 'reference' the tables come from several runs: the hint names that.
            by = args.run_id if args.run_id == results.REFERENCE else run.run_id
            return check(args.check, found, by)
        if args.write:
            for path in args.write:
                text = path.read_text()
                new = markers.rewrite(text, found, str(path))
                if new != text:
                    path.write_text(new)
                    print(f"rewrote {path}")
            return 0
    except markers.MarkerError as exc:
        raise CliError(str(exc)) from None
    if args.markers:
        for name, lines in found.items():
            print(f"<!-- headline:{name} -->\n" + "\n".join(lines).strip("\n")
                  + f"\n<!-- /headline:{name} -->\n")
        return 0
    print(headline(run))
    return 0


def reference_tables(results_dir: Path) -> dict[str, list[str]]:
    """Each table from the newest reference run that has it."""
    found: dict[str, list[str]] = {}
    for run_id in results.reference_ids(results_dir):  # oldest first: newer ones win
        found.update(tables(results.load(run_id, results_dir)))
    return found


def check(paths: list[Path], found: dict[str, list[str]], run_id: str) -> int:
    drifted = 0
    for path in paths:
        diffs = markers.check(path.read_text(), found, str(path))
        for diff in diffs:
            print(diff, file=sys.stderr)
        drifted += len(diffs)
    if drifted:
        print(f"error: {drifted} generated table(s) differ from run {run_id}; rewrite them "
              f"with: python -m bench headline {run_id} --write FILE...", file=sys.stderr)
        return 1
    return 0
