"""The backend configurations, workloads and profiles a run can use."""

from __future__ import annotations

import argparse

from rich.table import Table

from bench.cli.base import console, table
from bench.harness.configs import CONFIGS
from bench.harness.runner import PROFILES
from bench.harness.workloads import WORKLOADS

HELP = "configurations, workloads and profiles"


def add_arguments(p: argparse.ArgumentParser) -> None:
    return None


def tables() -> list[Table]:
    configs = table("Backend configurations", ("config", "backend"),
                    prose=("what", "durability"))
    for c in CONFIGS.values():
        configs.add_row(c.name, c.backend, c.description, c.durability)
    workloads = table("Workloads", ("workload",), prose=("what",))
    for name, w in WORKLOADS.items():
        workloads.add_row(name, w.summary)
    profiles = table("Profiles (python -m bench run --profile NAME)", ("profile",),
                     ("agents", "seconds measured", "warm-up s", "repetitions", "corpus"))
    for name, p in PROFILES.items():
        profiles.add_row(name, ",".join(str(a) for a in p["agents"]), f"{p['duration']:g}",
                         f"{p['warmup']:g}", str(p["repetitions"]), f"{p['corpus']:,}")
    return [configs, workloads, profiles]


def main(args: argparse.Namespace) -> int:
    for t in tables():
        console.print(t)
    return 0
