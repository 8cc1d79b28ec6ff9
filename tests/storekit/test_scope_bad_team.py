"""A team id that cannot become the scope's text (a lone surrogate, a NUL, a __str__ that raises)
is the caller's error: ProgrammingError with the original as its cause, on both APIs, and
the connection goes back clean (the next transaction works)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import storekit
from storekit import aio
from storekit.errors import ProgrammingError


class _Unprintable:
    def __str__(self) -> str:
        raise ValueError("no text for this team")


BAD_TEAMS = [pytest.param("team-\ud800", id="lone-surrogate"),
             pytest.param("team\x00b", id="nul"),
             pytest.param(_Unprintable(), id="str-raises")]


@pytest.mark.parametrize("team", BAD_TEAMS)
def test_sync_scope_refuses_bad_team(storekit_postgres_url: str, team: Any) -> None:
    with storekit.create_database(storekit_postgres_url,
                                  pool=storekit.PoolOptions(min_size=1, max_size=1)) as db:
        with pytest.raises(ProgrammingError) as info, db.scope(team_id=team):
            db.get("SELECT 1 AS one")
        assert isinstance(info.value.__cause__, ValueError)
        with db.transaction() as tx:
            assert tx.get("SELECT 1 AS one") == {"one": 1}
        assert db.get("SELECT current_setting('app.team_id', true) AS t")["t"] in (None, "")


@pytest.mark.parametrize("team", BAD_TEAMS)
def test_aio_scope_refuses_bad_team(storekit_postgres_url: str, team: Any) -> None:
    async def main() -> None:
        db = await aio.create_database(storekit_postgres_url,
                                       pool=storekit.PoolOptions(min_size=1, max_size=1))
        try:
            with pytest.raises(ProgrammingError) as info:
                async with db.scope(team_id=team):
                    await db.get("SELECT 1 AS one")
            assert isinstance(info.value.__cause__, ValueError)
            async with db.transaction() as tx:
                assert await tx.get("SELECT 1 AS one") == {"one": 1}
        finally:
            await db.close()

    asyncio.run(main())
