"""The poison test (issue 9, finding 1) through the real services: one message whose alert
cannot be recorded, in one batch with good readings, other alerts and bad input.

The poison is one that still exists after every fix at the door: a registry from before ids
were checked, holding a grid member whose id is a mobile number. Every alert routed to that
member has a "notified" audit record the audit log refuses. Before the fix that refusal was
retried forever with the whole batch unacknowledged; now the one alert is refused and
dead-lettered, the duty desk is told, and everything else goes through — and again after a
restart."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from adapters import gridgate_json
from devices.families import Channel, Family
from devices.location import Location
from devices.reading import Reading
from gateway.alerts.store import unbacked_alert_records
from gateway.audit.store import AuditStore
from gateway.pipeline.deadletter import DeadLetterStore
from gateway.registry import Registry, import_file
from gateway.settings import Settings
from gateway.storage.influx_v1 import InfluxV1Client
from gateway.storage.retention import rp_name
from simulators.mqtt_tools import drop_session, publish_all
from tests.support.gateway_util import running_gateway, settings_for
from tests.support.polling import wait_for
from tests.support.services import Services

pytestmark = pytest.mark.integration

PHONE = "13812345678"


def fleet_yaml(community: str) -> str:
    return f"""\
version: 1
community: {{code: {community}, name: 幸福小区, street: 城东街道}}
grids:
  - code: g01
    name: 第一网格
    buildings:
      - code: b01
        name: 1号楼
        units:
          - {{code: u1, name: 1单元, rooms: ["0101"]}}
          - {{code: u2, name: 2单元, rooms: ["0201"]}}
households:
  - {{id: h-u1, building: b01, unit: u1, room: "0101", elder_alone: true}}
  - {{id: h-u2, building: b01, unit: u2, room: "0201", elder_alone: true}}
devices:
  - {{id: band-u1, family: elder, adapter: gridgate_json, vendor: acme, building: b01, unit: u1, room: "0101", power: battery, household: h-u1}}
  - {{id: band-u2, family: elder, adapter: gridgate_json, vendor: acme, building: b01, unit: u2, room: "0201", power: battery, household: h-u2}}
  - {{id: gas-u1, family: safety, adapter: gridgate_json, vendor: acme, building: b01, unit: u1, room: "0101", power: mains}}
  - {{id: em-u1, family: meter, adapter: gridgate_json, vendor: acme, building: b01, unit: u1, room: "0101", power: mains}}
  - {{id: em-u2, family: meter, adapter: gridgate_json, vendor: acme, building: b01, unit: u2, room: "0201", power: mains}}
members:
  - {{id: m-uh-u1, name: 李建国, role: unit_head, scope: [{{building: b01, unit: u1}}], channels: ["mqtt:gridgate/alerts/member/{community}/u1"]}}
  - {{id: m-uh-u2, name: 王芳, role: unit_head, scope: [{{building: b01, unit: u2}}], channels: ["mqtt:gridgate/alerts/member/{community}/u2"]}}
  - {{id: m-desk, name: 值班台, role: duty_desk, scope: [{{community: {community}}}], channels: ["mqtt:gridgate/alerts/member/{community}/desk"]}}
