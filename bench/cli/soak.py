"""A long read-while-write run: lost writes, errors, and agent memory growth."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.base import CliError, command_line, console, err, one_per_line, table
from bench.harness import results
from bench.harness.configs import CONFIGS, parse_configs
from bench.harness.runner import Plan, execute

HELP = "long read-while-write run: lost writes, errors, memory"
SOAK_RSS_GROWTH_BOUND_MB = 50.0  # per agent process, start to end of its run


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=10.0,
                   help="total minutes, shared between the configs")
    p.add_argument("--agents", type=int, default=16, help="agent processes")
    p.add_argument("--config", help="comma-separated configurations, listed below "
                                    "(default: all)")
    p.epilog = one_per_line("configs", CONFIGS)


def main(args: argparse.Namespace) -> int:
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
        f"  {spec.config} ..."), command=command_line())
    run = results.load(out_dir.name, results_dir)
    out = table(f"Soak {run.run_id}: {plan.duration:.0f} s per config, {args.agents} agents",
                ("config",), ("ops/s", "acked writes", "lost", "errors", "agent RSS end (MB, max)",
                              "RSS growth (MB, max)", f"within {SOAK_RSS_GROWTH_BOUND_MB:g} MB"))
    bounded = True
    for config in [c.name for c in configs]:
        def value(metric: str, cfg: str = config) -> float:
            v = results.select(run.summary, config=cfg, metric=metric, op="all")["value"]
            return float(v.iloc[0]) if not v.empty else float("nan")
        growth = value("agent_rss_growth_max_mb")
        ok = growth <= SOAK_RSS_GROWTH_BOUND_MB
        bounded &= ok
        out.add_row(config, f"{value('ops_per_s'):,.0f}", f"{value('acked_writes'):,.0f}",
                      f"{value('lost_writes'):.0f}", f"{value('errors_total'):.0f}",
                      f"{value('agent_rss_end_max_mb'):.1f}", f"{growth:.1f}",
                      "yes" if ok else "NO")
    console.print(out)
    console.print(f"Results: {out_dir}")
    return 0 if not failures and bounded else 1
