"""What every command module shares: the consoles, tables that never shorten a name, the
help formatter, and the one-line user error."""

from __future__ import annotations

import argparse
import shlex
import sys
import textwrap
from typing import Any

from rich.console import Console, ConsoleDimensions
from rich.table import Table

# A pipe or a log file has no width to fit: output keeps its natural width there, so a
# table is never narrowed to 80 columns and no name is cut (`python -m bench list | cat`).
UNLIMITED = 10_000


class BenchConsole(Console):
    """A rich console that fits a terminal and never narrows output that is not one."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(UNLIMITED, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


console: Console = BenchConsole()
err: Console = BenchConsole(stderr=True)


PROSE_WIDTH = 60  # a description column wraps here even where the output is unlimited


def table(title: str, names: tuple[str, ...], values: tuple[str, ...] = (),
          prose: tuple[str, ...] = ()) -> Table:
    """A table whose `names` columns (configs, workloads, operations: what a user types
    back) are never wrapped or shortened; in a narrow terminal the `values` (numbers,
    right-aligned) and `prose` columns wrap instead. Nothing is elided: a cell too long
    for its column folds onto the next line."""
    out = Table(title=title)
    for name in names:
        out.add_column(name, no_wrap=True, overflow="fold")
    for value in values:
        out.add_column(value, overflow="fold", justify="right")
    for text in prose:
        out.add_column(text, overflow="fold", max_width=PROSE_WIDTH)
    return out


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps a command's description as written, shows each option's default, and never
    breaks a name such as sqlite-wal-full at its hyphens."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.option_strings and action.default not in (None, False, argparse.SUPPRESS)
                and "default" not in text):
            text += " (default: %(default)s)"
        return text

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False,
                             break_long_words=False)


def one_per_line(title: str, names: Any) -> str:
    """A help epilog listing names one per line (argparse's choices would wrap them)."""
    return f"{title}:\n" + "\n".join(f"  {n}" for n in names)


class CliError(Exception):
    """A one-line error for the user; printed without a traceback."""


def command_line() -> str:
    """The command as the user typed it, recorded in a run's meta.json."""
    return shlex.join(["python", "-m", "bench", *sys.argv[1:]])
