"""Search pages ranked inside the SQLite index return what the join-then-sort shape does,
and ranks read on one scale on both backends: 1.0 for the page's best match, never 0."""

from __future__ import annotations

import itertools

import pytest

import storekit
from bench.harness.corpus import Corpus
from storekit import Database
from storekit.backends.postgres.session import changes_session
from storekit.schema import Column, SearchSpec, Table

CHAT = Table("chat_rank", [Column("id", "id"), Column("content", "text")],
             search=SearchSpec(["content"]))


@pytest.fixture
def corpus_db(tmp_path: object) -> Database:
    db = storekit.open_database(f"{tmp_path}/rank.db")
    db.create_table(CHAT)
    messages = list(Corpus(seed=4).messages(1500))
    # Repeated messages tie in rank: the order between them must still be the same.
    db.run_many("INSERT INTO chat_rank (content) VALUES (?)",
                [(m,) for m in messages + messages[:300]])
    return db


def test_the_top_n_shape_returns_the_filtered_shapes_rows(corpus_db: Database) -> None:
    db = corpus_db
    queries = [Corpus(seed=9).query() for _ in range(25)] + ["people world", "deploy OR cache"]
    compared = 0
    for q in queries:
        for limit, offset in ((20, 0), (7, 5), (50, 40)):
            top_sql, values = db.search_sql("chat_rank", q, limit=limit, offset=offset)
            if top_sql is None:
                continue
            # A where= clause keeps the join-then-sort shape; "1 = 1" filters nothing.
            filtered_sql, filtered_values = db.search_sql(
                "chat_rank", q, limit=limit, offset=offset, where="1 = 1")
            assert filtered_sql is not None
            assert top_sql != filtered_sql
            assert db.all(top_sql, values) == db.all(filtered_sql, filtered_values)
            compared += 1
    assert compared > 30


def test_ties_keep_rowid_order(corpus_db: Database) -> None:
    rows = corpus_db.search("chat_rank", Corpus(seed=4).messages(1).__next__().split()[0],
                            limit=200)
    for a, b in itertools.pairwise(rows):
        assert (a["rank"], -a["id"]) >= (b["rank"], -b["id"])


def test_ranks_read_on_one_scale(store: Database) -> None:
    """The README's three messages: raw scores there are ~1e-6 (SQLite) and ~1e-20
    (PostgreSQL), which printed as 0.0."""
    table = Table("rank_readme", [Column("id", "id"), Column("content", "text")],
                  search=SearchSpec(["content"]))
    store.drop_table("rank_readme")
    store.create_table(table)
    store.run_many("INSERT INTO rank_readme (content) VALUES (?)", [
        ("Running the deploy pipeline now",), ("The deploy failed: cache server unreachable",),
        ("Retrying after the cache came back",), ("deploy deploy deploy the deploy",)])
    for query in ("deploy", "deploy -failed", "cache OR run*", "pipeline"):
        rows = store.search("rank_readme", query)
        assert rows
        ranks = [r["rank"] for r in rows]
        assert ranks[0] == 1.0
        assert ranks == sorted(ranks, reverse=True)
        assert all(0.001 <= r <= 1.0 and round(r, 3) > 0 for r in ranks)
    store.drop_table("rank_readme")


def test_a_search_is_plain_sql_for_the_session_reset(store: Database) -> None:
    """A search does not dirty a pooled PostgreSQL session (no reset round trip after it)."""
    store.create_table(CHAT)
    sql, _ = store.search_sql("chat_rank", "deploy cache", limit=5)
    assert sql is not None
    if store.backend == "postgres":
        from storekit.params import translate

        assert changes_session(translate(sql, "postgres").sql) is False
    store.drop_table("chat_rank")
