"""Expand a profile into runs, provision, run the agents, verify, summarise, write results.

Runs are interleaved (repetition outer, config inner) so the drift of a shared machine
hits every configuration alike. Agents are OS processes from one pool, spawned once, or
threads sharing one Database with --workers threads; an asyncio workload (agent-step)
runs its agents as tasks in worker processes from the same pool (bench/harness/tasks.py).

Scenario dimensions: think_ms (asyncio workloads only) and rtt_ms, the network round trip
added between the agents and PostgreSQL by a delay proxy (bench/harness/proxy.py); each
PostgreSQL run measures the round trip its agents see (SELECT 1, p50 and p99).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import multiprocessing
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

import storekit
from bench.harness import metrics, results
from bench.harness.agent import AgentContext, AgentResult, drive
from bench.harness.configs import (
    CONFIGS,
    PGBOUNCER_POOL_SIZE,
    Config,
    Provisioner,
    effective_settings,
)
from bench.harness.tasks import LAG_LIMIT_S, split, task_worker
from bench.harness.workloads import WORKLOADS
from storekit.url import DatabaseURL

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {"agents": [1, 8], "duration": 1.0, "warmup": 0.25, "repetitions": 3,
              "corpus": 5_000},
    "full": {"agents": [1, 2, 4, 8, 16], "duration": 3.0, "warmup": 1.0, "repetitions": 5,
             "corpus": 100_000},
    # Agents that think (1 s, as a model call) at three team sizes, PostgreSQL near and
    # far, direct and behind PgBouncer: 27 runs of ~25 s, about 12 minutes on 2 cores.
    "deployment": {"agents": [10, 100, 1000], "duration": 15.0, "warmup": 4.0,
                   "repetitions": 1, "corpus": 0, "workloads": ["agent-step"],
                   "configs": ["sqlite-wal", "postgres", "postgres-pgbouncer"],
                   "think_ms": [1000], "rtt_ms": [0, 1, 5, 20]},
}
LIMITED_BY_LOAD_GENERATOR = "load generator"
ROUND_TRIP_SAMPLES = 60  # SELECT 1 per PostgreSQL run: about 1.3 s at 20 ms
# Scenario bounds (bench recommend checks the same): a think time past the run measures
# nothing, agent ids are spaced AGENT_ID_STRIDE apart per run (agent_step.py).
MAX_THINK_MS = 600_000
MAX_RTT_MS = 60_000
MAX_AGENTS = 100_000
START_MARGIN = 0.25  # seconds for agents to open connections; late starters lose warm-up only


@dataclass(frozen=True)
class RunSpec:
    workload: str
    config: str
    agents: int
    rep: int
    think_ms: float = 0
    rtt_ms: float = 0


def _number(value: float) -> float:
    """1000.0 -> 1000: the scenario values as typed, in files and labels."""
    return int(value) if float(value).is_integer() else float(value)


@dataclass
class Plan:
    workloads: list[str]
    configs: list[Config]
    agents: list[int]
    duration: float
    warmup: float
    repetitions: int
    corpus: int
    workers: str = "processes"
    rate: float | None = None  # total operations per second across agents; None = closed loop
    keep_samples: bool = True
    sample_every: int = 1  # keep every n-th latency sample (soak runs); counts see all
    think_ms: list[float] = field(default_factory=lambda: [0])  # asyncio workloads only
    rtt_ms: list[float] = field(default_factory=lambda: [0])  # PostgreSQL configs only
    task_workers: int = 0  # worker processes for asyncio agents; 0 = one per core

    def __post_init__(self) -> None:
        self.think_ms = [_number(t) for t in self.think_ms]
        self.rtt_ms = [_number(r) for r in self.rtt_ms]
        if not self.think_ms or any(not 0 <= t <= MAX_THINK_MS for t in self.think_ms):
            raise ValueError(f"think times must be milliseconds from 0 to {MAX_THINK_MS}")
        if not self.rtt_ms or any(not 0 <= r <= MAX_RTT_MS for r in self.rtt_ms):
            raise ValueError(f"round trips must be milliseconds from 0 to {MAX_RTT_MS}")
        if any(a > MAX_AGENTS for a in self.agents):
            raise ValueError(f"agent counts must be at most {MAX_AGENTS}")
        if self.task_workers < 0:
            raise ValueError("task workers must be >= 0 (0: one per core)")
        if any(a <= 0 for a in self.agents):
            raise ValueError("agent counts must be positive integers")
        if self.duration <= 0 or self.warmup < 0:
            raise ValueError("duration must be > 0 and warm-up >= 0 seconds")
        if self.repetitions <= 0:
            raise ValueError("repetitions must be a positive integer")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be a positive number of operations per second")
        if self.workers not in ("processes", "threads"):
            raise ValueError("workers must be 'processes' or 'threads'")

    def specs(self) -> list[RunSpec]:
        # Each repetition starts the workloads and configs of a cell one further along:
        # the first run after a change of agent count pays for warming the machine, and
        # must not always be the same one's.
        return [RunSpec(w, c.name, a, rep, think, rtt) for rep in range(self.repetitions)
                for rtt in self.rtt_ms for think in self.think_ms for a in self.agents
                for w in _rotated(self.workloads, rep) for c in _rotated(self.configs, rep)
                if skip_reason(w, c, think, rtt) is None]

    def skipped(self) -> list[str]:
        """Why combinations of the grid are not run, one line per reason with its count."""
        reasons: dict[str, int] = {}
        for _ in range(self.repetitions):
            for rtt in self.rtt_ms:
                for think in self.think_ms:
                    for _a in self.agents:
                        for w in self.workloads:
                            for c in self.configs:
                                if (why := skip_reason(w, c, think, rtt)) is not None:
                                    reasons[why] = reasons.get(why, 0) + 1
        return [f"{n} run(s) skipped: {why}" for why, n in reasons.items()]

    def workers_for_tasks(self) -> int:
        return self.task_workers or os.cpu_count() or 1

    def seconds(self) -> float:
        per_run = self.duration + self.warmup + START_MARGIN + 0.3
        return sum(per_run + (ROUND_TRIP_SAMPLES * s.rtt_ms / 1000 + 0.5
                              if CONFIGS[s.config].backend == "postgres" else 0.0)
                   for s in self.specs())


T = TypeVar("T")


def _rotated(items: list[T], k: int) -> list[T]:
    k = k % len(items) if items else 0
    return items[k:] + items[:k]


def skip_reason(workload: str, config: Config, think_ms: float, rtt_ms: float) -> str | None:
    """None if the combination is run, else why not."""
    only = WORKLOADS[workload].configs
    if only and config.name not in only:
        return f"{workload} on {config.name}: it runs on {', '.join(only)} only"
    if rtt_ms and config.backend == "sqlite":
        return (f"{config.name} at rtt_ms={_number(rtt_ms)}: SQLite is a file on the agents'"
                " machine, there is no network to add (only rtt_ms=0 is run)")
    if think_ms and not WORKLOADS[workload].tasks:
        return (f"{workload} at think_ms={_number(think_ms)}: only asyncio workloads"
                " (agent-step) think between steps (only think_ms=0 is run)")
    return None


@dataclass
class Outcome:
    spec: RunSpec
    results: list[AgentResult]
    verification: dict[str, Any]
    pg_waits: dict[str, int] = field(default_factory=dict)
    round_trip: dict[str, float] | None = None  # PostgreSQL: measured as the agents see it


def agent_task(config_name: str, workload: str, url: str, ctx: AgentContext) -> AgentResult:
    """One agent in its own process: open, run, close."""
    module = WORKLOADS[workload]
    with CONFIGS[config_name].open(url, pool_size=1) as db:
        return drive(ctx, module.operation(db, ctx))


def _worker_ready(workloads: list[str]) -> None:
    for name in workloads:
        if (warm := WORKLOADS[name].warm) is not None:
            warm()
    time.sleep(0.05)  # long enough that every worker takes one


def _thread_agent(db: storekit.Database, workload: str, ctx: AgentContext) -> AgentResult:
    return drive(ctx, WORKLOADS[workload].operation(db, ctx))


class PgWaitSampler:
    """Samples what active PostgreSQL backends wait on, every 100 ms, during a run."""

    def __init__(self, url: str) -> None:
        self.db = storekit.create_database(url)
        self.counts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            with contextlib.suppress(storekit.StoreError):
                for row in self.db.all(
                    "SELECT COALESCE(wait_event_type, 'CPU') AS kind, count(*) AS n"
                    " FROM pg_stat_activity WHERE state = 'active'"
                    " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                    " GROUP BY 1"
                ):
                    self.counts[row["kind"]] = self.counts.get(row["kind"], 0) + row["n"]

    def __enter__(self) -> PgWaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.db.close()


def measure_round_trip(url: str, rtt_ms: float, *, pooled: bool) -> dict[str, float]:
    """p50 and p99 of SELECT 1 on one connection to url (through the proxy when rtt > 0)."""
    from bench.harness.proxy import round_trips

    samples = sorted(round_trips(url, n=ROUND_TRIP_SAMPLES, warmup=5, pooled=pooled))
    return {"target_ms": rtt_ms, "p50_ms": metrics.percentile(samples, 50) * 1000,
            "p99_ms": metrics.percentile(samples, 99) * 1000, "samples": len(samples)}


class Runner:
    def __init__(self, plan: Plan, postgres_url: str | None, workdir: Path,
                 pgbouncer: Any = None) -> None:
        self.plan = plan
        self.postgres_url = postgres_url
        self.provisioner = Provisioner(workdir, postgres_url, pgbouncer)
        self.urls: dict[tuple[str, str], str] = {}
        self.settings: dict[str, Any] = {}
        self.run_key = 0
        self._pool: Any = None
        self._proxies = contextlib.ExitStack()
        self._proxy_at: dict[tuple[str, int, float], tuple[str, int]] = {}

    def through(self, url: str, rtt_ms: float) -> str:
        """url, or the same URL through a delay proxy adding rtt_ms (one proxy process per
        server and round trip, kept for the runner's life)."""
        if not rtt_ms:
            return url
        from bench.harness.proxy import delay_proxy

        parsed = DatabaseURL.parse(url)
        if not parsed.host or parsed.host.startswith("/"):
            raise ValueError(f"{parsed}: --rtt-ms needs PostgreSQL over TCP, not a socket")
        key = (parsed.host, parsed.port or 5432, float(rtt_ms))
        if key not in self._proxy_at:
            self._proxy_at[key] = self._proxies.enter_context(delay_proxy(*key))
        host, port = self._proxy_at[key]
        return str(parsed.replace(host=host, port=port).render(mask=False))

    def url_for(self, config: Config, workload: str) -> str:
        key = (config.name, workload)
        if key not in self.urls:
            url = self.provisioner.fresh_url(config, workload.replace("-", "_"))
            with config.open(url) as db:
                WORKLOADS[workload].setup(db, {"corpus": self.plan.corpus})
            self.urls[key] = url
            self.settings.setdefault(config.name, effective_settings(config, url))
        return self.urls[key]

    def pool(self, size: int) -> Any:
        if self._pool is None:
            ctx = multiprocessing.get_context("spawn")
            self._pool = ctx.Pool(size)
            # Spawned workers take seconds to start on a small machine; without this the
            # first run's agents would start late and its first seconds would measure that.
            self._pool.map(_worker_ready, [self.plan.workloads] * size, chunksize=1)
        return self._pool

    def run_one(self, spec: RunSpec) -> Outcome:
        config = CONFIGS[spec.config]
        module = WORKLOADS[spec.workload]
        url = self.url_for(config, spec.workload)
        direct = self.provisioner.direct_url(url)
        agent_url = self.through(url, spec.rtt_ms)
        # LISTEN cannot go through PgBouncer: the direct server, at the same distance.
        listen_url = self.through(direct, spec.rtt_ms) if config.pooler else None
        round_trip = (measure_round_trip(agent_url, spec.rtt_ms, pooled=bool(config.pooler))
                      if config.backend == "postgres" else None)
        roles = module.roles(spec.agents)
        self.run_key += 1
        run_key = self.run_key
        with config.open(url) as db:
            module.prepare(db, run_key, roles)
        # Workers are started before the clock, or the first run would measure their start.
        pool = (self.pool(max(self.max_roles(), 2))
                if self.plan.workers == "processes" or module.tasks else None)
        # Asyncio agents are many per process: more of them start later than processes do.
        start_at = time.time() + START_MARGIN * (4 if module.tasks else 1)
        rate = self.plan.rate / len(roles) if self.plan.rate else None
        params = {"writers": roles.count("writer"), "sample_every": self.plan.sample_every,
                  "think_ms": spec.think_ms}
        contexts = [AgentContext(i, role, run_key, start_at, self.plan.warmup,
                                 self.plan.duration, rate, seed=run_key * 100_000 + i,
                                 params=params) for i, role in enumerate(roles)]
        sampler: contextlib.AbstractContextManager[Any] = (
            PgWaitSampler(direct) if config.backend == "postgres" else contextlib.nullcontext()
        )
        with sampler as waits:
            if module.tasks:
                assert pool is not None
                groups = split(contexts, self.plan.workers_for_tasks())
                agent_results = [r for group in pool.starmap(
                    task_worker, [(config.name, spec.workload, agent_url, listen_url, g)
                                  for g in groups], chunksize=1) for r in group]
            elif pool is not None:
                agent_results = pool.starmap(
                    agent_task, [(config.name, spec.workload, agent_url, c) for c in contexts],
                    chunksize=1)
            else:
                with config.open(agent_url, pool_size=len(roles)) as shared, \
                        ThreadPoolExecutor(len(roles)) as threads:
                    futures = [threads.submit(_thread_agent, shared, spec.workload, c)
                               for c in contexts]
                    agent_results = [f.result() for f in futures]
        with config.open(url) as db:
            verification = module.verify(db, run_key, agent_results)
        pg_waits = waits.counts if waits is not None else {}
        return Outcome(spec, agent_results, verification, pg_waits, round_trip)

    def max_roles(self) -> int:
        """Worker processes needed: one per agent of a process workload, and the task
        workers of an asyncio one."""
        return max(self.plan.workers_for_tasks() if WORKLOADS[w].tasks
                   else len(WORKLOADS[w].roles(a))
                   for w in self.plan.workloads for a in self.plan.agents)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None
        self._proxies.close()
        self._proxy_at.clear()
        self.provisioner.close()


def summarise(outcome: Outcome, duration: float) -> tuple[list[dict[str, Any]],
                                                          list[dict[str, Any]],
                                                          list[dict[str, Any]]]:
    """(summary rows, time-series rows, histogram rows) of one run."""
    spec = outcome.spec
    key = {"workload": spec.workload, "config": spec.config,
           "backend": CONFIGS[spec.config].backend, "agents": spec.agents,
           "think_ms": spec.think_ms, "rtt_ms": spec.rtt_ms, "rep": spec.rep}
    rows: list[dict[str, Any]] = []

    def put(op: str, metric: str, value: float) -> None:
        rows.append({**key, "op": op, "metric": metric, "value": value})

    agent_results = outcome.results
    # One pass over every sample, grouped by operation (failed attempts are op "error").
    by_op: dict[str, list[list[Any]]] = {}
    for r in agent_results:
        for sample in zip(r.ops, r.start, r.latency, r.lock_wait, r.commit, r.ok, strict=True):
            columns = by_op.setdefault(sample[0], [[], [], [], [], []])
            for column, value in zip(columns, sample[1:], strict=True):
                column.append(value)
    total_ok = 0
    series: list[dict[str, Any]] = []
    hist: list[dict[str, Any]] = []
    for op in sorted(o for o in by_op if o != "error"):
        starts, lats, waits_all, commits_all, oks = by_op[op]
        lat = [lt for lt, ok in zip(lats, oks, strict=True) if ok]
        waits = [w for w, ok in zip(waits_all, oks, strict=True) if ok]
        commits = [c for c, ok in zip(commits_all, oks, strict=True) if ok]
        done = sum(r.counts.get(op, 0) for r in agent_results)
        total_ok += done
        put(op, "ops_per_s", done / duration)
        for name, value in metrics.latency_summary(lat).items():
            if name != "count":
                put(op, f"latency_{name}_ms", value * 1000)
        if any(waits):
            put(op, "lock_wait_share", sum(waits) / max(sum(lat), 1e-12))
            put(op, "lock_wait_p99_ms", metrics.percentile(sorted(waits), 99) * 1000)
        if any(commits):
            put(op, "commit_p50_ms", metrics.percentile(sorted(commits), 50) * 1000)
            put(op, "commit_p99_ms", metrics.percentile(sorted(commits), 99) * 1000)
        for bucket, count in sorted(metrics.histogram(lat).items()):
            hist.append({**key, "op": op, "upper_s": metrics.bucket_upper(bucket), "count": count})
        for window in metrics.timeseries(starts, lats, [bool(k) for k in oks], duration):
            series.append({**key, "op": op, **window})
    put("all", "ops_per_s", total_ok / duration)
    errors = {kind: sum(r.errors.get(kind, 0) for r in agent_results)
              for kind in metrics.ERROR_TYPES}
    for kind, count in errors.items():
        put("all", f"errors_{kind}", float(count))
    put("all", "errors_total", float(sum(errors.values())))
    put("all", "goodput_per_s", total_ok / duration)
    # Fairness among the agents doing the contended work (writers).
    writer_roles = {"writer"}
    per_agent = [sum(r.counts.values()) for r in agent_results if r.role in writer_roles]
    for name, value in metrics.fairness(per_agent).items():
        put("all", f"fairness_{name}", value)
    for name, value in WORKLOADS[spec.workload].extra_metrics(agent_results).items():
        put("all", name, value)
    samples = sum(outcome.pg_waits.values())
    if samples:
        for kind, count in outcome.pg_waits.items():
            put("all", f"pg_wait_share_{kind}", count / samples)
    rss_growth = [r.rss_end - r.rss_start for r in agent_results]
    put("all", "agent_rss_end_max_mb", max(r.rss_end for r in agent_results) / 2**20)
    put("all", "agent_rss_growth_max_mb", max(rss_growth) / 2**20)
    v = outcome.verification
    put("all", "acked_writes", float(v["acked"]))
    put("all", "lost_writes", float(v["lost"]))
    if outcome.round_trip is not None:
        put("all", "rtt_measured_p50_ms", outcome.round_trip["p50_ms"])
        put("all", "rtt_measured_p99_ms", outcome.round_trip["p99_ms"])
    limited_by = ""
    if WORKLOADS[spec.workload].tasks:
        lags = sorted(x for r in agent_results for x in r.lag)
        for name, value in metrics.latency_summary(lags).items():
            if name in ("p50", "p99", "max"):
                put("all", f"step_lag_{name}_ms", value * 1000)
        notes = sorted(x for r in agent_results for x in r.notify_latency)
        put("all", "notifications", float(len(notes)))
        for name, value in metrics.latency_summary(notes).items():
            if name in ("p50", "p99", "max"):
                put("all", f"notify_latency_{name}_ms", value * 1000)
        if lags and metrics.percentile(lags, 99) > LAG_LIMIT_S:
            limited_by = LIMITED_BY_LOAD_GENERATOR
    if any(r.late for r in agent_results):
        limited_by = LIMITED_BY_LOAD_GENERATOR
    for row in rows:
        row["limited_by"] = limited_by
    return rows, series, hist


def samples_frame(outcome: Outcome) -> pd.DataFrame:
    s = outcome.spec
    frames = []
    for r in outcome.results:
        frames.append(pd.DataFrame({
            "workload": s.workload, "config": s.config, "agents": s.agents,
            "think_ms": s.think_ms, "rtt_ms": s.rtt_ms, "rep": s.rep,
            "agent": r.agent, "role": r.role, "op": r.ops, "start_s": list(r.start),
            "latency_s": list(r.latency), "lock_wait_s": list(r.lock_wait),
            "commit_s": list(r.commit), "ok": list(r.ok),
        }))
    out: pd.DataFrame = pd.concat(frames) if frames else pd.DataFrame()
    return out


def new_run_id() -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(2)}"


