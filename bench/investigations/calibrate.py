"""Is the harness the bottleneck? For every workload's write transaction, at 1, 4 and 16
agents, the harness's rate against the same transaction run with nothing around it: a
bare sqlite3 loop (SQLite) and pgbench with a script of the same statements (PostgreSQL),
on the same files and server, in the same run, interleaved (A B A B).

The harness side is the real agent loop (bench.harness.agent.drive) around the workload's
own writer, in spawned processes as `bench run` starts them; only writers run, so the
rates compare one transaction. The ratio table goes to results/extras/calibration-*.json;
bench.analysis.headline reads the latest one to show the pgbench ceiling beside PostgreSQL
figures (see `pgbench_ceiling`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import psycopg

from bench.harness.agent import AgentContext, AgentResult, drive
from bench.harness.configs import CONFIGS
from bench.harness.environment import fsync_latency
from bench.harness.workloads import WORKLOADS
from bench.investigations.calibrate_tx import WRITE_TXS
from storekit.errors import StoreError
from storekit.testing import find_pg_bin, postgres_server
from storekit.url import DatabaseURL

AGENTS = (1, 4, 16)
SQLITE_CONFIG = "sqlite-wal"
# The storekit loop again without the fair write-lock hand-off: splits storekit / bare
# sqlite3 into the adapter's per-call cost and the cost of taking turns across processes.
STOCK_CONFIG = "sqlite-wal-stock"
POSTGRES_CONFIG = "postgres"
WARMUP = 0.5
CORPUS = 2_000  # the search workload's seed rows: its write is what is measured here


def _start_margin(agents: int) -> float:
    return 0.5 + 0.05 * agents  # spawned workers are ready; this covers opening connections


def _open_loop(kind: str, target: str, config: str) -> tuple[Any, Callable[[], None]]:
    """The connection a loop of `kind` runs on, and what closes it. bare: sqlite3 with WAL,
    NORMAL and a 5 s busy timeout; psycopg: an autocommit connection (the transaction
    sends BEGIN itself); storekit: `config` (sqlite-wal, sqlite-wal-stock or postgres), as
    the harness opens it. Each loop catches what a conflict or a lock timeout raises in
    it, as the harness counts errors: an attempt that failed is not a commit."""
    if kind == "bare":
        conn = sqlite3.connect(target, isolation_level=None, timeout=5.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn, conn.close
    if kind == "psycopg":
        pg = psycopg.connect(target, autocommit=True)
        return pg, pg.close
    db = CONFIGS[config].open(target, pool_size=1)
    return db, db.close


_LOOP_ERRORS: dict[str, tuple[type[BaseException], ...]] = {
    "bare": (sqlite3.OperationalError,),
    "psycopg": (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected),
    "storekit": (StoreError,),
}


def _loop_agent(kind: str, config: str, target: str, workload: str, run_key: int,
                agent: int, start_at: float, seconds: float) -> int:
    """One process of a loop with nothing around the transaction: commits in the window."""
    tx = getattr(WRITE_TXS[workload], kind)
    errors = _LOOP_ERRORS[kind]
    conn, close = _open_loop(kind, target, config)
    begin = start_at - time.time() + time.perf_counter()
    measure, end = begin + WARMUP, begin + WARMUP + seconds
    while time.perf_counter() < begin:
        time.sleep(0.002)
    n = seq = 0
    try:
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            try:
                tx(conn, run_key, agent, seq)
            except errors:
                seq += 1
                continue
            seq += 1
            if now >= measure:
                n += 1
    finally:
        close()
    return n


def _harness_agent(config: str, workload: str, url: str, ctx: AgentContext) -> AgentResult:
    with CONFIGS[config].open(url, pool_size=1) as db:
        return drive(ctx, WORKLOADS[workload].operation(db, ctx))


class Calibration:
    def __init__(self, seconds: float, agents: tuple[int, ...]) -> None:
        self.seconds = seconds
        self.agents = agents
        self.run_key = 0
        mp = multiprocessing.get_context("spawn")
        self.pool = mp.Pool(max(agents))
        self.pool.map(time.sleep, [0.05] * max(agents), chunksize=1)  # workers up first

    def close(self) -> None:
        self.pool.close()
        self.pool.join()

    def _prepare(self, config: str, workload: str, url: str, agents: int) -> int:
        self.run_key += 1
        with CONFIGS[config].open(url) as db:
            WORKLOADS[workload].prepare(db, self.run_key, ["writer"] * agents)
        return self.run_key

    def harness(self, config: str, workload: str, url: str, agents: int) -> float:
        """Committed write transactions per second through the harness's agent loop."""
        run_key = self._prepare(config, workload, url, agents)
        start_at = time.time() + _start_margin(agents)
        # probe_every=0: the search writer's freshness probe is a search, not its write.
        params = {"writers": agents, "sample_every": 1, "probe_every": 0}
        contexts = [AgentContext(i, "writer", run_key, start_at, WARMUP, self.seconds, None,
                                 seed=run_key * 100 + i, params=params) for i in range(agents)]
        results = self.pool.starmap(_harness_agent, [(config, workload, url, c) for c in contexts],
                                    chunksize=1)
        return sum(sum(r.counts.values()) for r in results) / self.seconds

    def loop(self, kind: str, config: str, url: str, workload: str, agents: int) -> float:
        """Commits per second of a loop with nothing around the transaction (kind: bare,
        psycopg or storekit); url is the storekit URL, its file for bare sqlite3."""
        run_key = self._prepare(config, workload, url, agents)
        target = url.removeprefix("sqlite:///") if kind == "bare" else url
        start_at = time.time() + _start_margin(agents)
        counts = self.pool.starmap(
            _loop_agent, [(kind, config, target, workload, run_key, i, start_at, self.seconds)
                          for i in range(agents)], chunksize=1)
        return sum(counts) / self.seconds

    def pgbench(self, bindir: Path, url: str, workload: str, agents: int) -> float:
        run_key = self._prepare(POSTGRES_CONFIG, workload, url, agents)
        return pgbench_tps(bindir, url, WRITE_TXS[workload].pgbench(run_key), agents,
                           self.seconds)


