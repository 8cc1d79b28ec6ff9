"""Full-text search with one query syntax on both backends.

The dialect writes the index (SQLite: an FTS5 external-content table `<table>_fts` kept in
sync by triggers; PostgreSQL: a generated tsvector column `_search` with a GIN index) and
turns the parsed query into its own syntax (FTS5 MATCH, to_tsquery).

The user's query is parsed here, never handed to FTS5 or to_tsquery as typed: words (all
must match), "quoted phrases", prefix*, -excluded and OR. Only letters and digits survive
into the generated expression, so no input can raise a syntax error or reach SQL. English
stop words are dropped on both sides, because PostgreSQL's english configuration drops them
and FTS5 would otherwise require them, and the two result sets would differ.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from storekit.backends.base import Dialect, Row
from storekit.errors import ProgrammingError
from storekit.features import FeatureState
from storekit.params import Params
from storekit.sansio import run_reader, run_script
from storekit.schema_names import quote_ident

if TYPE_CHECKING:
    from storekit.database import Database

# Per Database: a searchable table's (result columns, text search configuration).
_sources: FeatureState[dict[str, tuple[str, str]]] = FeatureState(dict)

# PostgreSQL 15's tsearch_data/english.stop.
STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being
below between both but by can did do does doing don down during each few for from further
had has have having he her here hers herself him himself his how i if in into is it its
itself just me more most my myself no nor not now of off on once only or other our ours
ourselves out over own s same she should so some such t than that the their theirs them
themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with you your yours yourself yourselves
""".split())

_TOKEN = re.compile(r'-?"[^"]*"?|\S+')
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class Term:
    words: tuple[str, ...]
    negated: bool = False
    prefix: bool = False


def parse_query(query: str, *, stop_words: frozenset[str] = STOP_WORDS) -> list[list[Term]]:
    """OR of AND-clauses. Clauses without a positive term are dropped (nothing to match)."""
    clauses: list[list[Term]] = [[]]
    for token in _TOKEN.findall(query):
        if token == "OR":
            clauses.append([])
            continue
        negated = token.startswith("-") and len(token) > 1
        if negated:
            token = token[1:]
        phrase = token.startswith('"')
        prefix = not phrase and token.endswith("*")
        words = tuple(w.lower() for w in _WORD.findall(token))
        if all(w in stop_words for w in words):
            continue  # PostgreSQL cannot match a stop word; FTS5 is made to agree
        if len(words) == 1 or phrase:
            clauses[-1].append(Term(words, negated, prefix and len(words) == 1))
        else:
            # "can't" or "e-mail": the tokenizers split it, so match the pieces in order.
            clauses[-1].append(Term(words, negated))
    return [c for c in clauses if any(not t.negated for t in c)]


def search_statements(dialect: Dialect, table: str, columns: Sequence[str],
                      language: str = "english") -> list[str]:
    """The DDL that makes a table searchable; the language is checked as far as can be
    without a server (PostgreSQL's configurations are checked by check_language)."""
    if not columns:
        raise ProgrammingError("enable_search needs at least one column")
    return dialect.search_statements(table, columns, dialect.search_language(language))


def check_language(db: Database, language: str) -> str:
    """The language, if this server can search in it: on PostgreSQL a text search
    configuration in pg_ts_config visible on the search path, on SQLite a tokenizer FTS5
    has. It is pasted into SQL only after this check."""
    return run_reader(db, db.dialect.check_language(language))


def enable_search(db: Database, table: str, columns: Sequence[str], *,
                  language: str = "english") -> None:
    check_language(db, language)
    with db.transaction() as tx:
        run_script(tx, search_statements(db.dialect, table, columns, language))
    _sources.of(db).pop(table, None)


def rebuild_search(db: Database, table: str) -> None:
    db.exec(db.dialect.rebuild_search(table))


