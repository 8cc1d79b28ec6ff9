"""Instructions per agent-write transaction, sync API against storekit.aio with N tasks,
counted by valgrind (machine load does not move a count the way it moves a time).

storekit.aio's turn and budget are times, and valgrind runs code ~50x slower, so both are
scaled by 50 here: otherwise every statement would look slow and go to a thread.
Run each case at two step counts and take the difference, so setup cancels out:

    for steps in 2 5; do PYTHONPATH=. valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python scripts/aio_instructions.py async 1000 $steps 2>&1 | grep Collected
    done

(Collected at 5 steps - at 2 steps) / (3 x tasks) is the count per transaction.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile

import storekit
import storekit.backends.sqlite.aio as sqlite_aio
from storekit import aio
from tests.benchmarks import test_aio_agents as agents

sqlite_aio.TURN_S *= 50
sqlite_aio.BUDGET_S *= 50


async def _async_run(url: str, tasks: int, steps: int) -> None:
    async def step(tx: aio.AsyncTransaction, me: int, seq: int) -> None:
        row = await tx.get(agents.READ_AGENT, (me,))
        assert row is not None
        doc = dict(agents.DOCS[seq % len(agents.DOCS)], seq=seq)
        await tx.run(agents.INSERT_RESULT, (agents.ASYNC_RUN, me, seq, doc))
        await tx.run(agents.INSERT_LOG, (agents.ASYNC_RUN, me, seq, f"agent {me} task {seq}"))
        await tx.run(agents.UPDATE_AGENT, (f"done {seq}", row["runs"] + 1, me))

    async def agent(db: aio.AsyncDatabase, a: int) -> None:
        for seq in range(steps):
            await db.atomic(step, agents._agent(agents.ASYNC_RUN, a), seq)

    async with await aio.create_database(url) as db:
        await asyncio.gather(*(agent(db, a) for a in range(tasks)))


def main(mode: str, tasks: int, steps: int) -> None:
    agents.TASKS, agents.STEPS = tasks, steps
    url = f"sqlite:///{tempfile.mkdtemp()}/agents.db"
    with storekit.create_database(url) as db:
        agents._setup(db)
    if mode == "sync":
        agents._sync_run(url, 0)
    else:
        asyncio.run(_async_run(url, tasks, steps))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