def pgbench_tps(bindir: Path, url: str, script: str, clients: int, seconds: float) -> float:
    """pgbench running `script` (prepared statements, serialization failures retried as
    atomic() does); the password goes in the environment, never on the command line."""
    u = DatabaseURL.parse(url)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
    os.chmod(f.name, 0o644)
    env = {**os.environ, "PGPASSWORD": u.password or ""}
    if u.options.get("options"):
        env["PGOPTIONS"] = u.options["options"]  # e.g. the URL's search_path
    cmd = [str(bindir / "pgbench"), "-n", "-M", "prepared", "--max-tries=11",
           "-c", str(clients), "-j", str(min(clients, 2)),
           "-T", str(max(1, round(seconds))), "-f", f.name, "-h", u.host or "127.0.0.1",
           "-p", str(u.port or 5432), "-U", u.username or "postgres", u.database or "postgres"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False,
                              timeout=seconds * 4 + 30)
    finally:
        os.unlink(f.name)
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
    if done.returncode != 0 or not match:
        tail = (done.stdout + done.stderr)[-800:]
        raise RuntimeError(f"pgbench failed ({done.returncode}): {tail}")
    return float(match.group(1))


def _row(workload: str, backend: str, baseline: str, agents: int,
         runs: dict[str, list[float]]) -> dict[str, Any]:
    """One point: the median of each layer's runs, and the ratios between layers. ratio
    (harness / baseline) is the figure the goal is about; the layers say where it goes:
    driver (plain psycopg / pgbench: the Python client), storekit (the storekit loop / the
    driver loop), harness (the harness / the storekit loop: its own bookkeeping). On SQLite
    storekit splits in two: stock (the loop without fair locking / bare sqlite3: the
    adapter's calls) and fair (with / without it: taking turns across processes)."""
    m = {k: statistics.median(v) for k, v in runs.items()}

    def div(a: str, b: str) -> float:
        return m[a] / m[b] if m.get(a) and m.get(b) else float("nan")

    driver = "psycopg" if "psycopg" in m else "baseline"
    return {"workload": workload, "backend": backend, "baseline": baseline, "agents": agents,
            "baseline_tps": m["baseline"], "harness_tps": m["harness"],
            "storekit_tps": m["storekit"], "driver_tps": m.get("psycopg"),
            "ratio": div("harness", "baseline"),
            "driver_ratio": div("psycopg", "baseline") if driver == "psycopg" else None,
            "storekit_ratio": div("storekit", driver), "harness_ratio": div("harness", "storekit"),
            "stock_tps": m.get("stock"),
            "stock_ratio": div("stock", driver) if "stock" in m else None,
            "fair_ratio": div("storekit", "stock") if "stock" in m else None,
            **{f"{k}_runs": v for k, v in runs.items()}}


