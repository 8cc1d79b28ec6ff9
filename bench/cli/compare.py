"""Two runs side by side: one row per (workload, config, agents) the two runs share, with
the medians over repetitions of throughput, the workload's main-operation p99 and errors,
and B/A. Settings that differ between the runs (worker mode, duration, machine, ...) are
listed first: a ratio between runs measured differently says little about the code.
"""

from __future__ import annotations

import argparse
import math
import shlex
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from bench.cli.base import CliError, console, table
from bench.harness import results
from bench.harness.workloads import WORKLOADS

HELP = "compare two runs"
KEYS = ["workload", "config", "agents"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    for name, role in (("run_a", "the baseline (A)"), ("run_b", "the run compared with it (B)")):
        p.add_argument(name, metavar=name.upper(),
                       help=f"{role}: a run id from results/ or results/reference/, or "
                            "'reference' for the newest reference run")


def _profile(meta: dict[str, Any]) -> str:
    words = shlex.split(meta.get("command") or "")
    if "--profile" in words[:-1]:
        return words[words.index("--profile") + 1]
    return "quick (the default)" if "run" in words else "-"


def settings(meta: dict[str, Any]) -> dict[str, str]:
    """What a run's figures depend on besides the code: how it was run and where."""
    plan, machine = meta.get("plan", {}), meta.get("machine", {})
    return {
        "worker mode": str(plan.get("workers", "-")),
        "duration (s)": f"{plan.get('duration', '-')}",
        "warm-up (s)": f"{plan.get('warmup', '-')}",
        "repetitions": f"{plan.get('repetitions', '-')}",
        "profile": _profile(meta),
        "search corpus": f"{plan.get('corpus', '-')}",
        "rate (ops/s)": "closed loop" if plan.get("rate") is None else f"{plan['rate']}",
        "machine": f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
                   f"{machine.get('filesystem', '?')}",
    }


def differences(a: results.Run, b: results.Run) -> list[str]:
    sa, sb = settings(a.meta), settings(b.meta)
    return [f"{key}: A {sa[key]}, B {sb[key]}" for key in sa if sa[key] != sb[key]]


def medians(run: results.Run) -> pd.DataFrame:
    """One row per (workload, config, agents): ops/s, main-op p99 and errors, each the
    median over repetitions (NaN where the run has no such figure)."""
    s = run.summary
    main_op = s["workload"].map(lambda w: WORKLOADS[w].main_op if w in WORKLOADS else "all")
    picks = {"ops": (s["metric"] == "ops_per_s") & (s["op"] == "all"),
             "p99": (s["metric"] == "latency_p99_ms") & (s["op"] == main_op),
             "errors": (s["metric"] == "errors_total") & (s["op"] == "all")}
    columns = [s[mask].groupby(KEYS)["value"].median().rename(name)
               for name, mask in picks.items()]
    frame: pd.DataFrame = pd.concat(columns, axis=1)
    return frame


def _num(x: float, digits: int = 1) -> str:
    return "-" if math.isnan(x) else f"{x:,.{digits}f}"


def _count(x: float) -> str:
    """A median count: whole unless the repetitions split it (an even number of them)."""
    return "-" if math.isnan(x) else f"{x:,.0f}" if x == int(x) else f"{x:,.1f}"


def _ratio(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b):
        return "-"
    if a == 0:
        return "-" if b == 0 else "new"
    return f"{b / a:.2f}"


def comparison(a: results.Run, b: results.Run) -> Table:
    joined = medians(a).add_suffix("_a").join(medians(b).add_suffix("_b"), how="inner")
    if joined.empty:
        raise CliError(
            f"runs {a.run_id} and {b.run_id} share no (workload, config, agents): A has "
            f"{_keys(a)}; B has {_keys(b)}")
    # "A -> B" in one cell: a narrow terminal wraps it between the numbers, not inside one.
    out = table(f"{a.run_id} (A) vs {b.run_id} (B), medians", ("workload", "config"),
                ("agents", "ops/s A -> B", "B/A", "p99 ms (main op) A -> B", "B/A ",
                 "errors A -> B"))
    for (workload, config, agents), r in joined.iterrows():
        out.add_row(str(workload), str(config), str(agents),
                    f"{_num(r['ops_a'])} -> {_num(r['ops_b'])}", _ratio(r["ops_a"], r["ops_b"]),
                    f"{_num(r['p99_a'], 2)} -> {_num(r['p99_b'], 2)}",
                    _ratio(r["p99_a"], r["p99_b"]),
                    f"{_count(r['errors_a'])} -> {_count(r['errors_b'])}")
    return out


def _keys(run: results.Run) -> str:
    s = run.summary
    return (f"workloads {', '.join(sorted(set(s['workload'])))}; configs "
            f"{', '.join(sorted(set(s['config'])))}; agents "
            f"{', '.join(str(n) for n in sorted(set(s['agents'])))}")


def main(args: argparse.Namespace) -> int:
    a = results.load(args.run_a, Path(args.results_dir))
    b = results.load(args.run_b, Path(args.results_dir))
    out = comparison(a, b)
    changed = differences(a, b)
    if changed:
        console.print("[bold]The runs were measured differently[/bold]; a ratio may reflect "
                      "that rather than the code:")
        for line in changed:
            console.print(f"  {line}", highlight=False)
    console.print(out)
    return 0