"""


def legacy_member_id(registry_path: Path, member: str, new_id: str) -> None:
    """What a registry imported before ids were checked holds (the importer refuses it now)."""
    with sqlite3.connect(registry_path) as db:
        db.execute("UPDATE members SET id = ? WHERE id = ?", (new_id, member))
        db.execute("UPDATE member_scopes SET member_id = ? WHERE member_id = ?", (new_id, member))
        db.execute("UPDATE member_channels SET member_id = ? WHERE member_id = ?", (new_id, member))


class Inboxes:
    """The members' MQTT topics, as their apps would subscribe."""

    def __init__(self, services: Services, community: str) -> None:
        self.got: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.on_message = self._on_message
        self.client.connect(services.mqtt_host, services.mqtt_port)
        self.client.subscribe(f"gridgate/alerts/member/{community}/#", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.got[msg.topic.rsplit("/", 1)[-1]].append(json.loads(msg.payload))

    def kinds(self, who: str) -> set[str]:
        with self._lock:
            return {p["kind"] for p in self.got.get(who, [])}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def batch(community: str, t0_ms: int) -> list[tuple[str, bytes]]:
    """69 messages: 60 meter readings, a gas leak (two readings) and an SOS in u1, the poison
    SOS in u2, and five that are bad input."""

    def msg(device: str, family: Family, channel: Channel, kind: str, i: int,
            **values: Any) -> tuple[str, bytes]:  # fmt: skip
        unit = "u2" if device.endswith("u2") else "u1"
        reading = Reading(device, family, channel, kind, (t0_ms + i) * 1_000_000,
                          Location(community, "g01", "b01", unit), values)  # fmt: skip
        return gridgate_json.encode(reading)

    meter = {"meter_type": "electricity"}
    out = [
        msg(f"em-u{i % 2 + 1}", Family.METER, Channel.TELEMETRY, "telemetry", i,
            energy_kwh=100.0 + i, **meter)
        for i in range(60)
    ]  # fmt: skip
    for n, i in enumerate((100, 15_100)):  # above 50 %LEL for 15 s of device time: level I
        out.insert(10 + 5 * n, msg("gas-u1", Family.SAFETY, Channel.TELEMETRY, "telemetry", i,
                           detector="gas", gas_lel_pct=62.0))  # fmt: skip
    out.insert(20, msg("band-u2", Family.ELDER, Channel.EVENT, "sos", 101))  # the poison
    out.insert(30, msg("band-u1", Family.ELDER, Channel.EVENT, "sos", 102))
    topic = f"gridgate/v1/{community}/meter/em-u1/telemetry"
    out += [(topic, b"{not json"), (topic, b"[]"), (topic, b""), (topic, b"\xff\xfe"),
            (f"gridgate/v1/{community}/meter/em-{PHONE}/telemetry", b"{}")]  # fmt: skip
    return out


def settings(services: Services, community: str, db: str, tmp: Path) -> Settings:
    return settings_for(services, community, db, tmp).model_copy(
        update={"require_registration": True, "audit_path": tmp / "audit.sqlite3"}
    )


async def points(services: Services, cfg: Settings) -> int:
    """Meter points stored (query errors fail the test)."""
    rp = rp_name("meter") if cfg.influx_retention else None
    async with InfluxV1Client(services.influx_url, cfg.influx_database) as influx:
        return await influx.count("meter", "energy_kwh", rp=rp)


async def test_a_poison_alert_is_dead_lettered_and_everything_else_goes_through(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(fleet_yaml(unique), encoding="utf-8")
    cfg = settings(services, unique, influx_db, tmp_path)
    with Registry.open(cfg.registry_url) as registry:
        import_file(registry, fleet, now_ns=time.time_ns())
    legacy_member_id(tmp_path / "registry.sqlite3", "m-uh-u2", PHONE)
    inboxes = Inboxes(services, unique)
    t0_ms = time.time_ns() // 1_000_000 - 60_000
    try:
        async with running_gateway(cfg) as metrics:
            sent = publish_all(services.mqtt_host, services.mqtt_port, batch(unique, t0_ms))
            await wait_for(lambda: metrics.acked == sent, 30, "the whole batch acknowledged")
            await wait_for(lambda: {"gas_leak", "elder_sos"} <= inboxes.kinds("u1"), 30,
                           "u1's alerts delivered")  # fmt: skip
            await wait_for(lambda: "alert_refused" in inboxes.kinds("desk"), 30,
                           "the duty desk told of the refused alert")  # fmt: skip
            assert metrics.backlog == 0
            assert metrics.alerts_refused == 1
            assert metrics.rejected["alert_refused"] == 1
            assert metrics.dead_lettered == 6  # the poison and the five bad messages
            assert await points(services, cfg) == 60  # every good reading stored
        assert inboxes.kinds("u2") == set()  # its SOS could not be recorded, so not sent
        dead = DeadLetterStore(cfg.deadletter_path, keyring=None)
        try:
            [poison] = [d for d in dead.recent() if d.reason == "alert_refused"]
            assert poison.topic == f"gridgate/v1/{unique}/elder/band-u2/event"
            assert "members" in poison.detail and PHONE not in poison.detail
            assert all(PHONE not in d.topic + d.detail for d in dead.recent())
        finally:
            dead.close()

        # A restart: the same mix again, and nothing jams.
        async with running_gateway(cfg) as metrics:
            sent = publish_all(services.mqtt_host, services.mqtt_port, batch(unique, t0_ms + 500))
            await wait_for(lambda: metrics.acked == sent, 30, "the batch after a restart acked")
            assert metrics.alerts_refused == 1 and metrics.backlog == 0
            assert await points(services, cfg) == 120

        with AuditStore(cfg.audit_path) as audit, Registry.open(cfg.registry_url) as registry:
            assert audit.verify().ok
            assert unbacked_alert_records(registry, audit.records()) == []
            assert all(PHONE not in json.dumps(dict(r.details)) for r in audit.records())
    finally:
        inboxes.close()
        drop_session(services.mqtt_host, services.mqtt_port, cfg.mqtt_client_id)
