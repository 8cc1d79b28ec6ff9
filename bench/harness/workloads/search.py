"""search: searchers query a generated chat corpus while writers append messages.
Freshness: from a writer's acknowledged commit to a search that finds the message."""

from __future__ import annotations

import math
import random
import time
from typing import Any

from bench.harness.agent import AgentContext, AgentResult, Operation, OpOutcome
from bench.harness.corpus import Corpus
from bench.harness.metrics import latency_summary
from bench.harness.workloads import Workload, doc_summary
from storekit import Database
from storekit.schema import Column, Index, SearchSpec, Table

CHAT = Table("chat", [
    Column("id", "id"), Column("run_key", "integer"), Column("agent", "integer"),
    Column("seq", "integer"), Column("content", "text"),
], indexes=[Index(["run_key", "agent"])], search=SearchSpec(["content"]))
PROBE_EVERY = 20
SEED_BATCH = 5000


def roles(agents: int) -> list[str]:
    searchers = max(1, math.ceil(agents / 2))
    return ["searcher"] * searchers + ["writer"] * max(1, agents - searchers)


def setup(db: Database, scale: dict[str, Any]) -> None:
    db.create_table(CHAT)
    corpus = Corpus(seed=1)
    total = int(scale.get("corpus", 10_000))
    for start in range(0, total, SEED_BATCH):
        batch = [(0, i % 50, i, corpus.message())
                 for i in range(start, min(total, start + SEED_BATCH))]
        db.run_many("INSERT INTO chat (run_key, agent, seq, content) VALUES (?, ?, ?, ?)", batch)
    if db.backend == "postgres":
        db.exec("ANALYZE chat")


def prepare(db: Database, run_key: int, roles: list[str]) -> None:
    return None


def token(run_key: int, agent: int, seq: int) -> str:
    return f"zq{run_key}x{agent}x{seq}"


def operation(db: Database, ctx: AgentContext) -> Operation:
    corpus = Corpus(seed=ctx.seed)
    clock = time.perf_counter
    if ctx.role == "searcher":
        queries = [corpus.query() for _ in range(200)]
        rng = random.Random(ctx.seed)

        def search(seq: int) -> OpOutcome:
            db.search("chat", rng.choice(queries), limit=20)
            return OpOutcome("search")

        return search

    probe_every = int(ctx.params.get("probe_every", PROBE_EVERY))  # 0: never (calibrate)

    def write(seq: int) -> OpOutcome:
        unique = token(ctx.run_key, ctx.agent, seq)
        t0 = clock()
        db.run("INSERT INTO chat (run_key, agent, seq, content) VALUES (?, ?, ?, ?)",
               (ctx.run_key, ctx.agent, seq, f"{corpus.message()} {unique}"))
        t1 = clock()
        extra = None
        if probe_every and seq % probe_every == 0:
            # Poll until the committed message is searchable (both backends index
            # synchronously, so this measures that claim rather than assuming it).
            deadline = t1 + 2.0
            while clock() < deadline:
                if db.search("chat", unique, limit=1):
                    extra = clock() - t1
                    break
        return OpOutcome("append", commit=t1 - t0, ack=(ctx.agent, seq), extra=extra)

    return write


def verify(db: Database, run_key: int, results: list[AgentResult]) -> dict[str, Any]:
    acked = {ack for r in results for ack in r.acked}
    found = {(row["agent"], row["seq"]) for row in db.iter(
        "SELECT agent, seq FROM chat WHERE run_key = ?", (run_key,))}
    lost = acked - found
    return {"acked": len(acked), "lost": len(lost),
            "detail": f"missing {sorted(lost)[:5]}" if lost else ""}


def extra_metrics(results: list[AgentResult]) -> dict[str, float]:
    values = [x for r in results for x in r.extras if x is not None]
    if not values:
        return {}
    s = latency_summary(values)
    return {"freshness_p50": s["p50"], "freshness_p99": s["p99"], "freshness_max": s["max"]}


WORKLOAD = Workload(
    name="search", summary=doc_summary(__doc__), main_op="search",
    notebooks=("03-search",),
    roles=roles, setup=setup, prepare=prepare, operation=operation, verify=verify,
    extra_metrics=extra_metrics,
)
