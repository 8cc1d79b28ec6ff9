"""Which SQL may change a pooled connection's session, so the reset runs only after those.

The session reset (RESET_SESSION in backend.py) costs a round trip; after a plain SELECT,
INSERT, UPDATE, DELETE or transaction statement there is nothing to reset. The check is a
text scan, cached per SQL string, and conservative: anything it does not recognise as
plain counts as changing the session, so it is reset as before. Plain means every statement
starts with a data or transaction keyword, the text names no temporary table and no
comment hides a statement, and every call is to a built-in function that cannot change the
session (set_config, the advisory locks and the sequence functions are not in the list).

What text cannot show, and is therefore not tracked: a trigger, column default, rule or
user-defined operator whose function changes session state, and the sequence position an
INSERT's serial default leaves for currval()/lastval(). Those stay with the connection until
a call that is reset.
"""

from __future__ import annotations

import re

# First word of each statement: data statements and transaction control.
_PLAIN_STATEMENTS = frozenset({
    "select", "insert", "update", "delete", "with", "values", "table", "merge",
    "begin", "start", "commit", "end", "rollback", "abort", "savepoint", "release",
})
# Words a "(" may follow without being a call: SQL keywords.
_KEYWORDS = frozenset({
    "in", "exists", "any", "all", "some", "values", "as", "over", "filter", "using", "on",
    "and", "or", "not", "where", "select", "by", "then", "else", "when", "from", "join",
    "returning", "conflict", "lateral", "case", "is", "like", "ilike", "between", "distinct",
    "group", "partition", "order", "limit", "offset", "union", "except", "intersect",
    "recursive", "materialized", "having", "set", "within", "row", "array", "cast", "do",
    "update", "nothing", "into", "tuple", "coalesce", "nullif", "greatest", "least",
    "extract", "position", "substring", "trim", "overlay", "collate", "escape", "window",
})
# Built-in functions that read their arguments and return a value, nothing else.
_PURE_FUNCTIONS = frozenset({
    "count", "sum", "min", "max", "avg", "bool_and", "bool_or", "every", "array_agg",
    "string_agg", "json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg",
    "lower", "upper", "length", "char_length", "octet_length", "substr", "replace",
    "concat", "concat_ws", "left", "right", "strpos", "split_part", "md5", "encode",
    "decode", "abs", "round", "floor", "ceil", "ceiling", "mod", "power", "sqrt", "ln",
    "now", "clock_timestamp", "statement_timestamp", "date_trunc", "date_part", "to_char",
    "to_timestamp", "to_date", "to_number", "age", "make_interval",
    "row_number", "rank", "dense_rank", "percent_rank", "lag", "lead", "first_value",
    "last_value", "ntile", "unnest", "generate_series", "array_length", "cardinality",
    "gen_random_uuid", "random",
    "json_build_object", "jsonb_build_object", "json_build_array", "jsonb_build_array",
    "jsonb_set", "jsonb_insert", "jsonb_typeof", "json_typeof", "jsonb_extract_path",
    "jsonb_extract_path_text", "json_extract_path", "json_extract_path_text",
    "jsonb_array_length", "jsonb_array_elements", "jsonb_array_elements_text",
    "jsonb_each", "jsonb_each_text", "jsonb_object_keys", "jsonb_strip_nulls",
    "jsonb_path_query", "jsonb_path_query_first", "jsonb_path_exists", "jsonb_path_match",
    "to_json", "to_jsonb", "row_to_json",
    "to_tsvector", "to_tsquery", "plainto_tsquery", "phraseto_tsquery",
    "websearch_to_tsquery", "ts_rank", "ts_rank_cd", "ts_headline", "setweight",
    "numnode", "querytree", "strip", "pg_backend_pid", "current_setting",
})
# Any word PostgreSQL's lexer accepts (non-ASCII letters too), or a quoted name's end.
_WORD_BEFORE_PAREN = re.compile(
    r'([A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*|")?\s*\(')
_INTO_TABLE = re.compile(r'\binto\s+("[^"]*"|[a-z_][a-z0-9_$]*)\s*$')
_ALIAS = re.compile(r"\bas\s+$")
_FIRST_WORD = re.compile(r"\s*([a-z_]+)\b")
_TEMPORARY = re.compile(r"\b(temp|temporary|pg_temp)\b")

_cache: dict[str, bool] = {}
_CACHE_SIZE = 4096


def changes_session(sql: str) -> bool:
    """True unless sql is plain (see the module docstring): then a reset is needed after it."""
    found = _cache.get(sql)
    if found is None:
        if len(_cache) >= _CACHE_SIZE:
            _cache.clear()
        found = _cache[sql] = _scan(sql)
    return found


def _scan(sql: str) -> bool:
    text = sql.lower()
    if "--" in text or "/*" in text or _TEMPORARY.search(text):
        return True
    # Every statement's first word (a ; inside a literal only adds fragments to check).
    for part in text.split(";"):
        if part.strip():
            first = _FIRST_WORD.match(part)
            if first is None or first.group(1) not in _PLAIN_STATEMENTS:
                return True
    for match in _WORD_BEFORE_PAREN.finditer(text):
        word = match.group(1)
        if word is None:
            continue  # a "(" after punctuation or an operator: grouping, a row, a list
        start = match.start()
        if word == '"':
            # A quoted name: a call to who knows what, unless it is the table of an
            # INSERT INTO "t" (columns).
            if _INTO_TABLE.search(text[:start + 1]):
                continue
            return True
        if start > 0 and text[start - 1] in '."$':
            return True  # a schema-qualified call (or stranger): not a known built-in
        if word in _KEYWORDS or word in _PURE_FUNCTIONS:
            continue
        if _INTO_TABLE.search(text[:match.end(1)]) or _ALIAS.search(text[:start]):
            continue  # INSERT INTO t (columns), or AS q (columns): names, not a call
        return True
    return False

