"""A small LangGraph app for the saver's graph tests: plan -> act -> review, each node
appending its name. STUCK in the environment makes act hang, so a test can kill the
process inside it."""

from __future__ import annotations

import operator
import os
import time
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph


class State(TypedDict):
    steps: Annotated[list[str], operator.add]


def plan(state: State) -> dict[str, Any]:
    return {"steps": ["plan"]}


def act(state: State) -> dict[str, Any]:
    if os.environ.get("STUCK"):
        print("in act", flush=True)
        time.sleep(600)
    return {"steps": ["act"]}


def review(state: State) -> dict[str, Any]:
    return {"steps": ["review"]}


def builder() -> StateGraph[State]:
    graph = StateGraph(State)
    graph.add_node("plan", plan)
    graph.add_node("act", act)
    graph.add_node("review", review)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "act")
    graph.add_edge("act", "review")
    graph.add_edge("review", END)
    return graph


if __name__ == "__main__":
    from storekit.langgraph import StorekitSaver

    # The app as a user writes it: the saver from the environment, nothing else.
    # durability="sync": each step's checkpoint is stored before the next step starts
    # (LangGraph's default stores it alongside), so "in act" means plan's is stored.
    app = builder().compile(checkpointer=StorekitSaver.from_url())
    app.invoke({"steps": ["start"]}, {"configurable": {"thread_id": "t1"}}, durability="sync")
