"""Expand a profile into runs, provision, run the agents, verify, summarise, write results.

Runs are interleaved (repetition outer, config inner) so the drift of a shared machine
hits every configuration alike. Agents are OS processes from one pool, spawned once, or
threads sharing one Database with --workers threads.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import multiprocessing
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

import storekit
from bench.harness import metrics, results
from bench.harness.agent import AgentContext, AgentResult, drive
from bench.harness.configs import CONFIGS, Config, Provisioner, effective_settings
from bench.harness.workloads import WORKLOADS

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {"agents": [1, 8], "duration": 1.0, "warmup": 0.25, "repetitions": 3,
              "corpus": 5_000},
    "full": {"agents": [1, 2, 4, 8, 16], "duration": 3.0, "warmup": 1.0, "repetitions": 5,
             "corpus": 100_000},
}
START_MARGIN = 0.25  # seconds for agents to open connections; late starters lose warm-up only


@dataclass(frozen=True)
class RunSpec:
    workload: str
    config: str
    agents: int
    rep: int


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

    def __post_init__(self) -> None:
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
        return [RunSpec(w, c.name, a, rep) for rep in range(self.repetitions)
                for a in self.agents for w in self.workloads for c in self.configs
                if not WORKLOADS[w].configs or c.name in WORKLOADS[w].configs]

    def seconds(self) -> float:
        return len(self.specs()) * (self.duration + self.warmup + START_MARGIN + 0.3)


@dataclass
class Outcome:
    spec: RunSpec
    results: list[AgentResult]
    verification: dict[str, Any]
    pg_waits: dict[str, int] = field(default_factory=dict)


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


class Runner:
    def __init__(self, plan: Plan, postgres_url: str | None, workdir: Path) -> None:
        self.plan = plan
        self.postgres_url = postgres_url
        self.provisioner = Provisioner(workdir, postgres_url)
        self.urls: dict[tuple[str, str], str] = {}
        self.settings: dict[str, Any] = {}
        self.run_key = 0
        self._pool: Any = None

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
        roles = module.roles(spec.agents)
        self.run_key += 1
        run_key = self.run_key
        with config.open(url) as db:
            module.prepare(db, run_key, roles)
        # Workers are started before the clock, or the first run would measure their start.
        pool = self.pool(max(self.max_roles(), 2)) if self.plan.workers == "processes" else None
        start_at = time.time() + START_MARGIN
        rate = self.plan.rate / len(roles) if self.plan.rate else None
        params = {"writers": roles.count("writer"), "sample_every": self.plan.sample_every}
        contexts = [AgentContext(i, role, run_key, start_at, self.plan.warmup,
                                 self.plan.duration, rate, seed=run_key * 100 + i,
                                 params=params) for i, role in enumerate(roles)]
        sampler: contextlib.AbstractContextManager[Any] = (
            PgWaitSampler(url) if config.backend == "postgres" else contextlib.nullcontext()
        )
        with sampler as waits:
            if pool is not None:
                agent_results = pool.starmap(
                    agent_task, [(config.name, spec.workload, url, c) for c in contexts],
                    chunksize=1)
            else:
                with config.open(url, pool_size=len(roles)) as shared, \
                        ThreadPoolExecutor(len(roles)) as threads:
                    futures = [threads.submit(_thread_agent, shared, spec.workload, c)
                               for c in contexts]
                    agent_results = [f.result() for f in futures]
        with config.open(url) as db:
            verification = module.verify(db, run_key, agent_results)
        pg_waits = waits.counts if waits is not None else {}
        return Outcome(spec, agent_results, verification, pg_waits)

    def max_roles(self) -> int:
        return max(len(WORKLOADS[w].roles(a)) for w in self.plan.workloads
                   for a in self.plan.agents)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None
        self.provisioner.close()


def summarise(outcome: Outcome, duration: float) -> tuple[list[dict[str, Any]],
                                                          list[dict[str, Any]],
                                                          list[dict[str, Any]]]:
    """(summary rows, time-series rows, histogram rows) of one run."""
    spec = outcome.spec
    key = {"workload": spec.workload, "config": spec.config,
           "backend": CONFIGS[spec.config].backend, "agents": spec.agents, "rep": spec.rep}
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
    return rows, series, hist


def samples_frame(outcome: Outcome) -> pd.DataFrame:
    s = outcome.spec
    frames = []
    for r in outcome.results:
        frames.append(pd.DataFrame({
            "workload": s.workload, "config": s.config, "agents": s.agents, "rep": s.rep,
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


def execute(plan: Plan, results_dir: Path, *, progress: Any = None,
            repo: Path | None = None, command: str = "") -> tuple[Path, list[dict[str, Any]]]:
    """Run the whole plan; returns the result folder and the failed-verification list."""
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
    with postgres_for(plan) as pg_url:
        runner = Runner(plan, pg_url, workdir)
        try:
            for spec in plan.specs():
                if progress is not None:
                    progress(spec)
                outcome = runner.run_one(spec)
                rows, ts, hs = summarise(outcome, plan.duration)
                summary += rows
                series += ts
                hist += hs
                if plan.keep_samples:
                    samples.append(samples_frame(outcome))
                if outcome.verification["lost"]:
                    failures.append({**asdict(spec), **outcome.verification})
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
    meta = {
        "run_id": run_id,
        "command": command,
        "plan": {k: v for k, v in asdict(plan).items() if k != "configs"}
        | {"configs": [c.name for c in plan.configs]},
        "configs": {c.name: {"backend": c.backend, "description": c.description,
                             "durability": c.durability, "settings": settings.get(c.name, {})}
                    for c in plan.configs},
        "postgres_url": masked,
        "verification": {"failed_runs": failures, "ok": not failures},
        "error_examples": examples[:200],
        **describe(results_dir, repo or Path.cwd()),
    }
    results.write(out_dir, meta, summary, series, hist,
                  pd.concat(samples) if samples else None)
    return out_dir, failures
