"""python -m bench: list | run | calibrate | compare | recommend | report | soak."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

import storekit
from bench import arglist, metrics, results
from bench.configs import CONFIGS, parse_configs
from bench.runner import PROFILES, Plan, RunSpec, execute
from bench.workloads import WORKLOADS, parse_workloads

console = Console()
err = Console(stderr=True)


class CliError(Exception):
    """A one-line error for the user; printed without a traceback."""


def _positive_int_list(text: str) -> list[int]:
    try:
        return arglist.numbers(text, int, "--agents", 1)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def cmd_list(args: argparse.Namespace) -> int:
    table = Table(title="Backend configurations")
    for col in ("config", "backend", "what", "durability"):
        table.add_column(col)
    for c in CONFIGS.values():
        table.add_row(c.name, c.backend, c.description, c.durability)
    console.print(table)
    workloads = Table(title="Workloads")
    workloads.add_column("workload")
    workloads.add_column("what")
    for name, module in WORKLOADS.items():
        workloads.add_row(name, (module.__doc__ or "").split("\n\n")[0].replace("\n", " "))
    console.print(workloads)
    console.print("Profiles: " + "; ".join(f"{k}: {v}" for k, v in PROFILES.items()))
    return 0


def build_plan(args: argparse.Namespace) -> Plan:
    profile = dict(PROFILES[args.profile])
    try:
        configs = parse_configs(args.config)
        workloads = parse_workloads(args.workload)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    agents = _positive_int_list(args.agents) if args.agents else profile["agents"]
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
                    rate=args.rate, keep_samples=not args.no_samples)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def print_summary(run: results.Run) -> None:
    s = run.summary
    table = Table(title=f"Run {run.run_id}: median (min-max) of {run.meta['plan']['repetitions']}"
                        " repetitions")
    for col in ("workload", "config", "agents", "ops/s", "p99 ms (main op)", "errors", "lost"):
        table.add_column(col, justify="right" if col not in ("workload", "config") else "left")
    main_op = {"agent-write": "transaction", "read-while-write": "update", "search": "search",
               "single-insert": "insert"}
    for (workload, config, agents), group in s.groupby(["workload", "config", "agents"],
                                                       sort=False):
        def agg(metric: str, op: str = "all", frame: Any = group) -> str:
            values = frame[(frame["metric"] == metric) & (frame["op"] == op)]["value"]
            if values.empty:
                return "-"
            r = metrics.aggregate_repetitions(values.tolist())
            med, lo, hi = r["median"], r["min"], r["max"]
            return f"{med:,.1f} ({lo:,.1f}-{hi:,.1f})" if hi > lo else f"{med:,.1f}"
        table.add_row(str(workload), str(config), str(agents), agg("ops_per_s"),
                      agg("latency_p99_ms", main_op.get(str(workload), "all")),
                      agg("errors_total"), agg("lost_writes"))
    console.print(table)


def cmd_run(args: argparse.Namespace) -> int:
    plan = build_plan(args)
    specs = plan.specs()
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

        out_dir, failures = execute(plan, results_dir, progress=advance,
                                    command=shlex.join(["python", "-m", "bench", *sys.argv[1:]]))
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


def cmd_compare(args: argparse.Namespace) -> int:
    a = results.load(args.run_a, Path(args.results_dir))
    b = results.load(args.run_b, Path(args.results_dir))
    keys = ["workload", "config", "agents", "op", "metric"]
    wanted = {"ops_per_s", "latency_p99_ms", "errors_total"}
    ma = a.summary[a.summary["metric"].isin(wanted)].groupby(keys)["value"].median()
    mb = b.summary[b.summary["metric"].isin(wanted)].groupby(keys)["value"].median()
    joined = ma.to_frame("a").join(mb.to_frame("b"), how="inner")
    table = Table(title=f"{a.run_id} (A) vs {b.run_id} (B), medians")
    for col in (*keys, "A", "B", "B/A"):
        table.add_column(col)
    for idx, row in joined.iterrows():
        ratio = row["b"] / row["a"] if row["a"] else float("nan")
        table.add_row(*(str(x) for x in idx), f"{row['a']:,.2f}", f"{row['b']:,.2f}",
                      f"{ratio:.2f}")
    console.print(table)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from bench.calibrate import calibrate

    report = calibrate(Path(args.results_dir), seconds=args.seconds, clients=args.clients)
    from bench.extras import write_json

    path = write_json("calibration", {"seconds": args.seconds, "clients": args.clients,
                                      "results": [report]})
    table = Table(title=f"Calibration (same machine, same run), written to {path}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in report.items():
        table.add_row(key, f"{value:,.3f}" if isinstance(value, float) else str(value))
    console.print(table)
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from bench.recommend import recommend

    console.print(recommend(agents=args.agents, writes_per_agent=args.writes_per_agent,
                            readers=args.readers, needs_network=args.needs_network,
                            needs_row_security=args.needs_row_security,
                            latency_target_ms=args.latency_target_ms,
                            run_id=args.run, results_dir=Path(args.results_dir)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import build_report

    path = build_report(args.run_id, Path(args.results_dir))
    console.print(f"Report: {path}")
    return 0


SOAK_RSS_GROWTH_BOUND_MB = 50.0  # per agent process, start to end of its run


def cmd_soak(args: argparse.Namespace) -> int:
    if args.minutes <= 0 or args.agents <= 0:
        raise CliError("--minutes and --agents must be positive")
    try:
        configs = parse_configs(args.config)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    plan = Plan(workloads=["read-while-write"], configs=configs, agents=[args.agents],
                duration=args.minutes * 60 / len(configs), warmup=1.0, repetitions=1,
                corpus=0, keep_samples=False, sample_every=100)
    results_dir = Path(args.results_dir)
    err.print(f"soak: {args.agents} agents on read-while-write, "
              f"{plan.duration:.0f} s per config, {len(configs)} configs")
    out_dir, failures = execute(plan, results_dir, progress=lambda spec: err.print(
        f"  {spec.config} ..."), command=shlex.join(["python", "-m", "bench", *sys.argv[1:]]))
    run = results.load(out_dir.name, results_dir)
    s = run.summary
    table = Table(title=f"Soak {run.run_id}: {plan.duration:.0f} s per config, "
                        f"{args.agents} agents")
    for col in ("config", "ops/s", "acked writes", "lost", "errors", "agent RSS end (MB, max)",
                "RSS growth (MB, max)", f"within {SOAK_RSS_GROWTH_BOUND_MB:g} MB"):
        table.add_column(col)
    bounded = True
    for config in [c.name for c in configs]:
        def value(metric: str, cfg: str = config) -> float:
            v = s[(s["config"] == cfg) & (s["metric"] == metric) & (s["op"] == "all")]["value"]
            return float(v.iloc[0]) if not v.empty else float("nan")
        growth = value("agent_rss_growth_max_mb")
        ok = growth <= SOAK_RSS_GROWTH_BOUND_MB
        bounded &= ok
        table.add_row(config, f"{value('ops_per_s'):,.0f}", f"{value('acked_writes'):,.0f}",
                      f"{value('lost_writes'):.0f}", f"{value('errors_total'):.0f}",
                      f"{value('agent_rss_end_max_mb'):.1f}", f"{growth:.1f}",
                      "yes" if ok else "NO")
    console.print(table)
    console.print(f"Results: {out_dir}")
    return 0 if not failures and bounded else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--results-dir", default=str(results.RESULTS_DIR))
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="configurations, workloads and profiles")
    run = sub.add_parser("run", help="run workloads and write results/<run_id>/")
    run.add_argument("--profile", choices=list(PROFILES), default="quick")
    run.add_argument("--workload", help=f"comma-separated: {', '.join(WORKLOADS)}")
    run.add_argument("--config", help=f"comma-separated: {', '.join(CONFIGS)}")
    run.add_argument("--agents", help="comma-separated agent counts, e.g. 1,2,4,8,16")
    run.add_argument("--duration", type=float, help="measured seconds per run")
    run.add_argument("--warmup", type=float, help="warm-up seconds per run (not measured)")
    run.add_argument("--repetitions", type=int)
    run.add_argument("--corpus", type=int, help="messages in the search corpus")
    run.add_argument("--workers", choices=["processes", "threads"], default="processes")
    run.add_argument("--rate", type=float, help="open loop: total operations per second")
    run.add_argument("--no-samples", action="store_true", help="skip raw/samples.csv.gz")
    compare = sub.add_parser("compare", help="compare two runs")
    compare.add_argument("run_a")
    compare.add_argument("run_b")
    cal = sub.add_parser("calibrate", help="fsync latency and harness-vs-pgbench/sqlite3 ratios")
    cal.add_argument("--seconds", type=float, default=5.0)
    cal.add_argument("--clients", type=int, default=4)
    rec = sub.add_parser("recommend", help="a backend recommendation from the newest results")
    rec.add_argument("--agents", type=int, required=True)
    rec.add_argument("--writes-per-agent", type=float, required=True,
                     help="writes per second per agent")
    rec.add_argument("--readers", type=int, default=0)
    rec.add_argument("--needs-network", action="store_true")
    rec.add_argument("--needs-row-security", action="store_true")
    rec.add_argument("--latency-target-ms", type=float, default=50.0)
    rec.add_argument("--run", help="run id (default: newest)")
    report = sub.add_parser("report", help="execute the notebooks for a run into its folder")
    report.add_argument("run_id", nargs="?")
    soak = sub.add_parser("soak", help="long read-while-write run: lost writes, errors, memory")
    soak.add_argument("--minutes", type=float, default=10.0)
    soak.add_argument("--agents", type=int, default=16)
    soak.add_argument("--config", help=f"comma-separated: {', '.join(CONFIGS)}")
    return p


COMMANDS = {"list": cmd_list, "run": cmd_run, "compare": cmd_compare,
            "calibrate": cmd_calibrate, "recommend": cmd_recommend, "report": cmd_report,
            "soak": cmd_soak}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (CliError, storekit.DatabaseUnavailable, FileNotFoundError) as exc:
        # One unwrapped line, whatever the terminal width.
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