def _search_info(db: Database, table: str) -> tuple[str, str]:
    """(all result columns, text search configuration) of a searchable table, cached."""
    cache = _sources.of(db)
    cached = cache.get(table)
    if cached is None:
        cached = cache[table] = run_reader(db, db.dialect.search_source(table))
    return cached


# The lowest rank a match gets: the raw scores of weak matches are tiny (SQLite's bm25 floors
# a common word's weight at 1e-6, ts_rank returns 1e-20), and a match must never show as 0.
MIN_RANK = 0.001


def scale_ranks(rows: list[Row]) -> list[Row]:
    """Each row's rank, rescaled to its relevance relative to the page's best match: 1.0
    for the best, down to MIN_RANK. The backends' raw scores (-bm25, ts_rank) differ in scale
    by orders of magnitude; this scale reads the same on both. search_sql() shows the raw one."""
    if rows:
        best = max(row["rank"] for row in rows)
        for row in rows:
            raw = row["rank"]
            row["rank"] = max(MIN_RANK, raw / best) if best > 0 and raw > 0 else MIN_RANK
    return rows


@lru_cache(maxsize=256)
def _search_sql_text(dialect: Dialect, t: str, select: str, language: str, where: str | None,
                     named: bool) -> str:
    """The SQL around the query expression; built once per shape, not per search."""
    return dialect.search_query(t, select, language, where, named)


def search_sql(
    db: Database,
    table: str,
    query: str,
    *,
    limit: int = 20,
    offset: int = 0,
    where: str | None = None,
    params: Params = None,
    columns: Sequence[str] | None = None,
) -> tuple[str | None, Sequence[Any] | Mapping[str, Any]]:
    """The SQL and parameters db.search() runs; (None, ()) when the query matches nothing."""
    t, clauses = search_clauses(table, query, limit=limit, offset=offset, where=where,
                                columns=columns)
    if not clauses:
        return None, ()
    return compose_search(db.dialect, t, clauses, _search_info(db, table), limit=limit,
                          offset=offset, where=where, params=params, columns=columns)


def search_clauses(table: str, query: str, *, limit: int, offset: int, where: str | None,
                   columns: Sequence[str] | None) -> tuple[str, list[list[Term]]]:
    """The arguments checked and the query parsed: the quoted table name and the clauses
    ([] when the query matches nothing). The part of search_sql that reads nothing,
    shared with storekit.aio."""
    if not isinstance(query, str):
        raise ProgrammingError(f"search query must be a string, not {type(query).__name__}")
    for name, value in (("limit", limit), ("offset", offset)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ProgrammingError(f"search {name} must be an int >= 0, not {value!r}")
    if where is not None and not isinstance(where, str):
        raise ProgrammingError(f"search where= must be a str, not {type(where).__name__}")
    if isinstance(columns, str):
        raise ProgrammingError("search columns= must be a sequence of names, not one str")
    return quote_ident(table, "table name"), parse_query(query)


def compose_search(
    dialect: Dialect,
    t: str,
    clauses: list[list[Term]],
    info: tuple[str, str],
    *,
    limit: int,
    offset: int,
    where: str | None,
    params: Params,
    columns: Sequence[str] | None,
) -> tuple[str, Sequence[Any] | Mapping[str, Any]]:
    """The search SQL and its parameters for the quoted table t, given its (result
    columns, text search configuration) from the dialect's search_source."""
    named = isinstance(params, Mapping)
    select, language = info
    if columns is not None:
        select = ", ".join(f"{t}.{quote_ident(c, 'column name')}" for c in columns)
    sql = _search_sql_text(dialect, t, select, language, where, named)
    expression = dialect.search_expression(clauses)
    if named:
        assert isinstance(params, Mapping)
        return sql, {**params, "_sk_q": expression, "_sk_limit": limit, "_sk_offset": offset}
    if isinstance(params, (str, bytes)):
        raise ProgrammingError(f"search params= must be a sequence, not {type(params).__name__}")
    return sql, [expression, *(params or ()), limit, offset]
