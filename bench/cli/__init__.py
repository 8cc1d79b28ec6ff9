"""python -m bench <command>: one entry point, one module per command (as asv does).

Each module in bench/cli/ named in COMMANDS has HELP (one line), add_arguments(parser)
and main(args) -> exit code. A CliError (or a missing run or server) is printed as one
line and exits with 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import storekit
from bench.cli.base import CliError, HelpFormatter
from bench.harness import results

COMMANDS = ("run", "list", "report", "compare", "recommend", "headline", "soak", "prune",
            "calibrate", "handoff", "wakeup", "micro", "extras", "proxy")


RESULTS_HELP = ("the results folder: new runs are written there, runs are read from it and "
                "its reference/ folder; $STOREKIT_RESULTS_DIR sets it too")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench", formatter_class=HelpFormatter,
        description="The storekit benchmark harness: run workloads on SQLite and PostgreSQL, "
                    "read the results, and run the one-off investigations. Run it from the "
                    "repository root; `python -m bench COMMAND --help` describes a command.")
    p.add_argument("--results-dir", default=str(results.RESULTS_DIR), help=RESULTS_HELP)
    sub = p.add_subparsers(dest="command", required=True, metavar="command")
    for name in COMMANDS:
        module = importlib.import_module(f"bench.cli.{name}")
        cmd = sub.add_parser(name, help=module.HELP, description=module.__doc__,
                             formatter_class=HelpFormatter)
        # Also after the command, where a user looks for it (`bench run --help`); SUPPRESS
        # leaves the value given before the command, or the default, when it is absent.
        cmd.add_argument("--results-dir", default=argparse.SUPPRESS,
                         help=f"{RESULTS_HELP} (default: {results.RESULTS_DIR})")
        module.add_arguments(cmd)
        cmd.set_defaults(handler=module.main)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except (CliError, storekit.DatabaseUnavailable, FileNotFoundError) as exc:
        # One unwrapped line, whatever the terminal width.
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return code


__all__ = ["COMMANDS", "CliError", "main", "parser"]
