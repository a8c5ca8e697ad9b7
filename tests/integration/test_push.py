"""Carrier-platform pushes (OneNET, CTWing) through the real HTTP listener of a running gateway:
signed, wrongly signed, malformed, replayed and unknown-device pushes → InfluxDB points, dead
letters and 401s, exactly counted; and a gateway SIGKILLed between receiving pushes and
answering them loses nothing once the platform's resends (simulated here) get their 200."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from adapters import ctwing, onenet
from devices.families import TELEMETRY_KIND, Channel, Family
from devices.reading import Reading
from gateway.pipeline.deadletter import DeadLetterStore
from gateway.settings import Settings
from gateway.storage.influx_v1 import InfluxV1Client
from simulators.community import Community, CommunityDevice
from simulators.mqtt_tools import drop_session
from tests.support.community import community_settings, simulate_recorded
from tests.support.gateway_util import gateway_env, running_gateway, start_gateway_process
from tests.support.influx_util import HOST, free_port
from tests.support.polling import wait_for
from tests.support.pushers import Resenders, wait_for_listener
from tests.support.registered import registered_community
from tests.support.services import Services
from tests.support.stored import stored_counts

pytestmark = pytest.mark.integration

ONENET_TOKEN = "onenet-token-for-tests"
CTWING_TOKEN = "ctwing-token-for-tests"
UNKNOWN_IMEI = "869999999999999"
JSON = {"content-type": "application/json"}
JSON_TYPE = "application/json"


def nbiot(community: Community, adapter: str) -> list[CommunityDevice]:
    return [d for d in community.devices if d.adapter == adapter]


def data_point(imei: str, at_ms: int, **fields: Any) -> dict[str, Any]:
    return {"type": 1, "imei": imei, "dev_id": 1, "ds_id": "report", "at": at_ms, "value": fields}


def water_report(device: CommunityDevice, at_ms: int, m3: float) -> bytes:
    """A CTWing dataReport whose APPdata is the meter's CJ/T 188 reply."""
    reading = Reading(device.device_id, Family.METER, Channel.TELEMETRY, TELEMETRY_KIND,
                      at_ms * 1_000_000, device.location, {"meter_type": "water", "water_m3": m3})  # fmt: skip
    return ctwing.encode(reading)[1]


def ctwing_message(imei: str, at_ms: int, kind: str = "dataReport", **extra: Any) -> bytes:
    body = {"messageType": kind, "deviceId": f"p{imei}", "IMEI": imei, "timestamp": at_ms, **extra}
    return onenet.compact(body).encode()


async def stored(services: Services, database: str, measurement: str, device: str) -> int:
    async with InfluxV1Client(services.influx_url, database) as influx:
        rows = await influx.query(f'SELECT * FROM "{measurement}" WHERE "device" = \'{device}\'')
    return len(rows)


def push_settings(
    services: Services, unique: str, influx_db: str, tmp: Path, registry_url: str, port: int
) -> Settings:
    return community_settings(
        services, unique, influx_db, tmp, registry_url,
        push_port=port, onenet_token=SecretStr(ONENET_TOKEN),
        ctwing_token=SecretStr(CTWING_TOKEN), influx_retention=False,
    )  # fmt: skip


