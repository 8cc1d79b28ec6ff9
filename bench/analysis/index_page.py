"""The report's first page: the verdict in one sentence, the decision map, the headline
table, the reasons speed does not decide, and links to the notebook pages.

It reads the run's agent-step cells when the run has them (agents that think, PostgreSQL at
a distance), else its agent-write cells (processes writing flat out, PostgreSQL on the same
machine). Plain HTML and a little CSS: a person reads it, in a browser or a file viewer.
"""

from __future__ import annotations

import html
from pathlib import Path

import nbformat
import pandas as pd

from bench.analysis import decision_map, scenarios, style
from bench.analysis.recommend import DEFAULTS, NAMES
from bench.harness import results

CSS = """
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 62rem; margin: 2rem auto; padding: 0 1.5rem; }
h1 { font-size: 1.7rem; margin-bottom: .3rem; }
h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
.verdict { font-size: 1.2rem; background: #f3f7fb; border-left: 5px solid #1f77b4;
           padding: .8rem 1rem; max-width: 52rem; }
.caption, .note { color: #555; font-size: .9rem; max-width: 52rem; }
img { max-width: 100%; height: auto; }
table { border-collapse: collapse; font-size: .92rem; margin: .5rem 0; }
th, td { border: 1px solid #ddd; padding: .3rem .6rem; text-align: right; }
th { background: #f6f6f6; } td.name { text-align: left; }
td.meets { background: #e8f5e9; } td.misses { background: #fdecea; }
td small { color: #666; }
ul.reasons li, ul.pages li { margin: .3rem 0; max-width: 52rem; }
"""

REASONS = [
    ("Network access", "agents on more than one machine need PostgreSQL: SQLite is a file "
     "on one machine, and a network filesystem breaks its locking."),
    ("Row-level security", "team isolation enforced by the database exists only in "
     "PostgreSQL; on SQLite it is the application's job."),
    ("Native notifications", "LISTEN/NOTIFY is native on PostgreSQL; storekit emulates it on "
     "SQLite by polling, for processes on one machine."),
    ("Setup", "SQLite is a file; PostgreSQL (and a pooler) is a server to run, back up and "
     "upgrade."),
]


def evidence_workload(run: results.Run) -> str:
    present = set(run.summary["workload"])
    return scenarios.STEP_WORKLOAD if scenarios.STEP_WORKLOAD in present else "agent-write"


def main_think(table: pd.DataFrame) -> float:
    """The think time most cells were measured at (the map shows one think time)."""
    counts = table.groupby("think_ms").size()
    return float(str(counts.idxmax())) if not counts.empty else 0.0


def charts(run: results.Run, folder: Path, target_ms: float) -> list[Path]:
    """The index's own charts (the decision map), written into folder."""
    workload = evidence_workload(run)
    table = scenarios.cells(run.summary, workload)
    table = table[table["config"].isin(DEFAULTS)]
    if table.empty:
        return []
    fig, _ = decision_map.plot(table, main_think(table), target_ms, what=what(workload),
                               setting=setting(workload))
    style.save(fig, "index-decision-map", str(folder))
    fig.clf()  # the report draws several charts in one process
    return [folder / "index-decision-map.png"]


def setting(workload: str) -> str | None:
    """How the map's agents ran, when it is not the agent-step workload's think time."""
    if workload == scenarios.STEP_WORKLOAD:
        return None
    return "agents as processes writing flat out, PostgreSQL on this machine"


def speedup(table: pd.DataFrame) -> str:
    """SQLite's throughput over PostgreSQL's at the most agents both measured (closed loop,
    where throughput is what the store can do, not what the agents ask for)."""
    lite = table[table["config"] == "sqlite-wal"].set_index("agents")["ops_per_s"]
    pg = table[(table["config"] == "postgres") & (table["rtt_ms"] == 0)]
    pg = pg.set_index("agents")["ops_per_s"]
    common = sorted(set(lite.index) & set(pg.index))
    if not common or not float(pg[common[-1]]) > 0:
        return ""
    n = common[-1]
    return (f", and at {n:,} agents SQLite commits {float(lite[n]) / float(pg[n]):.1f}x as "
            "many transactions per second")


def what(workload: str) -> str:
    return "storage p99" if workload == scenarios.STEP_WORKLOAD else "write p99"


