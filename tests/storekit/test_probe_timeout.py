"""The "is the server down?" probe waits as long as a pooled connect may (the URL's
connect_timeout, PoolOptions', else 5 s): a loaded machine that takes over a second to fork a
backend is not a server that is down (DatabaseUnavailable "is not answering")."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict

import storekit
from storekit import aio

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _with_option(url: str, option: str) -> str:
    return url + ("&" if "?" in url else "?") + option


@pytest.mark.parametrize(("option", "pool", "seconds"), [
    ("", None, 5),
    ("connect_timeout=7", None, 7),
    ("", storekit.PoolOptions(connect_timeout=9), 9),
])
async def test_the_probe_waits_the_connect_timeout(storekit_postgres_url: str, option: str,
                                                   pool: storekit.PoolOptions | None,
                                                   seconds: int) -> None:
    url = _with_option(storekit_postgres_url, option) if option else storekit_postgres_url
    with storekit.create_database(url, pool=pool) as db:
        assert _probe_seconds(db._backend) == seconds
    async with await aio.create_database(url, pool=pool) as adb:
        assert _probe_seconds(adb._backend) == seconds


def _probe_seconds(backend: object) -> int:
    """The probe's connect timeout: its own argument, else the one in the conninfo."""
    conninfo = conninfo_to_dict(backend._conninfo)  # type: ignore[attr-defined]
    return int({**conninfo, **backend._probe_kwargs}["connect_timeout"])  # type: ignore[attr-defined]
