"""Long, hostile and unusual names and search languages, on both backends.

Names storekit derives from a table's name (FTS table, triggers, indexes, policies) stay
within PostgreSQL's 63 bytes; a search language is checked before it reaches SQL, whether
the caller passed it or a column comment recorded it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import storekit
from storekit import Database
from storekit.migration import migrate
from storekit.schema import Column, Index, SearchSpec, Table
from storekit.schema_names import MAX_IDENT_BYTES, derived_name

LONG = "a" * 50 + "_long_table_x"  # 63 characters
TWIN = "a" * 50 + "_long_table_y"  # shares its first 62 characters with LONG
assert len(LONG) == len(TWIN) == MAX_IDENT_BYTES


def long_table(name: str) -> Table:
    col = "c" * 63
    return Table(name, [Column("id", "id"), Column("body", "text"), Column("meta", "json"),
                        Column(col, "integer")],
                 indexes=[Index([col]), Index(json_path=("meta", "$.model"))],
                 search=SearchSpec(columns=("body",)))


@pytest.mark.parametrize("suffix", ["", "_fts", "_search_idx", "_fts_ai"])
@pytest.mark.parametrize("stem", ["t", "x" * 55, "x" * 63, "é" * 40, "名" * 30])
def test_derived_names_fit_in_63_bytes_and_keep_their_suffix(stem: str, suffix: str) -> None:
    name = derived_name(stem, suffix)
    assert len(name.encode()) <= MAX_IDENT_BYTES
    assert name.endswith(suffix)
    name.encode().decode()  # no character cut in half
    assert derived_name(stem, suffix) == name  # stable
    if len((stem + suffix).encode()) <= MAX_IDENT_BYTES:
        assert name == stem + suffix  # short names are unchanged: existing objects still match


def test_long_stems_sharing_a_prefix_get_different_names() -> None:
    assert derived_name(LONG, "_fts") != derived_name(TWIN, "_fts")
    assert derived_name(LONG, "_search_idx") != derived_name(TWIN, "_search_idx")


@pytest.mark.parametrize("length", [55, 60, 63])
def test_tables_with_names_up_to_63_characters_get_every_feature(store: Database,
                                                                 length: int) -> None:
    name = ("t" * length)[:-1] + "z"
    store.create_table(long_table(name))
    store.run_many(f'INSERT INTO "{name}" (body, meta) VALUES (?, ?)',
                   [("the deploy pipeline is running", {"model": "large"}),
                    ("the cache server is unreachable", {"model": "small"})])
    assert [r["body"] for r in store.search(name, "deploy")] == [
        "the deploy pipeline is running"]
    store.enable_search(name, ["body"])  # again: idempotent
    store.rebuild_search(name)
    assert len(store.search(name, "cache OR run*")) == 2
    assert name in store.tables()
    store.drop_table(name)
    assert name not in store.tables()
    assert store.tables() == []  # the FTS table went with it


def test_two_63_character_tables_sharing_a_prefix_keep_separate_indexes(store: Database) -> None:
    for name, body in ((LONG, "alpha words"), (TWIN, "beta words")):
        store.create_table(long_table(name))
        store.run(f'INSERT INTO "{name}" (body) VALUES (?)', (body,))
    assert [r["body"] for r in store.search(LONG, "words")] == ["alpha words"]
    assert [r["body"] for r in store.search(TWIN, "words")] == ["beta words"]
    assert store.search(LONG, "beta") == []


def test_row_security_on_a_63_character_table(store: Database) -> None:
    if store.backend != "postgres":
        pytest.skip("row-level security exists only on PostgreSQL")
    store.create_table(Table(LONG, [Column("id", "id"), Column("team_id", "integer")]))
    store.enable_row_security(LONG)
    store.create_table(Table(TWIN, [Column("id", "id"), Column("team_id", "integer")]))
    store.enable_row_security(TWIN)
    policies = store.all("SELECT tablename, policyname FROM pg_policies"
                         " WHERE schemaname = current_schema() ORDER BY tablename")
    assert [p["tablename"] for p in policies] == sorted([LONG, TWIN])
    assert len({p["policyname"] for p in policies}) == 2
    assert all(len(p["policyname"].encode()) <= MAX_IDENT_BYTES for p in policies)


def test_migration_keeps_search_on_a_63_character_table(tmp_path: Path,
                                                        storekit_postgres_url: str) -> None:
    from storekit.testing import isolated_schema

    with storekit.open_database(tmp_path / "src.db") as src:
        src.create_table(long_table(LONG))
        src.run(f'INSERT INTO "{LONG}" (body) VALUES (?)', ("searchable body text",))
    with isolated_schema(storekit_postgres_url, prefix="mig") as pg_url:
        assert migrate(f"sqlite:///{tmp_path / 'src.db'}", pg_url).ok
        with storekit.create_database(pg_url) as pg:
            assert [r["body"] for r in pg.search(LONG, "searchable")] == [
                "searchable body text"]
        assert migrate(pg_url, f"sqlite:///{tmp_path / 'back.db'}").ok
    with storekit.open_database(tmp_path / "back.db") as back:
        assert [r["body"] for r in back.search(LONG, "body")] == ["searchable body text"]


HOSTILE = ['x"; DROP TABLE victims; --', "with space", "naïve", "名前", "a" * 64, "",
           "1starts_with_digit", "semi;colon", "x'quote"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused_before_any_sql(store: Database, name: str) -> None:
    store.exec("CREATE TABLE victims (id INTEGER PRIMARY KEY, body TEXT, team_id INTEGER)")
    with pytest.raises(storekit.ProgrammingError):
        Table(name, [Column("id", "id")])
    with pytest.raises(storekit.ProgrammingError):
        Column(name, "text")
    calls = [
        lambda: store.enable_search(name, ["body"]),
        lambda: store.enable_search("victims", [name]),
        lambda: store.search(name, "x"),
        lambda: store.drop_table(name),
        lambda: store.columns(name),
        lambda: store.notify(name, "x"),
        lambda: store.listen(name),
    ]
    if store.backend == "postgres":
        calls += [lambda: store.enable_row_security(name),
                  lambda: store.enable_row_security("victims", name)]
    for call in calls:
        with pytest.raises(storekit.ProgrammingError):
            call()
    assert "victims" in store.tables()


@pytest.mark.parametrize("language", ["english'); DROP TABLE victims; --", "no_such_config",
                                      "pg_catalog.english", "", "german"])
def test_a_bad_search_language_is_refused(store: Database, language: str) -> None:
    store.exec("CREATE TABLE victims (id INTEGER PRIMARY KEY, body TEXT)")
    if store.backend == "postgres" and language == "german":
        store.enable_search("victims", ["body"], language=language)  # a real configuration
        return
    with pytest.raises(storekit.StoreError):
        store.enable_search("victims", ["body"], language=language)
    with pytest.raises(storekit.StoreError):
        store.create_table(Table("other", [Column("id", "id"), Column("body", "text")],
                                 search=SearchSpec(columns=("body",), language=language)))
    assert store.tables() == ["victims"]


@pytest.mark.parametrize("comment", [
    "english', body) OR true --",
    "english'::regconfig, 'x') AS q(q), pg_sleep(0) AS z --",
    "no_such_config",
    "simple; DROP TABLE victims",
])
def test_a_hostile_language_comment_is_refused_not_pasted(store: Database, comment: str) -> None:
    """PostgreSQL records the language in a comment anyone owning the table can change."""
    if store.backend != "postgres":
        pytest.skip("the language comment exists only on PostgreSQL")
    store.exec("CREATE TABLE victims (id serial PRIMARY KEY, body TEXT)")
    store.run("INSERT INTO victims (body) VALUES ('a secret body')")
    store.enable_search("victims", ["body"])
    literal = "'" + comment.replace("'", "''") + "'"
    store.exec(f"COMMENT ON COLUMN victims._search IS {literal}")
    with pytest.raises(storekit.ProgrammingError, match="unusable language"):
        store.search("victims", "secret")
    with pytest.raises(storekit.ProgrammingError, match="unusable language"):
        store.search_sql("victims", "secret")
    assert store.get("SELECT COUNT(*) AS n FROM victims") == {"n": 1}
    store.exec("COMMENT ON COLUMN victims._search IS 'simple'")
    assert [r["body"] for r in store.search("victims", "secret")] == ["a secret body"]
