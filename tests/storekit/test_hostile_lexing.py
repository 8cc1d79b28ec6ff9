"""A second statement must never hide from storekit's scanner where PostgreSQL's own lexer
would find it: the scanner reads words, comments and quotes as the server does."""

from __future__ import annotations

import contextlib

import pytest

from storekit import Database, ProgrammingError
from storekit.params import translate

# Each one is one harmless SELECT to the scanner before the fix, and a SELECT followed by a
# DELETE to PostgreSQL's lexer (which emptied the table).
HIDDEN = {
    # "$" continues an identifier (x$$$ is one name), so no dollar quote starts there.
    "dollar_in_identifier": "SELECT 1 AS x$$$; DELETE FROM n; --$$",
    "dollar_after_non_ascii": "SELECT 1 AS a\u00b7$$; DELETE FROM n; --$$",
    "tagged_dollar_in_identifier": "SELECT 1 AS x$$t$; DELETE FROM n; --$t$",
    # A -- comment ends at a carriage return on PostgreSQL.
    "comment_ends_at_cr": "SELECT 1 --\r; DELETE FROM n",
    "comment_ends_at_cr_after_semicolon": "SELECT 1; --\rDELETE FROM n",
    # BEGIN ATOMIC or CREATE TRIGGER anywhere in the text no longer waives the check.
    "atomic_in_a_string": "SELECT 'begin atomic'; DELETE FROM n",
    "atomic_in_a_comment": "SELECT 1 /* begin atomic */; DELETE FROM n",
    "trigger_words_and_cr": "SELECT 'create trigger' --\r; DELETE FROM n",
    "after_an_atomic_body": ("CREATE OR REPLACE FUNCTION f_atomic() RETURNS int LANGUAGE sql"
                             " BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; END;"
                             " DELETE FROM n"),
}


def make_table(db: Database) -> None:
    db.exec("CREATE TABLE n (id integer); INSERT INTO n VALUES (1), (2), (3)")


@pytest.mark.parametrize("sql", list(HIDDEN.values()), ids=list(HIDDEN))
def test_a_second_statement_the_server_would_run_is_refused(store: Database, sql: str) -> None:
    """On SQLite some of these are one statement (its -- comment runs to a newline): what
    matters there is that the DELETE never runs."""
    make_table(store)
    def refused() -> contextlib.AbstractContextManager[object]:
        if store.backend == "postgres":
            return pytest.raises(ProgrammingError, match="more than one statement")
        return contextlib.suppress(ProgrammingError)

    for call in (store.run, store.get, store.all):
        with refused():
            call(sql)
    with store.transaction() as tx, refused():
        tx.all(sql)
    assert store.get("SELECT count(*) AS c FROM n") == {"c": 3}


def test_an_escape_string_after_a_dollar_identifier_is_not_an_escape_string(
        store: Database) -> None:
    """x$E'\\' is the name x$E then the plain string '\\' to PostgreSQL: the quote after the
    backslash ends it, and the ; after it ends the statement."""
    if store.backend != "postgres":
        pytest.skip("the domain cast form is PostgreSQL's")
    make_table(store)
    store.exec("CREATE DOMAIN x$e AS text")
    with pytest.raises(ProgrammingError, match="more than one statement"):
        store.all("SELECT x$e'\\'; DELETE FROM n; --'")
    assert store.get("SELECT count(*) AS c FROM n") == {"c": 3}


def test_one_statement_with_atomic_body_still_runs(store: Database) -> None:
    if store.backend != "postgres":
        pytest.skip("BEGIN ATOMIC bodies are PostgreSQL's")
    store.run("CREATE FUNCTION f_body(a int) RETURNS int LANGUAGE sql BEGIN ATOMIC"
              " SELECT CASE WHEN a > 0 THEN a END; END")
    store.run("CREATE FUNCTION f_body2() RETURNS int LANGUAGE sql BEGIN /* c */ ATOMIC"
              " SELECT 1; SELECT 2; END;")
    assert store.get("SELECT f_body(?) AS v, f_body2() AS w", (4,)) == {"v": 4, "w": 2}


@pytest.mark.parametrize("sql", [
    "SELECT $é$ ? ; $é$",  # a non-ASCII dollar-quote tag: the ? and ; are inside it
    "SELECT E'\\'?; ' AS a",  # an escape string: \\' does not end it
    "SELECT x$y$ FROM t$ WHERE a$ = ?",  # dollars inside names are not quotes
])
def test_what_postgres_reads_as_one_statement_is_one(sql: str) -> None:
    t = translate(sql, "postgres")
    assert t.count == sql.count("?") - ("$é$ ?" in sql or "E'\\'?" in sql)
