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

from bench.cli.base import CliError, command_line, console, err, one_per_line, table
from bench.harness import arglist, metrics, results
from bench.harness.configs import CONFIGS, parse_configs
from bench.harness.runner import PROFILES, Plan, RunSpec, execute
from bench.harness.workloads import MAIN_WORKLOADS, WORKLOADS, parse_workloads

HELP = "run workloads and write results/<run_id>/"


def _from_profile(key: str) -> str:
    def show(value: Any) -> str:
        return ",".join(map(str, value)) if isinstance(value, list) else f"{value:g}"
    return "default: the profile's, " + ", ".join(f"{name} {show(p[key])}"
                                                  for name, p in PROFILES.items())


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=list(PROFILES), default="quick",
                   help="a preset of agent counts, durations, repetitions and corpus size "
                        "(`python -m bench list` shows them); the options below override "
                        "its values one by one")
    p.add_argument("--workload", help="comma-separated workloads, listed below "
                                      f"(default: {','.join(MAIN_WORKLOADS)})")
    p.add_argument("--config", help="comma-separated configurations, listed below "
                                    "(default: all)")
    p.add_argument("--agents", help="comma-separated agent counts, e.g. 1,2,4,8,16 "
                                    f"({_from_profile('agents')})")
    p.add_argument("--duration", type=float,
                   help=f"measured seconds per run ({_from_profile('duration')})")
    p.add_argument("--warmup", type=float,
                   help=f"warm-up seconds per run, not measured ({_from_profile('warmup')})")
    p.add_argument("--repetitions", type=int,
                   help="runs of each (workload, config, agents); tables show their median "
                        f"({_from_profile('repetitions')})")
    p.add_argument("--corpus", type=int,
                   help=f"messages in the search corpus ({_from_profile('corpus')})")
    p.add_argument("--workers", choices=["processes", "threads"], default="processes",
                   help="agents as OS processes (as separate programs would be) or threads "
                        "of one process")
    p.add_argument("--rate", type=float,
                   help="open loop: total operations per second (default: closed loop, "
                        "each agent as fast as it can)")
    p.add_argument("--no-samples", action="store_true",
                   help="skip raw/samples.csv.gz (every latency sample)")
    p.add_argument("--think-ms", help="comma-separated median think times between an agent's"
                   " steps (asyncio workloads, e.g. agent-step), 0 = closed loop")
    p.add_argument("--rtt-ms", help="comma-separated network round trips added between the"
                   " agents and PostgreSQL, e.g. 0,1,5,20 (SQLite configs run at 0 only)")
    p.add_argument("--task-workers", type=int,
                   help="worker processes for asyncio agents (unset: one per core)")
    p.epilog = (one_per_line("workloads", WORKLOADS) + "\n\n" + one_per_line("configs", CONFIGS)
                + "\n\n`python -m bench list` describes them.")


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


def summary_table(run: results.Run) -> Table:
    s = run.summary
    out = table(f"Run {run.run_id}: median (min-max) of {run.meta['plan']['repetitions']} "
                "repetitions", ("workload", "config"),
                ("agents", "think ms", "rtt ms", "ops/s", "p99 ms (main op)", "errors", "lost",
                 "limited by"))
    for (workload, config, agents, think, rtt), group in s.groupby(
            ["workload", "config", "agents", "think_ms", "rtt_ms"], sort=False):
        def agg(metric: str, op: str = "all", frame: Any = group) -> str:
            values = results.select(frame, metric=metric, op=op)["value"]
            if values.empty:
                return "-"
            r = metrics.aggregate_repetitions(values.tolist())
            med, lo, hi = r["median"], r["min"], r["max"]
            return f"{med:,.1f} ({lo:,.1f} - {hi:,.1f})" if hi > lo else f"{med:,.1f}"
        declared = WORKLOADS.get(str(workload))
        limited = ", ".join(sorted({str(v) for v in group["limited_by"] if v}))
        out.add_row(str(workload), str(config), str(agents), f"{think:g}", f"{rtt:g}",
                    agg("ops_per_s"),
                    agg("latency_p99_ms", declared.main_op if declared else "all"),
                    agg("errors_total"), agg("lost_writes"), limited or "-")
    return out


def finished_line(n: int, total: int, spec: RunSpec, rows: list[dict[str, Any]]) -> str:
    """One line per finished run for a log: what ran and its key figures."""
    def figure(metric: str, op: str = "all") -> float | None:
        return next((float(r["value"]) for r in rows
                     if r["metric"] == metric and r["op"] == op), None)
    main_op = WORKLOADS[spec.workload].main_op
    ops, p99, errors = (figure("ops_per_s"), figure("latency_p99_ms", main_op),
                        figure("errors_total"))
    parts = [f"{ops:,.1f} ops/s" if ops is not None else "no ops",
             f"p99 {p99:,.2f} ms ({main_op})" if p99 is not None else f"no {main_op} completed",
             f"{errors or 0:,.0f} errors"]
    scenario = (f" think={spec.think_ms:g}ms" if spec.think_ms else "") + (
        f" rtt={spec.rtt_ms:g}ms" if spec.rtt_ms else "")
    return (f"run {n}/{total}: {spec.workload} {spec.config} agents={spec.agents}{scenario} "
            f"rep={spec.rep + 1}: " + ", ".join(parts))


def main(args: argparse.Namespace) -> int:
    plan = build_plan(args)
    specs = plan.specs()
    for line in plan.skipped():
        err.print(line)
    if not specs:
        raise CliError("nothing to run: every combination was skipped (see above)")
    results_dir = Path(args.results_dir)
    plain = not err.is_terminal  # a log file: rich draws no bar, so print a line per run
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=err,
                  transient=False, disable=plain) as progress:
        task = progress.add_task("starting", total=len(specs))
        done = {"n": 0}

        def started(spec: RunSpec) -> None:
            progress.update(task, description=f"{spec.workload} {spec.config} "
                                              f"x{spec.agents} rep {spec.rep + 1}")

        def finished(spec: RunSpec, rows: list[dict[str, Any]]) -> None:
            done["n"] += 1
            progress.advance(task)
            if plain:
                left = progress.tasks[0].time_remaining
                eta = f"; about {left:.0f} s left" if left and done["n"] < len(specs) else ""
                print(finished_line(done["n"], len(specs), spec, rows) + eta, file=sys.stderr,
                      flush=True)

        out_dir, failures = execute(plan, results_dir, progress=started, finished=finished,
                                    command=command_line())
        progress.update(task, completed=len(specs), description="done")
    run = results.load(out_dir.name, results_dir)
    console.print(summary_table(run))
    console.print(f"Results: {out_dir}")
    if failures:
        err.print(f"[red]FAILED: {len(failures)} run(s) lost acknowledged writes:[/red]")
        for f in failures[:10]:
            err.print(f"  {f}")
        return 1
    return 0