@contextlib.contextmanager
def postgres_for(plan: Plan) -> Iterator[str | None]:
    """A server when some config needs one: STOREKIT_BENCH_POSTGRES_URL, else provisioned."""
    import os

    if not any(c.backend == "postgres" for c in plan.configs):
        yield None
        return
    if url := os.environ.get("STOREKIT_BENCH_POSTGRES_URL"):
        yield url
        return
    from storekit.testing import postgres_server

    with postgres_server() as server:
        yield server.url


@contextlib.contextmanager
def pgbouncer_for(plan: Plan, postgres_url: str | None) -> Iterator[Any]:
    """A PgBouncer (transaction pooling) in front of the server, when a config needs one."""
    if postgres_url is None or not any(c.pooler for c in plan.configs):
        yield None
        return
    from storekit.testing import pgbouncer_server

    with pgbouncer_server(postgres_url, pool_size=PGBOUNCER_POOL_SIZE) as bouncer:
        yield bouncer


def execute_specs(plan: Plan, postgres_url: str | None) -> list[dict[str, Any]]:
    """Run a plan against a given server and return summary rows only (for calibration)."""
    workdir = Path(tempfile.mkdtemp(prefix="storekit-bench-"))
    runner = Runner(plan, postgres_url, workdir)
    rows: list[dict[str, Any]] = []
    try:
        for spec in plan.specs():
            rows += summarise(runner.run_one(spec), plan.duration)[0]
    finally:
        runner.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


