"""Full-text search: one query syntax, the same matches on both backends, safe input."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import storekit
from bench.harness.corpus import Corpus
from storekit import Database
from storekit.schema import Column, SearchSpec, Table
from storekit.search import parse_query

CHAT = Table(
    "chat",
    [Column("id", "id"), Column("agent", "text"), Column("content", "text")],
    search=SearchSpec(["content"]),
)
N_MESSAGES = 1500


@pytest.fixture
def chat(store: Database) -> Database:
    store.create_table(CHAT)
    return store


@pytest.fixture(scope="module")
def corpus_results(storekit_postgres_url: str, tmp_path_factory: pytest.TempPathFactory
                   ) -> dict[str, dict[str, set[int]]]:
    """Run the same queries over the same 1,500 generated messages on both backends."""
    from storekit.testing import isolated_schema

    queries = QUERIES + [Corpus(seed=7).query() for _ in range(40)]
    messages = [(f"agent{i % 5}", m) for i, m in enumerate(Corpus(seed=1).messages(N_MESSAGES))]
    out: dict[str, dict[str, set[int]]] = {}
    sqlite_url = f"sqlite:///{tmp_path_factory.mktemp('corpus') / 'chat.db'}"
    with isolated_schema(storekit_postgres_url) as pg_url:
        for name, url in (("sqlite", sqlite_url), ("postgres", pg_url)):
            with storekit.create_database(url) as db:
                db.create_table(CHAT)
                db.run_many("INSERT INTO chat (agent, content) VALUES (?, ?)", messages)
                out[name] = {q: {r["id"] for r in db.search("chat", q, limit=N_MESSAGES)}
                             for q in queries}
    return out


QUERIES = [
    "agent", "search message", '"search message"', "deploy*", "run", "running",
    "server -error", "queue OR cache", "report OR alert -warning", "writ*", "quickly jumped",
    "the", "", "model world OR people", '"people world"', "-time",
]


@pytest.mark.parametrize("query", QUERIES)
def test_same_rows_on_both_backends(corpus_results: dict[str, dict[str, set[int]]],
                                    query: str) -> None:
    assert corpus_results["sqlite"][query] == corpus_results["postgres"][query]


def test_generated_queries_match_and_find_rows(
    corpus_results: dict[str, dict[str, set[int]]]
) -> None:
    generated = [q for q in corpus_results["sqlite"] if q not in QUERIES]
    for q in generated:
        assert corpus_results["sqlite"][q] == corpus_results["postgres"][q], q
    assert sum(bool(corpus_results["sqlite"][q]) for q in generated) > len(generated) // 2


def test_syntax_semantics(corpus_results: dict[str, dict[str, set[int]]]) -> None:
    r = corpus_results["sqlite"]
    assert r["search message"] >= r['"search message"']
    assert r["run"] == r["running"]  # English stemming on both
    assert r["queue OR cache"] >= r["queue OR cache"] - set()
    assert r["the"] == set()
    assert r[""] == set()
    assert r["-time"] == set()
    assert r["server -error"]


def test_rank_orders_results_and_paging(chat: Database) -> None:
    chat.run_many("INSERT INTO chat (agent, content) VALUES (?, ?)", [
        ("a", "deploy deploy deploy the server"),
        ("b", "deploy once"),
        ("c", "nothing relevant here"),
    ])
    rows = chat.search("chat", "deploy")
    assert [r["agent"] for r in rows] == ["a", "b"]
    assert rows[0]["rank"] > rows[1]["rank"]
    assert [r["agent"] for r in chat.search("chat", "deploy", limit=1, offset=1)] == ["b"]
    only = chat.search("chat", "deploy", where="agent = ?", params=["b"], columns=["agent"])
    assert [set(r) for r in only] == [{"agent", "rank"}]
    named = chat.search("chat", "deploy", where="agent = :who", params={"who": "a"})
    assert [r["agent"] for r in named] == ["a"]
    sql, params = chat.search_sql("chat", "deploy")
    assert sql is not None
    assert "deploy" in str(params)


def test_updates_and_deletes_are_visible_at_once(chat: Database) -> None:
    rid = chat.run("INSERT INTO chat (agent, content) VALUES ('a', 'alpha beta') RETURNING id"
                   ).last_id
    assert [r["id"] for r in chat.search("chat", "alpha")] == [rid]
    chat.run("UPDATE chat SET content = 'gamma' WHERE id = ?", (rid,))
    assert chat.search("chat", "alpha") == []
    assert [r["id"] for r in chat.search("chat", "gamma")] == [rid]
    if chat.backend == "sqlite":
        chat.run("INSERT OR REPLACE INTO chat (id, agent, content) VALUES (?, 'a', 'delta')",
                 (rid,))
    else:
        chat.run("INSERT INTO chat (id, agent, content) VALUES (?, 'a', 'delta')"
                 " ON CONFLICT (id) DO UPDATE SET content = excluded.content", (rid,))
    assert chat.search("chat", "gamma") == []
    assert [r["id"] for r in chat.search("chat", "delta")] == [rid]
    chat.run("DELETE FROM chat WHERE id = ?", (rid,))
    assert chat.search("chat", "delta") == []
    chat.rebuild_search("chat")
    assert chat.search("chat", "delta") == []


def test_enable_search_on_existing_table_indexes_old_rows(store: Database) -> None:
    store.create_table(Table("notes", [Column("id", "id"), Column("body", "text")]))
    store.run("INSERT INTO notes (body) VALUES ('writing before search')")
    store.enable_search("notes", ["body"])
    assert [r["body"] for r in store.search("notes", "writes")] == ["writing before search"]


HOSTILE = ['"', "'", "*", ":", "^", "NEAR(a b)", "AND", "OR", "NOT", "(", ")", "\x00", "😀",
           "content:x", "a OR", "OR OR", '"unclosed', "-", "--", "x*y", "$$", "%", "\\", "{}",
           "'; DROP TABLE chat; --", "NEAR/2", "a & b | !c", "<->", "é"]


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_queries_never_raise(chat: Database, query: str) -> None:
    chat.run("INSERT INTO chat (agent, content) VALUES ('a', 'drop table chat near')")
    assert isinstance(chat.search("chat", query), list)
    assert chat.tables() == ["chat"]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.text(max_size=40))
def test_arbitrary_text_never_raises(chat: Database, query: str) -> None:
    assert isinstance(chat.search("chat", query), list)


def test_injection_through_names_fails_cleanly(chat: Database) -> None:
    with pytest.raises(storekit.ProgrammingError, match="invalid"):
        chat.search('chat"; DROP TABLE chat; --', "x")
    with pytest.raises(storekit.ProgrammingError, match="invalid"):
        chat.search("chat", "x", columns=['content" FROM chat; --'])
    with pytest.raises(storekit.ProgrammingError, match="invalid"):
        chat.enable_search("chat", ["content); DROP TABLE chat; --"])
    assert chat.tables() == ["chat"]


def test_parse_query_shapes() -> None:
    clauses = parse_query('alpha "beta gamma" pre* -nope OR zeta')
    assert [[(t.words, t.negated, t.prefix) for t in c] for c in clauses] == [
        [(("alpha",), False, False), (("beta", "gamma"), False, False),
         (("pre",), False, True), (("nope",), True, False)],
        [(("zeta",), False, False)],
    ]
