"""What every command module shares: the consoles and the one-line user error."""

from __future__ import annotations

import shlex
import sys

from rich.console import Console

console = Console()
err = Console(stderr=True)


class CliError(Exception):
    """A one-line error for the user; printed without a traceback."""


def command_line() -> str:
    """The command as the user typed it, recorded in a run's meta.json."""
    return shlex.join(["python", "-m", "bench", *sys.argv[1:]])
