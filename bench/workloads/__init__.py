"""The seed document's scenarios, each a module with the same small interface.

roles(agents) -> the role of each agent process or thread
setup(db, scale) -> create and seed tables, once per (config, workload)
prepare(db, run_key, roles) -> per-run rows (e.g. the agents a run updates)
operation(db, ctx) -> the function an agent calls in its loop
verify(db, run_key, results) -> {"acked": n, "lost": n, "detail": str}
extra_metrics(results) -> workload-specific figures (staleness, freshness)
"""

from __future__ import annotations

from types import ModuleType

from bench.workloads import agent_write, read_while_write, search, single_insert

WORKLOADS: dict[str, ModuleType] = {
    "agent-write": agent_write,
    "read-while-write": read_while_write,
    "search": search,
    "single-insert": single_insert,  # calibration against pgbench and bare sqlite3
}
MAIN_WORKLOADS = ["agent-write", "read-while-write", "search"]


def parse_workloads(text: str | None) -> list[str]:
    if not text or text == "all":
        return list(MAIN_WORKLOADS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload {', '.join(unknown)}; valid: {', '.join(WORKLOADS)}")
    return names
