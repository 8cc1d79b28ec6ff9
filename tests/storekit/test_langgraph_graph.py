"""A real LangGraph graph compiled with StorekitSaver: SQLite by default (./storekit.db),
PostgreSQL when DATABASE_URL names one, nothing else changed. A process running the graph
is killed inside a node; the graph resumes from its last checkpoint, in this process,
through the sync and the async (storekit.aio) saver."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from storekit.langgraph import StorekitSaver
from tests.storekit.langgraph_app import builder

CONFIG = {"configurable": {"thread_id": "t1"}}


@pytest.fixture
def environment(store_url: str, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment an app runs in: no URL at all (SQLite, ./storekit.db in its working
    folder), or DATABASE_URL naming PostgreSQL."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STOREKIT_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    if not store_url.startswith("sqlite"):
        monkeypatch.setenv("DATABASE_URL", store_url)
    return dict(os.environ)


def _run_child_until_stuck(env: dict[str, str]) -> None:
    repo = str(Path(__file__).resolve().parents[2])
    env = {**env, "STUCK": "1", "PYTHONPATH": os.pathsep.join(
        p for p in (repo, env.get("PYTHONPATH")) if p)}
    child = subprocess.Popen([sys.executable, "-m", "tests.storekit.langgraph_app"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None
    try:
        line = child.stdout.readline()  # "must not hang": the child prints once it is in act
    finally:
        child.send_signal(signal.SIGKILL)
        _, err = child.communicate(timeout=60)
    assert line.strip() == "in act", err


@pytest.mark.parametrize("path", ["sync", "aio"])
def test_graph_resumes_after_its_process_was_killed_inside_a_node(
        environment: dict[str, str], path: str, tmp_path: Path) -> None:
    _run_child_until_stuck(environment)
    if path == "sync":
        with StorekitSaver.from_url() as saver:
            graph = builder().compile(checkpointer=saver)
            before = graph.get_state(CONFIG)
            assert before.next == ("act",)  # plan's checkpoint survived the kill
            assert before.values == {"steps": ["start", "plan"]}
            result = graph.invoke(None, CONFIG)
            history = list(graph.get_state_history(CONFIG))
    else:
        async def resume() -> tuple[object, object, list[object]]:
            async with await StorekitSaver.afrom_url() as saver:
                graph = builder().compile(checkpointer=saver)
                state = await graph.aget_state(CONFIG)
                out = await graph.ainvoke(None, CONFIG)
                return state, out, [s async for s in graph.aget_state_history(CONFIG)]

        before, result, history = asyncio.run(resume())
        assert before.next == ("act",)  # type: ignore[attr-defined]
    assert result == {"steps": ["start", "plan", "act", "review"]}
    # input, start, plan, act, review: one checkpoint per step, none from the killed act.
    assert [s.metadata["step"] for s in history] == [3, 2, 1, 0, -1]  # type: ignore[attr-defined]
    if "DATABASE_URL" not in environment:
        assert (tmp_path / "storekit.db").exists()  # SQLite by default, in the working folder
