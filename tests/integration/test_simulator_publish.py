"""The simulator through a real Mosquitto: what the report says was sent is what a subscriber
receives, exactly — later end-to-end tests compare the same report with InfluxDB."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from simulators.fleet import make_fleet
from simulators.publisher import Publisher, simulate
from simulators.traffic import Traffic
from tests.support.services import Services

pytestmark = pytest.mark.integration


class Counting:
    """A plain QoS 1 subscriber that counts what arrives per topic family level."""

    def __init__(self, services: Services, topic_filter: str) -> None:
        self.lock = threading.Lock()
        self.by_family: Counter[str] = Counter()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.connect(services.mqtt_host, services.mqtt_port)
        self.client.loop_start()
        self.client.subscribe(topic_filter, qos=1)
        assert self.subscribed.wait(10), "no SUBACK"

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        assert not any(rc.is_failure for rc in reason_codes)
        self.subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.by_family[msg.topic.split("/")[3]] += 1

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.by_family.values())

    def wait_for(self, expected: int, timeout_s: float = 60.0) -> int:
        """Wait until `expected` arrived, then a little longer to catch any surplus."""
        deadline = time.monotonic() + timeout_s
        while self.total < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        return self.total

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_every_published_message_reaches_a_subscriber(services: Services, unique: str) -> None:
    sub = Counting(services, f"gridgate/v1/{unique}/#")
    try:
        report = simulate(
            host=services.mqtt_host,
            port=services.mqtt_port,
            community=unique,
            devices=50,
            seed=1,
            count=2000,
            bad_ratio=0.05,
        )
        assert report.total == report.published_ok == 2000
        assert report.failed == report.unacked == report.refused == 0
        assert sum(report.bad_by_reason.values()) == 100
        assert set(report.sent_by_family) == {"access", "safety", "meter", "elder"}
        assert sub.wait_for(report.total) == report.total
        # Every good reading arrived under its family; bad ones may use any topic level.
        for family, sent in report.sent_by_family.items():
            assert sub.by_family[family] >= sent
    finally:
        sub.close()


def test_rate_and_duration_are_respected(services: Services, unique: str) -> None:
    sub = Counting(services, f"gridgate/v1/{unique}/#")
    try:
        traffic = Traffic(make_fleet(unique, 100, 2), seed=2)
        with Publisher(services.mqtt_host, services.mqtt_port, max_inflight=50) as pub:
            report = pub.run(traffic, rate=400, duration_s=2.0)
        # The token bucket never exceeds rate × duration; how close it gets depends on load,
        # which is a benchmark's business, not a test's.
        assert 0 < report.total <= 801
        assert report.published_ok == report.total
        assert report.max_clock_lead_ms <= 5
        assert sub.wait_for(report.total) == report.total
    finally:
        sub.close()
