"""The decision map: for each measured (agents, round trip) cell, the backends that meet the
storage p99 target there. Cells no run measured stay visibly empty: the map never guesses.

SQLite is a file on the agents' machine, so the round trip to PostgreSQL does not apply to
it: its result at an agent count holds on every row (for agents on one machine).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pandas as pd
from matplotlib.patches import Patch, Rectangle

from bench.analysis import style
from bench.analysis.recommend import DEFAULTS
from bench.analysis.scenarios import meets_target

SHORT = {"sqlite-wal": "SQLite", "postgres": "PostgreSQL", "postgres-pgbouncer": "PgBouncer"}
# Until a config declares its own colour (bench.harness.configs), the map still tells it apart.
FALLBACK = {"postgres-pgbouncer": ("#17becf", "PostgreSQL behind PgBouncer (transaction pooling)")}
EMPTY = "#ffffff"
NEITHER = "#d9d9d9"


def color(config: str) -> str:
    return style.COLORS.get(config) or FALLBACK.get(config, ("grey", config))[0]


def label(config: str) -> str:
    return style.LABELS.get(config) or FALLBACK.get(config, ("grey", config))[1]


def _on_map(table: pd.DataFrame, think_ms: float, configs: tuple[str, ...]) -> pd.DataFrame:
    rows = table[(table["think_ms"] == think_ms) & table["config"].isin(configs)]
    selected: pd.DataFrame = pd.DataFrame(rows)
    return selected


def rtt_rows(rows: pd.DataFrame) -> list[float]:
    networked = rows[rows["backend"] != "sqlite"]
    return sorted(set(networked["rtt_ms"].astype(float))) or [0.0]


def grid(table: pd.DataFrame, think_ms: float, target_ms: float,
         configs: tuple[str, ...] = DEFAULTS) -> pd.DataFrame:
    """Rows: measured round trips; columns: measured agent counts; each value the tuple of
    configs that meet the target there (empty: measured, none meets), or None (not
    measured)."""
    rows = _on_map(table, think_ms, configs)
    rtts = rtt_rows(rows)
    agents = sorted(set(rows["agents"].astype(int)))
    out: pd.DataFrame = pd.DataFrame([[None] * len(agents) for _ in rtts], dtype=object,
                       index=pd.Index(rtts, name="rtt_ms"), columns=pd.Index(agents, name="agents"))
    for rtt in rtts:
        for n in agents:
            here = rows[(rows["agents"] == n)
                        & ((rows["rtt_ms"] == rtt) | (rows["backend"] == "sqlite"))]
            if here.empty:
                continue
            ok = {str(r["config"]) for _, r in here.iterrows() if meets_target(r, target_ms)}
            out.at[rtt, n] = tuple(c for c in configs if c in ok)  # type: ignore[assignment]
    return out


def at(cells: pd.DataFrame, rtt: object, agents: object) -> tuple[str, ...] | None:
    """One cell of grid(): the configs meeting the target, or None (not measured)."""
    value = cells.at[rtt, agents]
    return tuple(str(c) for c in value) if isinstance(value, tuple) else None


def unmeasured(table: pd.DataFrame, think_ms: float, rtt: float, agents: int,
               configs: tuple[str, ...] = DEFAULTS) -> list[str]:
    """The map's configs that were measured elsewhere but not in this (measured) cell."""
    rows = _on_map(table, think_ms, configs)
    here = rows[(rows["agents"] == agents)
                & ((rows["rtt_ms"] == rtt) | (rows["backend"] == "sqlite"))]
    if here.empty:
        return []
    return [c for c in configs if c in set(rows["config"]) and c not in set(here["config"])]


def limited(table: pd.DataFrame, think_ms: float, rtt: float, agents: int,
            configs: tuple[str, ...] = DEFAULTS) -> bool:
    rows = _on_map(table, think_ms, configs)
    here = rows[(rows["agents"] == agents)
                & ((rows["rtt_ms"] == rtt) | (rows["backend"] == "sqlite"))]
    return bool(here["limited"].any())


def _edges(values: list[float]) -> list[tuple[float, float]]:
    """Each value's cell on a log10 axis: halfway (in log) to its neighbours."""
    logs = [math.log10(v) for v in values]
    if len(logs) == 1:
        return [(logs[0] - 0.5, logs[0] + 0.5)]
    mids = [(a + b) / 2 for a, b in itertools.pairwise(logs)]
    lo = [2 * logs[0] - mids[0], *mids]
    hi = [*mids, 2 * logs[-1] - mids[-1]]
    return list(zip(lo, hi, strict=True))


