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
import numpy as np
import pandas as pd

from bench.analysis import claims, recommend, style

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
# ## Decision chart
#
# For a number of agents and writes per second per agent, which of storekit's two defaults
# keeps the write p99 under the target on this machine, estimated from the measured
# closed-loop capacity curves (demand at most 70% of capacity at the next measured agent
# count, and that point's p99 under the target). SQLite is preferred when both qualify:
# it needs no server.

# %%
cap = recommend.capacity(run.summary)
agent_axis = list(range(1, int(cap["agents"].max()) + 1))
rates = np.logspace(-1, 4, 41)
codes = {"sqlite-wal": 0, "postgres": 1, "neither": 2}
grid = np.array([[codes[recommend.decide(cap, n, r, LATENCY_TARGET_MS)] for n in agent_axis]
                 for r in rates])
fig, ax = style.figure(f"Which backend keeps agent-write p99 under {LATENCY_TARGET_MS:g} ms",
                       "concurrent agents", "writes per second per agent (log scale)")
cmap = style.plt.matplotlib.colors.ListedColormap(
    [style.COLORS["sqlite-wal"], style.COLORS["postgres"], "#dddddd"])
ax.pcolormesh(agent_axis, rates, grid, cmap=cmap, vmin=-0.5, vmax=2.5, shading="nearest")
ax.set_yscale("log")
for name, code in codes.items():
    ax.scatter([], [], color=cmap(code), marker="s", s=80,
               label={"sqlite-wal": style.LABELS["sqlite-wal"],
                      "postgres": style.LABELS["postgres"],
                      "neither": "neither meets the target"}[name])
style.save(fig, "00-decision", OUTPUT_DIR)

# %%
print("Measured capacity (median over repetitions), agent-write:")
cap.pivot(index="agents", columns="config", values="ops_per_s").round(0)

# %%
fig, ax = style.figure("Headline: agent-write commits per second", "concurrent agents",
                       "commits per second (log scale)", logy=True)
for config, g in style.by_config(run.metric("ops_per_s"), "agent-write"):
    stats = g.groupby("agents")["value"].median()
    ax.plot(stats.index, stats.values, marker="o", **style.line(config))
ax.set_xscale("log", base=2)
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
