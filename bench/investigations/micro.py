"""The adapter-overhead suite with timings, and its ratio table (`python -m bench micro`).

Runs tests/benchmarks with pytest-benchmark enabled, writes the JSON to the output folder
(results/microbench/ by default) with storekit/raw and storekit/SQLAlchemy median ratios
per operation and backend, and the microseconds storekit adds to the raw driver beside its
budget (WORK); bench/cli/micro.py shows them. Ratios are reported, never asserted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from bench import ROOT
from bench.investigations import micro_aio

QUICK = ["--benchmark-min-rounds=3", "--benchmark-max-time=0.02", "--benchmark-warmup=off"]
FULL = ["--benchmark-min-rounds=15", "--benchmark-max-time=1.0", "--benchmark-warmup=on",
        "--benchmark-warmup-iterations=20"]


# Statements and transactions each operation runs, for the overhead budget: storekit may
# add at most 1 us per statement plus 2 us per transaction (an autocommit statement is
# one of each), or 10% of the raw driver's time, whichever is larger.
WORK = {"point_select": (1, 1), "insert_autocommit": (1, 1), "insert_100_tx": (100, 1),
        "run_many_1000": (1000, 1), "select_1000_dicts": (1, 1), "iterate_100k": (1, 1),
        "json_path_indexed": (1, 1), "json_path_unindexed": (1, 1), "search": (1, 1),
        "empty_transaction": (0, 1)}


def budget_us(operation: str, raw_ms: float) -> float:
    statements, transactions = WORK.get(operation, (1, 1))
    return max(statements * 1.0 + transactions * 2.0, raw_ms * 1000 * 0.10)


def ratios(json_path: Path) -> pd.DataFrame:
    data = json.loads(json_path.read_text())
    rows = [{"operation": b["extra_info"]["operation"], "backend": b["extra_info"]["backend"],
             "client": b["extra_info"]["client"], "median_ms": b["stats"]["median"] * 1000}
            for b in data["benchmarks"] if "suite" not in b["extra_info"]]  # aio: micro_aio
    wide = pd.DataFrame(rows).pivot_table(index=["operation", "backend"], columns="client",
                                          values="median_ms").reset_index()
    wide["storekit/raw"] = wide["storekit"] / wide["raw"]
    wide["storekit/sqlalchemy"] = wide["storekit"] / wide["sqlalchemy"]
    wide["added_us"] = (wide["storekit"] - wide["raw"]) * 1000
    wide["budget_us"] = [budget_us(op, raw) for op, raw in zip(wide["operation"], wide["raw"],
                                                                strict=True)]
    wide["within_budget"] = wide["added_us"] <= wide["budget_us"]
    table: pd.DataFrame = wide.sort_values(["backend", "operation"])
    return table


def run(quick: bool, out_dir: Path) -> tuple[int, Path | None]:
    """Run the suite; (exit code, the JSON with a .ratios.csv beside it, None on failure).

    The quick run is a smoke test whose ratios are noise: pytest-benchmark's own tables
    (hundreds of lines) go to a .log file beside the JSON instead of the terminal.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    json_path = out_dir / f"{stamp}{'-quick' if quick else ''}.json"
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "benchmarks"), "-q",
           "--benchmark-enable", f"--benchmark-json={json_path}", "--benchmark-sort=name",
           "--benchmark-columns=median,iqr,rounds", *(QUICK if quick else FULL)]
    # The full run searches 100k messages (the figure the schema issue asks for); the CI
    # smoke run keeps the 10k default.
    env = dict(os.environ)
    if not quick:
        env.setdefault("STOREKIT_MICRO_MESSAGES", "100000")
    else:  # the 1,000 agent tasks one transaction each (three in a measuring run)
        env.setdefault("STOREKIT_MICRO_AIO_STEPS", "1")
    log = json_path.with_suffix(".log")
    with log.open("w") if quick else contextlib.nullcontext() as out:
        code = subprocess.run(cmd, cwd=ROOT, check=False, env=env, stdout=out,
                              stderr=subprocess.STDOUT if quick else None).returncode
    if code != 0 or not json_path.exists():
        if quick:
            sys.stderr.write("".join(log.read_text().splitlines(keepends=True)[-60:]))
        print(f"error: the benchmark suite failed (exit {code})"
              + (f"; its output is in {log}" if quick else ""), file=sys.stderr)
        return code or 1, None
    # pytest-benchmark stores every round's timing; the summaries are what is kept.
    data = json.loads(json_path.read_text())
    for bench in data["benchmarks"]:
        bench["stats"].pop("data", None)
    json_path.write_text(json.dumps(data, indent=1))
    ratios(json_path).to_csv(json_path.with_suffix(".ratios.csv"), index=False,
                             float_format="%.5g")
    micro_aio.write_csvs(json_path)
    return 0, json_path
