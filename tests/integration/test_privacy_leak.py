"""No raw personal identifier anywhere (R3.2), for well-formed, vendor, hostile and malformed
traffic alike — with the registry's admission on, off, and through `gridgate run` as a process.

The community's residents carry known fake personal data (names, valid-checksum ID numbers,
phones, card numbers, plates, face feature blobs) in every vendor format; the `hostile`
scenario and every malformed case add more, some of it inside payloads that do not even
parse. On top, hostile *registered* devices (tests.integration.leak_search's planted values)
send legal readings whose free text (door and doorName, a meter's fault, a status message's
firmware), unknown keys and claimed places hold names, phones (one with a stray leading
digit), ID numbers (one hyphenated, one with a lower-case x glued to text) and plates; they
raise alerts (fire, SOS, door forced, device fault) so that the alert tables, the outbox, the
audit log, the members' MQTT topics and the webhooks are not empty. Unregistered devices claim
places made of identifiers (refused as `identifier_shaped`, which matters with admission off),
ids shaped like phones, `loc` keys that are ID numbers, topic levels that hold identifiers, and
payloads that are nothing but an ID number (the dead-letter digest must be keyed); registered
devices are spoofed from other communities' topics (`community_mismatch`).

Every value published is then searched for — raw, numbers also as bare digits, plates with and
without separators — in every sink: InfluxDB (every retention policy, measurement, series, tag
and field, keys too), the dead-letter store (rows, every column, and the file), the registry
database (every table: alerts, alert events, outbox included; rows and file), the audit log
(rows and file), the captured DEBUG logs or the gateway process's output, the alerts on the
members' MQTT topics, the webhook bodies and the metrics.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.registry import AdapterRegistry, default_registry
from devices.families import Channel, Family
from devices.topics import build_topic
from gateway.pipeline.deadletter import _DOMAIN as DEAD_LETTER_DOMAIN
from gateway.pipeline.metrics import GatewayMetrics
from gateway.registry import Registry, Role
from gateway.registry.importer import import_file
from gateway.runtime import run_gateway
from gateway.settings import Settings
from gateway.storage.influx_v1 import InfluxV1Client, quote_literal
from gateway.storage.retention import qualified
from privacy.keys import KeyRing
from simulators import malformed
from simulators.community import Community
from simulators.community_cli import parse_scenario, plan_injections
from simulators.mqtt_tools import drop_session, publish_all
from simulators.schedule import Schedule, SimClock
from tests.support.api import add_accounts, crawl, running_api
from tests.support.community import community_settings
from tests.support.gateway_util import gateway_env, start_gateway_process
from tests.support.leak_search import (
    FACE_BLOB,
    ID_A,
    ID_A_LOWER,
    ID_B_HYPHENATED,
    ID_C,
    NAMES,
    PHONE_HYPHENATED,
    PHONE_LEADING_DIGIT,
    PHONES,
    PLATES,
    AlertWire,
    assert_no_leaks,
    file_text,
    harvest,
    influx_dump,
    needles,
    planted,
    rows_text,
    sqlite_tables,
    without_legitimate,
)
from tests.support.polling import wait_for
from tests.support.readings import personal_entries
from tests.support.registered import key_file, registered_community
from tests.support.services import Services
from tests.support.webhook_receiver import SECRET, Receiver, running_receiver

pytestmark = pytest.mark.integration

# The hostile registered devices, all in the first household's unit (which has grid members).
GATE_JSON = "hx-gate-j"
GATE_VENDOR = "hx-gate-a"
METER = "hx-meter"
SMOKE = "hx-smoke"
BAND = "hx-band"
WEBHOOK_MEMBER = "hx-webhook"  # an extra unit head reached by webhook (suffix of its id)
SENTINEL_KWH = 424242.25  # the last message: once stored, everything before it was consumed
SPOOF_KWH = 987654.25  # what a spoofed meter reading claims: never stored
ALERT_KINDS = {"fire", "elder_sos", "door_forced", "device_fault"}

# Free text of registered devices: every shape a hostile device might write.
DOORS = (
    f"{NAMES[0]}家门",
    f"3号楼{PHONES[1]}",
    f"B3 {PHONE_LEADING_DIGIT}",
    f"Gate {ID_A}",
    f"Gate {ID_B_HYPHENATED}",
    f"Lane {ID_A_LOWER}-east",
    f"{PLATES[0]}车位门",
    f"{PLATES[1][:2]}·{PLATES[1][2:]}",
)
DOOR_NAMES = (  # the foreign vendor's doorName
    f"{NAMES[1]}的门",
    f"北门{PHONES[2]}",
    f"Gate-{ID_C}",
    f"{PLATES[2]} 车道",
    f"id-{PHONES[3]}",
)
FAULTS = (
    f"联系{NAMES[0]}",
    f"call {PHONES[0]} now",
    f"owner id {ID_A}",
    f"id {ID_B_HYPHENATED} reported",
    f"{ID_A_LOWER}room broken",
    f"car {PLATES[2]}",
    f"tel {PHONE_LEADING_DIGIT}",
    f"{NAMES[3]} {PHONES[3]}",
)
FIRMWARES = (
    f"v1.2.3-{PHONES[1]}",
    f"{NAMES[2]} v1.0",
    f"1.0-{ID_A_LOWER}",
    f"2.1+{PLATES[0]}",
    f"v2-{ID_B_HYPHENATED}",
)
DIGEST_PAYLOADS = (ID_A.encode(), PHONES[0].encode(), ID_B_HYPHENATED.encode())


def spoof_phone(unique: str) -> str:
    """A mobile-shaped number of this test's own (a community level of a spoofed topic)."""
    return "139" + f"{int(unique[1:], 16) % 10**8:08d}"


