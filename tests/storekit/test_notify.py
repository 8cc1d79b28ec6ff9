"""Notifications on both backends: across processes, on commit only, surviving restarts."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import pytest

import storekit
from storekit import Database
from storekit.notify import Notification


def listener_process(url: str, ready: Any, out: Any, expected: int) -> None:
    with storekit.create_database(url) as db, db.listen("agent_updates", "other") as sub:
        ready.set()
        for _ in range(expected):
            n = sub.get(timeout=20)
            out.put(None if n is None else (n.channel, n.payload))


def test_notifications_reach_other_processes_on_commit_only(store_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready = [ctx.Event() for _ in range(2)]
    outs = [ctx.Queue() for _ in range(2)]
    procs = [ctx.Process(target=listener_process, args=(store_url, ready[i], outs[i], 3))
             for i in range(2)]
    for p in procs:
        p.start()
    try:
        for r in ready:
            assert r.wait(30)
        with storekit.create_database(store_url) as db:
            with pytest.raises(RuntimeError), db.transaction():
                db.notify("agent_updates", "rolled back")
                raise RuntimeError("abort")
            with db.transaction():
                db.notify("agent_updates", {"agent": 1, "status": "running"})
                db.notify("ignored_channel", "nobody listens")
            db.notify("other", "plain text")
            db.notify("agent_updates", "last")
        got = [[out.get(timeout=30) for _ in range(3)] for out in outs]
    finally:
        for p in procs:
            p.join(30)
    expected = [
        ("agent_updates", '{"agent":1,"status":"running"}'),
        ("other", "plain text"),
        ("agent_updates", "last"),
    ]
    assert got == [expected, expected]


def test_several_subscriptions_in_one_process(store: Database) -> None:
    with store.listen("a") as one, store.listen("a", "b") as two:
        store.notify("a", {"n": 1})
        store.notify("b", "bee")
        first = one.get(timeout=5)
        assert isinstance(first, Notification)
        assert first.json() == {"n": 1}
        assert first.received_at > 0
        assert one.get(timeout=0.3) is None
        got = [two.get(timeout=5), two.get(timeout=5)]
        assert [(n.channel, n.payload) for n in got if n] == [("a", '{"n":1}'), ("b", "bee")]


def test_iterating_a_subscription_blocks_until_notified(store: Database) -> None:
    received: list[str] = []
    sub = store.listen("it")

    def consume() -> None:
        for n in sub:
            received.append(n.payload)
            if len(received) == 2:
                sub.close()

    t = threading.Thread(target=consume)
    t.start()
    store.notify("it", "one")
    store.notify("it", "two")
    t.join(10)
    assert received == ["one", "two"]
    assert sub.closed


def test_bad_channels_and_payloads(store: Database) -> None:
    with pytest.raises(storekit.ProgrammingError, match="channel"):
        store.notify("bad channel; --", "x")
    with pytest.raises(storekit.ProgrammingError, match=r"8000|7999"):
        store.notify("big", "x" * 8000)
    with pytest.raises(storekit.ProgrammingError, match="payload"):
        store.notify("typed", 42)  # type: ignore[arg-type]
    with pytest.raises(storekit.ProgrammingError, match="channel"):
        store.listen()


def test_capability_reports_native_or_emulated(store: Database) -> None:
    expected = "native" if store.backend == "postgres" else "emulated"
    assert store.capabilities.listen_notify == expected


def test_sqlite_events_are_pruned(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from storekit.backends.sqlite import events as notify_module

    monkeypatch.setattr(notify_module, "PRUNE_EVERY", 50)
    monkeypatch.setattr(notify_module, "RETENTION_SECONDS", 0.0)
    with storekit.open_database(tmp_path / "events.db") as db:
        for i in range(120):
            db.notify("c", str(i))
        count = db.get("SELECT COUNT(*) AS c FROM _storekit_events")
        assert count is not None
        assert count["c"] < 50
        assert "_storekit_events" not in db.tables()


def test_memory_database_notifications() -> None:
    with storekit.create_memory_database() as db, db.listen("m") as sub:
        db.notify("m", "hello")
        n = sub.get(timeout=5)
        assert n is not None
        assert n.payload == "hello"


def test_postgres_restart_is_survived(storekit_postgres_server: Any) -> None:
    if not hasattr(storekit_postgres_server, "stop"):
        pytest.skip("needs a local server this test can restart")
    url = storekit_postgres_server.url
    with storekit.create_database(url) as db, db.listen("restart_check") as sub:
        db.notify("restart_check", "before")
        before = sub.get(timeout=5)
        assert before is not None
        assert before.payload == "before"
        storekit_postgres_server.stop()
        storekit_postgres_server.start()
        deadline = time.monotonic() + 20
        received = None
        markers = 0
        while received is None and time.monotonic() < deadline:
            try:
                db.notify("restart_check", "after")
            except storekit.DatabaseUnavailable:
                time.sleep(0.2)  # a pooled connection died with the old server; retry
                continue
            received = sub.get(timeout=1)
            while received is not None and received.reconnected:
                markers += 1
                received = sub.get(timeout=1)
        assert received is not None
        assert received.payload == "after"
        assert sub.reconnects >= 1
        assert markers >= 1  # the subscriber was told notifications may have been lost


def _next_message(sub: Any, timeout: float = 20) -> Notification | None:
    """The next notification that is not a marker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = sub.get(timeout=0.5)
        if n is not None and not n.reconnected:
            return n  # type: ignore[no-any-return]
    return None


