"""What one agent does during a run: wait for the common start, loop, record every sample.

Closed loop by default (the next operation starts when the last one ends). With a rate,
open loop: operations are scheduled at fixed intervals and latency is measured from each
one's intended start, so a stall shows up as queueing delay instead of hiding it
(no coordinated omission).
"""

from __future__ import annotations

import os
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import storekit
from bench.harness.metrics import classify_error


@dataclass(frozen=True)
class AgentContext:
    agent: int
    role: str
    run_key: int
    start_at: float  # wall clock (time.time()) when the warm-up begins, shared by all agents
    warmup: float
    duration: float
    rate: float | None  # operations per second for this agent; None = closed loop
    seed: int
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class OpOutcome:
    op: str
    lock_wait: float = 0.0
    commit: float = 0.0
    ack: Any = None  # what verification must find later; None when nothing was written
    extra: Any = None  # workload-specific observation (e.g. the version a reader saw)


@dataclass
class AgentResult:
    agent: int
    role: str
    ops: list[str] = field(default_factory=list)
    start: array[float] = field(default_factory=lambda: array("d"))  # s into the measurement
    latency: array[float] = field(default_factory=lambda: array("d"))
    lock_wait: array[float] = field(default_factory=lambda: array("d"))
    commit: array[float] = field(default_factory=lambda: array("d"))
    ok: array[int] = field(default_factory=lambda: array("b"))
    # Asyncio agents only (bench/harness/tasks.py): each sample's start lag (actual start
    # minus scheduled start, the load generator's own delay), and the notification
    # latencies its worker's listener saw (recorded on the worker's first agent).
    lag: array[float] = field(default_factory=lambda: array("d"))
    notify_latency: array[float] = field(default_factory=lambda: array("d"))
    counts: dict[str, int] = field(default_factory=dict)  # every measured success, by op
    errors: dict[str, int] = field(default_factory=dict)
    error_examples: dict[str, str] = field(default_factory=dict)
    acked: list[Any] = field(default_factory=list)  # every ack, warm-up included
    extras: list[Any] = field(default_factory=list)
    measure_start_wall: float = 0.0
    rss_start: int = 0  # resident memory of the agent's process, bytes
    rss_end: int = 0
    # The agent made its first measured attempt only after the window had closed (its
    # process was not scheduled in time): the run measured the machine, not the store.
    late: bool = False


def rss_bytes() -> int:
    """Resident set size of this process now (Linux; 0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


Operation = Callable[[int], OpOutcome]


def drive(ctx: AgentContext, operation: Operation) -> AgentResult:
    """Run `operation(seq)` from ctx.start_at for warm-up + duration, recording samples."""
    result = AgentResult(ctx.agent, ctx.role)
    # Anchor perf_counter to the shared wall-clock start once; then use it alone.
    offset = time.perf_counter() - time.time()
    begin = ctx.start_at + offset
    measure = begin + ctx.warmup
    end = measure + ctx.duration
    result.measure_start_wall = ctx.start_at + ctx.warmup
    while time.perf_counter() < begin:
        time.sleep(min(0.005, max(0.0, begin - time.perf_counter())))
    result.rss_start = rss_bytes()
    interval = 1.0 / ctx.rate if ctx.rate else 0.0
    # Long runs (soak) keep every n-th sample so an agent's memory stays flat; counts and
    # errors still see every operation.
    every = int(ctx.params.get("sample_every", 1))
    intended = begin
    seq = 0
    measured = False
    while True:
        now = time.perf_counter()
        if interval:
            if intended > now:
                time.sleep(intended - now)
            started = intended
            intended += interval
        else:
            started = now
        # Every agent makes at least one measured attempt: one that arrives after the window
        # (a loaded machine) records that attempt and is marked late, rather than
        # reporting 0 ops/s for a store that works.
        if started >= end and measured:
            break
        if started >= measure and not measured:
            measured = True
            result.late = started >= end
        ok = True
        outcome: OpOutcome | None = None
        try:
            outcome = operation(seq)
        except storekit.StoreError as exc:
            ok = False
            kind = classify_error(exc)
            if started >= measure:
                result.errors[kind] = result.errors.get(kind, 0) + 1
                result.error_examples.setdefault(kind, str(exc)[:300])
        finished = time.perf_counter()
        seq += 1
        if outcome is not None and outcome.ack is not None:
            result.acked.append(outcome.ack)
        if started < measure:
            continue
        if outcome is not None:
            result.counts[outcome.op] = result.counts.get(outcome.op, 0) + 1
        if every > 1 and seq % every and outcome is not None:
            continue
        result.ops.append(outcome.op if outcome else "error")
        result.start.append(started - measure)
        result.latency.append(finished - started)
        result.lock_wait.append(outcome.lock_wait if outcome else 0.0)
        result.commit.append(outcome.commit if outcome else 0.0)
        result.ok.append(1 if ok else 0)
        if outcome is not None and outcome.extra is not None:
            result.extras.append(outcome.extra)
    result.rss_end = rss_bytes()
    return result