def plot(table: pd.DataFrame, think_ms: float, target_ms: float,
         configs: tuple[str, ...] = DEFAULTS, what: str = "storage p99",
         setting: str | None = None) -> tuple[Any, Any]:
    """The map as a figure: one coloured stripe per backend meeting the target in a cell,
    grey where none does, white with a dashed edge where nothing was measured, and * where
    the load generator lagged."""
    cells = grid(table, think_ms, target_ms, configs)
    agents = [int(a) for a in cells.columns]
    rtts = [float(r) for r in cells.index]
    fig, ax = style.figure(
        f"Who keeps the {what} under {target_ms:g} ms\n("
        + (setting or f"agents thinking {think_ms:,g} ms per step")
        + "; an empty cell was not measured)",
        "concurrent agents (log scale)", "round trip to PostgreSQL")
    fig.set_size_inches(max(8.0, 1.5 * len(agents) + 2.5), 1.1 * len(rtts) + 2.8)
    ax.grid(False)
    any_limited = False
    for y, rtt in enumerate(rtts):
        for (x0, x1), n in zip(_edges([float(a) for a in agents]), agents, strict=True):
            value = at(cells, rtt, n)
            pad = 0.02 * (x1 - x0)
            x0, x1 = x0 + pad, x1 - pad
            if value is None:
                ax.add_patch(Rectangle((x0, y - 0.45), x1 - x0, 0.9, facecolor=EMPTY,
                                       edgecolor="#999999", linestyle="--"))
                ax.text((x0 + x1) / 2, y, "not measured", ha="center", va="center",
                        fontsize=8, color="#777777")
                continue
            if not value:
                ax.add_patch(Rectangle((x0, y - 0.45), x1 - x0, 0.9, facecolor=NEITHER))
                ax.text((x0 + x1) / 2, y, "neither", ha="center", va="center", fontsize=9)
            else:
                h = 0.9 / len(value)
                for i, config in enumerate(value):
                    top = y - 0.45 + i * h
                    ax.add_patch(Rectangle((x0, top), x1 - x0, h,
                                           facecolor=color(config), alpha=0.85))
                    ax.text((x0 + x1) / 2, top + h / 2, SHORT.get(config, config),
                            ha="center", va="center", fontsize=9, color="white",
                            fontweight="bold")
            missing = unmeasured(table, think_ms, rtt, n, configs)
            if missing:  # a backend absent from a cell was not measured there
                ax.text((x0 + x1) / 2, y + 0.43, "not measured: " + ", ".join(
                    SHORT.get(c, c) for c in missing), ha="center", va="bottom", fontsize=7,
                    color="black", backgroundcolor="#ffffffcc")
            if limited(table, think_ms, rtt, n, configs):
                any_limited = True
                ax.text(x1 - 0.02, y - 0.4, "*", ha="right", va="top", fontsize=14)
    edges = _edges([float(a) for a in agents])
    ax.set_xlim(edges[0][0], edges[-1][1])
    ax.set_ylim(len(rtts) - 0.5, -0.5)  # the nearest PostgreSQL on top
    ax.set_xticks([math.log10(a) for a in agents], [f"{a:,}" for a in agents])
    ax.set_yticks(range(len(rtts)), [f"{r:g} ms" for r in rtts])
    ax.minorticks_off()
    handles = [Patch(facecolor=color(c), label=label(c))
               for c in configs if c in set(table["config"])]
    handles += [Patch(facecolor=NEITHER, label="measured: none meets the target"),
                Patch(facecolor=EMPTY, edgecolor="#999999", linestyle="--",
                      label="not measured")]
    if any_limited:
        handles.append(Patch(facecolor=EMPTY, edgecolor=EMPTY,
                             label="* load generator lagged (start lag p99 > 10 ms)"))
    ax.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2),
              ncol=2, frameon=False)
    return fig, ax


def summary_sentence(table: pd.DataFrame, think_ms: float, target_ms: float,
                     configs: tuple[str, ...] = DEFAULTS) -> str:
    """Per backend, the largest measured agent count meeting the target at each round trip,
    as one clause each (the report's verdict)."""
    cells = grid(table, think_ms, target_ms, configs)
    clauses = []
    for config in configs:
        if config not in set(table["config"]):
            continue
        reach = []
        for rtt in cells.index:
            fits = [int(n) for n in cells.columns if config in (at(cells, rtt, n) or ())]
            reach.append((float(rtt), max(fits) if fits else 0))
        name = SHORT.get(config, config)
        if config.startswith("sqlite") or len(reach) == 1:
            n = reach[0][1]
            clauses.append(f"{name} up to {_agents(n)}" if n else f"{name} at no measured count")
        else:
            parts = [f"{_agents(n)} at {rtt:g} ms" if n else f"none at {rtt:g} ms"
                     for rtt, n in reach]
            clauses.append(f"{name} up to " + ", ".join(parts))
    return "; ".join(clauses)


def _agents(n: int) -> str:
    return f"{n:,} agent" + ("s" if n != 1 else "")
