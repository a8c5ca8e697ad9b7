"""The generated Mosquitto config bounds what can reach anyone's memory: a payload over the
broker's `message_size_limit` (256 KiB) is refused by the broker; one between the gateway's
own limit (64 KiB) and that is delivered, dead-lettered as `oversize`, counted, and its
payload not kept."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest

from adapters.base import MAX_PAYLOAD_BYTES
from gateway.pipeline.deadletter import DeadLetterStore
from simulators.mqtt_tools import drop_session, publish_all
from tests.support.broker import PrivateBroker, subscribed_then_gone
from tests.support.gateway_util import running_gateway, settings_for
from tests.support.polling import wait_for
from tests.support.services import ROOT, Services

pytestmark = pytest.mark.integration

BROKER_LIMIT = 262_144


def test_the_generated_broker_config_sets_the_limit(services: Services) -> None:
    """The config scripts/services.sh generated for the broker these tests run against."""
    conf = ROOT / ".run" / "mosquitto" / "mosquitto.conf"
    assert f"\nmessage_size_limit {BROKER_LIMIT}\n" in conf.read_text()
    assert BROKER_LIMIT > MAX_PAYLOAD_BYTES  # the gateway still sees and counts the middle


async def test_oversize_payloads_are_refused_by_the_broker_or_dead_lettered(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    settings = settings_for(services, unique, influx_db, tmp_path)
    topic = f"gridgate/v1/{unique}/meter/m-1/telemetry"
    good = json.dumps(
        {"v": 1, "device_id": "m-1", "ts": int(time.time() * 1000) - 60_000,
         "kind": "telemetry", "data": {"energy_kwh": 1.5}}
    ).encode()  # fmt: skip
    messages = [
        (topic, b"x" * (BROKER_LIMIT + 1)),  # the broker refuses it
        (topic, b"y" * (MAX_PAYLOAD_BYTES + 1)),  # the gateway dead-letters it
        (topic, good),
    ]
    try:
        async with running_gateway(settings) as metrics:
            await asyncio.to_thread(publish_all, services.mqtt_host, services.mqtt_port, messages)
            await wait_for(lambda: metrics.written == 1, 30, "the good reading written")
            await wait_for(lambda: metrics.backlog == 0, 30, "everything acknowledged")
        # in order on one session: had the broker forwarded the first, it would be here
        assert metrics.received == 2, metrics.snapshot()
        assert metrics.rejected == {"oversize": 1}
        store = DeadLetterStore(settings.deadletter_path)
        try:
            assert store.count("oversize") == 1
        finally:
            store.close()
    finally:
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)


def test_a_broker_sigkill_keeps_the_acknowledged_backlog(
    services: Services, tmp_path: Path
) -> None:
    """Under the generated persistence lines (a snapshot every 1000 changes) a SIGKILL right
    after 20,000 acknowledged messages loses at most the changes since the last snapshot; the
    old `autosave_interval 60` lost all of them (bench/broker_persistence.py)."""
    conf = (ROOT / ".run" / "mosquitto" / "mosquitto.conf").read_text()
    autosave = "".join(ln + "\n" for ln in conf.splitlines() if ln.startswith("autosave"))
    assert autosave == "autosave_on_changes true\nautosave_interval 1000\n"
    broker = PrivateBroker(tmp_path, autosave=autosave)
    broker.start()
    n = 20_000
    try:
        assert subscribed_then_gone(broker.port) == 0
        publish_all("127.0.0.1", broker.port, [(f"kept/{i % 50}", b"r" * 100) for i in range(n)])
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGKILL)
        broker.proc.wait()
        broker.proc = None
        broker.start()
        kept = subscribed_then_gone(broker.port, drain_s=2.0)
    finally:
        broker.stop()
    assert n - 1000 <= kept <= n, kept