@dataclass
class Hostile:
    """The hostile traffic, and what it must come to."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)
    stored: Counter[tuple[str, str]] = field(default_factory=Counter)  # (measurement, device)
    spoofed: int = 0  # messages that must be dead-lettered as community_mismatch
    key_echoes: int = 0  # `loc` keys the device chose: dead-lettered, key never echoed
    extra_needles: set[str] = field(default_factory=set)


def hostile_fleet(community: Community, tmp: Path, receiver: Receiver) -> tuple[Path, Path]:
    """A devices CSV and a members CSV adding the hostile registered devices and a unit head
    reached by webhook, in the first household's unit."""
    home = community.households[0]
    code = community.code
    place = f"{code},{home.grid},{home.building},{home.unit}"
    devices = tmp / "hostile-devices.csv"
    devices.write_text(
        "device_id,family,adapter,vendor,community,grid,building,unit,room,household,power,installed\n"
        f"{GATE_JSON},access,gridgate_json,acme,{place},,,mains,\n"
        f"{GATE_VENDOR},access,vendor_access,shitong-acs,{place},,,mains,\n"
        f"{METER},meter,gridgate_json,acme,{place},{home.room},{home.id},mains,\n"
        f"{SMOKE},safety,gridgate_json,acme,{place},{home.room},,battery,\n"
        f"{BAND},elder,gridgate_json,acme,{place},{home.room},{home.id},battery,\n",
        encoding="utf-8",
    )
    member = f"m-{code}-{WEBHOOK_MEMBER}"
    members = tmp / "hostile-members.csv"
    members.write_text(
        "member_id,name,role,community,grid,building,unit,channels\n"
        f"{member},物业甲,unit_head,{place},webhook:{receiver.url(member)}\n",
        encoding="utf-8",
    )
    return devices, members


