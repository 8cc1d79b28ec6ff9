"""Identifier checks shared by schema, search, notify and rls: names never carry SQL."""

from __future__ import annotations

import re

from storekit.errors import ProgrammingError

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def check_ident(name: str, what: str = "identifier") -> str:
    """Return the name if it is letters, digits and underscores; otherwise raise."""
    if not isinstance(name, str) or not _IDENT.fullmatch(name):
        raise ProgrammingError(
            f"invalid {what} {name!r}: use letters, digits and underscores, "
            "starting with a letter or underscore (at most 63 characters)"
        )
    return name


def quote_ident(name: str, what: str = "identifier") -> str:
    """A validated name, double-quoted so reserved words (user, order) work too."""
    return f'"{check_ident(name, what)}"'