async def test_onenet_and_ctwing_pushes_are_verified_stored_and_dead_lettered_exactly(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    community, registry_url, _ = registered_community(60, 61, unique, tmp_path, nbiot=0.5)
    smoke, meters = nbiot(community, "onenet"), nbiot(community, "ctwing")
    assert len(smoke) >= 2 and len(meters) >= 2
    port = free_port()
    settings = push_settings(services, unique, influx_db, tmp_path, registry_url, port)
    t0 = time.time_ns() // 1_000_000 - 60_000
    s0, s1, m0, m1 = (
        smoke[0].device_id,
        smoke[1].device_id,
        meters[0].device_id,
        meters[1].device_id,
    )
    try:
        async with (
            running_gateway(settings) as metrics,
            httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=30) as http,
        ):
            await wait_for_listener(http, "/push/onenet")
            # OneNET's URL verification: echo msg when signed, 401 when not
            sig = onenet.signature(ONENET_TOKEN, "n0", "hello")
            answer = await http.get("/push/onenet", params={"msg": "hello", "nonce": "n0",
                                                            "signature": sig})  # fmt: skip
            assert (answer.status_code, answer.text) == (200, "hello")
            bad = {"msg": "hello", "nonce": "n0", "signature": onenet.signature("x", "n0", "hi")}
            assert (await http.get("/push/onenet", params=bad)).status_code == 401

            async def onenet_push(body: bytes) -> int:
                return (await http.post("/push/onenet", content=body, headers=JSON)).status_code

            # a signed push of three data points and an online message
            msgs = [data_point(s0, t0 + i, smoke_state=0, temperature=21.5, battery=90)
                    for i in range(3)]  # fmt: skip
            msgs.append({"type": 2, "imei": s1, "dev_id": 2, "status": 1, "at": t0})
            signed = onenet.body(msgs, ONENET_TOKEN, "n1")
            assert await onenet_push(signed) == 200
            assert await onenet_push(signed) == 200  # replayed: answered, not stored again
            # signed with another token, and a signed body altered on the way: refused
            forged = onenet.body([data_point(s0, t0 + 10, temperature=99.0)], "guess", "n2")
            assert await onenet_push(forged) == 401
            assert await onenet_push(signed.replace(b"21.5", b"99.5")) == 401
            # malformed: dead-lettered and answered, so OneNET does not resend it forever
            assert await onenet_push(b"{not json") == 200
            # a device the registry does not know: dead-lettered
            stranger = onenet.body([data_point(UNKNOWN_IMEI, t0, temperature=20.0)],
                                   ONENET_TOKEN, "n3")  # fmt: skip
            assert await onenet_push(stranger) == 200
            # smoke: the alarm event
            alarm = onenet.body([data_point(s1, t0 + 5, smoke_state=1)], ONENET_TOKEN, "n4")
            assert await onenet_push(alarm) == 200

            async def ctwing_push(body: bytes, token: str = CTWING_TOKEN) -> int:
                url = f"/push/ctwing/{token}"
                return (await http.post(url, content=body, headers=JSON)).status_code

            report = water_report(meters[0], t0, 123.45)  # APPdata: a CJ/T 188 reply
            assert await ctwing_push(report) == 200
            assert await ctwing_push(report) == 200  # replayed
            fields = ctwing_message(m1, t0, payload={"water_m3": 77.5, "battery": 81})
            assert await ctwing_push(fields) == 200
            assert await ctwing_push(fields, token="wrong-token") == 401
            assert await ctwing_push(b"\x00\xff not json") == 200
            command = ctwing_message(m1, t0 + 1, kind="commandResponse", result={"ok": 1})
            assert await ctwing_push(command) == 200

            assert metrics.push_requests == {
                ("onenet", "verified"): 1,
                ("onenet", "unauthorized"): 4,  # 3 above, and wait_for_listener's bare GET
                ("onenet", "accepted"): 3,
                ("onenet", "replayed"): 1,
                ("onenet", "malformed"): 1,
                ("ctwing", "accepted"): 3,
                ("ctwing", "replayed"): 1,
                ("ctwing", "unauthorized"): 1,
                ("ctwing", "malformed"): 1,
            }
            assert metrics.backlog == 0  # every 200 came after the ack
            assert dict(metrics.rejected) == {
                "not_json": 2,
                "unregistered": 1,
                "unsupported_message": 1,
            }
        db = settings.influx_database
        assert await stored(services, db, "safety", s0) == 3
        assert await stored(services, db, "safety", s1) == 1  # the alarm
        assert await stored(services, db, "device_status", s1) == 1  # online
        assert await stored(services, db, "meter", m0) == 1
        assert await stored(services, db, "meter", m1) == 1
        assert await stored(services, db, "safety", UNKNOWN_IMEI) == 0
        dead = DeadLetterStore(settings.deadletter_path, keyring=None)
        try:
            assert dead.count() == 4
            assert all("token" not in d.topic + d.detail for d in dead.recent())
        finally:
            dead.close()
    finally:
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)