def hostile_traffic(
    community: Community, unique: str, now_ms: int, *, spoof: bool, registration: bool
) -> Hostile:
    """`spoof`: add readings of registered devices from other communities' topics (the
    gateway must subscribe to those); `registration`: whether unregistered devices are refused
    (else the one with a clean place is stored)."""
    code = community.code
    out = Hostile()
    ts = iter(range(now_ms - 300_000, now_ms, 1000))  # one second apart: every point distinct

    def gj(
        family: Family, device: str, channel: Channel, kind: str, data: dict[str, Any],
        loc: dict[str, Any] | None = None, topic_community: str = code,
    ) -> tuple[str, bytes]:  # fmt: skip
        body: dict[str, Any] = {"v": 1, "device_id": device, "ts": next(ts), "kind": kind}
        if loc is not None:
            body["loc"] = loc
        body["data"] = data
        return build_topic(topic_community, family, device, channel), orjson.dumps(body)

    def acs(device: str, event_type: int, door: str, topic_community: str = code) -> tuple[str, bytes]:  # fmt: skip
        body = {
            "deviceSn": device,
            "eventTime": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(next(ts) / 1000 + 8 * 3600)),
            "eventType": event_type, "openMode": "FACE", "direction": "IN", "similarity": 93.5,
            "doorName": door, "personName": NAMES[3], "certNo": ID_A, "phone": PHONES[3],
            "cardNo": "9F3A21C0", "plateNo": PLATES[0], "faceImage": FACE_BLOB,
            "faceFeature": FACE_BLOB[::-1], "ownerTel": PHONES[0],
        }  # fmt: skip
        return f"vendor/acs/{topic_community}/{device}/event", orjson.dumps(body)

    def add(message: tuple[str, bytes], measurement: str = "", device: str = "") -> None:
        out.messages.append(message)
        if measurement:
            out.stored[measurement, device] += 1

    hostile_loc = {"grid": "g01", "building": NAMES[0], "unit": PHONES[0], "room": ID_A}
    person = {"person_name": NAMES[2], "id_number": ID_C, "phone": PHONES[2],
              "plate": PLATES[1], "face_image": FACE_BLOB, "card_no": "9F3A21C0"}  # fmt: skip

    # Registered devices, legal readings, hostile free text: stored, de-identified.
    for door in DOORS:
        add(gj(Family.ACCESS, GATE_JSON, Channel.EVENT, "entry_granted",
               {"door": door, "method": "face", "direction": "in", "granted": True, **person},
               hostile_loc), "access", GATE_JSON)  # fmt: skip
    add(gj(Family.ACCESS, GATE_JSON, Channel.EVENT, "door_forced", {"door": f"{NAMES[3]}门口"}),
        "access", GATE_JSON)  # fmt: skip
    for door in DOOR_NAMES:
        add(acs(GATE_VENDOR, 1, door), "access", GATE_VENDOR)
    add(acs(GATE_VENDOR, 3, f"{NAMES[1]}家 {PHONES[1]}"), "access", GATE_VENDOR)
    for i, fault in enumerate(FAULTS):
        add(gj(Family.METER, METER, Channel.TELEMETRY, "telemetry",
               {"meter_type": "electricity", "energy_kwh": 100.0 + i, "fault": fault},
               hostile_loc), "meter", METER)  # fmt: skip
    add(gj(Family.METER, METER, Channel.EVENT, "fault", {"fault": f"{NAMES[2]}家电表 {PHONES[2]}"}),
        "meter", METER)  # fmt: skip
    devices = ((Family.ACCESS, GATE_JSON), (Family.ACCESS, GATE_VENDOR), (Family.METER, METER),
               (Family.SAFETY, SMOKE), (Family.ELDER, BAND))  # fmt: skip
    for (family, device), firmware in zip(devices, FIRMWARES, strict=True):
        add(gj(family, device, Channel.STATUS, "heartbeat", {"firmware": firmware, "uptime_s": 60.0},
               hostile_loc), "device_status", device)  # fmt: skip
    add(gj(Family.SAFETY, SMOKE, Channel.TELEMETRY, "telemetry",
           {"detector": "smoke", "smoke_alarm": True, "owner_name": NAMES[3],
            "owner_phone": PHONES[3], ID_A: "key"}, hostile_loc), "safety", SMOKE)  # fmt: skip
    add(gj(Family.ELDER, BAND, Channel.EVENT, "sos",
           {"紧急联系人": NAMES[1], PHONES[1]: "call", "id_card": ID_C, "plate": PLATES[2]},
           hostile_loc), "elder", BAND)  # fmt: skip

    # `loc` keys the device made up: refused, and the key is never echoed.
    for key in (ID_A, NAMES[1], PHONES[2], f"id-{PHONES[3]}"):
        add(gj(Family.METER, METER, Channel.TELEMETRY, "telemetry",
               {"meter_type": "electricity", "energy_kwh": 1.0}, {"grid": "g01", key: "x"}))  # fmt: skip
        out.key_echoes += 1

    # Unregistered devices claiming places made of identifiers (with admission off they are
    # refused as identifier_shaped; one would raise a fire alert there), and ids shaped
    # like phones.
    add(gj(Family.SAFETY, "hx-loose-1", Channel.TELEMETRY, "telemetry",
           {"detector": "smoke", "smoke_alarm": True},
           {"grid": "g01", "building": NAMES[2], "unit": "u1"}))  # fmt: skip
    for i, loc in enumerate((
        {"grid": "g01", "building": "b01", "unit": PHONES[3]},
        {"grid": "g01", "building": "b01", "unit": "u1", "room": f"{ID_A_LOWER}室"},
        {"grid": "g01", "building": "b01", "unit": "u1", "room": ID_B_HYPHENATED},
        {"grid": f"g-{PHONE_HYPHENATED}", "building": "b01"},
        {"grid": "g01", "building": f"{PLATES[0]}号", "unit": "u1"},
    )):  # fmt: skip
        add(gj(Family.METER, f"hx-loose-{i + 2}", Channel.TELEMETRY, "telemetry",
               {"meter_type": "water", "water_m3": 3.5}, loc))  # fmt: skip
    for device in (PHONES[1], f"id-{PHONES[2]}", f"m{ID_B_HYPHENATED}"):
        add(gj(Family.METER, device, Channel.TELEMETRY, "telemetry",
               {"meter_type": "water", "water_m3": 3.5}, {"grid": "g01", "building": "b01"}))  # fmt: skip
    # An unregistered device with a clean place and hostile text: with admission off it is
    # stored (de-identified), so its free text and personal fields must reach privacy too.
    admitted = not registration
    add(gj(Family.ACCESS, "hx-open-gate", Channel.EVENT, "entry_granted",
           {"door": DOORS[1], "method": "card", "granted": True, **person},
           {"grid": "g01", "building": "b01", "unit": "u1"}),
        "access" if admitted else "", "hx-open-gate")  # fmt: skip
    add(gj(Family.METER, "hx-open-gate", Channel.STATUS, "online",
           {"firmware": FIRMWARES[0]}, {"grid": "g01", "building": "b01"}),
        "device_status" if admitted else "", "hx-open-gate")  # fmt: skip

    # Topic levels that hold identifiers, on payloads that are refused anyway.
    for topic in (
        f"gridgate/v1/{code}/meter/id-{PHONES[0]}/telemetry",
        f"gridgate/v1/{code}/meter/{ID_B_HYPHENATED}/telemetry",
        f"gridgate/v1/{code}/meter/{ID_A_LOWER}-room/telemetry",
        f"gridgate/v1/{code}/meter/{PHONE_LEADING_DIGIT}/telemetry",
        f"gridgate/v1/{code}/id-{PHONES[0]}/{METER}/telemetry",
        f"gridgate/v1/{code}/meter/{METER}/{PHONES[3]}",
        f"vendor/acs/{code}/id-{PHONES[1]}/event",
        f"vendor/band/{code}/{ID_A_LOWER}x-room/up",
        f"gridgate/raw/{code}/dlt645/{PHONE_LEADING_DIGIT}",
    ):
        add((topic, b'{"v": 1, "device_id": '))
    # Payloads that are nothing but an identifier: their digest must be keyed.
    for payload in DIGEST_PAYLOADS:
        add((build_topic(code, Family.METER, METER, Channel.TELEMETRY), payload))

    if spoof:  # registered devices' ids on other communities' topics
        other, phone_community = f"c{unique}", f"c{spoof_phone(unique)}"
        out.extra_needles.add(spoof_phone(unique))
        add(gj(Family.METER, METER, Channel.TELEMETRY, "telemetry",
               {"meter_type": "electricity", "energy_kwh": SPOOF_KWH}, topic_community=other))  # fmt: skip
        add(gj(Family.SAFETY, SMOKE, Channel.TELEMETRY, "telemetry",
               {"detector": "smoke", "smoke_alarm": True}, topic_community=phone_community))  # fmt: skip
        add(acs(GATE_VENDOR, 1, "北门", topic_community=phone_community))
        out.spoofed = 3

    add(gj(Family.METER, METER, Channel.TELEMETRY, "telemetry",
           {"meter_type": "electricity", "energy_kwh": SENTINEL_KWH}), "meter", METER)  # fmt: skip
    return out


