# %% [markdown]
# # Agent writes: throughput, latency and lock contention
#
# Each agent runs read-then-write transactions: read its row, insert a ~1 KB result
# document and a log line, update its status. This is the seed document's "three agents
# running in parallel" scenario. Durability-matched pairs: `sqlite-wal` with
# `postgres-async-commit`, `sqlite-wal-full` with `postgres`.

# %% tags=["parameters"]
RUN_ID = None  # None: the newest run (the reference run unless a newer local one exists)
RESULTS_DIR = None
OUTPUT_DIR = None

# %%
from bench.analysis import style
from bench.analysis.headline import fair_locking_table
from bench.harness.results import select

run = style.load(RUN_ID, RESULTS_DIR)
s = run.summary
print(style.caption(run))

# %%
fig, ax = style.figure("Agent writes: committed transactions per second (median, min-max band)",
                       "concurrent agents", "commits per second")
for config, g in style.by_config(run.metric("ops_per_s"), "agent-write"):
    stats = g.groupby("agents")["value"].agg(["median", "min", "max"])
    ax.plot(stats.index, stats["median"], marker="o", **style.line(config))
    ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.15,
                    color=style.COLORS[config])
style.agent_axis(ax)
style.save(fig, "01-throughput", OUTPUT_DIR)

# %%
fig, axes = style.plt.subplots(1, 3, figsize=(15, 5), sharey=True)
for ax, pct in zip(axes, ["p50", "p99", "p99.9"], strict=True):
    metric = run.metric(f"latency_{pct}_ms", "transaction")
    for config, g in style.by_config(metric, "agent-write"):
        stats = g.groupby("agents")["value"].median()
        ax.plot(stats.index, stats.values, marker="o", **style.line(config))
    ax.set_title(f"Transaction latency {pct} (ms, log scale)")
    ax.set_xlabel("concurrent agents")
    ax.set_yscale("log")
    style.agent_axis(ax)
    ax.grid(True, which="both", alpha=0.3)
axes[0].set_ylabel("milliseconds")
style.save(fig, "01-latency", OUTPUT_DIR)

# %% [markdown]
# Lock wait: on SQLite, the time spent in `BEGIN IMMEDIATE` (or, for the deferred BEGIN of
# `sqlite-naive`, in the first write) as a share of transaction time. On PostgreSQL, the
# share of sampled active backends waiting on a heavyweight lock (pg_stat_activity).

# %%
fig, ax = style.figure("Share of transaction time waiting for the write lock",
                       "concurrent agents", "share of time (0-1)")
for config, g in style.by_config(run.metric("lock_wait_share", "transaction"), "agent-write"):
    if config.startswith("sqlite"):
        stats = g.groupby("agents")["value"].median()
        ax.plot(stats.index, stats.values, marker="o", **style.line(config))
pg_lock = run.metric("pg_wait_share_Lock")
for config, g in style.by_config(pg_lock, "agent-write"):
    stats = g.groupby("agents")["value"].median()
    ax.plot(stats.index, stats.values, marker="s", linestyle="--", **style.line(config))
style.agent_axis(ax)
style.save(fig, "01-lock-wait", OUTPUT_DIR)

# %%
err = select(s, workload="agent-write")
err = err[err["metric"].str.startswith("errors_") & (err["metric"] != "errors_total")]
table = (err.groupby(["config", "agents", "metric"])["value"].median().unstack("metric")
         .fillna(0))
table.columns = [c.removeprefix("errors_") for c in table.columns]
print("Errors per run by type (median over repetitions); each failed transaction is retried "
      "as the agent's next operation")
table

# %%
fig, ax = style.figure("Errors per second by configuration (all types)", "concurrent agents",
                       "errors per second")
total = run.metric("errors_total")
duration = float(run.meta["plan"]["duration"])
for config, g in style.by_config(total, "agent-write"):
    stats = g.groupby("agents")["value"].median() / duration
    ax.plot(stats.index, stats.values, marker="o", **style.line(config))
style.agent_axis(ax)
style.save(fig, "01-errors", OUTPUT_DIR)

# %%
fair = run.metric("fairness_share_ratio")
fair = fair[fair["agents"] > 1]
if fair.empty:
    print("Fairness needs runs with more than one agent; this run has none.")
else:
    fig, ax = style.figure("Fairness: highest / lowest agent's completed transactions",
                           "concurrent agents", "ratio (1 = perfectly fair)")
    for config, g in style.by_config(fair, "agent-write"):
        stats = g.groupby("agents")["value"].median()
        ax.plot(stats.index, stats.values, marker="o", **style.line(config))
    style.agent_axis(ax)
    style.save(fig, "01-fairness", OUTPUT_DIR)

# %% [markdown]
# ## Fair write-lock hand-off against SQLite's stock busy handler
#
# `sqlite-wal` queues writers: FIFO between threads, and between processes a ticket
# queue on a sidecar file in which each process keeps its turn for 32 ms divided by the
# number of queued processes (2-16 ms), with WAL checkpoints run outside the turn;
# `sqlite-wal-stock` is the same file settings with SQLite's busy handler, whose sleeps
# grow to 100 ms and let newcomers overtake. Goal: zero lock errors, at
# least 0.9x the stock throughput, p99.9 at most 50 ms and a max/min agent share of at
# most 1.5 at 16 writers.

# %%
pair = list(style.FAIR_PAIR)
aw = select(s, workload="agent-write")
if not set(pair) <= set(aw["config"]):
    print("This run lacks sqlite-wal or sqlite-wal-stock; compare them with "
          "python -m bench run --workload agent-write --config sqlite-wal,sqlite-wal-stock")
else:
    fig, axes = style.plt.subplots(1, 3, figsize=(15, 4.5))
    panels = [("ops_per_s", "all", "commits per second", False),
              ("latency_p99.9_ms", "transaction", "p99.9 latency (ms, log)", True),
              ("fairness_share_ratio", "all", "highest / lowest agent share", False)]
    for ax, (metric, op, label, log) in zip(axes, panels, strict=True):
        m = run.metric(metric, op)
        for config in pair:
            g = select(m, workload="agent-write", config=config)
            if metric == "fairness_share_ratio":
                g = g[g["agents"] > 1]
            stats = g.groupby("agents")["value"].median()
            if not stats.empty:
                ax.plot(stats.index, stats.values, marker="o", **style.line(config))
        ax.set_title(label)
        ax.set_xlabel("writer processes")
        style.agent_axis(ax)
        if log:
            ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylim(bottom=0)  # a ratio near 1 should look like one
    if aw["agents"].max() == 1:
        axes[2].set_visible(False)  # share ratios need more than one agent
    style.save(fig, "01-fair-locking", OUTPUT_DIR)
    print("\n".join(fair_locking_table(s)))
