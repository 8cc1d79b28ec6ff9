"""Property-based tests: placeholder translation, JSON values and hostile values."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import storekit
from storekit import Database

# Text that looks like SQL syntax to a careless scanner.
TRICKY = st.text(alphabet="ab ?:%'\"$-/*\\;\n", max_size=12)
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@st.composite
def select_parts(draw: Any, postgres: bool) -> tuple[str, list[Any], list[Any]]:
    """A SELECT whose columns mix literals, placeholders, comments, casts, dollar quotes."""
    columns, params, expected = [], [], []
    kinds = ["literal", "placeholder", "comment", "line_comment"]
    if postgres:
        kinds += ["dollar", "cast"]
    for i in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(kinds))
        text = draw(TRICKY)
        if kind == "literal":
            columns.append(f"{literal(text)} AS c{i}")
            expected.append(text)
        elif kind == "placeholder":
            value = draw(st.one_of(st.integers(-10**6, 10**6), TRICKY))
            columns.append(f"? AS c{i}")
            params.append(value)
            expected.append(value)
        elif kind == "comment":
            body = text.replace("*/", "").replace("/*", "")
            columns.append(f"/* {body} */ {i} AS c{i}")
            expected.append(i)
        elif kind == "line_comment":
            columns.append(f"{i} AS c{i} -- {text.replace(chr(10), ' ')}\n")
            expected.append(i)
        elif kind == "dollar":
            body = text.replace("$", "")
            columns.append(f"$q${body}$q$ AS c{i}")
            expected.append(body)
        else:
            value = draw(st.integers(-1000, 1000))
            columns.append(f"?::int AS c{i}")
            params.append(value)
            expected.append(value)
    return "SELECT " + ", ".join(columns), params, expected


@SETTINGS
@given(data=st.data())
def test_translation_gives_the_values_bound_by_hand(store: Database, data: Any) -> None:
    sql, params, expected = data.draw(select_parts(store.backend == "postgres"))
    row = store.get(sql, tuple(params))
    assert row is not None
    got = [row[f"c{i}"] for i in range(len(expected))]
    # PostgreSQL sends untyped placeholders back as text; compare as text there.
    if store.backend == "postgres":
        assert [str(v) for v in got] == [str(v) for v in expected]
    else:
        assert got == expected


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53)
    # jsonb keeps numbers as numeric text: an integral float of 1e15 or more comes back as
    # an int (36028797018963970 for 3.602879701896397e16). Documented; kept out of here.
    | st.floats(allow_nan=False, allow_infinity=False, width=32).filter(lambda x: abs(x) < 1e15)
    | st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]),
              max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(alphabet=st.characters(blacklist_characters="\x00",
                                                     blacklist_categories=["Cs"]), max_size=8),
                      children, max_size=4),
    max_leaves=12,
)


@pytest.fixture
def docs(store: Database) -> Database:
    from storekit.schema import Column, Table

    store.create_table(Table("docs", [Column("id", "id"), Column("body", "json")]))
    return store


@SETTINGS
@given(value=st.dictionaries(st.text(max_size=5).filter(lambda k: "\x00" not in k), JSON,
                             max_size=5) | st.lists(JSON, max_size=5))
def test_json_values_round_trip(docs: Database, value: Any) -> None:
    rid = docs.run("INSERT INTO docs (body) VALUES (?) RETURNING id", (value,)).last_id
    row = docs.get("SELECT body FROM docs WHERE id = ?", (rid,))
    assert row == {"body": value}


@SETTINGS
@given(value=st.text(alphabet=st.characters(blacklist_characters="\x00",
                                            blacklist_categories=["Cs"])))
def test_values_are_bound_never_interpolated(store: Database, value: str) -> None:
    hostile = value + "'; DROP TABLE t; -- ? :x %s $$"
    store.exec("CREATE TABLE IF NOT EXISTS t (v TEXT)")
    store.run("INSERT INTO t (v) VALUES (?)", (hostile,))
    assert store.get("SELECT v FROM t WHERE v = ?", (hostile,)) == {"v": hostile}
    assert store.get("SELECT v FROM t WHERE v = :v", {"v": hostile}) == {"v": hostile}
    store.run("DELETE FROM t")


@pytest.mark.parametrize("url", [
    "postgresql://u:hunter2@127.0.0.1:1/db",  # wrong port: nothing listens on 1
    "postgresql://u:hunter2@no-such-host.invalid/db",
    "postgres://u:hunter2@[::1/db",
    "mysql://u:hunter2@h/db",
])
def test_bad_urls_one_clear_error_password_masked(url: str) -> None:
    with pytest.raises((storekit.ConfigurationError, storekit.DatabaseUnavailable)) as info:
        storekit.create_database(url, pool=storekit.PoolOptions(connect_timeout=2))
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in repr(info.value)


def test_bad_credentials_are_masked(storekit_postgres_url: str) -> None:
    url = storekit.DatabaseURL.parse(storekit_postgres_url).replace(password="wrong-secret-pw")
    with pytest.raises(storekit.DatabaseUnavailable, match="password authentication") as info:
        storekit.create_database(url)
    assert "wrong-secret-pw" not in str(info.value)
