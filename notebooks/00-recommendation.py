# %% [markdown]
# # SQLite or PostgreSQL for my agents? The evidence from this machine
#
# Each claim of the seed document (`better-sqlite3-vs-postgresql.md`) gets a verdict
# computed from the run below, with the number behind it and the chart that shows it.
# The thresholds are in `bench/analysis/claims.py`.

# %% tags=["parameters"]
RUN_ID = None
RESULTS_DIR = None
OUTPUT_DIR = None
LATENCY_TARGET_MS = 50.0

# %%
import textwrap

import pandas as pd

from bench.analysis import claims, decision_map, index_page, recommend, scenarios, style

run = style.load(RUN_ID, RESULTS_DIR)
print(style.caption(run))

# %% [markdown]
# ## Claims ledger

# %%
pd.set_option("display.max_colwidth", None)
ledger = claims.ledger(run.summary)
if OUTPUT_DIR:
    ledger.to_csv(f"{OUTPUT_DIR}/claims.csv", index=False)
ledger.style.hide(axis="index")

# %% [markdown]
# ## Decision map
#
# For each measured number of agents (columns, log scale) and round trip to PostgreSQL
# (rows), every backend whose p99 stays under the target there, from the median over the
# repetitions (no lost write, at most 0.1% failed steps). SQLite has no round trip: its
# result holds on every row, for agents on one machine. Cells no run measured stay empty:
# `python -m bench recommend --agents N --think-ms T --rtt-ms R` prints the command that
# measures one. The map reads the agent-step workload when the run has it, else
# agent-write (processes writing flat out, PostgreSQL on this machine).

# %%
workload = index_page.evidence_workload(run)
cells = scenarios.cells(run.summary, workload)
cells = cells[cells["config"].isin(recommend.DEFAULTS)]
think = index_page.main_think(cells)
print(textwrap.fill(index_page.verdict(run, cells, workload, LATENCY_TARGET_MS), 100))
if not cells.empty:  # the verdict above says what to run when nothing was measured
    fig, ax = decision_map.plot(cells, think, LATENCY_TARGET_MS, what=index_page.what(workload),
                                setting=index_page.setting(workload))
    style.save(fig, "00-decision", OUTPUT_DIR)

# %%
print("Measured capacity (median over repetitions), agent-write:")
cap = recommend.capacity(run.summary)
cap.pivot(index="agents", columns="config", values="ops_per_s").round(0)

# %%
fig, ax = style.figure("Headline: agent-write commits per second", "concurrent agents",
                       "commits per second (log scale)", logy=True)
aw = run.metric("ops_per_s")
measured = style.measured_agents(aw[aw["workload"] == "agent-write"])
for config, g in style.by_config(aw, "agent-write"):
    style.plot_measured(ax, g.groupby("agents")["value"].median(), measured,
                        **style.line(config))
style.agent_axis(ax, measured)
style.save(fig, "00-headline", OUTPUT_DIR)

# %% [markdown]
# ## What speed does not decide
#
# - Users on other machines need network access: PostgreSQL (SQLite over a network
#   filesystem breaks its locking).
# - Team isolation enforced by the database: PostgreSQL row-level security; SQLite has none.
# - Real-time notifications: native LISTEN/NOTIFY on PostgreSQL; storekit emulates it on
#   SQLite for processes on one machine.
# - Setup: SQLite is a file; PostgreSQL is a server to run, back up and upgrade.
