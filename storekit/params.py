"""Placeholder translation (? and :name) and value adaptation.

Translation is done once per distinct SQL string and cached: the per-call cost is a
dict lookup. The scanner skips everything that may contain a ``?`` or ``:name`` that is
not a placeholder: string literals (with '' and E'' escapes), quoted identifiers,
comments, dollar-quoted bodies and ``::`` casts.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from storekit.errors import ProgrammingError

Params = Sequence[Any] | Mapping[str, Any] | None
Style = Literal["none", "qmark", "named"]
Target = Literal["sqlite", "postgres"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# PostgreSQL's lexer (scan.l): an identifier or keyword starts with a letter, "_" or any
# non-ASCII character and goes on with those, digits and "$"; a dollar-quote tag is the
# same without "$". Whole words are skipped, so a "$" or "E'" inside one (x$$, x$E'..')
# is never mistaken for a dollar quote or an escape string as the server would not.
_WORD = re.compile(r"[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$")
_RETURNING = re.compile(r"\breturning\b", re.IGNORECASE)
_INSERT = re.compile(r"\s*(insert|replace)\b", re.IGNORECASE)
# Statements whose result columns a view can describe (declared types, SQLite), and DDL,
# after which those descriptions may be stale.
_QUERY = re.compile(r"\s*(select|with|values)\b", re.IGNORECASE)
_DDL = re.compile(r"\s*(create|alter|drop)\b", re.IGNORECASE)
# A ; inside a SQLite trigger body does not end the statement: sqlite3.complete_statement()
# decides there. On PostgreSQL a ; inside a BEGIN ATOMIC body (PostgreSQL 14) does not
# either: the scanner counts BEGIN ATOMIC/CASE against END, as psql does.
_TRIGGER = re.compile(r"\bcreate\b.*\btrigger\b", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class Translated:
    sql: str
    style: Style
    count: int
    names: tuple[str, ...]
    returning: bool
    insert: bool
    query: bool = False  # SELECT, WITH or VALUES: result columns have declared types
    ddl: bool = False
    probe: str = ""  # SQLite: the statement with its placeholders as NULL (for a view)


def _end_of_quoted(sql: str, i: int, quote: str, backslash: bool) -> int:
    """Index just past the closing quote of a literal that opens at sql[i]."""
    n = len(sql)
    j = i + 1
    while j < n:
        c = sql[j]
        if backslash and c == "\\":
            j += 2
            continue
        if c == quote:
            if j + 1 < n and sql[j + 1] == quote:
                j += 2
                continue
            return j + 1
        j += 1
    raise ProgrammingError(f"unterminated {quote} quote in SQL starting at offset {i}")


def _end_of_block_comment(sql: str, i: int) -> int:
    depth = 0
    n = len(sql)
    j = i
    while j < n:
        if sql.startswith("/*", j):
            depth += 1
            j += 2
        elif sql.startswith("*/", j):
            depth -= 1
            j += 2
            if depth == 0:
                return j
        else:
            j += 1
    raise ProgrammingError(f"unterminated /* comment in SQL starting at offset {i}")


_CACHE: dict[Target, dict[str, Translated]] = {"sqlite": {}, "postgres": {}}
_CACHE_SIZE = 4096


# The SQLite translation of SQL seen before, else None: a C call, for the hot paths. Only
# for an exact str (`type(sql) is str and cached_sqlite(sql)`): a str subclass's __hash__
# and __eq__ are the caller's code, which could answer with another statement's entry.
cached_sqlite: Callable[[str], Translated | None] = _CACHE["sqlite"].get


def translate(sql: str, target: Target) -> Translated:
    """The cached translation of sql: one dict lookup per call once the SQL has been seen."""
    if type(sql) is not str:
        sql = _exact(sql)
    cache = _CACHE[target]
    t = cache.get(sql)
    if t is None:
        if len(cache) >= _CACHE_SIZE:
            cache.clear()  # generated SQL without placeholders must not grow it forever
        t = cache[sql] = _translate(sql, target)
    return t


def _exact(sql: object) -> str:
    """The text of a str subclass as a plain str: the cache's keys and lookups then never
    run the caller's __hash__ or __eq__ (one that lied would be handed, or would hand
    every later caller, another statement's translation)."""
    if not issubclass(type(sql), str):  # not isinstance: it believes a faked __class__
        raise ProgrammingError(f"SQL must be a str, not {type(sql).__name__}")
    return str.__str__(sql)  # str's own: a copy of the characters, not the subclass's __str__


