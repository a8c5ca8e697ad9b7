"""The live feeds' fan-out: changes found in the shared alert table once per step, offered
only to clients whose places hold the alert, and a client that falls behind marked to be
closed instead of buffered without bound."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.alerts.lifecycle import Lifecycle
from gateway.api.accounts import Principal
from gateway.api.feeds import AlertPoller, Feed, run_alert_feed
from tests.support.alert_world import World, build_world, cond, one


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = build_world(tmp_path)
    yield w
    w.registry.close()
    w.audit.close()


def caller(*scopes: str) -> Principal:
    return Principal("u", "user", frozenset({"building_head"}), scopes)


def test_the_poller_reports_each_step_of_an_alert_once(world: World) -> None:
    poller = AlertPoller(world.registry)
    assert poller.changes() == []  # the first look only sets where to start
    alert = one(world.engine.handle([cond()])).alert
    assert [a.id for a in poller.changes()] == [alert.id]
    assert poller.changes() == []  # nothing new
    world.clock.advance(1)
    Lifecycle(world.store, clock_ns=world.clock).acknowledge(alert.id, "m-uh-b03u2")
    changed = poller.changes()
    assert [(a.id, a.state.value) for a in changed] == [(alert.id, "acknowledged")]
    assert poller.changes() == []


def test_a_client_that_falls_behind_is_marked_slow_not_buffered() -> None:
    feed = Feed("alerts", queue_size=3)
    sub = feed.subscribe(caller("xf"))
    for i in range(10):
        sub.offer({"type": "alert", "n": i})
    assert sub.slow
    items = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
    assert len(items) == 3 and items[-1] == {"type": "_slow"}  # the sender closes it next


async def test_changes_reach_only_clients_whose_places_hold_them(world: World) -> None:
    counts: list[int] = []
    feed = Feed("alerts", queue_size=10, on_count=lambda name, n: counts.append(n))
    b03, b05 = feed.subscribe(caller("xf/g01/b03")), feed.subscribe(caller("xf/g01/b05"))
    poller = AlertPoller(world.registry)
    poller.changes()
    world.engine.handle([cond()])  # gas in xf/g01/b03/u2
    stop = asyncio.Event()

    def render(alert: Any) -> dict[str, Any]:
        return {"id": alert.id, "place": alert.place}

    task = asyncio.create_task(run_alert_feed(feed, poller, render, stop, 0.01))
    message = await asyncio.wait_for(b03.queue.get(), 5)
    stop.set()
    await task
    assert message["type"] == "alert" and message["alert"]["place"].startswith("xf/g01/b03/")
    assert b05.queue.empty()
    feed.unsubscribe(b03)
    assert counts == [1, 2, 1]
