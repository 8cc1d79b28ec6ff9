"""storekit against the raw driver and SQLAlchemy Core text(), side by side in one session.

Each test is one operation for one client on one backend; the group ("op[backend]") puts
the three clients of an operation next to each other. The normal test run passes
--benchmark-disable, so each case runs once and asserts its result is right; `make
microbench` measures. Nothing here asserts a timing.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import sys
from typing import Any

import pytest

from tests.benchmarks.conftest import N_BIG, N_MESSAGES, N_ROWS, Backend, Impl

IMPL_NAMES = ["storekit", "raw", "sqlalchemy"]
_counter = itertools.count(1)


def bench(benchmark: Any, op: str, micro_backend: Backend, impl: Impl, fn: Any,
          *args: Any) -> Any:
    benchmark.group = f"{op}[{micro_backend.name}]"
    benchmark.extra_info.update({
        "operation": op, "backend": micro_backend.name, "client": impl.name,
        "python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version,
        "server_version": micro_backend.db.capabilities.server_version,
        "rows": N_ROWS, "big_rows": N_BIG, "messages": N_MESSAGES,
    })
    return benchmark(fn, *args)


@pytest.mark.parametrize("client", IMPL_NAMES)
def test_point_select(benchmark: Any, micro_backend: Backend, clients: dict[str, Impl],
                      client: str) -> None:
    row = bench(benchmark, "point_select", micro_backend, clients[client],
                clients[client].point, 42)
    assert row["id"] == 42
    doc = row["doc"]  # SQLAlchemy's text() on SQLite has no column type: JSON stays text
    assert (json.loads(doc) if isinstance(doc, str) else doc)["i"] == 41


@pytest.mark.parametrize("client", IMPL_NAMES)
def test_single_insert(benchmark: Any, micro_backend: Backend, clients: dict[str, Impl],
                       client: str) -> None:
    impl = clients[client]
    bench(benchmark, "insert_autocommit", micro_backend, impl,
          lambda: impl.insert(next(_counter)))
    assert micro_backend.db.get("SELECT COUNT(*) AS c FROM sink")["c"] > 0  # type: ignore[index]


@pytest.mark.parametrize("client", IMPL_NAMES)
def test_100_inserts_in_a_transaction(benchmark: Any, micro_backend: Backend,
                                      clients: dict[str, Impl], client: str) -> None:
    before = micro_backend.db.get("SELECT COUNT(*) AS c FROM sink")["c"]  # type: ignore[index]
    bench(benchmark, "insert_100_tx", micro_backend, clients[client], clients[client].insert100, 0)
    after = micro_backend.db.get("SELECT COUNT(*) AS c FROM sink")["c"]  # type: ignore[index]
    assert (after - before) % 100 == 0
    assert after > before


@pytest.mark.parametrize("client", IMPL_NAMES)
def test_run_many_1000(benchmark: Any, micro_backend: Backend, clients: dict[str, Impl],
                       client: str) -> None:
    rows = [("m", i) for i in range(1000)]
    count = bench(benchmark, "run_many_1000", micro_backend, clients[client],
                  clients[client].run_many, rows)
    assert count == 1000


@pytest.mark.parametrize("client", IMPL_NAMES)
def test_select_1000_dicts(benchmark: Any, micro_backend: Backend, clients: dict[str, Impl],
                           client: str) -> None:
    rows = bench(benchmark, "select_1000_dicts", micro_backend, clients[client],
                 clients[client].select1000)
    assert len(rows) == N_ROWS
    assert set(rows[0]) == {"id", "name", "n"}


@pytest.mark.parametrize("client", IMPL_NAMES)
def test_iterate_100k(benchmark: Any, micro_backend: Backend, clients: dict[str, Impl],
                      client: str) -> None:
    n = bench(benchmark, "iterate_100k", micro_backend, clients[client], clients[client].iterate)
    assert n == N_BIG


@pytest.mark.parametrize("client", IMPL_NAMES)
def test_json_path_indexed(benchmark: Any, micro_backend: Backend, clients: dict[str, Impl],
                           client: str) -> None:
    rows = bench(benchmark, "json_path_indexed", micro_backend, clients[client],
                 clients[client].json_lookup, "json_index", "m7")
    assert len(rows) == N_ROWS // 50


@pytest.mark.parametrize("client", IMPL_NAMES)
def test_json_path_unindexed(benchmark: Any, micro_backend: Backend, clients: dict[str, Impl],
                             client: str) -> None:
    rows = bench(benchmark, "json_path_unindexed", micro_backend, clients[client],
                 clients[client].json_lookup, "json_noindex", "t7")
    assert len(rows) == len([i for i in range(N_ROWS) if i % 97 == 7])


@pytest.mark.parametrize("client", IMPL_NAMES)
def test_full_text_search(benchmark: Any, micro_backend: Backend, clients: dict[str, Impl],
                          client: str) -> None:
    rows = bench(benchmark, "search", micro_backend, clients[client], clients[client].search,
                 "people world")
    assert 0 < len(rows) <= 20


@pytest.mark.parametrize("client", IMPL_NAMES)
def test_empty_transaction(benchmark: Any, micro_backend: Backend, clients: dict[str, Impl],
                           client: str) -> None:
    assert bench(benchmark, "empty_transaction", micro_backend, clients[client],
                 clients[client].empty_tx) is None
