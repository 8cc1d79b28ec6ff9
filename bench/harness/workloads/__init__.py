"""The seed document's scenarios. Each module here declares itself once, as WORKLOAD.

Adding a workload is adding one module with a WORKLOAD = Workload(...) declaration: the
registry, `bench list`, the run summary, the recommendation and the report read it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.harness.agent import AgentContext, AgentResult, Operation
from storekit import Database

if TYPE_CHECKING:
    from bench.harness.tasks import AsyncOperation
    from storekit.aio import AsyncDatabase


@dataclass(frozen=True)
class Workload:
    name: str  # as typed on the command line and stored in summary.csv
    summary: str  # one line for `bench list`
    main_op: str  # the operation whose latency the run summary shows (the workload's point)
    roles: Callable[[int], list[str]]  # agents -> the role of each agent
    setup: Callable[[Database, dict[str, Any]], None]  # create and seed, once per config
    prepare: Callable[[Database, int, list[str]], None]  # per-run rows
    operation: Callable[[Database, AgentContext], Operation]  # what an agent calls in its loop
    verify: Callable[[Database, int, list[AgentResult]], dict[str, Any]]  # acked, lost, detail
    extra_metrics: Callable[[list[AgentResult]], dict[str, float]]  # staleness, freshness...
    notebooks: tuple[str, ...] = ()  # notebooks (stems) that need this workload in the run
    default: bool = True  # part of `--workload all`
    configs: tuple[str, ...] = ()  # the only configs it runs on (); () = every config
    # Imports that take seconds (LangGraph): each worker process runs this before the
    # clock starts, so a run's first agents do not spend its warm-up importing.
    warm: Callable[[], None] | None = None
    # An asyncio workload: agents are tasks on storekit.aio, many per worker process
    # (bench/harness/tasks.py); `operation` is then unused. It takes --think-ms.
    async_operation: Callable[[AsyncDatabase, AgentContext], AsyncOperation] | None = None
    # The channel an agent notifies after each step (payload {"sent": wall time}); each
    # worker listens on its agents' channels and records the notification latency.
    channel: Callable[[AgentContext], str] | None = None

    @property
    def tasks(self) -> bool:
        return self.async_operation is not None


def doc_summary(doc: str | None) -> str:
    """A module docstring's first paragraph on one line."""
    return (doc or "").split("\n\n")[0].replace("\n", " ")


def _discover() -> dict[str, Workload]:
    found: dict[str, Workload] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        workload = getattr(module, "WORKLOAD", None)
        if isinstance(workload, Workload):
            found[workload.name] = workload
    return found


WORKLOADS: dict[str, Workload] = _discover()
MAIN_WORKLOADS = [w.name for w in WORKLOADS.values() if w.default]


def parse_workloads(text: str | None) -> list[str]:
    if not text or text == "all":
        return list(MAIN_WORKLOADS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload {', '.join(unknown)}; valid: {', '.join(WORKLOADS)}")
    return names