def _point(rounds: int, ways: dict[str, Callable[[], float]]
           ) -> dict[str, list[float]]:
    """Each way once per round, in order (A B C A B C): load that comes and goes falls on
    every way alike."""
    runs: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(rounds):
        for k, measure in ways.items():
            runs[k].append(measure())
    return runs


def calibrate(results_dir: Path, *, seconds: float = 5.0, rounds: int = 2,
              agents: tuple[int, ...] = AGENTS, workloads: list[str] | None = None,
              backends: tuple[str, ...] = ("sqlite", "postgres"),
              progress: Any = None) -> dict[str, Any]:
    """fsync latency, then per backend, workload and agent count: the baseline (bare
    sqlite3, pgbench), plain psycopg (PostgreSQL), the storekit loop and the harness,
    `rounds` times each, alternating. Returns {"fsync": ..., "ratios": [rows]}."""
    names = [w for w in (workloads or list(WRITE_TXS)) if w in WRITE_TXS]
    fs = fsync_latency(results_dir)
    report: dict[str, Any] = {"fdatasync_p50_ms": fs["fdatasync_p50_s"] * 1000,
                              "fdatasync_ops_per_s": fs["fdatasync_ops_per_s"],
                              "seconds": seconds, "rounds": rounds, "agents": list(agents),
                              "ratios": [], "skipped": []}
    say = progress or (lambda _msg: None)

    def done(row: dict[str, Any]) -> None:
        report["ratios"].append(row)
        say(f"{row['backend']} {row['workload']} {row['agents']} agents: harness/"
            f"{row['baseline']} {row['ratio']:.2f} (storekit loop {row['storekit_ratio']:.2f}"
            f" of the driver's, harness {row['harness_ratio']:.2f} of storekit's)")

    cal = Calibration(seconds, agents)
    try:
        folder = Path(tempfile.mkdtemp(prefix="storekit-cal-"))
        for w in names if "sqlite" in backends else []:
            url = f"sqlite:///{folder / f'{w}.db'}"
            with CONFIGS[SQLITE_CONFIG].open(url) as db:
                WORKLOADS[w].setup(db, {"corpus": CORPUS})
            for n in agents:
                runs = _point(rounds, {
                    "baseline": partial(cal.loop, "bare", SQLITE_CONFIG, url, w, n),
                    "storekit": partial(cal.loop, "storekit", SQLITE_CONFIG, url, w, n),
                    "stock": partial(cal.loop, "storekit", STOCK_CONFIG, url, w, n),
                    "harness": partial(cal.harness, SQLITE_CONFIG, w, url, n)})
                done(_row(w, "sqlite", "bare sqlite3", n, runs))
        if "postgres" not in backends:
            return report
        bindir = find_pg_bin()
        if bindir is None or not (bindir / "pgbench").exists():
            report["skipped"].append("pgbench not found: no PostgreSQL figures")
            return report
        with postgres_server() as server:
            pg_url = server.url
            for w in names:
                with CONFIGS[POSTGRES_CONFIG].open(pg_url) as db:
                    WORKLOADS[w].setup(db, {"corpus": CORPUS})
                for n in agents:
                    runs = _point(rounds, {
                        "baseline": partial(cal.pgbench, bindir, pg_url, w, n),
                        "psycopg": partial(cal.loop, "psycopg", POSTGRES_CONFIG, pg_url, w, n),
                        "storekit": partial(cal.loop, "storekit", POSTGRES_CONFIG, pg_url, w, n),
                        "harness": partial(cal.harness, POSTGRES_CONFIG, w, pg_url, n)})
                    done(_row(w, "postgres", "pgbench", n, runs))
    finally:
        cal.close()
    return report


def latest_calibration(results_dir: Path, backend: str | None = None) -> dict[str, Any] | None:
    """The newest calibration file under results_dir/extras (or results_dir) with rows
    (of `backend`, when given: `calibrate --backend sqlite` writes no pgbench rows)."""
    files = sorted([*results_dir.glob("extras/calibration-*.json"),
                    *results_dir.glob("calibration-*.json")], key=lambda p: p.name)
    for path in reversed(files):
        data = json.loads(path.read_text())
        if any(backend in (None, r.get("backend")) for r in data.get("ratios", [])):
            return dict(data)
    return None


def pgbench_ceiling(results_dir: Path) -> dict[tuple[str, int], float]:
    """(workload, agents) -> pgbench TPS on that workload's write transaction, from the
    latest calibration; empty when there is none."""
    data = latest_calibration(results_dir, "postgres")
    if data is None:
        return {}
    return {(r["workload"], int(r["agents"])): float(r["baseline_tps"])
            for r in data["ratios"] if r["backend"] == "postgres"}
