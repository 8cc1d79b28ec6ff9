"""Full-text search with one query syntax on both backends.

SQLite: an FTS5 external-content table `<table>_fts` (porter unicode61), kept in sync by
triggers. PostgreSQL: a generated tsvector column `_search` with a GIN index.

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

from storekit.errors import CapabilityError, ProgrammingError
from storekit.params import Params
from storekit.schema_names import check_ident, derived_name, quote_ident

if TYPE_CHECKING:
    from storekit.database import Database

SEARCH_COLUMN = "_search"
LANGUAGES_SQLITE = {"english": "porter unicode61 remove_diacritics 0",
                    "simple": "unicode61 remove_diacritics 0"}

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


def fts5_expression(clauses: list[list[Term]]) -> str:
    def term(t: Term) -> str:
        return '"' + " ".join(t.words) + '"' + ("*" if t.prefix else "")

    parts = []
    for clause in clauses:
        positive = " AND ".join(term(t) for t in clause if not t.negated)
        negative = "".join(f" NOT {term(t)}" for t in clause if t.negated)
        parts.append(f"(({positive}){negative})")
    return " OR ".join(parts)


def _phrase(words: tuple[str, ...], stop_words: frozenset[str]) -> str:
    """Words in order; a stop word inside a phrase widens the gap (<2>), as phraseto_tsquery."""
    out: list[str] = []
    gap = 1
    for word in words:
        if word in stop_words:
            gap += 1
            continue
        if out:
            out.append("<->" if gap == 1 else f"<{gap}>")
        out.append(word)
        gap = 1
    return "(" + " ".join(out) + ")"


def tsquery_expression(clauses: list[list[Term]], stop_words: frozenset[str] = STOP_WORDS) -> str:
    def term(t: Term) -> str:
        body = _phrase(t.words, stop_words) if len(t.words) > 1 else t.words[0]
        return ("!" if t.negated else "") + body + (":*" if t.prefix else "")

    return " | ".join("(" + " & ".join(term(t) for t in clause) + ")" for clause in clauses)


def _language(backend: str, language: str) -> str:
    check_ident(language, "search language")  # never a quote: it is pasted as a literal
    if backend == "sqlite" and language not in LANGUAGES_SQLITE:
        raise CapabilityError(
            f"SQLite FTS5 stems English only (language='english' or 'simple'), not {language!r};"
            " PostgreSQL supports its other text search configurations"
        )
    return language


def fts_table(table: str) -> str:
    """SQLite: the FTS5 table of a searchable table (its triggers end in _fts_ai/_ad/_au)."""
    return derived_name(table, "_fts")


def search_index(table: str) -> str:
    """PostgreSQL: the GIN index on a searchable table's tsvector column."""
    return derived_name(table, "_search_idx")


