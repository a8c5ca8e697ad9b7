"""The delivery worker with fake channels and a fake clock: sent only after confirmation,
retries on schedule, dead after N with `on_dead` and an audit record, a crash between send and
mark resent with the same key, and the service loop draining on stop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.alerts.delivery import (
    DeliveryError,
    DeliveryWorker,
    Hub,
    MqttPublisher,
    Outbox,
    OutboxItem,
    OutboxState,
    RetryPolicy,
    member_topic,
)
from gateway.alerts.model import Notification
from gateway.audit.store import AuditStore
from gateway.registry.store import Registry
from privacy.audit import AuditAction

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * S)


class FakeMqtt:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.fail: DeliveryError | None = None

    async def publish(self, topic: str, payload: bytes) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append((topic, json.loads(payload)))


class FakeWebhook:
    """Answers from a script of outcomes (None = 2xx), then 2xx."""

    def __init__(self, script: list[DeliveryError | None] | None = None) -> None:
        self.script = list(script or [])
        self.calls: list[tuple[str, str]] = []

    async def send(self, url: str, body: bytes, *, delivery_id: str) -> None:
        self.calls.append((url, delivery_id))
        assert json.loads(body)["delivery_id"] == delivery_id
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome


def no_dead() -> list[OutboxItem]:
    return []


def note(member: str, channel: str, *, alert: int = 7) -> Notification:
    target = {
        "mqtt": member_topic(member),
        "webhook": f"https://desk.example/hook/{member}",
        "websocket": "screens/xf",
    }[channel]
    payload = {"kind": "fire", "severity": "I", "place": {"building": "b03"}, "time_ns": T0}
    return Notification(f"{alert}:1:{member}:{channel}", alert, member, channel, target, payload)


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    registry = Registry.open(f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    yield Outbox(registry.engine, clock_ns=lambda: T0)
    registry.engine.dispose()


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditStore]:
    with AuditStore(tmp_path / "audit.sqlite3") as store:
        yield store


def worker(
    outbox: Outbox,
    mqtt: FakeMqtt | None,
    webhook: FakeWebhook | None,
    clock: Clock,
    dead: list[OutboxItem],
    **kw: Any,
) -> DeliveryWorker:
    return DeliveryWorker(
        outbox, mqtt, webhook, clock_ns=clock, on_dead=dead.append, rand=lambda: 0.0, **kw
    )


async def test_each_channel_delivers_and_is_marked_sent(outbox: Outbox) -> None:
    clock, mqtt, webhook, hub, dead = Clock(), FakeMqtt(), FakeWebhook(), Hub(), no_dead()
    screen = hub.subscribe()
    outbox.enqueue([note("m1", "mqtt"), note("m2", "webhook"), note("m3", "websocket")])
    w = worker(outbox, mqtt, webhook, clock, dead, hub=hub)
    assert await w.run_once() == 3
    assert mqtt.sent == [
        (
            "gridgate/alerts/member/m1",
            {
                "alert_id": 7,
                "delivery_id": "7:1:m1:mqtt",
                "kind": "fire",
                "place": {"building": "b03"},
                "severity": "I",
                "time_ns": T0,
            },
        )
    ]
    assert webhook.calls == [("https://desk.example/hook/m2", "7:1:m2:webhook")]
    assert screen.get_nowait()["delivery_id"] == "7:1:m3:websocket"
    assert outbox.counts() == {"pending": 0, "sent": 3, "dead": 0}
    assert w.stats.sent == 3 and dead == []
    assert await w.run_once() == 0  # nothing is sent twice


async def test_a_screen_item_with_no_screen_connected_is_not_sent(
    outbox: Outbox, audit: AuditStore
) -> None:
    """Nothing serves the WebSocket yet: a hub without subscribers received nothing, so the
    item stays pending and is retried — and, nobody ever connecting, ends dead and reported,
    never marked sent."""
    clock, hub, dead = Clock(), Hub(), no_dead()
    outbox.enqueue([note("m3", "websocket")])
    w = worker(outbox, None, None, clock, dead, hub=hub, audit=audit)
    assert await w.run_once() == 1
    item = outbox.get("7:1:m3:websocket")
    assert item is not None and item.state is OutboxState.PENDING and item.attempts == 1
    assert item.last_error == "no WebSocket screen connected"
    assert outbox.counts() == {"pending": 1, "sent": 0, "dead": 0} and w.stats.sent == 0
    for _ in range(5):
        clock.advance(3600)
        await w.run_once()
    assert outbox.counts() == {"pending": 0, "sent": 0, "dead": 1} and w.stats.sent == 0
    assert [(i.idempotency_key, i.last_error) for i in dead] == [
        ("7:1:m3:websocket", "no WebSocket screen connected")
    ]
    (record,) = audit.last(5)
    assert record.details["event"] == "delivery_dead" and record.details["channel"] == "websocket"
    # A screen that is connected when an item is taken gets it, and only then is it sent.
    outbox.enqueue([note("m4", "websocket", alert=8)])
    screen = hub.subscribe()
    assert await w.run_once() == 1
    assert screen.get_nowait()["delivery_id"] == "8:1:m4:websocket"
    assert outbox.counts() == {"pending": 0, "sent": 1, "dead": 1} and w.stats.sent == 1


async def test_retries_follow_the_backoff_then_deliver_once(outbox: Outbox) -> None:
    clock, dead = Clock(), no_dead()
    webhook = FakeWebhook([DeliveryError("HTTP 500"), DeliveryError("timeout")])
    outbox.enqueue([note("m1", "webhook")])
    policy = RetryPolicy(max_attempts=8, base_s=2.0, factor=2.0, jitter=0.0)
    w = worker(outbox, None, webhook, clock, dead, retry={"webhook": policy})
    assert await w.run_once() == 1
    item = outbox.get("7:1:m1:webhook")
    assert item is not None and item.state is OutboxState.PENDING and item.attempts == 1
    assert item.next_attempt_ns == T0 + 2 * S and item.last_error == "HTTP 500"
    clock.advance(1.9)
    assert await w.run_once() == 0  # not due yet
    clock.advance(0.1)
    assert await w.run_once() == 1
    item = outbox.get("7:1:m1:webhook")
    assert item is not None and item.next_attempt_ns == clock.now + 4 * S  # 2 s, then 4 s
    clock.advance(4)
    assert await w.run_once() == 1
    assert outbox.counts()["sent"] == 1
    assert [key for _, key in webhook.calls] == ["7:1:m1:webhook"] * 3
    assert w.stats.failed == 2 and w.stats.sent == 1 and dead == []


async def test_retry_after_is_honoured(outbox: Outbox) -> None:
    clock, dead = Clock(), no_dead()
    webhook = FakeWebhook([DeliveryError("HTTP 429", retry_after_s=90)])
    outbox.enqueue([note("m1", "webhook")])
    await worker(outbox, None, webhook, clock, dead).run_once()
    item = outbox.get("7:1:m1:webhook")
    assert item is not None and item.next_attempt_ns == T0 + 90 * S


async def test_dead_after_n_attempts_reports_and_audits(outbox: Outbox, audit: AuditStore) -> None:
    clock, dead = Clock(), no_dead()
    webhook = FakeWebhook([DeliveryError("HTTP 503")] * 100)
    outbox.enqueue([note("m1", "webhook")])
    w = worker(outbox, None, webhook, clock, dead, audit=audit)
    for _ in range(20):
        await w.run_once()
        clock.advance(3600)
    assert len(webhook.calls) == 8  # the default N
    (item,) = dead
    assert item.state is OutboxState.DEAD and item.attempts == 8 and item.last_error == "HTTP 503"
    assert item.idempotency_key == "7:1:m1:webhook" and item.alert_id == 7
    assert outbox.counts() == {"pending": 0, "sent": 0, "dead": 1}
    assert outbox.dead_unreported() == []
    (record,) = audit.last(5)
    assert record.action is AuditAction.ALERT_ACTION and record.subject == "alert:7"
    assert record.details["event"] == "delivery_dead"
    assert record.details["delivery_id"] == "7:1:m1:webhook"
    assert record.details["attempts"] == 8 and "desk.example" not in json.dumps(record.details)
    assert audit.verify().ok


async def test_a_permanent_failure_is_dead_at_once(outbox: Outbox) -> None:
    clock, dead = Clock(), no_dead()
    webhook = FakeWebhook([DeliveryError("HTTP 404", permanent=True)])
    outbox.enqueue([note("m1", "webhook")])
    await worker(outbox, None, webhook, clock, dead).run_once()
    assert [i.last_error for i in dead] == ["HTTP 404"] and len(webhook.calls) == 1


async def test_mqtt_never_goes_dead_while_the_broker_is_away(outbox: Outbox) -> None:
    clock, mqtt, dead = Clock(), FakeMqtt(), no_dead()
    mqtt.fail = DeliveryError("MQTT not connected")
    outbox.enqueue([note("m1", "mqtt")])
    w = worker(outbox, mqtt, None, clock, dead)
    for _ in range(30):
        await w.run_once()
        clock.advance(61)  # MQTT backoff is capped at 60 s
    item = outbox.get("7:1:m1:mqtt")
    assert item is not None and item.state is OutboxState.PENDING and item.attempts == 30
    mqtt.fail = None
    await w.run_once()
    assert outbox.counts()["sent"] == 1 and dead == []


async def test_a_crash_between_send_and_mark_resends_the_same_key(outbox: Outbox) -> None:
    """Claimed and sent, then the process died: after the lease, sent again, same key."""
    clock, mqtt, dead = Clock(), FakeMqtt(), no_dead()
    outbox.enqueue([note("m1", "mqtt"), note("m2", "mqtt")])
    for item in outbox.claim(clock(), 10, lease_ns=60 * S):  # the worker that crashed
        mqtt.sent.append((item.target, json.loads(item.wire_body())))
    w = worker(outbox, mqtt, None, clock, dead, lease_s=60)
    assert await w.run_once() == 0  # still leased to the dead worker
    clock.advance(60)
    assert await w.run_once() == 2
    keys = [payload["delivery_id"] for _, payload in mqtt.sent]
    assert sorted(keys) == ["7:1:m1:mqtt", "7:1:m1:mqtt", "7:1:m2:mqtt", "7:1:m2:mqtt"]
    assert len(set(keys)) == 2  # deduplicated by delivery_id: once per recipient
    assert outbox.counts()["sent"] == 2


async def test_a_dead_item_not_reported_before_a_crash_is_reported_on_start(
    outbox: Outbox, audit: AuditStore
) -> None:
    clock, dead = Clock(), no_dead()
    outbox.enqueue([note("m1", "webhook")])
    outbox.claim(clock(), 1, lease_ns=S)
    outbox.mark_failed("7:1:m1:webhook", clock(), "HTTP 410", dead=True)  # then the crash
    await worker(outbox, None, FakeWebhook(), clock, dead, audit=audit).run_once()
    assert [i.idempotency_key for i in dead] == ["7:1:m1:webhook"]
    assert audit.count() == 1 and outbox.dead_unreported() == []


async def test_a_failing_on_dead_is_retried_later_not_lost(outbox: Outbox) -> None:
    clock = Clock()
    calls: list[str] = []

    def on_dead(item: OutboxItem) -> None:
        calls.append(item.idempotency_key)
        if len(calls) == 1:
            raise RuntimeError("engine busy")

    outbox.enqueue([note("m1", "webhook")])
    w = DeliveryWorker(
        outbox,
        None,
        FakeWebhook([DeliveryError("HTTP 400", permanent=True)]),
        clock_ns=clock,
        on_dead=on_dead,
    )
    await w.run_once()
    assert calls == ["7:1:m1:webhook"] and len(outbox.dead_unreported()) == 1
    w._report_dead_at = 0.0  # the retry interval has passed
    await w.run_once()
    assert calls == ["7:1:m1:webhook"] * 2 and outbox.dead_unreported() == []


async def test_run_loop_sends_concurrently_bounded_and_stops(outbox: Outbox) -> None:
    clock, dead = Clock(), no_dead()
    active = peak = 0
    release = asyncio.Event()

    class SlowWebhook(FakeWebhook):
        async def send(self, url: str, body: bytes, *, delivery_id: str) -> None:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            await release.wait()
            active -= 1
            await super().send(url, body, delivery_id=delivery_id)

    webhook = SlowWebhook()
    outbox.enqueue([note(f"m{i}", "webhook") for i in range(10)])
    w = worker(outbox, None, webhook, clock, dead, concurrency=4, poll_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    async with asyncio.timeout(10):
        while active < 4:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert peak == 4  # bounded
        release.set()
        while outbox.counts()["sent"] < 10:
            await asyncio.sleep(0.01)
        outbox.enqueue([note("m99", "webhook")])
        w.notify()
        while outbox.counts()["sent"] < 11:
            await asyncio.sleep(0.01)
        stop.set()
        await task
    assert len(webhook.calls) == 11 and len({k for _, k in webhook.calls}) == 11


def test_the_lease_must_outlast_a_send(outbox: Outbox) -> None:
    class Slow(FakeWebhook):
        timeout_s = 30.0

    with pytest.raises(ValueError, match="lease_s"):
        DeliveryWorker(outbox, None, Slow(), on_dead=no_dead().append, lease_s=30)
    DeliveryWorker(outbox, None, Slow(), on_dead=no_dead().append, lease_s=31)


async def test_mqtt_publisher_without_a_broker_fails_retryably() -> None:
    import socket

    with socket.socket() as probe:  # a free port on 127.0.0.1 that nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with MqttPublisher("127.0.0.1", port, client_id="gridgate-alerts-unit") as publisher:
        assert not await publisher.wait_connected(0.2)
        with pytest.raises(DeliveryError, match="not connected") as caught:
            await publisher.publish("gridgate/alerts/member/m1", b"{}")
    assert not caught.value.permanent