def test_listener_killed_tells_the_subscriber(store: Database) -> None:
    """pg_terminate_backend on the listening connection: what is sent while it is down is
    lost (the server keeps notifications only for live listeners), so a marker on every
    channel says so, and delivery resumes after it."""
    if store.backend != "postgres":
        pytest.skip("a PostgreSQL listener connection")
    with store.listen("kill_a", "kill_b") as sub:
        store.notify("kill_a", "before")
        first = sub.get(timeout=10)
        assert first is not None
        assert (first.payload, first.reconnected) == ("before", False)
        pid = sub._backend_pid  # type: ignore[attr-defined]
        assert store.get("SELECT pg_terminate_backend(?) AS ok", (pid,)) == {"ok": True}
        for i in range(20):
            store.notify("kill_a", f"meanwhile {i}")  # some of these are lost
        markers: dict[str, int] = {}
        received: list[str] = []
        deadline = time.monotonic() + 30
        while len(markers) < 2 and time.monotonic() < deadline:
            n = sub.get(timeout=0.5)
            if n is not None and n.reconnected:
                assert n.payload == ""
                markers[n.channel] = markers.get(n.channel, 0) + 1
            elif n is not None:
                assert not markers, "a notification after the marker came before it was sent"
                received.append(n.payload)
        assert set(markers) == {"kill_a", "kill_b"}
        assert sub.reconnects == 1
        assert received == [f"meanwhile {i}" for i in range(len(received))]
        store.notify("kill_b", "after")
        after = _next_message(sub)
        assert after is not None
        assert (after.channel, after.payload) == ("kill_b", "after")


def test_sqlite_events_pruned_before_read_tell_the_subscriber(tmp_path: Any) -> None:
    """The emulation's comparable loss: events pruned before a slow listener read them."""
    with storekit.open_database(tmp_path / "events.db") as db, db.listen("p") as sub:
        db.notify("p", "first")
        first = _next_message(sub)
        assert first is not None
        assert first.payload == "first"
        with db.transaction():  # one commit: the listener cannot read "gone" in between
            db.notify("p", "gone")
            # Pruning deletes the oldest events: here the read one and the unread one.
            db.run("DELETE FROM _storekit_events WHERE payload IN ('first', 'gone')")
            db.notify("p", "kept")
        marker = sub.get(timeout=20)
        assert marker is not None
        assert (marker.channel, marker.reconnected) == ("p", True)
        kept = sub.get(timeout=20)
        assert kept is not None
        assert (kept.payload, kept.reconnected) == ("kept", False)
        assert sub.reconnects == 1
        db.notify("p", "again")
        again = sub.get(timeout=20)
        assert again is not None
        assert (again.payload, again.reconnected) == ("again", False)  # one marker per gap
