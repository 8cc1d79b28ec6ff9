# %% [markdown]
# # Search while writing: FTS5 against tsvector/GIN
#
# Searchers query a generated chat corpus (Zipf-distributed English words) while writers
# append messages. The seed says FTS5 "suffers from the write lock" while PostgreSQL
# "searches freely".

# %% tags=["parameters"]
RUN_ID = None
RESULTS_DIR = None
OUTPUT_DIR = None

# %%
from bench.analysis import style

run = style.load(RUN_ID, RESULTS_DIR)
print(style.caption(run))
print(f"Corpus: {run.meta['plan']['corpus']:,} messages before the writers start.")

# %%
fig, ax = style.figure("Search latency p50 and p99 against concurrent agents (half write)",
                       "agents", "milliseconds (log scale)", logy=True)
for pct, dash in (("p50", "-"), ("p99", "--")):
    for config, g in style.by_config(run.metric(f"latency_{pct}_ms", "search"), "search"):
        stats = g.groupby("agents")["value"].median()
        kw = style.line(config)
        kw["label"] = f"{kw['label']} {pct}"
        ax.plot(stats.index, stats.values, marker="o", linestyle=dash, **kw)
style.agent_axis(ax)
style.save(fig, "03-search-latency", OUTPUT_DIR)

# %%
fig, ax = style.figure("Messages appended per second while searching", "agents",
                       "appends per second")
for config, g in style.by_config(run.metric("ops_per_s", "append"), "search"):
    stats = g.groupby("agents")["value"].median()
    ax.plot(stats.index, stats.values, marker="o", **style.line(config))
style.agent_axis(ax)
style.save(fig, "03-write-throughput", OUTPUT_DIR)

# %%
fig, ax = style.figure("Index freshness: commit to searchable (p50)", "agents",
                       "milliseconds")
for config, g in style.by_config(run.metric("freshness_p50"), "search"):
    stats = g.groupby("agents")["value"].median() * 1000
    ax.plot(stats.index, stats.values, marker="o", **style.line(config))
style.agent_axis(ax)
style.save(fig, "03-freshness", OUTPUT_DIR)
