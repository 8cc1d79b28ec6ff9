"""Run workloads x configs x agent counts x repetitions; write results/<run_id>/.

New runs are git-ignored: commit one on purpose by moving it to results/reference/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from bench.cli.base import CliError, command_line, console, err
from bench.harness import arglist, metrics, results
from bench.harness.configs import CONFIGS, parse_configs
from bench.harness.runner import PROFILES, Plan, RunSpec, execute
from bench.harness.workloads import WORKLOADS, parse_workloads

HELP = "run workloads and write results/<run_id>/"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=list(PROFILES), default="quick")
    p.add_argument("--workload", help=f"comma-separated: {', '.join(WORKLOADS)}")
    p.add_argument("--config", help=f"comma-separated: {', '.join(CONFIGS)}")
    p.add_argument("--agents", help="comma-separated agent counts, e.g. 1,2,4,8,16")
    p.add_argument("--duration", type=float, help="measured seconds per run")
    p.add_argument("--warmup", type=float, help="warm-up seconds per run (not measured)")
    p.add_argument("--repetitions", type=int)
    p.add_argument("--corpus", type=int, help="messages in the search corpus")
    p.add_argument("--workers", choices=["processes", "threads"], default="processes")
    p.add_argument("--rate", type=float, help="open loop: total operations per second")
    p.add_argument("--no-samples", action="store_true", help="skip raw/samples.csv.gz")
    p.add_argument("--think-ms", help="comma-separated median think times between an agent's"
                   " steps (asyncio workloads, e.g. agent-step), 0 = closed loop")
    p.add_argument("--rtt-ms", help="comma-separated network round trips added between the"
                   " agents and PostgreSQL, e.g. 0,1,5,20 (SQLite configs run at 0 only)")
    p.add_argument("--task-workers", type=int,
                   help="worker processes for asyncio agents (default: one per core)")


def build_plan(args: argparse.Namespace) -> Plan:
    profile = dict(PROFILES[args.profile])
    try:
        configs = parse_configs(args.config or ",".join(profile.get("configs", [])) or None)
        workloads = parse_workloads(args.workload
                                    or ",".join(profile.get("workloads", [])) or None)
        agents = (arglist.numbers(args.agents, int, "--agents", 1) if args.agents
                  else profile["agents"])
        think_ms = (arglist.numbers(args.think_ms, float, "--think-ms", 0.0)
                    if args.think_ms else profile.get("think_ms", [0]))
        rtt_ms = (arglist.numbers(args.rtt_ms, float, "--rtt-ms", 0.0)
                  if args.rtt_ms else profile.get("rtt_ms", [0]))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    for name, value in (("--duration", args.duration), ("--repetitions", args.repetitions),
                        ("--rate", args.rate), ("--warmup", args.warmup)):
        if value is not None and (value < 0 or (value == 0 and name != "--warmup")):
            raise CliError(f"{name} must be positive, got {value}")
    try:
        return Plan(workloads=workloads, configs=configs, agents=agents,
                    duration=args.duration or profile["duration"],
                    warmup=profile["warmup"] if args.warmup is None else args.warmup,
                    repetitions=args.repetitions or profile["repetitions"],
                    corpus=args.corpus or profile["corpus"], workers=args.workers,
                    rate=args.rate, keep_samples=not args.no_samples, think_ms=think_ms,
                    rtt_ms=rtt_ms, task_workers=args.task_workers or 0)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def print_summary(run: results.Run) -> None:
    s = run.summary
    table = Table(title=f"Run {run.run_id}: median (min-max) of {run.meta['plan']['repetitions']}"
                        " repetitions")
    for col in ("workload", "config", "agents", "think ms", "rtt ms", "ops/s",
                "p99 ms (main op)", "errors", "lost", "limited by"):
        table.add_column(col, justify="right" if col not in ("workload", "config") else "left")
    for (workload, config, agents, think, rtt), group in s.groupby(
            ["workload", "config", "agents", "think_ms", "rtt_ms"], sort=False):
        def agg(metric: str, op: str = "all", frame: Any = group) -> str:
            values = results.select(frame, metric=metric, op=op)["value"]
            if values.empty:
                return "-"
            r = metrics.aggregate_repetitions(values.tolist())
            med, lo, hi = r["median"], r["min"], r["max"]
            return f"{med:,.1f} ({lo:,.1f}-{hi:,.1f})" if hi > lo else f"{med:,.1f}"
        declared = WORKLOADS.get(str(workload))
        limited = ", ".join(sorted({str(v) for v in group["limited_by"] if v}))
        table.add_row(str(workload), str(config), str(agents), f"{think:g}", f"{rtt:g}",
                      agg("ops_per_s"),
                      agg("latency_p99_ms", declared.main_op if declared else "all"),
                      agg("errors_total"), agg("lost_writes"), limited or "-")
    console.print(table)


def main(args: argparse.Namespace) -> int:
    plan = build_plan(args)
    specs = plan.specs()
    for line in plan.skipped():
        err.print(line)
    if not specs:
        raise CliError("nothing to run: every combination was skipped (see above)")
    results_dir = Path(args.results_dir)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=err,
                  transient=False) as progress:
        task = progress.add_task("starting", total=len(specs))
        done = {"n": 0}

        plain = not err.is_terminal  # a log file: rich draws no bar, so print lines

        def advance(spec: RunSpec) -> None:
            if done["n"]:
                progress.advance(task)
            done["n"] += 1
            if plain and (done["n"] == 1 or done["n"] % 10 == 0):
                t = progress.tasks[0]
                eta = f", about {t.time_remaining:.0f} s left" if t.time_remaining else ""
                print(f"run {done['n']}/{len(specs)}: {spec.workload} {spec.config} "
                      f"x{spec.agents}{eta}", file=sys.stderr, flush=True)
            progress.update(task, description=f"{spec.workload} {spec.config} "
                                              f"x{spec.agents} rep {spec.rep + 1}")

        out_dir, failures = execute(plan, results_dir, progress=advance, command=command_line())
        progress.update(task, completed=len(specs), description="done")
    run = results.load(out_dir.name, results_dir)
    print_summary(run)
    console.print(f"Results: {out_dir}")
    if failures:
        err.print(f"[red]FAILED: {len(failures)} run(s) lost acknowledged writes:[/red]")
        for f in failures[:10]:
            err.print(f"  {f}")
        return 1
    return 0
