"""The grid members' apps: every member's alert topic, as the apps subscribe to it."""

from __future__ import annotations

import json
import threading
from collections import Counter, defaultdict
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.registry import Role

FIRST_RESPONDERS = [Role.UNIT_HEAD, Role.BUILDING_HEAD, Role.GRID_WORKER, Role.PROPERTY_DUTY]


class Members:
    """Every member's alert topic, as their apps would subscribe: deliveries deduplicated by
    `delivery_id`, as receivers must."""

    def __init__(self, host: str, port: int, community: str) -> None:
        self.community = community  # other tests publish alerts too, for their communities
        self.received: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.wire: Counter[str] = Counter()  # delivery_id → times it arrived, before dedup
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.subscribe("gridgate/alerts/member/#", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        payload = json.loads(msg.payload)
        if payload.get("community") != self.community:
            return
        with self._lock:
            self.wire[payload["delivery_id"]] += 1
            if payload["delivery_id"] in self._seen:
                return
            self._seen.add(payload["delivery_id"])
            self.received[msg.topic.rsplit("/", 1)[-1]].append(payload)

    def of_kind(self, kind: str) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            return {m: [p for p in ps if p["kind"] == kind] for m, ps in self.received.items()
                    if any(p["kind"] == kind for p in ps)}  # fmt: skip

    def count(self) -> int:
        """Notifications received, deduplicated by `delivery_id`."""
        with self._lock:
            return len(self._seen)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