def execute(plan: Plan, results_dir: Path, *, progress: Any = None, finished: Any = None,
            repo: Path | None = None, command: str = "") -> tuple[Path, list[dict[str, Any]]]:
    """Run the whole plan; returns the result folder and the failed-verification list.
    progress(spec) is called before each run, finished(spec, summary_rows) after it."""
    from bench.harness.environment import describe

    run_id = new_run_id()
    out_dir = results_dir / run_id
    workdir = Path(tempfile.mkdtemp(prefix="storekit-bench-"))
    summary: list[dict[str, Any]] = []
    series: list[dict[str, Any]] = []
    hist: list[dict[str, Any]] = []
    samples: list[pd.DataFrame] = []
    failures: list[dict[str, Any]] = []
    examples: list[dict[str, Any]] = []  # the first message of each error type, per run
    network: list[dict[str, Any]] = []  # per PostgreSQL run: the round trip, target and measured
    with postgres_for(plan) as pg_url, pgbouncer_for(plan, pg_url) as bouncer:
        runner = Runner(plan, pg_url, workdir, bouncer)
        try:
            for spec in plan.specs():
                if progress is not None:
                    progress(spec)
                outcome = runner.run_one(spec)
                rows, ts, hs = summarise(outcome, plan.duration)
                if finished is not None:
                    finished(spec, rows)
                summary += rows
                series += ts
                hist += hs
                if plan.keep_samples:
                    samples.append(samples_frame(outcome))
                if outcome.verification["lost"]:
                    failures.append({**asdict(spec), **outcome.verification})
                if outcome.round_trip is not None:
                    network.append({**asdict(spec), "rtt_target_ms": spec.rtt_ms,
                                    "rtt_measured_p50_ms": outcome.round_trip["p50_ms"],
                                    "rtt_measured_p99_ms": outcome.round_trip["p99_ms"],
                                    "samples": outcome.round_trip["samples"]})
                seen: dict[str, str] = {}
                for r in outcome.results:
                    for kind, message in r.error_examples.items():
                        seen.setdefault(kind, message)
                examples += [{**asdict(spec), "type": k, "message": v} for k, v in seen.items()]
            settings = runner.settings
        finally:
            runner.close()
            shutil.rmtree(workdir, ignore_errors=True)
        masked = str(storekit.DatabaseURL.parse(pg_url)) if pg_url else None
        pgbouncer_meta = None if bouncer is None else {
            "pool_mode": bouncer.settings["pool_mode"],
            "default_pool_size": int(bouncer.settings["default_pool_size"]),
            "url": str(DatabaseURL.parse(bouncer.url))}
    meta = {
        "run_id": run_id,
        "command": command,
        "plan": {k: v for k, v in asdict(plan).items() if k != "configs"}
        | {"configs": [c.name for c in plan.configs]},
        "configs": {c.name: {"backend": c.backend, "description": c.description,
                             "durability": c.durability, "settings": settings.get(c.name, {})}
                    for c in plan.configs},
        "postgres_url": masked,
        "pgbouncer": pgbouncer_meta,
        "skipped": plan.skipped(),
        "network": network,
        "verification": {"failed_runs": failures, "ok": not failures},
        "error_examples": examples[:200],
        **describe(results_dir, repo or Path.cwd()),
    }
    results.write(out_dir, meta, summary, series, hist,
                  pd.concat(samples) if samples else None)
    return out_dir, failures