def _translate(sql: str, target: Target) -> Translated:
    """Rewrite placeholders for the target driver; raise ProgrammingError on mixed styles,
    a NUL character (libpq would cut the text there and run the rest) and a second
    statement (PostgreSQL's simple protocol would run it; sqlite3 refuses it)."""
    if not isinstance(sql, str):
        raise ProgrammingError(f"SQL must be a str, not {type(sql).__name__}")
    check_sql_text(sql)
    out: list[str] = []
    names: list[str] = []
    qmarks = 0
    n = len(sql)
    i = 0
    start = 0
    pg = target == "postgres"
    ends: list[int] = []  # top-level ; followed by more than blanks and comments
    semi = -1
    word = ""  # the last keyword or identifier, to see BEGIN ATOMIC
    atomic = 0  # depth inside a PostgreSQL BEGIN ATOMIC body
    # A literal output piece is appended lazily (sql[start:i]) to keep the loop cheap.
    while i < n:
        c = sql[i]
        if semi >= 0 and not c.isspace() and c != ";" and not (
                sql.startswith("--", i) or sql.startswith("/*", i)):
            ends.append(semi)
            semi = -1
        if c.isalpha() or c == "_" or c >= "\x80":
            m = _WORD.match(sql, i)
            assert m is not None
            j = m.end()
            if j - i == 1 and c in "eE" and j < n and sql[j] == "'":
                i = _end_of_quoted(sql, j, "'", True)  # E'...' takes backslash escapes
                word = ""
                continue
            i = j
            if pg:
                prev, word = word, m.group(0).lower()
                if atomic and word in ("case", "end"):
                    atomic += 1 if word == "case" else -1
                elif word == "atomic" and prev == "begin":
                    atomic += 1
            continue
        if c == "'":
            i = _end_of_quoted(sql, i, "'", False)
        elif c == '"':
            i = _end_of_quoted(sql, i, '"', False)
        elif c == "-" and sql.startswith("--", i):
            # PostgreSQL ends a -- comment at \r too; SQLite only at \n.
            j = sql.find("\n", i)
            if pg:
                r = sql.find("\r", i, None if j < 0 else j)
                j = r if r >= 0 else j
            i = n if j < 0 else j + 1
            continue
        elif c == "/" and sql.startswith("/*", i):
            i = _end_of_block_comment(sql, i)
            continue  # a comment between BEGIN and ATOMIC keeps them one phrase
        elif c == "$":
            m = _DOLLAR_TAG.match(sql, i)
            if m:
                close = sql.find(m.group(0), m.end())
                if close < 0:
                    raise ProgrammingError(f"unterminated dollar quote {m.group(0)} in SQL")
                i = close + len(m.group(0))
            else:
                i += 1
        elif c == "?":
            if sql.startswith("??", i):
                out.append(sql[start : i + 1])
                out.append("")  # keeps literal pieces at even indexes
                i += 2
            else:
                out.append(sql[start:i])
                qmarks += 1
                out.append("%s" if pg else "?")
                i += 1
            start = i
        elif c == ":":
            if sql.startswith("::", i):
                i += 2
                continue
            m = _NAME.match(sql, i + 1)
            if m is None:
                i += 1
                continue
            out.append(sql[start:i])
            names.append(m.group(0))
            out.append(f"%({m.group(0)})s" if pg else ":" + m.group(0))
            i = m.end()
            start = i
        else:
            if c == ";" and not atomic:
                semi = i
            i += 1
        if not c.isspace():
            word = ""
    out.append(sql[start:])
    if ends:
        _check_one_statement(sql, ends, pg)
    if pg:
        # psycopg reads % everywhere, literals and comments included; the placeholders
        # this function wrote are the odd-indexed pieces and stay as they are.
        out = [p if k % 2 else p.replace("%", "%%") for k, p in enumerate(out)]
    if qmarks and names:
        raise ProgrammingError(
            "SQL mixes ? and :name placeholders; use one style per statement"
        )
    style: Style = "qmark" if qmarks else "named" if names else "none"
    query = bool(_QUERY.match(sql))
    probe = ""
    if query and not pg:
        # Placeholders are the odd pieces ("" for an escaped ??): NULL stands in for them.
        probe = "".join(p if k % 2 == 0 or not p else "NULL" for k, p in enumerate(out))
    return Translated(
        sql="".join(out),
        style=style,
        count=qmarks,
        names=tuple(dict.fromkeys(names)),
        returning=bool(_RETURNING.search(sql)),
        insert=bool(_INSERT.match(sql)),
        query=query,
        ddl=bool(_DDL.match(sql)),
        probe=probe,
    )


