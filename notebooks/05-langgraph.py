# %% [markdown]
# # LangGraph checkpointers: storekit's saver against LangGraph's own
#
# Each agent is a process running a small LangGraph graph (a few nodes, a model-latency
# sleep per step) whose checkpointer persists every step. The savers run side by side in
# one run: storekit's `StorekitSaver` on SQLite and PostgreSQL, LangGraph's SQLite savers
# (async and sync) on the same SQLite file settings, and langgraph-checkpoint-postgres on
# the same server. Goals: on SQLite no lock error, and throughput and checkpoint p99 no
# worse than LangGraph's async SQLite saver; on PostgreSQL within 10% of
# langgraph-checkpoint-postgres's throughput.

# %% tags=["parameters"]
RUN_ID = None  # a run holding the langgraph workloads; else the newest one that does
RESULTS_DIR = None
OUTPUT_DIR = None

# %%
import textwrap
from pathlib import Path

from matplotlib.ticker import FuncFormatter

from bench.analysis import savers, style

COMMAND = ("python -m bench run --profile full --workload langgraph,langgraph-sqlite,"
           "langgraph-sqlite-sync,langgraph-postgres --config sqlite-wal,postgres "
           "--agents 1,4,16 --repetitions 3 --no-samples")
run = style.load(RUN_ID, RESULTS_DIR)
if "langgraph" not in set(run.summary["workload"]):
    run = savers.find_run(Path(RESULTS_DIR) if RESULTS_DIR else None)
frame = savers.table(run.summary) if run is not None else None
if run is None or frame is None or frame.empty:
    print(f"No run of the langgraph workloads. Measure one with:\n  {COMMAND}")
else:
    print(textwrap.fill(style.caption(run), 100))
    shown = frame[["backend", "saver", "agents", *savers.METRICS, "vs_langgraph"]].rename(
        columns={**savers.METRICS, "vs_langgraph": "steps/s vs LangGraph async"})
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}"))

# %% [markdown]
# ## Steps per second and checkpoint p99, per backend
#
# A step is one node of one graph with its checkpoint written; the put latency is the
# saver's `aput` (or `put`) alone.

# %%
if frame is not None and not frame.empty:
    measured = style.measured_agents(frame)
    backends = sorted(set(frame["backend"]))
    for column, title, ylabel, logy in (
            ("steps_per_s", "Steps per second", "steps per second", False),
            ("checkpoint_put_p99_ms", "Checkpoint put p99", "milliseconds (log scale)", True)):
        fig, axes = style.plt.subplots(1, len(backends), figsize=(6.5 * len(backends), 4.4),
                                       squeeze=False)
        for ax, backend in zip(axes[0], backends, strict=True):
            for workload, label in savers.SAVERS.items():
                g = frame[(frame["backend"] == backend) & (frame["workload"] == workload)]
                if g.empty:
                    continue
                style.plot_measured(ax, g.set_index("agents")[column].sort_index(), measured,
                                    label=label, linewidth=2.5 if workload == "langgraph" else 1.2)
            ax.set_title(f"{title}, {backend}", fontsize=10)
            ax.set_xlabel("processes, one graph each (log scale)")
            ax.set_ylabel(ylabel)
            if logy:
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
            ax.grid(True, which="both", alpha=0.3)
            style.agent_axis(ax, measured)
            ax.legend(fontsize=8)
        style.save(fig, f"05-{column}", OUTPUT_DIR)

# %% [markdown]
# ## The goals

# %%
if frame is not None and not frame.empty:
    mine = frame[frame["workload"] == "langgraph"]
    for r in mine.itertuples():
        rival = savers.RIVAL[r.backend]
        other = frame[(frame["workload"] == rival) & (frame["backend"] == r.backend)
                      & (frame["agents"] == r.agents)]
        if other.empty:
            continue
        o = other.iloc[0]
        if r.backend == "sqlite":
            met = (r.errors_busy == 0 and r.steps_per_s >= o["steps_per_s"]
                   and r.checkpoint_put_p99_ms <= o["checkpoint_put_p99_ms"])
            goal = "no lock error, throughput and put p99 no worse"
        else:
            met = r.steps_per_s >= 0.9 * o["steps_per_s"]
            goal = "throughput within 10%"
        print(f"{r.backend}, {r.agents} processes: {r.steps_per_s:.0f} vs "
              f"{o['steps_per_s']:.0f} steps/s ({r.vs_langgraph:.2f}x), put p99 "
              f"{r.checkpoint_put_p99_ms:.1f} vs {o['checkpoint_put_p99_ms']:.1f} ms, "
              f"{r.errors_busy:.0f} lock errors: {goal}: {'met' if met else 'NOT met'}")
