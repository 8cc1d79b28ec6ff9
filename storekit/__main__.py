"""python -m storekit: migrate between backends, or show what a URL opens."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from typing import Any

import storekit
from storekit.migration import CONFLICTS, MigrationError, MigrationReport, migrate


def _print_report(report: MigrationReport) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # rich comes with the bench extra; plain text otherwise
        for t in report.tables:
            print(f"{t.name}: {t.source_rows} source rows, {t.target_rows} target rows, "
                  f"{'verified' if t.verified else 'NOT verified'} {t.differing_keys or ''}")
    else:
        table = Table(title=f"{report.source} -> {report.target}")
        for col in ("table", "source rows", "copied", "target rows", "checksum", "verified"):
            table.add_column(col)
        for t in report.tables:
            table.add_row(t.name, str(t.source_rows), str(t.copied_rows), str(t.target_rows),
                          t.target_checksum or "-",
                          "yes" if t.verified else f"NO {t.differing_keys[:5]}")
        Console().print(table)
    for item in report.not_migrated:
        print(f"not migrated: {item}")


def _progress() -> tuple[Any, Any]:
    """A live bar on a terminal; elsewhere (CI logs, pipes) a line per table every few
    seconds, so long copies still show they are moving."""
    if not sys.stderr.isatty():
        return None, _line_progress()
    try:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )
    except ImportError:
        return None, _line_progress()
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), transient=False)
    tasks: dict[str, Any] = {}

    def update(table: str, done: int, total: int) -> None:
        if table not in tasks:
            tasks[table] = bar.add_task(table, total=total)
        bar.update(tasks[table], completed=done)

    return bar, update


def _line_progress(every_s: float = 5.0) -> Any:
    printed: dict[str, float] = {}  # table -> when its last line was printed (inf: done)

    def update(table: str, done: int, total: int) -> None:
        now = time.monotonic()
        finished = done >= total
        last = printed.get(table)
        if last == math.inf or (not finished and last is not None and now - last < every_s):
            return  # its last line is out, or one was printed a moment ago
        printed[table] = math.inf if finished else now
        share = f" ({done / total:.0%})" if total else ""
        print(f"copying {table}: {done:,}/{total:,} rows{share}", file=sys.stderr, flush=True)

    return update


def cmd_migrate(args: argparse.Namespace) -> int:
    tables = [t.strip() for t in args.tables.split(",")] if args.tables else None
    bar, update = _progress()
    try:
        with bar if bar is not None else contextlib.nullcontext():
            report = migrate(args.source, args.target, tables=tables,
                             on_conflict=args.on_conflict, verify=not args.no_verify,
                             batch_size=args.batch_size, progress=update)
    except MigrationError as exc:
        _print_report(exc.report)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _print_report(report)
    if args.no_verify:
        print("copied without verification (--no-verify)")
        return 0 if report.error is None else 1
    print("all tables verified" if report.ok else "VERIFICATION FAILED")
    return 0 if report.ok else 1


def cmd_info(args: argparse.Namespace) -> int:
    with storekit.create_database(args.url) as db:
        print(f"backend: {db.backend}\nurl: {db.url}")
        for key, value in vars(db.capabilities).items():
            print(f"{key}: {value}")
        for key, value in db.settings.items():
            print(f"setting {key}: {value}")
        print(f"tables: {', '.join(db.tables()) or '(none)'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m storekit")
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("migrate", help="copy tables between SQLite and PostgreSQL, verified")
    m.add_argument("source")
    m.add_argument("target")
    m.add_argument("--tables", help="comma-separated table names (default: all)")
    m.add_argument("--on-conflict", choices=CONFLICTS, default="error")
    m.add_argument("--no-verify", action="store_true")
    m.add_argument("--batch-size", type=int, default=5000)
    i = sub.add_parser("info", help="backend, capabilities and settings of a URL")
    i.add_argument("url", nargs="?")
    args = p.parse_args(argv)
    try:
        return cmd_migrate(args) if args.command == "migrate" else cmd_info(args)
    except storekit.StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
