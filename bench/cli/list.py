"""The backend configurations, workloads and profiles a run can use."""

from __future__ import annotations

import argparse

from rich.table import Table

from bench.cli.base import console
from bench.harness.configs import CONFIGS
from bench.harness.runner import PROFILES
from bench.harness.workloads import WORKLOADS

HELP = "configurations, workloads and profiles"


def add_arguments(p: argparse.ArgumentParser) -> None:
    return None


def main(args: argparse.Namespace) -> int:
    table = Table(title="Backend configurations")
    for col in ("config", "backend", "what", "durability"):
        table.add_column(col)
    for c in CONFIGS.values():
        table.add_row(c.name, c.backend, c.description, c.durability)
    console.print(table)
    workloads = Table(title="Workloads")
    workloads.add_column("workload")
    workloads.add_column("what")
    for name, w in WORKLOADS.items():
        workloads.add_row(name, w.summary)
    console.print(workloads)
    console.print("Profiles: " + "; ".join(f"{k}: {v}" for k, v in PROFILES.items()))
    return 0