def search_statements(backend: str, table: str, columns: Sequence[str],
                      language: str = "english") -> list[str]:
    if not columns:
        raise ProgrammingError("enable_search needs at least one column")
    language = _language(backend, language)
    t = quote_ident(table, "table name")
    cols = [quote_ident(c, "column name") for c in columns]
    if backend == "postgres":
        doc = " || ' ' || ".join(f"coalesce({c}, '')" for c in cols)
        return [
            f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {SEARCH_COLUMN} tsvector GENERATED ALWAYS"
            f" AS (to_tsvector('{language}', {doc})) STORED",
            f"CREATE INDEX IF NOT EXISTS {quote_ident(search_index(table))} ON {t}"
            f" USING GIN ({SEARCH_COLUMN})",
            # The query side must use the same configuration; the comment records it.
            f"COMMENT ON COLUMN {t}.{SEARCH_COLUMN} IS '{language}'",
        ]
    fts = quote_ident(fts_table(table))
    col_list = ", ".join(cols)
    new = ", ".join(f"new.{c}" for c in cols)
    old = ", ".join(f"old.{c}" for c in cols)
    delete = f"INSERT INTO {fts} ({fts}, rowid, {col_list}) VALUES ('delete', old.rowid, {old});"
    insert = f"INSERT INTO {fts} (rowid, {col_list}) VALUES (new.rowid, {new});"
    ai, ad, au = (quote_ident(derived_name(table, f"_fts_a{op}")) for op in "idu")
    return [
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {fts} USING fts5({col_list}, content={t},"
        f" content_rowid='rowid', tokenize='{LANGUAGES_SQLITE[language]}')",
        f"CREATE TRIGGER IF NOT EXISTS {ai} AFTER INSERT ON {t} BEGIN {insert} END",
        f"CREATE TRIGGER IF NOT EXISTS {ad} AFTER DELETE ON {t} BEGIN {delete} END",
        f"CREATE TRIGGER IF NOT EXISTS {au} AFTER UPDATE ON {t} BEGIN {delete} {insert} END",
        f"INSERT INTO {fts} ({fts}) VALUES ('rebuild')",
    ]


def check_language(db: Database, language: str) -> str:
    """The language, if this server can search in it: on PostgreSQL a text search
    configuration in pg_ts_config visible on the search path, on SQLite a tokenizer in
    LANGUAGES_SQLITE. It is pasted into SQL only after this check."""
    _language(db.backend, language)
    if db.backend == "postgres" and db.get(
        "SELECT 1 AS ok FROM pg_ts_config WHERE cfgname = ? AND pg_ts_config_is_visible(oid)",
        (language,),
    ) is None:
        raise ProgrammingError(
            f"{language!r} is not a text search configuration on this server"
            " (see SELECT cfgname FROM pg_ts_config)"
        )
    return language


def enable_search(db: Database, table: str, columns: Sequence[str], *,
                  language: str = "english") -> None:
    check_language(db, language)
    with db.transaction() as tx:
        for statement in search_statements(db.backend, table, columns, language):
            tx.exec(statement)
    db._search_columns.pop(table, None)


def rebuild_search(db: Database, table: str) -> None:
    if db.backend == "sqlite":
        fts = quote_ident(fts_table(table))
        db.run(f"INSERT INTO {fts} ({fts}) VALUES ('rebuild')")
    else:
        db.exec(f"REINDEX INDEX {quote_ident(search_index(table))}")


def _search_info(db: Database, table: str) -> tuple[str, str]:
    """(all result columns, text search configuration) of a searchable table, cached."""
    t = quote_ident(table)
    if db.backend == "sqlite":
        return f"{t}.*", "english"
    cached = db._search_columns.get(table)
    if cached is None:
        from storekit.schema import columns as table_columns

        names = [c.name for c in table_columns(db, table)]  # the generated column is left out
        row = db.get(
            "SELECT col_description(a.attrelid, a.attnum) AS language FROM pg_attribute a"
            " WHERE a.attrelid = to_regclass(?) AND a.attname = ?",
            (quote_ident(table), SEARCH_COLUMN),
        )
        if not names or row is None:
            raise ProgrammingError(f"table {table!r} has no search index; call enable_search")
        # The comment is whatever the table's owner wrote: check it like user input.
        try:
            language = check_language(db, row["language"] or "english")
        except ProgrammingError as exc:
            raise ProgrammingError(
                f"the search index on {table!r} records an unusable language in the comment"
                f" on its {SEARCH_COLUMN} column: {exc}"
            ) from exc
        cached = (", ".join(f"{t}.{quote_ident(n)}" for n in names), language)
        db._search_columns[table] = cached
    return cached


@lru_cache(maxsize=256)
def _search_sql_text(backend: str, t: str, select: str, language: str, where: str | None,
                     named: bool) -> str:
    """The SQL around the query expression; built once per shape, not per search."""

    def mark(name: str) -> str:
        return f":_sk_{name}" if named else "?"

    extra = f" AND ({where})" if where else ""
    if backend == "sqlite":
        fts = quote_ident(fts_table(t[1:-1]))
        return (
            f"SELECT {select}, s.rank AS rank FROM (SELECT rowid AS rid, -bm25({fts}) AS rank"
            f" FROM {fts} WHERE {fts} MATCH {mark('q')}) AS s JOIN {t} ON {t}.rowid = s.rid"
            f" WHERE 1 = 1{extra} ORDER BY s.rank DESC LIMIT {mark('limit')}"
            f" OFFSET {mark('offset')}"
        )
    return (
        f"SELECT {select}, ts_rank({t}.{SEARCH_COLUMN}, q.q) AS rank"
        f" FROM {t}, to_tsquery('{language}', {mark('q')}) AS q(q)"
        f" WHERE {t}.{SEARCH_COLUMN} @@ q.q{extra} ORDER BY rank DESC"
        f" LIMIT {mark('limit')} OFFSET {mark('offset')}"
    )


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
    if not isinstance(query, str):
        raise ProgrammingError(f"search query must be a string, not {type(query).__name__}")
    for name, value in (("limit", limit), ("offset", offset)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ProgrammingError(f"search {name} must be an int >= 0, not {value!r}")
    if where is not None and not isinstance(where, str):
        raise ProgrammingError(f"search where= must be a str, not {type(where).__name__}")
    if isinstance(columns, str):
        raise ProgrammingError("search columns= must be a sequence of names, not one str")
    t = quote_ident(table, "table name")
    clauses = parse_query(query)
    if not clauses:
        return None, ()
    named = isinstance(params, Mapping)
    select, language = _search_info(db, table)
    if columns is not None:
        select = ", ".join(f"{t}.{quote_ident(c, 'column name')}" for c in columns)
    sql = _search_sql_text(db.backend, t, select, language, where, named)
    sqlite = db.backend == "sqlite"
    expression = fts5_expression(clauses) if sqlite else tsquery_expression(clauses)
    if named:
        assert isinstance(params, Mapping)
        return sql, {**params, "_sk_q": expression, "_sk_limit": limit, "_sk_offset": offset}
    if isinstance(params, (str, bytes)):
        raise ProgrammingError(f"search params= must be a sequence, not {type(params).__name__}")
    return sql, [expression, *(params or ()), limit, offset]
