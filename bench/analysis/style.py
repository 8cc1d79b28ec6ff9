"""Colours, labels and units for every chart, and the check that no chart is empty.

Notebooks only read results and plot; anything they share lives here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

from bench.harness import results
from bench.harness.configs import CONFIGS
from bench.harness.configs import FAIR_PAIR as FAIR_PAIR  # for the notebooks

# Each config carries its own colour and label (bench.harness.configs); charts list the
# configs in the order CONFIGS declares them.
COLORS = {name: c.color for name, c in CONFIGS.items()}
LABELS = {name: c.label for name, c in CONFIGS.items()}
ORDER = list(CONFIGS)


class EmptyChartError(AssertionError):
    """A chart would be published without data."""


def load(run_id: str | None, results_dir: str | None) -> results.Run:
    return results.load(run_id, Path(results_dir) if results_dir else None)


def caption(run: results.Run) -> str:
    """Where the figures come from: machine, versions, run, repetitions."""
    m, v, p = run.meta.get("machine", {}), run.meta.get("versions", {}), run.meta.get("plan", {})
    fsync_ms = m.get("fsync", {}).get("fdatasync_p50_s", math.nan) * 1000
    text = (
        f"Run {run.run_id} ({run.meta.get('utc', '?')}), commit "
        f"{(run.meta.get('git', {}).get('id') or '?')[:10]}. Machine: {m.get('cpu', '?')}, "
        f"{m.get('cores', '?')} cores, {(m.get('memory_bytes') or 0) / 2**30:.0f} GiB, "
        f"{m.get('filesystem', '?')}, fdatasync p50 {fsync_ms:.2f} ms. "
        f"Python {v.get('python')}, SQLite {v.get('sqlite')}, psycopg {v.get('psycopg')}, "
        f"PostgreSQL {_pg_version(run)}. {p.get('repetitions')} repetitions of "
        f"{p.get('duration')} s after {p.get('warmup')} s warm-up; agents are {p.get('workers')}; "
        "the load generator shares the cores with the database."
    )
    return text


def _pg_version(run: results.Run) -> str:
    settings = run.meta.get("configs", {}).get("postgres", {}).get("settings", {})
    return str(settings.get("server_version", "n/a")).split()[0]


def by_config(frame: pd.DataFrame, workload: str) -> Iterator[tuple[str, pd.DataFrame]]:
    f = results.select(frame, workload=workload)
    for config in ORDER:
        group = results.select(f, config=config)
        if not group.empty:
            yield config, group


def line(config: str) -> dict[str, Any]:
    return {"color": COLORS.get(config, "grey"), "label": LABELS.get(config, config)}


def figure(title: str, xlabel: str, ylabel: str, *, logy: bool = False,
           logx: bool = False) -> tuple[Any, Any]:
    fig, ax = plt.subplots(figsize=(9, 5))
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.grid(True, which="both", alpha=0.3)
    return fig, ax


def _has_data(ax: Any) -> bool:
    for ln in ax.lines:
        y = pd.to_numeric(pd.Series(ln.get_ydata()), errors="coerce")
        if y.notna().any():
            return True
    for patch in ax.patches:
        if getattr(patch, "get_height", lambda: 0)() not in (0, None):
            return True
    for coll in ax.collections:
        if len(coll.get_offsets()) or any(len(p.vertices) for p in coll.get_paths()):
            return True
    return bool(ax.images)


def save(fig: Any, name: str, output_dir: str | None) -> None:
    """Refuse an empty chart; otherwise write it as PNG when an output folder is given."""
    for ax in fig.axes:
        if ax.get_visible() and not _has_data(ax):
            raise EmptyChartError(f"chart {name!r}: axes {ax.get_title()!r} has no data")
    for ax in fig.axes:
        if ax.get_legend_handles_labels()[0] and ax.get_legend() is None:
            ax.legend(fontsize=8)
    fig.tight_layout()
    if output_dir:
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        fig.savefig(folder / f"{name}.png", dpi=110, bbox_inches="tight")


def agent_axis(ax: Any, measured: Any = None, *, log: bool = True) -> None:
    """Ticks at the measured agent counts only (by default every x a line of the axes has),
    labelled 1, 2, 4, 1,000 (not 2^0), on a log scale by default; and each line broken
    where it has no value at a measured count, so no line joins points across a gap."""
    if measured is None:
        measured = {float(x) for ln in ax.lines for x in ln.get_xdata()}
    values = sorted({int(v) for v in measured})
    for ln in ax.lines:
        points = pd.Series(pd.to_numeric(pd.Series(ln.get_ydata()), errors="coerce").to_numpy(),
                           index=[int(x) for x in ln.get_xdata()])
        points = points[~points.index.duplicated()]
        if not points.empty:
            full = points.reindex(sorted(set(values) | set(points.index)))
            ln.set_data(full.index.to_numpy(dtype=float), full.to_numpy(dtype=float))
    if log:
        ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(values))
    ax.xaxis.set_major_formatter(FixedFormatter([f"{v:,}" for v in values]))
    ax.xaxis.set_minor_locator(NullLocator())
    if values and log:
        ax.set_xlim(values[0] / 1.15, values[-1] * 1.15)


def plot_measured(ax: Any, series: pd.Series, measured: Any, **kw: Any) -> Any:
    """Plot a series indexed by agent count over every measured count: where this series
    has no value the line breaks (NaN), so no line joins points across an unmeasured one."""
    full = series.reindex(sorted({int(v) for v in measured} | {int(v) for v in series.index}))
    return ax.plot(full.index, full.to_numpy(dtype=float), marker="o", **kw)


def measured_agents(frame: pd.DataFrame) -> list[int]:
    return sorted({int(v) for v in frame["agents"]}) if "agents" in frame else []
