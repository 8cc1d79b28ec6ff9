"""Agents as asyncio tasks: many per worker process, one event loop and one AsyncDatabase
per worker (the runner starts one worker per core by default).

An agent thinks between steps: a sleep drawn from a lognormal distribution whose median
is think_ms (the spread, sigma, is THINK_SIGMA), 0 for a closed loop. Each step has a
scheduled start (the end of the last step plus the think time; the first is spread
uniformly over one think time, as agents that did not all start at once) and an actual
one; their difference, the lag, is the load generator's own delay (a busy event loop, a
starved process). A run whose lag p99 exceeds LAG_LIMIT_S measured the harness, not the
store, and its summary says so (limited_by).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from collections.abc import Awaitable, Callable

import storekit
from bench.harness.agent import AgentContext, AgentResult, OpOutcome, rss_bytes
from bench.harness.metrics import classify_error

AsyncOperation = Callable[[int], Awaitable[OpOutcome]]
THINK_SIGMA = 0.5  # lognormal spread: p10..p90 of a think time is about 0.5x..1.9x the median
LAG_LIMIT_S = 0.010
POOL_PER_WORKER = 32  # PostgreSQL connections per worker process at most


def think_times(median_ms: float, seed: int, sigma: float = THINK_SIGMA
                ) -> Callable[[], float]:
    """A draw of think seconds: lognormal with the given median; always 0 for 0."""
    if median_ms <= 0:
        return lambda: 0.0
    rng = random.Random(seed)
    mu = math.log(median_ms / 1000.0)
    return lambda: rng.lognormvariate(mu, sigma)


async def drive_async(ctx: AgentContext, operation: AsyncOperation) -> AgentResult:
    """Run one agent's loop from ctx.start_at for warm-up + duration, recording each
    step's storage time (the operation) and start lag; think time is neither."""
    result = AgentResult(ctx.agent, ctx.role)
    clock = time.perf_counter
    offset = clock() - time.time()
    begin = ctx.start_at + offset
    measure = begin + ctx.warmup
    end = measure + ctx.duration
    result.measure_start_wall = ctx.start_at + ctx.warmup
    think_ms = float(ctx.params.get("think_ms", 0.0))
    think = think_times(think_ms, ctx.seed)
    scheduled = begin + random.Random(ctx.seed + 1).uniform(0.0, think_ms / 1000.0)
    result.rss_start = rss_bytes()
    seq = 0
    measured = False
    # As bench/harness/agent.py: at least one measured step, a late one marks the agent.
    while scheduled < end or not measured:
        if scheduled >= measure and not measured:
            measured = True
            result.late = scheduled >= end
        wait = scheduled - clock()
        if wait > 0:
            await asyncio.sleep(wait)
        started = clock()
        ok = True
        outcome: OpOutcome | None = None
        try:
            outcome = await operation(seq)
        except storekit.StoreError as exc:
            ok = False
            kind = classify_error(exc)
            if scheduled >= measure:
                result.errors[kind] = result.errors.get(kind, 0) + 1
                result.error_examples.setdefault(kind, str(exc)[:300])
        finished = clock()
        seq += 1
        if outcome is not None and outcome.ack is not None:
            result.acked.append(outcome.ack)
        if scheduled >= measure:
            if outcome is not None:
                result.counts[outcome.op] = result.counts.get(outcome.op, 0) + 1
            result.ops.append(outcome.op if outcome else "error")
            result.start.append(started - measure)
            result.latency.append(finished - started)
            result.lag.append(max(0.0, started - scheduled))
            result.lock_wait.append(outcome.lock_wait if outcome else 0.0)
            result.commit.append(outcome.commit if outcome else 0.0)
            result.ok.append(1 if ok else 0)
            if outcome is not None and outcome.extra is not None:
                result.extras.append(outcome.extra)
        scheduled = finished + think()
    result.rss_end = rss_bytes()
    return result


async def _listen(db: storekit.aio.AsyncDatabase, channels: list[str], measure_wall: float,
                  into: AgentResult, ready: asyncio.Event) -> None:
    """Record the latency of every notification on these channels sent in the measurement."""
    async with db.listen(*channels) as sub:
        ready.set()
        async for note in sub:
            if note.reconnected:
                continue
            with contextlib.suppress(ValueError, KeyError, TypeError):
                sent = float(json.loads(note.payload)["sent"])
                if sent >= measure_wall:
                    into.notify_latency.append(max(0.0, note.received_at - sent))


async def run_worker(config_name: str, workload: str, url: str, listen_url: str | None,
                     contexts: list[AgentContext]) -> list[AgentResult]:
    from bench.harness.configs import CONFIGS
    from bench.harness.workloads import WORKLOADS

    module = WORKLOADS[workload]
    assert module.async_operation is not None
    db = await CONFIGS[config_name].open_async(
        url, pool_size=min(len(contexts), POOL_PER_WORKER), listen_url=listen_url)
    listener: asyncio.Task[None] | None = None
    sink = AgentResult(-1, "listener")
    try:
        if module.channel is not None and contexts:
            channels = sorted({module.channel(c) for c in contexts})
            ready = asyncio.Event()
            first = contexts[0]
            listener = asyncio.create_task(
                _listen(db, channels, first.start_at + first.warmup, sink, ready))
            await asyncio.wait({listener, asyncio.create_task(ready.wait())},
                               return_when=asyncio.FIRST_COMPLETED)
            if listener.done():
                listener.result()  # the listener failed to start: say why
        operations = [module.async_operation(db, c) for c in contexts]
        agents = await asyncio.gather(*(drive_async(c, op)
                                        for c, op in zip(contexts, operations, strict=True)))
        await asyncio.sleep(0.2)  # the last notifications of the run arrive
    finally:
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        await db.close()
    if agents:
        agents[0].notify_latency = sink.notify_latency
    return list(agents)


def task_worker(config_name: str, workload: str, url: str, listen_url: str | None,
                contexts: list[AgentContext]) -> list[AgentResult]:
    """One worker process's agents, as tasks on one event loop (a multiprocessing target)."""
    return asyncio.run(run_worker(config_name, workload, url, listen_url, contexts))


def split(contexts: list[AgentContext], workers: int) -> list[list[AgentContext]]:
    """Contiguous blocks, one per worker (a team's agents mostly share a worker)."""
    n = max(1, min(workers, len(contexts)))
    size, extra = divmod(len(contexts), n)
    out, at = [], 0
    for w in range(n):
        take = size + (1 if w < extra else 0)
        out.append(contexts[at:at + take])
        at += take
    return out
