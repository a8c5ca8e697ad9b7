"""Alert delivery against real endpoints: the Mosquitto broker on 127.0.0.1 and webhook
receivers that are real HTTP servers on 127.0.0.1 (started here) verifying our signatures.

The crash test runs the worker as a separate process and SIGKILLs it after the deliveries went
out (webhooks received, MQTT PUBACKed) but before they were marked sent; after a restart each
recipient gets its delivery again with the same key — at most twice on the wire, exactly once
after deduplicating by key — and the outbox ends with every item sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.alerts.delivery import (
    DeliveryWorker,
    MqttPublisher,
    Outbox,
    OutboxItem,
    OutboxState,
    RetryPolicy,
    WebhookSecrets,
    WebhookSender,
    community_topic,
    member_topic,
)
from gateway.alerts.delivery.webhook import (
    SECRETS_ENV,
)
from gateway.alerts.model import Notification
from gateway.audit.store import AuditStore
from gateway.registry.store import Registry
from simulators.mqtt_tools import drop_session
from tests.support.services import ROOT, Services
from tests.support.webhook_receiver import SECRET, Receiver, running_receiver

pytestmark = pytest.mark.integration

PSEUDONYM = "k1:abcdefghijklmnopqrstuvwxyz"


# -- a real webhook receiver (tests.support.webhook_receiver) ----------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as state:
        yield state


# -- a real MQTT subscriber --------------------------------------------------------------------


class Subscriber:
    def __init__(self, services: Services, topics: list[str]) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        client.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in topics])
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_message = self._on_message
        client.connect(services.mqtt_host, services.mqtt_port)
        client.loop_start()
        self._client = client
        assert self._subscribed.wait(10), "no SUBACK from the broker"

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, json.loads(msg.payload)))

    def seen(self) -> Counter[str]:
        with self._lock:
            return Counter(m["delivery_id"] for _, m in self.messages)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


# -- helpers -----------------------------------------------------------------------------------


def payload(alert: int) -> dict[str, Any]:
    return {
        "kind": "gas_leak",
        "severity": "I",
        "place": {"community": "xf", "grid": "g01", "building": "b03", "unit": "u2"},
        "time_ns": time.time_ns(),
        "device": "gas-b03-u2-0101",
        "subject": PSEUDONYM,
        "alert_id": alert,
    }


def mqtt_note(member: str, topic: str, alert: int = 1) -> Notification:
    return Notification(f"{alert}:1:{member}:mqtt", alert, member, "mqtt", topic, payload(alert))


def webhook_note(member: str, url: str, alert: int = 1) -> Notification:
    return Notification(
        f"{alert}:1:{member}:webhook", alert, member, "webhook", url, payload(alert)
    )


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.sqlite3'}"


@pytest.fixture
def outbox(db_url: str) -> Iterator[Outbox]:
    registry = Registry.open(db_url)
    yield Outbox(registry.engine)
    registry.engine.dispose()


async def until(predicate: Callable[[], bool], timeout_s: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.02)


async def run_until(worker: DeliveryWorker, done: Callable[[], bool], what: str) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await until(lambda: done() or task.done(), what=what)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


# -- tests -------------------------------------------------------------------------------------


async def test_mqtt_delivery_to_member_and_community_topics(
    services: Services, unique: str, outbox: Outbox
) -> None:
    member, topic = f"{unique}-m1", member_topic(f"{unique}-m1")
    community = community_topic(unique)
    sub = Subscriber(services, [topic, community])
    client_id = f"gridgate-alerts-{unique}"
    try:
        outbox.enqueue([mqtt_note(member, topic), mqtt_note(f"{unique}-all", community)])
        async with MqttPublisher(
            services.mqtt_host, services.mqtt_port, client_id=client_id
        ) as publisher:
            assert await publisher.wait_connected(10)
            worker = DeliveryWorker(outbox, publisher, None, on_dead=lambda _i: None)
            assert await worker.run_once() == 2
        assert outbox.counts() == {"pending": 0, "sent": 2, "dead": 0}  # PUBACKed
        await until(lambda: len(sub.messages) == 2, what="both messages")
        by_topic = dict(sub.messages)
        assert by_topic[topic]["delivery_id"] == f"1:1:{member}:mqtt"
        assert by_topic[community]["delivery_id"] == f"1:1:{unique}-all:mqtt"
        assert by_topic[topic]["kind"] == "gas_leak" and by_topic[topic]["subject"] == PSEUDONYM
    finally:
        sub.close()
        drop_session(services.mqtt_host, services.mqtt_port, client_id)


async def test_webhook_delivery_signed_and_verified_by_the_receiver(
    receiver: Receiver, outbox: Outbox
) -> None:
    outbox.enqueue([webhook_note("m1", receiver.url("m1")), webhook_note("m2", receiver.url("m2"))])
    secrets = WebhookSecrets({receiver.origin: SECRET})
    async with WebhookSender(secrets) as sender:
        worker = DeliveryWorker(outbox, None, sender, on_dead=lambda _i: None)
        assert await worker.run_once() == 2
    assert sorted((h.path, h.delivery, h.signed) for h in receiver.hits) == [
        ("/hook/m1", "1:1:m1:webhook", True),
        ("/hook/m2", "1:1:m2:webhook", True),
    ]
    assert all(h.body["delivery_id"] == h.delivery for h in receiver.hits)
    assert outbox.counts()["sent"] == 2


async def test_a_wrong_secret_is_refused_by_the_receiver_and_goes_dead(
    receiver: Receiver, outbox: Outbox
) -> None:
    """The receiver answers 401 to a bad signature: permanent, dead at once, reported."""
    dead: list[OutboxItem] = []
    outbox.enqueue([webhook_note("m1", receiver.url("m1"))])
    async with WebhookSender(WebhookSecrets({receiver.origin: "not-the-secret"})) as sender:
        await DeliveryWorker(outbox, None, sender, on_dead=dead.append).run_once()
    assert [h.signed for h in receiver.hits] == [False]
    assert [(i.idempotency_key, i.last_error) for i in dead] == [("1:1:m1:webhook", "HTTP 401")]


async def test_webhook_500_twice_then_200_is_delivered_once_after_retries(
    receiver: Receiver, outbox: Outbox
) -> None:
    receiver.answer = lambda hit, nth: 500 if nth <= 2 else 200
    outbox.enqueue([webhook_note("m1", receiver.url("m1"))])
    fast = RetryPolicy(max_attempts=8, base_s=0.05, max_s=0.2)
    async with WebhookSender(WebhookSecrets({receiver.origin: SECRET})) as sender:
        worker = DeliveryWorker(
            outbox, None, sender, on_dead=lambda _i: None, retry={"webhook": fast}, poll_s=0.02
        )
        await run_until(worker, lambda: outbox.counts()["sent"] == 1, "delivery")
    assert receiver.seen() == Counter({"1:1:m1:webhook": 3})
    assert all(h.signed for h in receiver.hits)
    item = outbox.get("1:1:m1:webhook")
    assert item is not None and item.state is OutboxState.SENT and item.attempts == 3
    assert worker.stats.failed == 2 and worker.stats.sent == 1 and worker.stats.dead == 0


async def test_a_webhook_that_always_fails_goes_dead_with_on_dead_and_audit(
    receiver: Receiver, outbox: Outbox, tmp_path: Path
) -> None:
    receiver.answer = lambda hit, nth: 503
    dead: list[OutboxItem] = []
    outbox.enqueue([webhook_note("m1", receiver.url("m1"))])
    fast = RetryPolicy(max_attempts=4, base_s=0.02, max_s=0.1)
    with AuditStore(tmp_path / "audit.sqlite3") as audit:
        async with WebhookSender(WebhookSecrets({receiver.origin: SECRET})) as sender:
            worker = DeliveryWorker(
                outbox,
                None,
                sender,
                on_dead=dead.append,
                audit=audit,
                retry={"webhook": fast},
                poll_s=0.02,
            )
            await run_until(worker, lambda: bool(dead), "the delivery to go dead")
        (record,) = audit.last(10)
        assert record.details["event"] == "delivery_dead" and record.subject == "alert:1"
        assert str(receiver.port) not in json.dumps(record.details)  # no URL in the audit log
    assert receiver.seen() == Counter({"1:1:m1:webhook": 4})
    (item,) = dead
    assert item.state is OutboxState.DEAD and item.attempts == 4 and item.last_error == "HTTP 503"
    assert outbox.counts() == {"pending": 0, "sent": 0, "dead": 1}
    assert outbox.dead_unreported() == []


# -- the crash ---------------------------------------------------------------------------------

WORKER_MAIN = textwrap.dedent(
    """
    import asyncio, os, signal, sys

    from gateway.alerts.delivery import (
        DeliveryWorker, MqttPublisher, Outbox, WebhookSecrets, WebhookSender,
    )
    from gateway.registry.store import Registry

    HOLD = os.environ.get("HOLD_AFTER_MQTT_PUBACK") == "1"


    class Held:
        # After the broker's PUBACK, never return: the process dies before marking sent.
        def __init__(self, inner):
            self.inner = inner

        async def publish(self, topic, payload):
            await self.inner.publish(topic, payload)
            print("PUBACKED", flush=True)
            if HOLD:
                await asyncio.Event().wait()


    async def main():
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        outbox = Outbox(Registry.open(os.environ["DB_URL"]).engine)
        async with MqttPublisher(
            "127.0.0.1", int(os.environ["MQTT_PORT"]), client_id=os.environ["CLIENT_ID"]
        ) as publisher, WebhookSender(WebhookSecrets.from_env(os.environ), timeout_s=4.0) as webhooks:
            if not await publisher.wait_connected(10):
                sys.exit("MQTT not connected")
            worker = DeliveryWorker(
                outbox, Held(publisher), webhooks, on_dead=lambda item: print("DEAD", flush=True),
                lease_s=5.0, poll_s=0.05,
            )
            print("READY", flush=True)
            await worker.run(stop)


    asyncio.run(main())
    """
)


def start_worker(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    script = tmp_path / "delivery_worker.py"
    script.write_text(WORKER_MAIN)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY", "the worker did not start"
    return proc


async def test_killed_between_sent_and_marked_delivers_exactly_once_per_recipient(
    services: Services, unique: str, receiver: Receiver, db_url: str, tmp_path: Path
) -> None:
    members = [f"{unique}-m{i}" for i in range(1, 6)]
    hooks, mqtts = members[:3], members[3:]
    notes = [webhook_note(m, receiver.url(m)) for m in hooks]
    notes += [mqtt_note(m, member_topic(m)) for m in mqtts]
    keys = {n.member_id: n.idempotency_key for n in notes}
    registry = Registry.open(db_url)
    outbox = Outbox(registry.engine)
    assert outbox.enqueue(notes) == 5  # the alert was accepted: on disk
    sub = Subscriber(services, [member_topic(m) for m in mqtts])
    client_id = f"gridgate-alerts-{unique}"
    env = {
        "DB_URL": db_url,
        "MQTT_PORT": str(services.mqtt_port),
        "CLIENT_ID": client_id,
        SECRETS_ENV: json.dumps({receiver.origin: SECRET}),
    }
    try:
        # 1. Receivers get everything, but the worker never learns: webhook answers are held,
        #    MQTT sends hang after their PUBACK. Then the gateway is killed.
        receiver.answer = lambda hit, nth: "hold"
        first = start_worker(tmp_path, {**env, "HOLD_AFTER_MQTT_PUBACK": "1"})
        try:
            await until(
                lambda: len(receiver.seen()) == 3 and len(sub.seen()) == 2,
                what="all five deliveries to reach their receivers",
            )
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        assert first.returncode == -signal.SIGKILL
        assert outbox.counts() == {"pending": 5, "sent": 0, "dead": 0}  # none was marked
        receiver.answer = lambda hit, nth: 200
        receiver.release.set()

        # 2. Restart: once the dead process's lease ran out, everything goes again.
        second = start_worker(tmp_path, env)
        try:
            await until(lambda: outbox.counts()["sent"] == 5, timeout_s=30, what="all sent")
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(15)
        assert second.returncode == 0
        await until(lambda: sum(sub.seen().values()) >= 4, what="the MQTT resends")
    finally:
        sub.close()
        drop_session(services.mqtt_host, services.mqtt_port, client_id)
        registry.engine.dispose()

    web, mq = receiver.seen(), sub.seen()
    # On the wire: at most twice per recipient (once before the crash, once after) ...
    assert set(web.values()) <= {1, 2} and set(mq.values()) <= {1, 2}
    assert web == Counter({keys[m]: 2 for m in hooks}) and mq == Counter(
        {keys[m]: 2 for m in mqtts}
    )
    # ... and deduplicated by key, exactly once per recipient, each at its own target.
    assert {h.path: h.delivery for h in receiver.hits} == {f"/hook/{m}": keys[m] for m in hooks}
    assert {t: p["delivery_id"] for t, p in sub.messages} == {
        member_topic(m): keys[m] for m in mqtts
    }
    assert all(h.signed for h in receiver.hits)
    items = outbox.items()
    assert {i.state for i in items} == {OutboxState.SENT} and len(items) == 5
    assert all(i.attempts == 2 for i in items)  # the crashed attempt is on record
