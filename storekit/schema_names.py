"""Identifier checks shared by schema, search, notify and rls: names never carry SQL.

Names storekit derives from a user's name (`<table>_fts`, `<table>_search_idx`, a policy,
an index) are bounded by `derived_name`: PostgreSQL truncates identifiers past 63 bytes
(NAMEDATALEN - 1), which would make two long names collide, and `check_ident` refuses them.
"""

from __future__ import annotations

import hashlib
import re

from storekit.errors import ProgrammingError, shown

MAX_IDENT_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1, counted in bytes of UTF-8
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def check_ident(name: str, what: str = "identifier") -> str:
    """Return the name if it is letters, digits and underscores; otherwise raise."""
    if not isinstance(name, str) or not _IDENT.fullmatch(name):
        raise ProgrammingError(
            f"invalid {what} {shown(name)}: use letters, digits and underscores, "
            "starting with a letter or underscore (at most 63 characters)"
        )
    # A plain str (the same object unless a subclass): a subclass's __str__ or __format__
    # is the caller's code, and some names are used later in a thread (listen's channels).
    return str.__str__(name)


def quote_ident(name: str, what: str = "identifier") -> str:
    """A validated name, double-quoted so reserved words (user, order) work too."""
    return f'"{check_ident(name, what)}"'


def derived_name(stem: str, suffix: str = "") -> str:
    """`stem + suffix` if it fits in 63 bytes; otherwise the stem cut short plus `_` and 8 hex
    digits of the whole stem's SHA-256, then the suffix. Stable across runs and backends, so
    both backends (and a migration between them) name the same object the same way, and two
    long stems that share a prefix still get different names. The suffix is kept whole:
    readers recognise storekit's objects by it."""
    full = stem + suffix
    if len(full.encode()) <= MAX_IDENT_BYTES:
        return full
    digest = hashlib.sha256(stem.encode()).hexdigest()[:8]
    room = MAX_IDENT_BYTES - len(suffix.encode()) - 1 - len(digest)
    cut = stem.encode()[:room].decode(errors="ignore")  # never split a UTF-8 character
    return f"{cut}_{digest}{suffix}"
