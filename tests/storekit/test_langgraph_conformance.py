"""LangGraph's own checkpointer conformance suite (langgraph-checkpoint-conformance, from
PyPI) against StorekitSaver on a SQLite file and on PostgreSQL.

The suite calls only the async methods (aput, aget_tuple, ...), so it runs twice per
backend: on a saver built on a storekit.aio AsyncDatabase (the async path itself) and on
one built on a Database, whose async methods run the sync ones in a worker thread (the
sync path).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import (
    BASE_CAPABILITIES,
    EXTENDED_CAPABILITIES,
)

from storekit import aio, create_database
from storekit.langgraph import StorekitSaver
from storekit.testing import isolated_schema

# The suite's test counts in langgraph-checkpoint-conformance 0.0.2, per capability.
EXPECTED = {"put": 17, "put_writes": 10, "get_tuple": 10, "list": 16, "delete_thread": 5,
            "delete_for_runs": 7, "copy_thread": 8, "prune": 8}


@contextlib.contextmanager
def fresh_urls(backend: str, tmp_path: Path, pg_url: str | None) -> Iterator[Iterator[str]]:
    """A new, empty database URL per capability suite (the suite reuses thread ids)."""
    if backend == "sqlite":
        yield (f"sqlite:///{tmp_path / f'suite{n}.db'}" for n in range(100))
        return
    assert pg_url is not None
    with contextlib.ExitStack() as stack:
        yield (stack.enter_context(isolated_schema(pg_url, "lg")) for _ in range(100))


@pytest.mark.parametrize("path", ["aio", "sync"])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_conformance_all_capabilities_pass(backend: str, path: str, tmp_path: Path,
                                           request: pytest.FixtureRequest) -> None:
    pg_url = request.getfixturevalue("storekit_postgres_url") if backend == "postgres" else None
    with fresh_urls(backend, tmp_path, pg_url) as urls:

        @checkpointer_test(name=f"StorekitSaver[{backend}, {path}]")
        async def factory() -> AsyncIterator[StorekitSaver]:
            if path == "aio":
                adb = await aio.create_database(next(urls))
                try:
                    saver = StorekitSaver(adb)
                    await saver.asetup()
                    yield saver
                finally:
                    await adb.close()
                return
            db = create_database(next(urls))
            try:
                saver = StorekitSaver(db)
                saver.setup()
                yield saver
            finally:
                db.close()

        report = asyncio.run(validate(factory))
    failures = {cap: r.failures for cap, r in report.results.items() if r.failures}
    assert not failures, report.to_dict()
    assert report.passed_all_base()
    assert report.passed_all()
    detected = {cap for cap, r in report.results.items() if r.detected}
    assert detected == {c.value for c in BASE_CAPABILITIES | EXTENDED_CAPABILITIES}
    counts = {cap: r.tests_passed for cap, r in report.results.items()}
    # Every test of the installed suite ran and passed (a newer suite may have more).
    assert all(counts[cap] >= n for cap, n in EXPECTED.items()), counts
