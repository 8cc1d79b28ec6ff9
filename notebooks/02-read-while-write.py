# %% [markdown]
# # Readers while writers write: latency, staleness and stalls
#
# Writers update agent configs and status; readers poll status with point reads and a
# small range read. The seed document says SQLite "writers block everything"; SQLite's
# own documentation says that in WAL mode a writer does not block readers. Both are
# tested here, per journal mode.

# %% tags=["parameters"]
RUN_ID = None
RESULTS_DIR = None
OUTPUT_DIR = None

# %%
import numpy as np

from bench.analysis import style
from bench.harness.results import select

run = style.load(RUN_ID, RESULTS_DIR)
h = run.histograms
print(style.caption(run))

# %%
shown = ["sqlite-rollback", "sqlite-wal", "postgres"]
agents = sorted(select(h, workload="read-while-write")["agents"].unique())
fig, axes = style.plt.subplots(1, len(agents), figsize=(5 * len(agents), 4.5), sharey=True,
                               squeeze=False)
for ax, n in zip(axes[0], agents, strict=True):
    for config in shown:
        g = select(h, workload="read-while-write", config=config, agents=n, op="point_read")
        if g.empty:
            continue
        g = g.groupby("upper_s")["count"].sum().sort_index()
        cdf = np.cumsum(g.values) / g.values.sum()
        ax.plot(g.index * 1000, cdf, **style.line(config))
    ax.set_xscale("log")
    ax.set_title(f"Point-read latency CDF, {n} agents")
    ax.set_xlabel("latency (ms, log scale)")
    ax.grid(True, which="both", alpha=0.3)
axes[0][0].set_ylabel("share of reads at or below")
style.save(fig, "02-reader-cdf", OUTPUT_DIR)

# %%
fig, ax = style.figure("Reader p99 latency as writers are added", "agents (half write)",
                       "point-read p99 (ms, log scale)", logy=True)
for config, g in style.by_config(run.metric("latency_p99_ms", "point_read"),
                                 "read-while-write"):
    stats = g.groupby("agents")["value"].median()
    ax.plot(stats.index, stats.values, marker="o", **style.line(config))
style.agent_axis(ax)
style.save(fig, "02-reader-p99", OUTPUT_DIR)

# %%
fig, ax = style.figure("Staleness: how long a newer version had been committed when a read "
                       "returned an older one (p99)", "agents (half write)", "milliseconds")
for config, g in style.by_config(run.metric("staleness_p99"), "read-while-write"):
    stats = g.groupby("agents")["value"].median() * 1000
    ax.plot(stats.index, stats.values, marker="o", **style.line(config))
style.agent_axis(ax)
style.save(fig, "02-staleness", OUTPUT_DIR)

# %%
ts = run.timeseries
top = select(ts, workload="read-while-write", op="update")
top = top[top["agents"] == top["agents"].max()]
fig, ax = style.figure("Writer commits per one-second window (stalls show as dips), "
                       "most agents, first repetition", "second of the measurement",
                       "commits in the window")
for config, g in style.by_config(top, "read-while-write"):
    g = g[g["rep"] == g["rep"].min()]
    ax.plot(g["second"], g["ops"], marker=".", **style.line(config))
style.save(fig, "02-timeseries", OUTPUT_DIR)