def spoof_adapters(unique: str) -> AdapterRegistry:
    """The shipped routes for this test's community and the two it is spoofed from."""
    routes = [
        route
        for community in (unique, f"c{unique}", f"c{spoof_phone(unique)}")
        for route in default_registry(community).routes
    ]
    return AdapterRegistry(routes)


@asynccontextmanager
async def gateway_task(settings: Settings, adapters: AdapterRegistry) -> AsyncIterator[GatewayMetrics]:  # fmt: skip
    """The gateway as a task of this event loop, with the given adapters (subscriptions)."""
    stop, ready = asyncio.Event(), asyncio.Event()
    metrics = GatewayMetrics()
    task = asyncio.create_task(run_gateway(settings, stop, metrics, adapters, ready=ready))
    waiting = asyncio.create_task(ready.wait())
    try:
        await asyncio.wait([waiting, task], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if task.done():
            await task  # it failed to start: its error
        assert ready.is_set(), "the gateway did not subscribe"
        yield metrics
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as state:
        yield state


def outbox_pending(registry_path: Path) -> int:
    db = sqlite3.connect(f"file:{registry_path}?mode=ro", uri=True)
    try:
        return int(
            db.execute("SELECT count(*) FROM alert_outbox WHERE state != 'sent'").fetchone()[0]
        )
    except sqlite3.OperationalError:  # no table yet
        return 1
    finally:
        db.close()


async def alerts_delivered(wire: AlertWire, receiver: Receiver, registry_path: Path) -> None:
    def done() -> bool:
        paths = {h.path for h in receiver.hits}
        return (
            wire.kinds() >= ALERT_KINDS
            and "/dispatch" in paths
            and any(p.startswith("/hook/") for p in paths)
            and outbox_pending(registry_path) == 0
        )

    await wait_for(done, 60, f"alerts {ALERT_KINDS} delivered by MQTT and webhook, outbox sent")


async def stored_per_device(influx: InfluxV1Client, hostile: Hostile) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for measurement, device in hostile.stored:
        rows = await influx.query(
            f'SELECT count("schema") FROM {qualified(measurement)}'
            f' WHERE "device" = {quote_literal(device)}'
        )
        out[measurement, device] = int(rows[0]["count"]) if rows else 0
    return out


@pytest.mark.parametrize(
    "mode", ["registered", "open", "process"],
    ids=["registration-on", "registration-off", "gridgate-run-process"],
)  # fmt: skip
async def test_no_personal_data_anywhere(
    mode: str,
    services: Services,
    unique: str,
    influx_db: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    in_process = mode != "process"
    community, registry_url, _ = registered_community(100, 23, unique, tmp_path)
    registry_path = tmp_path / "registry.sqlite3"
    audit_path = tmp_path / "audit.sqlite3"
    with Registry.open(registry_url) as registry:
        for csv in hostile_fleet(community, tmp_path, receiver):
            import_file(registry, csv, now_ns=time.time_ns())
        chief = next(m.id for m in registry.members() if m.role is Role.GRID_CHIEF)

    clock = SimClock.plan(600, 20)
    injections = plan_injections(community, clock, [parse_scenario("hostile@b01")], 23)
    messages = [
        (m.topic, m.payload) for m in Schedule(community, clock, seed=23, injections=injections)
    ]
    rng = random.Random(23)
    now_ms = int(time.time() * 1000)
    for case in malformed.CASES:  # every malformed case, several times, some with personal data
        messages += [
            malformed.bad_message(rng, unique, now_ms=now_ms, case=case)[:2] for _ in range(5)
        ]
    hostile = hostile_traffic(
        community, unique, now_ms, spoof=in_process, registration=mode != "open"
    )
    # identities at registered gates whatever the hour (at night the simulated residents
    # hardly go out, and the stored pseudonyms below must still be shown to arrive)
    messages += personal_entries(community)
    messages += hostile.messages  # the sentinel last

    adapters = default_registry()
    published: set[str] = set()
    for topic, payload in messages:
        published |= harvest(topic, payload, adapters)
    assert len(published) > 100, "the traffic must carry personal data for this test to mean anything"  # fmt: skip
    legitimate = [m.name for m in community.members] + [community.name, community.street]
    targets = without_legitimate(needles(published | planted() | hostile.extra_needles), legitimate)
    assert needles(planted()) <= targets  # no planted value is hidden by a member's name

    settings = community_settings(
        services, unique, influx_db, tmp_path, registry_url,
        require_registration=mode != "open", audit_path=audit_path,
    )  # fmt: skip
    hooks = {
        "GRIDGATE_EMERGENCY_WEBHOOK_URL": f"{receiver.origin}/dispatch",
        "GRIDGATE_WEBHOOK_SECRETS": json.dumps({receiver.origin: SECRET}),
    }
    wire = AlertWire(services.mqtt_host, services.mqtt_port, unique)
    sinks: dict[str, str] = {}
    try:
        if in_process:
            for name, value in hooks.items():
                monkeypatch.setenv(name, value)
            async with gateway_task(settings, spoof_adapters(unique)) as metrics:
                await asyncio.to_thread(
                    publish_all, services.mqtt_host, services.mqtt_port, messages
                )
                await wait_for(lambda: metrics.acked >= len(messages), 120, "every message handled")
                await alerts_delivered(wire, receiver, registry_path)
            assert metrics.acked == len(messages) and metrics.backlog == 0
            rejected = Counter(metrics.rejected)
            # Every line but the one listing the subscriptions: the test configured those,
            # one of them to a community level shaped like a phone (a spoof source).
            logs = "\n".join(
                line for line in caplog.text.splitlines() if "MQTT subscribed to" not in line
            )
            assert "DEBUG" in logs and "rejected" in logs  # captured at DEBUG, rejections logged
            sinks["logs (DEBUG)"] = logs
            sinks["metrics"] = metrics.prometheus() + json.dumps(metrics.snapshot(), ensure_ascii=False)  # fmt: skip
        else:
            log_path = tmp_path / "gateway.log"
            env = gateway_env(services, unique, influx_db, tmp_path) | hooks | {
                "GRIDGATE_REQUIRE_REGISTRATION": "true",
                "GRIDGATE_REGISTRY_URL": registry_url,
                "GRIDGATE_AUDIT_PATH": str(audit_path),
                "GRIDGATE_LOG_LEVEL": "DEBUG",
            }  # fmt: skip
            proc = start_gateway_process(env, log_path)
            try:
                await asyncio.to_thread(
                    publish_all, services.mqtt_host, services.mqtt_port, messages
                )
                async with InfluxV1Client(services.influx_url, influx_db) as influx:

                    async def sentinel_stored() -> bool:
                        rows = await influx.query(
                            f'SELECT count("energy_kwh") FROM {qualified("meter")}'
                            f' WHERE "energy_kwh" = {SENTINEL_KWH}'
                        )
                        return bool(rows) and int(rows[0]["count"]) > 0

                    deadline = time.monotonic() + 120
                    while not await sentinel_stored():
                        assert time.monotonic() < deadline, "the last message was never stored"
                        assert proc.poll() is None, log_path.read_text()[-3000:]
                        await asyncio.sleep(0.1)
                await alerts_delivered(wire, receiver, registry_path)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
            assert proc.returncode == 0, log_path.read_text()[-3000:]
            output = log_path.read_text(encoding="utf-8", errors="replace")
            assert " DEBUG " in output and "MQTT subscribed" in output
            [stopped] = re.findall(r"stopped: (\{.*\})", output)
            snapshot = json.loads(stopped)  # the metrics, as the process reports them
            assert snapshot["acked"] == len(messages) and snapshot["backlog"] == 0, snapshot
            rejected = Counter(snapshot["rejected"])
            sinks["gateway process output"] = output
    finally:
        wire.close()
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)

    # The API over what the gateway stored (R6), as an administrator of the community and
    # as its grid chief see it, and what it logged meanwhile.
    add_accounts(settings, {"leak-admin": {"role": "admin", "scope": unique}, chief: {}})
    caplog.clear()
    async with running_api(settings, ingest=False) as api:
        for user in ("leak-admin", chief):
            for where, text in (await crawl(api, await api.login(user))).items():
                sinks[f"API {user}: {where}"] = text
    assert any('"kind":"fire"' in t for k, t in sinks.items() if k.startswith("API"))
    sinks["API logs (DEBUG)"] = caplog.text

    # Every sink, each checked to be non-empty first.
    async with InfluxV1Client(services.influx_url, influx_db) as influx:
        sinks["InfluxDB"] = await influx_dump(influx, influx_db)
        stored = await stored_per_device(influx, hostile)
        spoofed = await influx.query(
            f'SELECT count("energy_kwh") FROM {qualified("meter")} WHERE "energy_kwh" = {SPOOF_KWH}'
        )
    assert "resident_ref=k1:" in sinks["InfluxDB"]  # identities arrived, pseudonymised
    dead_path = Path(settings.deadletter_path)
    dead = sqlite_tables(dead_path)["dead_letters"]
    assert len(dead) > len(malformed.CASES), "too few dead letters"
    sinks["dead-letter rows"] = rows_text({"dead_letters": dead})
    sinks["dead-letter file"] = file_text(dead_path)
    # The registry (alerts, their events and the outbox live there too) and the audit log.
    registry_rows = sqlite_tables(registry_path)
    for table in ("alerts", "alert_events", "alert_outbox", "devices", "members"):
        assert registry_rows[table], f"registry table {table} is empty"
    audit_rows = sqlite_tables(audit_path)
    assert audit_rows["audit_log"], "no audit records"
    sinks["registry rows"] = rows_text(registry_rows)
    sinks["registry file"] = file_text(registry_path)
    sinks["audit rows"] = rows_text(audit_rows)
    sinks["audit file"] = file_text(audit_path)
    # The alerts as members and webhooks received them.
    assert wire.kinds() >= ALERT_KINDS
    sinks["alerts on MQTT"] = wire.text()
    with receiver.lock:
        hits = list(receiver.hits)
    assert hits and all(h.signed for h in hits)
    sinks["webhook bodies"] = "\n".join(
        f"{h.path} {json.dumps(h.body, ensure_ascii=False)}" for h in hits
    )

    assert_no_leaks(sinks, targets)

    # What the hostile traffic came to (so that the search above meant something): spoofed
    # readings refused, identifier-shaped ids and places refused, devices' own `loc` keys
    # refused without echo, keyed digests, and every legal hostile reading stored.
    assert spoofed == [], "a spoofed reading was stored under the registered community"
    reasons = Counter(row["reason"] for row in dead)
    assert rejected["community_mismatch"] == reasons["community_mismatch"] == hostile.spoofed
    assert rejected["identifier_shaped"] == reasons["identifier_shaped"]
    # With admission on, an unregistered phone-shaped id is refused as `unregistered` first;
    # with it off, every identifier-shaped id and place must be refused as such.
    if mode == "open":
        assert reasons["identifier_shaped"] >= 9, reasons
    key_rows = [row for row in dead if "<key>" in row["detail"]]
    assert len(key_rows) >= hostile.key_echoes, "the loc-key cases were not refused as such"
    check_digests(dead, code=unique, kid=KeyRing.from_file(key_file(tmp_path)).current,
                  messages=messages, path=dead_path)  # fmt: skip
    assert stored == hostile.stored


def check_digests(
    dead: list[dict[str, Any]], *, code: str, kid: str, messages: list[tuple[str, bytes]],
    path: Path,
) -> None:  # fmt: skip
    """Dead-letter digests are keyed (``kid:hex`` under the key ring's current key): a payload
    that is only an ID number or a phone cannot be found by hashing every number."""
    digests = [row["payload_digest"] for row in dead]
    assert all(re.fullmatch(rf"{re.escape(kid)}:[0-9a-f]{{64}}", d) for d in digests), digests[:3]
    meter_topic = build_topic(code, Family.METER, METER, Channel.TELEMETRY)
    for payload in DIGEST_PAYLOADS:  # the identifier-only payloads are there
        assert any(
            row["topic"] == meter_topic and row["payload_bytes"] == len(payload) for row in dead
        ), payload
    text = rows_text({"dead_letters": dead}) + file_text(path)
    for payload in DIGEST_PAYLOADS:
        plain_digest = hashlib.sha256(payload).hexdigest()
        assert plain_digest not in text and f"{kid}:{plain_digest}" not in digests, (
            f"the dead letter of a payload that is only {payload!r} holds its plain SHA-256:"
            " the identifier is found again by hashing every possible number"
        )
    plain = {
        hashlib.sha256(prefix + payload).hexdigest()
        for _, payload in messages
        for prefix in (b"", DEAD_LETTER_DOMAIN)
    }
    found = sorted(h for h in plain if h in text)
    assert found == [], f"plain SHA-256 digests of payloads in the dead-letter store: {found[:3]}"
