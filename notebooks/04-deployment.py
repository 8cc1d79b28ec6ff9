# %% [markdown]
# # Deployment scenarios: agents that think, PostgreSQL at a distance
#
# Each agent is an asyncio task: it reads its context, thinks (a model call, here a sleep),
# then writes its step in one transaction and notifies its team. The charts show, per round
# trip to PostgreSQL, the steps per second and the storage time per step (p99) against the
# number of agents, then the decision map. SQLite is a file on the agents' machine: the
# round trip does not apply to it, so it appears in every panel with its own measurement.
# A run whose load generator started steps more than 10 ms late (p99) measured the harness
# as much as the store: it is flagged below and marked * on the map.

# %% tags=["parameters"]
# needs-workload: agent-step
RUN_ID = None  # None: the newest run (the reference run unless a newer local one exists)
RESULTS_DIR = None
OUTPUT_DIR = None
LATENCY_TARGET_MS = 50.0

# %%
import json
import textwrap

import pandas as pd

from bench.analysis import decision_map, scenarios, style

run = style.load(RUN_ID, RESULTS_DIR)
print(style.caption(run))
cells = scenarios.cells(run.summary, scenarios.STEP_WORKLOAD)
rtts = decision_map.rtt_rows(cells)
measured = style.measured_agents(cells)
rtt_meta = {k: v for k, v in run.meta.items() if "rtt" in k or "round_trip" in k}
if rtt_meta:
    print("Round trips measured by the run (meta.json):")
    print(json.dumps(rtt_meta, indent=1, default=str)[:3000])


# %%
def panel_rows(rtt: float, think: float) -> pd.DataFrame:
    """Cells shown in the panel for one round trip: PostgreSQL's at that round trip,
    SQLite's at that round trip if measured there, else at its nearest one."""
    c = cells[cells["think_ms"] == think]
    pg = c[(c["backend"] != "sqlite") & (c["rtt_ms"] == rtt)]
    lite = c[c["backend"] == "sqlite"]
    if not lite.empty and rtt not in set(lite["rtt_ms"]):
        nearest = min(set(lite["rtt_ms"]), key=lambda r: abs(r - rtt))
        lite = lite[lite["rtt_ms"] == nearest]
    else:
        lite = lite[lite["rtt_ms"] == rtt]
    rows: pd.DataFrame = pd.concat([lite, pg])
    return rows


def panels(column: str, title: str, ylabel: str, name: str, think: float,
           logy: bool = False, target: float | None = None) -> None:
    fig, axes = style.plt.subplots(1, len(rtts), figsize=(4.6 * len(rtts), 4.2), sharey=True,
                                   squeeze=False)
    for ax, rtt in zip(axes[0], rtts, strict=True):
        rows = panel_rows(rtt, think)
        present = set(rows["config"])
        order = [c for c in style.ORDER if c in present] + sorted(present - set(style.ORDER))
        for config in order:
            g = rows[rows["config"] == config]
            style.plot_measured(ax, g.set_index("agents")[column].sort_index(), measured,
                                color=decision_map.color(config),
                                label=decision_map.label(config))
            flagged = g[g["limited"]]
            ax.scatter(flagged["agents"], flagged[column], marker="x", s=90,
                       color="black", zorder=3)
        if target is not None:
            ax.axhline(target, color="#aa0000", linestyle=":", linewidth=1)
        ax.set_title(f"{title}, PostgreSQL {rtt:g} ms away", fontsize=10)
        ax.set_xlabel("concurrent agents (log scale)")
        if logy:
            ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        style.agent_axis(ax, measured)
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].legend(fontsize=8)
    for ax in axes[0][1:]:
        ax.legend(handles=[]).set_visible(False)  # one legend per figure is enough
    fig.suptitle(f"Agents thinking {think:,g} ms per step (x: load generator lagged)")
    style.save(fig, name, OUTPUT_DIR)


thinks = sorted(set(cells["think_ms"]))
for think in thinks:
    suffix = "" if len(thinks) == 1 else f"-think{think:g}"
    panels("ops_per_s", "Steps per second", "steps per second", f"04-steps{suffix}", think)
    panels("p99_ms", "Storage time per step, p99", "milliseconds (log scale)",
           f"04-storage-p99{suffix}", think, logy=True, target=LATENCY_TARGET_MS)

# %% [markdown]
# ## Decision map
#
# Every backend whose storage p99 stays under the target in a measured cell; empty cells
# were not measured. `python -m bench recommend --agents N --think-ms T --rtt-ms R
# [--machines M]` answers a scenario between or beyond these cells, or prints the command
# that measures it.

# %%
for think in thinks:
    suffix = "" if len(thinks) == 1 else f"-think{think:g}"
    on_map = cells[cells["config"].isin(decision_map.DEFAULTS)]
    if on_map.empty:
        print("No cell of storekit's default configs (sqlite-wal, postgres, postgres-pgbouncer).")
        break
    print(textwrap.fill(f"Think {think:g} ms: " + decision_map.summary_sentence(
        on_map, think, LATENCY_TARGET_MS), 100))
    fig, ax = decision_map.plot(on_map, think, LATENCY_TARGET_MS)
    style.save(fig, f"04-decision-map{suffix}", OUTPUT_DIR)

# %% [markdown]
# ## Runs limited by the load generator
#
# The harness's own step-start lag (scheduled against actual start, p99). Above 10 ms the
# harness could not start steps on time, so the figures of that cell describe the load
# generator as much as the store.

# %%
limited = cells[cells["limited"]]
if limited.empty:
    print(f"No cell lagged: every start-lag p99 was at most {scenarios.LAG_LIMIT_MS:g} ms.")
else:
    print(f"{len(limited)} of {len(cells)} cells lagged:")
    display(limited[["config", "agents", "think_ms", "rtt_ms", "ops_per_s", "p99_ms",  # noqa: F821
                     "lag_p99_ms"]].style.format(precision=1).hide(axis="index"))

# %%
print("All cells (medians over repetitions):")
cells.drop(columns=["backend"]).style.format(precision=1).hide(axis="index")