def verdict(run: results.Run, table: pd.DataFrame, workload: str, target_ms: float) -> str:
    m = run.meta.get("machine", {})
    machine = f"this machine ({m.get('cores', '?')} cores, {m.get('cpu', '?')})"
    if table.empty:
        return (f"This run measured no {workload} cell for storekit's default configs, so it "
                "cannot say which backend to pick; `python -m bench run --profile deployment` "
                "measures the scenarios the decision needs.")
    think = main_think(table)
    reach = decision_map.summary_sentence(table, think, target_ms)
    if workload == scenarios.STEP_WORKLOAD:
        setting = (f"with agents thinking {think:,g} ms per step, the largest measured team "
                   f"that keeps the {what(workload)} under {target_ms:g} ms is")
    else:
        setting = ("with agents as processes writing flat out (no think time) and PostgreSQL "
                   f"on the same machine, the largest measured team that keeps the write p99 "
                   f"under {target_ms:g} ms is")
    extra = speedup(table) if workload != scenarios.STEP_WORKLOAD else ""
    return (f"On {machine}, {setting}: {reach}{extra}; agents on more than one machine need "
            "PostgreSQL whatever the speed.")


def headline_table(table: pd.DataFrame, target_ms: float, unit: str) -> str:
    """p99 (ms) and throughput per config, round trip and agent count; green meets, red
    misses the target."""
    agents = sorted({int(a) for a in table["agents"]})
    head = "".join(f"<th>{a:,} agent{'s' if a != 1 else ''}</th>" for a in agents)
    rows = []
    for config in [c for c in DEFAULTS if c in set(table["config"])]:
        mine = table[table["config"] == config]
        for rtt in sorted(set(mine["rtt_ms"])):
            here = mine[mine["rtt_ms"] == rtt].set_index("agents")
            name = NAMES.get(config, config)
            if len(set(table["rtt_ms"])) > 1 and not config.startswith("sqlite"):
                name += f", {rtt:g} ms away"
            cells = []
            for a in agents:
                if a not in here.index:
                    cells.append("<td>-</td>")
                    continue
                c = here.loc[a]
                cls = "meets" if scenarios.meets_target(c, target_ms) else "misses"
                star = "*" if c["limited"] else ""
                cells.append(f'<td class="{cls}">{c["p99_ms"]:,.1f} ms{star}<br>'
                             f'<small>{c["ops_per_s"]:,.0f} {unit}/s</small></td>')
            rows.append(f'<tr><td class="name">{html.escape(name)}</td>{"".join(cells)}</tr>')
    return (f"<table><tr><th>config</th>{head}</tr>{''.join(rows)}</table>")


def page_title(page: Path) -> str:
    notebook = page.with_suffix(".ipynb")
    if notebook.is_file():
        nb = nbformat.read(notebook, as_version=4)  # type: ignore[no-untyped-call]
        for cell in nb.cells:
            text = str(cell.source).strip()
            if cell.cell_type == "markdown" and text:
                return text.splitlines()[0].lstrip("# ").strip()
    return page.stem


def render(run: results.Run, pages: list[Path], skipped: list[str], chart_files: list[Path],
           target_ms: float = 50.0) -> str:
    workload = evidence_workload(run)
    table = scenarios.cells(run.summary, workload)
    table = table[table["config"].isin(DEFAULTS)]
    unit = "steps" if workload == scenarios.STEP_WORKLOAD else "commits"
    e = html.escape
    parts = [f"<h1>SQLite or PostgreSQL for agents: run {e(run.run_id)}</h1>",
             f'<p class="verdict">{e(verdict(run, table, workload, target_ms))}</p>',
             f'<p class="caption">{e(style.caption(run))}</p>']
    parts.append("<h2>Decision map</h2>")
    if chart_files:
        parts += [f'<img src="charts/{e(c.name)}" alt="decision map">' for c in chart_files]
        parts.append(f'<p class="note">Each cell lists every backend whose {what(workload)} '
                     f"stays under {target_ms:g} ms there (median of the repetitions; no lost "
                     f"write; at most {scenarios.ERROR_BUDGET:.1%} failed steps). Empty cells "
                     "were not measured: <code>python -m bench recommend</code> prints the "
                     "command that measures one.</p>")
    else:
        parts.append('<p class="note">No cell of storekit\'s default configs to map.</p>')
    if not table.empty:
        parts += [f"<h2>Headline: {e(workload)}</h2>",
                  f'<p class="note">{what(workload).capitalize()} and {unit} per second, '
                  "median over repetitions; green meets the target, red misses it"
                  + ("; * the load generator lagged" if table["limited"].any() else "")
                  + ".</p>",
                  headline_table(table, target_ms, unit)]
    parts.append("<h2>What speed does not decide</h2><ul class='reasons'>")
    parts += [f"<li><b>{e(name)}</b>: {e(text)}</li>" for name, text in REASONS]
    parts.append("</ul><h2>The evidence, notebook by notebook</h2><ul class='pages'>")
    parts += [f'<li><a href="{e(p.name)}">{e(page_title(p))}</a></li>' for p in pages]
    parts += [f"<li>not run: {e(s)}</li>" for s in skipped]
    parts.append("</ul>")
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>storekit run {e(run.run_id)}</title><style>{CSS}</style></head>"
            f"<body>{''.join(parts)}</body></html>")
