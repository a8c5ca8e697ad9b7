"""MQTT → gateway → InfluxDB through the real services: exact counts, exact values, bad input
dead-lettered, and no loss when the gateway is killed mid-stream."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from adapters import gridgate_json
from devices.families import Family
from gateway.pipeline.deadletter import DeadLetterStore
from gateway.storage.influx_v1 import InfluxV1Client
from gateway.storage.retention import qualified, rp_name
from simulators.mqtt_tools import drop_session, publish_all
from tests.support.gateway_util import (
    gateway_env,
    running_gateway,
    settings_for,
    start_gateway_process,
)
from tests.support.polling import wait_for
from tests.support.readings import expected_points, family_readings, stored_points
from tests.support.services import Services

pytestmark = pytest.mark.integration


async def test_every_family_lands_exactly_with_same_values(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    n = 150
    readings = family_readings(unique, n, int(time.time() * 1000) - 3_600_000)
    settings = settings_for(services, unique, influx_db, tmp_path)
    try:
        async with running_gateway(settings) as metrics:
            await asyncio.to_thread(
                publish_all,
                services.mqtt_host,
                services.mqtt_port,
                [gridgate_json.encode(r) for r in readings],
            )
            await wait_for(lambda: metrics.written >= 4 * n, 60, "all readings written")
        assert metrics.written == 4 * n and metrics.dead_lettered == 0
        async with InfluxV1Client(services.influx_url, influx_db) as influx:
            for family in Family:
                assert await influx.count(family.value, "schema", rp=rp_name(family.value)) == n
                rows = await influx.query(f"SELECT * FROM {qualified(family.value)}")
                stored = {(row["device"], row["time"]): row for row in rows}
                for r in (r for r in readings if r.family is family):
                    row = stored[(r.device_id, r.time_ns)]
                    for key, value in r.values.items():
                        assert row[key] == value, (family, key)
                    assert row["building"] == r.location.building
                    assert row["unit"] == r.location.unit
                    if family is Family.ACCESS:  # whereabouts: the policy keeps building/unit only
                        assert row.get("room") is None
                    else:
                        assert row["room"] == r.location.room
                    assert row["kind"] == r.kind
    finally:
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)


async def test_malformed_messages_are_dead_lettered_and_gateway_keeps_running(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    good = family_readings(unique, 20, int(time.time() * 1000) - 60_000)
    bad: list[tuple[str, bytes]] = [
        (f"gridgate/v1/{unique}/meter/m-1/telemetry", b"{not json"),
        (f"gridgate/v1/{unique}/meter/m-1/telemetry", b'{"device_id": "m-2", "ts": 1732190000000, "data": {}}'),
        (f"gridgate/v1/{unique}/safety/s-1/telemetry", b'{"device_id": "s-1", "ts": 1732190000000, "data": {"gas_lel_pct": 900}}'),
        (f"gridgate/v1/{unique}/toaster/t-1/telemetry", b'{"device_id": "t-1"}'),
        (f"gridgate/v1/{unique}/elder/w-1/telemetry", b'{"device_id": "w-1", "ts": 4000000000000, "data": {}}'),
        (f"gridgate/v1/{unique}/access/a-1/event", b'{"device_id": "a-1", "ts": "x", "data": {"person_name": "\xe5\xbc\xa0\xe4\xb8\x89", "id_number": "11010519491231002X"}}'),
        (f"gridgate/v1/{unique}/meter/m-1/telemetry", b"{" + b" " * 70_000 + b"}"),
    ]  # fmt: skip
    messages = (
        [gridgate_json.encode(r) for r in good[:40]]
        + bad
        + [gridgate_json.encode(r) for r in good[40:]]
    )
    settings = settings_for(services, unique, influx_db, tmp_path)
    try:
        async with running_gateway(settings) as metrics:
            await asyncio.to_thread(publish_all, services.mqtt_host, services.mqtt_port, messages)
            await wait_for(lambda: metrics.acked >= len(messages), 60, "all messages handled")
        assert metrics.written == len(good)
        assert metrics.dead_lettered == len(bad)
        assert metrics.rejected == {
            "not_json": 1, "device_id_mismatch": 1, "out_of_range": 1, "unknown_family": 1,
            "future_timestamp": 1, "wrong_type": 1, "oversize": 1,
        }  # fmt: skip
        store = DeadLetterStore(settings.deadletter_path)
        letters = store.recent(100)
        store.close()
        assert len(letters) == len(bad)
        assert all(len(d.payload_digest.split(":")[1]) == 64 and d.reason for d in letters)
        raw = Path(settings.deadletter_path).read_bytes()
        assert b"11010519491231002X" not in raw and "张三".encode() not in raw
    finally:
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)


async def test_no_reading_lost_when_gateway_is_killed_mid_stream(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    n = 3000  # per family: 12 000 messages
    readings = family_readings(unique, n, int(time.time() * 1000) - 7_200_000)
    expected = expected_points(readings)
    assert len(expected) == 4 * n  # every reading its own point (device, time)
    env = gateway_env(services, unique, influx_db, tmp_path)
    log_path = tmp_path / "gateway.log"
    gateway = start_gateway_process(env, log_path)  # returns once subscribed: schema exists
    try:
        async with InfluxV1Client(services.influx_url, influx_db) as influx:

            async def stored() -> int:
                return sum(
                    [await influx.count(f.value, "schema", rp=rp_name(f.value)) for f in Family]
                )

            publisher = asyncio.create_task(
                asyncio.to_thread(
                    publish_all,  # returns once the broker acknowledged every message
                    services.mqtt_host,
                    services.mqtt_port,
                    [gridgate_json.encode(r) for r in readings],
                    max_inflight=200,
                )
            )
            # Kill it once some, but not all, readings are in InfluxDB.
            deadline = time.monotonic() + 60
            while (landed := await stored()) < 1000 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert 0 < landed < 4 * n, f"kill point not reached ({landed} stored)"
            os.kill(gateway.pid, signal.SIGKILL)
            gateway.wait(10)
            assert await publisher == len(readings)  # all published and acknowledged
            landed_at_kill = await stored()
            assert landed_at_kill < 4 * n, "everything landed before the kill: test proves nothing"

            gateway = start_gateway_process(env, log_path)
            deadline = time.monotonic() + 120
            while (landed := await stored()) < 4 * n and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert landed == 4 * n, log_path.read_text()[-3000:]
            stored_set = await stored_points(influx)
            # exactly what was published: nothing lost, nothing altered, nothing extra
            assert not expected - stored_set, f"lost: {sorted(expected - stored_set)[:5]}"
            assert not stored_set - expected, f"not published: {sorted(stored_set - expected)[:5]}"
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(30)
        drop_session(services.mqtt_host, services.mqtt_port, env["GRIDGATE_MQTT_CLIENT_ID"])


async def test_retention_policies_are_created_and_survive_a_dropped_database(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    first = family_readings(unique, 20, int(time.time() * 1000) - 120_000)
    second = family_readings(unique, 20, int(time.time() * 1000) - 60_000)
    settings = settings_for(services, unique, influx_db, tmp_path)
    try:
        async with (
            running_gateway(settings) as metrics,
            InfluxV1Client(services.influx_url, influx_db) as influx,
        ):
            policies = {
                row["name"]: row["duration"]
                for row in await influx.query(f'SHOW RETENTION POLICIES ON "{influx_db}"')
            }
            # health and access data are kept far shorter than meter data (R3.7)
            assert policies["rp_elder"] == "2160h0m0s"  # 90 days
            assert policies["rp_access"] == "720h0m0s"  # 30 days
            assert policies["rp_meter"] == "26280h0m0s"  # 3 years
            await asyncio.to_thread(
                publish_all,
                services.mqtt_host,
                services.mqtt_port,
                [gridgate_json.encode(r) for r in first],
            )
            await wait_for(lambda: metrics.written >= 80, 30, "first readings")
            await influx.query(f'DROP DATABASE "{influx_db}"')  # an operator's mistake
            await asyncio.to_thread(
                publish_all,
                services.mqtt_host,
                services.mqtt_port,
                [gridgate_json.encode(r) for r in second],
            )
            await wait_for(lambda: metrics.written >= 160, 30, "readings after the drop")
            assert metrics.dead_lettered == 0
            for family in Family:
                assert await influx.count(family.value, "schema", rp=rp_name(family.value)) == 20
    finally:
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)