async def test_a_gateway_killed_between_push_and_answer_loses_nothing_and_stores_once(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    community, registry_url, _ = registered_community(30, 67, unique, tmp_path, nbiot=0.5)
    smoke = nbiot(community, "onenet")
    port = free_port()
    env = gateway_env(services, unique, influx_db, tmp_path) | {
        "GRIDGATE_REQUIRE_REGISTRATION": "true",
        "GRIDGATE_REGISTRY_URL": registry_url,
        "GRIDGATE_PUSH_PORT": str(port),
        "GRIDGATE_ONENET_TOKEN": ONENET_TOKEN,
        "GRIDGATE_CTWING_TOKEN": CTWING_TOKEN,
        "GRIDGATE_INFLUX_RETENTION": "false",
        "GRIDGATE_AUDIT_PATH": str(tmp_path / "audit.sqlite3"),
    }
    log = tmp_path / "gateway.log"
    t0 = time.time_ns() // 1_000_000 - 120_000
    total = 400
    bodies = [
        onenet.body([data_point(smoke[i % len(smoke)].device_id, t0 + i, smoke_state=0,
                                temperature=20.0 + i / 100)], ONENET_TOKEN, f"k{i}")
        for i in range(total)
    ]  # fmt: skip
    proc = start_gateway_process(env, log)
    try:
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=30) as http:
            await wait_for_listener(http, "/push/onenet")
            # OneNET resends what got no 200, until it does
            sending = Resenders(http, total, lambda i, _: ("/push/onenet", bodies[i], JSON_TYPE))
            proc = await sending.through_a_kill(proc, lambda: start_gateway_process(env, log))
        devices = {d.device_id for d in smoke}
        counts = [await stored(services, influx_db, "safety", d) for d in sorted(devices)]
        assert sum(counts) == total  # every push once: none lost, none twice
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        drop_session(services.mqtt_host, services.mqtt_port, env["GRIDGATE_MQTT_CLIENT_ID"])


async def test_a_community_with_nbiot_devices_lands_exactly_through_both_sources(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    """The simulator's NB-IoT smoke detectors (OneNET) and water meters (CTWing) push over
    HTTP while everything else publishes on MQTT: every reading stored once, at its time."""
    community, registry_url, fleet = registered_community(300, 71, unique, tmp_path, nbiot=0.3)
    pushed = {d.device_id for d in community.devices if d.adapter in ("onenet", "ctwing")}
    port = free_port()
    settings = push_settings(services, unique, influx_db, tmp_path, registry_url, port)
    settings = settings.model_copy(update={"influx_retention": True})  # as stored_counts reads
    try:
        async with running_gateway(settings) as metrics:
            report, expected = await simulate_recorded(
                services,
                ["--households", "300", "--speed", "600", "--duration", "10", "--seed", "71",
                 "--community", unique, "--fleet-out", str(fleet), "--nbiot-share", "0.3",
                 "--push-url", f"http://{HOST}:{port}", "--onenet-token", ONENET_TOKEN,
                 "--ctwing-token", CTWING_TOKEN],
                tmp_path / "sent.json",
            )  # fmt: skip
            sent = report["publisher"]["published_ok"]
            assert sent == report["publisher"]["total"] == expected.messages
            await wait_for(lambda: metrics.acked >= sent, 60, "every message handled")
        assert metrics.rejected == {} and metrics.dead_lettered == 0
        answered = sum(
            n for (_, outcome), n in metrics.push_requests.items() if outcome == "accepted"
        )
        async with InfluxV1Client(services.influx_url, influx_db) as influx:
            counts = await stored_counts(influx)
        by_push = {k: n for k, n in expected.counts.items() if k[1] in pushed}
        assert by_push and answered >= len(by_push)  # pushes arrived through the listener
        wrong = {
            k: (n, counts.get(k, 0)) for k, n in expected.counts.items() if counts.get(k, 0) != n
        }
        assert not wrong, sorted(wrong.items())[:5]
        assert counts.keys() == expected.counts.keys()
    finally:
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)