def check_sql_text(sql: str) -> None:
    """NUL ends a C string: libpq would send the text before it and run that."""
    if "\x00" in sql:
        raise ProgrammingError(
            f"SQL text contains a NUL character at offset {sql.index(chr(0))}; nothing was run"
        )


def _check_one_statement(sql: str, ends: list[int], pg: bool) -> None:
    # A PostgreSQL trigger's body is a function: no ; inside CREATE TRIGGER there.
    trigger = not pg and _TRIGGER.search(sql) is not None
    for i in ends:
        if not trigger or sqlite3.complete_statement(sql[: i + 1]):
            raise ProgrammingError(
                "SQL holds more than one statement; run, get, all, iter and run_many take"
                " one (use exec() for a script)"
            )


def check_params(t: Translated, params: Params) -> Sequence[Any] | Mapping[str, Any]:
    """Validate the parameters against the placeholders, before anything is sent."""
    if type(params) is tuple and t.style == "qmark" and len(params) == t.count:
        return params  # the common case, checked first and cheaply
    if t.style == "qmark":
        if isinstance(params, (list, tuple)):
            if len(params) != t.count:
                raise ProgrammingError(
                    f"SQL has {t.count} ? placeholder(s) but {len(params)} value(s) were given"
                )
            return params
        if params is None:
            raise ProgrammingError(f"SQL has {t.count} ? placeholder(s) but no values were given")
        if isinstance(params, Mapping):
            raise ProgrammingError("SQL uses ? placeholders; pass a sequence, not a mapping")
        if isinstance(params, (str, bytes, bytearray, memoryview)):
            raise ProgrammingError(
                f"parameters must be a sequence of values, not {type(params).__name__}"
                " (write (value,) for one value)")
        try:
            values = tuple(params)
        except TypeError as exc:
            raise ProgrammingError(
                f"parameters must be a sequence or a mapping, not {type(params).__name__}"
            ) from exc
        return check_params(t, values)
    if t.style == "named":
        if not isinstance(params, Mapping):
            raise ProgrammingError("SQL uses :name placeholders; pass a mapping of values")
        missing = [name for name in t.names if name not in params]
        if missing:
            raise ProgrammingError(f"no value for placeholder(s): {', '.join(missing)}")
        return params
    if params is None or (isinstance(params, (tuple, list, Mapping)) and not params):
        return ()
    raise ProgrammingError("SQL has no placeholders but values were given")


_SQLITE_NATIVE = frozenset({int, float, str, bytes, type(None), bool})
# Compact JSON; allow_nan=False: NaN and Infinity are not JSON (jsonb refuses them too).
# One encoder for every call: json.dumps with options builds a new one each time.
to_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _sqlite_value(v: Any) -> Any:
    if isinstance(v, (dict, list)):
        return to_json(v)
    if isinstance(v, (Decimal, UUID)):
        return str(v)
    if isinstance(v, (datetime, date, time)):
        return v.isoformat()
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, (int, float, str, bytes)):
        return v
    raise ProgrammingError(f"cannot store a value of type {type(v).__name__}")


def sqlite_values(t: Translated, params: Params) -> Sequence[Any] | Mapping[str, Any]:
    """check_params then adapt_sqlite, with the common case (a tuple of plain values) first."""
    if (type(params) is tuple and len(params) == t.count and t.style == "qmark"
            and _SQLITE_NATIVE.issuperset(map(type, params))):
        return params
    return adapt_sqlite(check_params(t, params))


def adapt_sqlite(
    params: Sequence[Any] | Mapping[str, Any],
) -> Sequence[Any] | Mapping[str, Any]:
    """Turn the portable value types sqlite3 does not know into the forms stored on disk."""
    # map(type, ...) keeps the all-native check in C: this runs on every statement.
    if type(params) is tuple and _SQLITE_NATIVE.issuperset(map(type, params)):
        return params
    if isinstance(params, Mapping):
        if _SQLITE_NATIVE.issuperset(map(type, params.values())):
            return params
        return {k: _sqlite_value(v) if type(v) not in _SQLITE_NATIVE else v
                for k, v in params.items()}
    if _SQLITE_NATIVE.issuperset(map(type, params)):
        return params
    return [_sqlite_value(v) if type(v) not in _SQLITE_NATIVE else v for v in params]
