"""InfluxDB down for longer than the broker's queue would hold: `gridgate run` (a real process)
spools every batch to disk, acks it, and replays it once InfluxDB is back — the exact set of
points, also when the gateway is SIGKILLed in the middle of spooling or of the replay.

A private Mosquitto with small windows (in flight + queued = 1,000 messages; beyond that it
drops QoS 1 messages, as production's 1,000,000 would after an 11-minute outage at 1.5k/s)
and a private influxd that the test stops: the shared services serve other tests meanwhile.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters import gridgate_json
from devices.reading import Reading
from gateway.alerts.model import Alert
from gateway.alerts.store import AlertStore
from gateway.audit.store import AuditStore
from gateway.registry import Registry
from gateway.storage.influx_v1 import InfluxV1Client
from simulators.mqtt_tools import publish_all
from tests.support.broker import PrivateBroker
from tests.support.gateway_util import (
    gateway_env,
    last_stop_report,
    pipeline_log,
    start_gateway_process,
)
from tests.support.influx_util import PrivateInflux
from tests.support.polling import wait_for
from tests.support.readings import expected_points, family_readings, stored_points
from tests.support.registered import registered_community
from tests.support.services import Services
from tests.support.spool import spooled_readings

pytestmark = pytest.mark.integration

INFLIGHT, QUEUED = 500, 500  # the broker holds at most this many for the gateway
PER_FAMILY = 750  # 3,000 messages, one reading each: three times what the broker would hold
CHUNK = 500


@pytest.fixture
def small_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    broker = PrivateBroker(tmp_path / "mq", inflight=INFLIGHT, queued=QUEUED)
    broker.start()
    yield broker
    broker.stop()


async def until_exactly(influx: InfluxV1Client, readings: list[Reading], log_path: Path) -> None:
    """Until InfluxDB holds exactly the points of `readings`: one more is a failure at once,
    one missing after 120 s."""
    expected = expected_points(readings)
    deadline = time.monotonic() + 120
    while (stored := await stored_points(influx)) != expected:
        assert not stored - expected, f"not published: {sorted(stored - expected)[:3]}"
        if time.monotonic() > deadline:
            pytest.fail(f"lost: {sorted(expected - stored)[:3]}\n{pipeline_log(log_path)}")
        await asyncio.sleep(0.2)


def stop_gracefully(gateway: subprocess.Popen[bytes]) -> None:
    if gateway.poll() is None:
        gateway.send_signal(signal.SIGTERM)
        try:
            gateway.wait(30)
        except subprocess.TimeoutExpired:
            gateway.kill()
            gateway.wait(10)


@pytest.mark.parametrize("kill", ["none", "mid-spool", "mid-replay"])
async def test_an_outage_longer_than_the_broker_queue_is_spooled_and_replayed_exactly(
    small_broker: PrivateBroker,
    private_influx: PrivateInflux,
    services: Services,
    unique: str,
    influx_db: str,
    tmp_path: Path,
    kill: str,
) -> None:
    readings = family_readings(unique, PER_FAMILY, int(time.time() * 1000) - 3_600_000)
    messages = [gridgate_json.encode(r) for r in readings]
    assert len(messages) > 2 * (INFLIGHT + QUEUED)  # without a spool the broker drops the rest
    spool_dir = tmp_path / "spool"
    env = gateway_env(services, unique, influx_db, tmp_path) | {
        "GRIDGATE_MQTT_PORT": str(small_broker.port),
        "GRIDGATE_INFLUX_URL": private_influx.url,
        # small batches: many spool records, so a replay takes long enough to be cut short
        "GRIDGATE_BATCH_SIZE": "10" if kill == "mid-replay" else "100",
        "GRIDGATE_INFLUX_TIMEOUT_S": "2",
        "GRIDGATE_SPOOL_PROBE_S": "0.2",
    }
    log_path = tmp_path / "gateway.log"
    gateway = start_gateway_process(env, log_path)
    try:
        private_influx.stop()
        published = 0
        for start in range(0, len(messages), CHUNK):
            chunk = messages[start : start + CHUNK]
            await asyncio.to_thread(publish_all, "127.0.0.1", small_broker.port, chunk)
            published += len(chunk)
            # the gateway keeps up by spooling: the broker never holds more than a chunk
            await wait_for(
                lambda n=published: spooled_readings(spool_dir) >= n, 60,  # type: ignore[misc]
                f"{published} readings spooled",
            )  # fmt: skip
            if kill == "mid-spool" and published == 2 * CHUNK:
                gateway.kill()  # SIGKILL: what was spooled and acked must survive it
                gateway.wait(10)
                # and the gateway starts, and subscribes, while InfluxDB is still down
                gateway = start_gateway_process(env, log_path)
        assert gateway.poll() is None, pipeline_log(log_path)
        if kill != "mid-spool":
            # every message spooled once: acked after the fsync, so never redelivered
            assert spooled_readings(spool_dir) == len(messages)

        private_influx.start()
        async with InfluxV1Client(private_influx.url, influx_db) as influx:
            if kill == "mid-replay":
                while not await stored_points(influx):
                    await asyncio.sleep(0.02)
                gateway.kill()
                gateway.wait(10)
                at_kill = await stored_points(influx)
                assert len(at_kill) < len(messages), "the replay was not cut short"
                # the segment is deleted only once all of it is written: it is all still
                # there, and its first lines are written again — the same points
                assert spooled_readings(spool_dir) == len(messages)
                gateway = start_gateway_process(env, log_path)

            await until_exactly(influx, readings, log_path)
        await wait_for(lambda: spooled_readings(spool_dir) == 0, 30, "an empty spool")
        stop_gracefully(gateway)
        assert gateway.returncode == 0, pipeline_log(log_path)
        report = last_stop_report(log_path.read_text())
        assert report["spool_bytes"] == 0 and report["backlog"] == 0, report
        if kill == "none":  # one process saw it all: every reading spooled once, replayed once
            assert report["spooled"] == report["replayed"] == len(messages), report
            assert report["acked"] == len(messages), report
    finally:
        stop_gracefully(gateway)


def spool_full_alerts(registry_url: str, audit_path: Path) -> list[Alert]:
    with Registry.open(registry_url) as registry, AuditStore(audit_path) as audit:
        return [a for a in AlertStore(registry, audit).alerts() if a.kind == "spool_full"]


async def test_a_full_spool_leaves_the_rest_at_the_broker_and_raises_an_alert(
    private_influx: PrivateInflux,
    services: Services,
    unique: str,
    influx_db: str,
    tmp_path: Path,
) -> None:
    """SPOOL_MAX_MB=1 and 8,000 readings (about three spools' worth) while InfluxDB is down:
    the gateway spools until full, stops acking (the broker keeps the rest), and the community's
    duty desk gets a level II `spool_full` alert; once InfluxDB is back, every reading is
    stored and the alert clears itself."""
    _, registry_url, _ = registered_community(60, 91, unique, tmp_path)
    broker = PrivateBroker(tmp_path / "big-mq")  # the production windows: it holds the rest
    broker.start()
    readings = family_readings(unique, 2000, int(time.time() * 1000) - 3_600_000)
    spool_dir, audit_path = tmp_path / "spool", tmp_path / "audit.sqlite3"
    env = gateway_env(services, unique, influx_db, tmp_path) | {
        "GRIDGATE_MQTT_PORT": str(broker.port),
        "GRIDGATE_INFLUX_URL": private_influx.url,
        "GRIDGATE_INFLUX_TIMEOUT_S": "2",
        "GRIDGATE_SPOOL_PROBE_S": "0.2",
        "GRIDGATE_SPOOL_MAX_MB": "1",
        "GRIDGATE_REGISTRY_URL": registry_url,
        "GRIDGATE_AUDIT_PATH": str(audit_path),
    }
    log_path = tmp_path / "gateway.log"
    gateway = start_gateway_process(env, log_path)
    try:
        private_influx.stop()
        await asyncio.to_thread(
            publish_all, "127.0.0.1", broker.port, [gridgate_json.encode(r) for r in readings]
        )
        await wait_for(lambda: bool(spool_full_alerts(registry_url, audit_path)), 60, "alert")
        [alert] = spool_full_alerts(registry_url, audit_path)
        assert alert.severity.name == "II" and alert.place == unique
        held = spooled_readings(spool_dir)
        assert 1000 < held < len(readings) // 2, held  # full: the rest waits at the broker
        assert sum(p.stat().st_size for p in spool_dir.glob("*.spool")) <= 1024 * 1024
        assert "spool full" in log_path.read_text()

        private_influx.start()
        async with InfluxV1Client(private_influx.url, influx_db) as influx:
            await until_exactly(influx, readings, log_path)
        await wait_for(
            lambda: spool_full_alerts(registry_url, audit_path)[0].state.value == "cleared",
            30, "the alert to clear",
        )  # fmt: skip
    finally:
        stop_gracefully(gateway)
        broker.stop()
