"""Remove benchmark runs from the results folder.

Name the runs to remove (RUN_ID...) or keep the N newest local runs (--keep N); both may
be given. Without --yes this only lists what would be removed. Runs under
results/reference/ (the committed reference) are never removed by --keep, and by id only
with --force. Investigation JSON (results/extras/, results/microbench/) is left alone.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from bench.cli.base import CliError, console
from bench.harness import results

HELP = "remove runs (keep the N newest, or by id); a dry run unless --yes"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="runs to remove")
    p.add_argument("--keep", type=int, metavar="N",
                   help="remove every local run but the N newest")
    p.add_argument("--force", action="store_true",
                   help="allow removing reference runs named by id")
    p.add_argument("--yes", action="store_true", help="remove; without it, only list")


def chosen(folder: Path, run_ids: list[str], keep: int | None, force: bool) -> list[Path]:
    """The run folders to remove, oldest first."""
    local, reference = results.run_ids(folder), results.reference_ids(folder)
    paths: dict[Path, None] = {}
    if keep is not None:
        if keep < 0:
            raise CliError(f"--keep must be 0 or more, got {keep}")
        for run_id in local[:max(0, len(local) - keep)]:
            paths[folder / run_id] = None
    for run_id in run_ids:
        if run_id in local:
            paths[folder / run_id] = None
        elif run_id in reference:
            if not force:
                raise CliError(f"{run_id} is a reference run (results/{results.REFERENCE}/); "
                               "add --force to remove it")
            paths[folder / results.REFERENCE / run_id] = None
        else:
            raise CliError(f"no run {run_id!r} in {folder}")
    return sorted(paths, key=lambda p: p.name)


def main(args: argparse.Namespace) -> int:
    if args.keep is None and not args.run_ids:
        raise CliError("name runs to remove or give --keep N (see --help)")
    paths = chosen(Path(args.results_dir), args.run_ids, args.keep, args.force)
    if not paths:
        console.print("nothing to remove")
        return 0
    for path in paths:
        if args.yes:
            shutil.rmtree(path)
        console.print(f"{'removed' if args.yes else 'would remove'} {path}")
    if not args.yes:
        console.print(f"{len(paths)} run(s); add --yes to remove them")
    return 0
