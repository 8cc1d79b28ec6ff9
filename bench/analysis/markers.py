"""Generated tables in Markdown files, kept equal to what `bench headline` prints.

A block is a line `<!-- headline:NAME -->`, the table, and a line `<!-- /headline:NAME -->`,
NAME one of bench.analysis.headline.TABLE_NAMES. check() reports a block whose text differs
from the run's table as a unified diff; rewrite() puts the run's tables in (as cog does for
sqlite-utils' docs). Blank lines at the edges of a block do not count.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

OPEN = re.compile(r"^<!-- headline:(?P<name>[\w.-]+) -->$")
CLOSE = re.compile(r"^<!-- /headline:(?P<name>[\w.-]+) -->$")


class MarkerError(ValueError):
    """A malformed block, or one naming a table the run does not have."""


@dataclass(frozen=True)
class Block:
    name: str
    open_line: int  # index of the opening marker line
    close_line: int  # index of the closing marker line


def find_blocks(lines: list[str], where: str = "") -> list[Block]:
    found: list[Block] = []
    current: tuple[str, int] | None = None
    for i, line in enumerate(lines):
        text = line.strip()
        if m := OPEN.match(text):
            if current is not None:
                raise MarkerError(f"{where}:{i + 1}: headline:{m['name']} opens inside "
                                  f"headline:{current[0]} (line {current[1] + 1})")
            current = (m["name"], i)
        elif m := CLOSE.match(text):
            if current is None or current[0] != m["name"]:
                raise MarkerError(f"{where}:{i + 1}: /headline:{m['name']} closes no open block")
            found.append(Block(current[0], current[1], i))
            current = None
    if current is not None:
        raise MarkerError(f"{where}:{current[1] + 1}: headline:{current[0]} is never closed")
    return found


def _expected(block: Block, tables: dict[str, list[str]], where: str) -> str:
    if block.name not in tables:
        raise MarkerError(f"{where}:{block.open_line + 1}: no table {block.name!r} in this run; "
                          f"tables: {', '.join(tables)}")
    return "\n".join(tables[block.name]).strip("\n")


def check(text: str, tables: dict[str, list[str]], where: str = "") -> list[str]:
    """A unified diff (file text -> run's table) per block that differs; [] if none does."""
    lines = text.splitlines()
    diffs = []
    for block in find_blocks(lines, where):
        expected = _expected(block, tables, where)
        actual = "\n".join(lines[block.open_line + 1:block.close_line]).strip("\n")
        if actual != expected:
            diffs.append("\n".join(difflib.unified_diff(
                actual.splitlines(), expected.splitlines(), lineterm="",
                fromfile=f"{where} headline:{block.name}",
                tofile=f"python -m bench headline: {block.name}")))
    return diffs


def rewrite(text: str, tables: dict[str, list[str]], where: str = "") -> str:
    """The text with every block's body replaced by the run's table."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    done = 0
    for block in find_blocks([line.rstrip("\r\n") for line in lines], where):
        out += lines[done:block.open_line + 1]
        out.append(_expected(block, tables, where) + "\n")
        done = block.close_line
    out += lines[done:]
    return "".join(out)
