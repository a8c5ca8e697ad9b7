"""`gridgate run --workers 2`: two ingest processes share a registered community's traffic
through one MQTT shared subscription. Every reading lands in InfluxDB exactly once (the exact
set of points), two smoke alarms sent twenty times each raise one alert each although both
workers see them, and a worker SIGKILLed mid-stream is restarted by the supervisor and gets
what its broker session kept: nothing lost.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters import gridgate_json
from devices.families import Channel, Family
from devices.reading import Reading
from gateway.alerts.store import AlertStore
from gateway.audit.store import AuditStore
from gateway.registry import Registry
from gateway.storage.influx_v1 import InfluxV1Client
from simulators.community import Community, Equipment
from simulators.mqtt_tools import publish_all
from tests.support.broker import PrivateBroker
from tests.support.gateway_util import gateway_env, last_stop_report, pipeline_log
from tests.support.polling import wait_for
from tests.support.postgres import PrivatePostgres
from tests.support.readings import Point, expected_points, family_readings, stored_points
from tests.support.registered import registered_community
from tests.support.services import ROOT, Services

pytestmark = pytest.mark.integration

READINGS = 3000  # electricity meter readings: no rule fires on them
ALARMS = 20  # per smoke detector, spread through the stream
CHUNK = 250


def smoke_alarms(community: Community) -> list[list[tuple[str, bytes]]]:
    """Twenty alarms from each of two smoke detectors in two units of one building (a fire
    alert per unit, and one building-fire incident over both)."""
    by_unit = {}
    for d in community.devices:
        if d.equipment is Equipment.SMOKE_DETECTOR:
            by_unit.setdefault((d.location.building, d.location.unit), d)
    detectors = list(by_unit.values())[:2]
    assert len(detectors) == 2, "the community needs two units with smoke detectors"
    now = time.time_ns()
    return [
        [
            gridgate_json.encode(
                Reading(
                    device_id=d.device_id,
                    family=Family.SAFETY,
                    channel=Channel.TELEMETRY,
                    kind="telemetry",
                    time_ns=now - (ALARMS - i) * 1_000_000_000,
                    location=d.location,
                    values={"detector": "smoke", "smoke_alarm": True},
                )
            )
            for i in range(ALARMS)
        ]
        for d in detectors
    ]


def start_workers(env: dict[str, str], log_path: Path, workers: int = 2) -> subprocess.Popen[bytes]:
    """`gridgate run --workers N`; returns once every worker has subscribed."""
    start = log_path.read_text().count("MQTT subscribed") if log_path.exists() else 0
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "run",
                "--no-progress",
                "--workers",
                str(workers),
            ],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while log_path.read_text().count("MQTT subscribed") < start + workers:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("workers did not subscribe:\n" + log_path.read_text()[-3000:])
        time.sleep(0.05)
    return proc


def worker_pid(log_text: str, tag: str) -> int:
    """The newest pid the supervisor started for worker `tag`."""
    return int(re.findall(rf"worker {tag} started \(pid (\d+)\)", log_text)[-1])


def worker_reports(log_text: str) -> dict[str, dict[str, int]]:
    """Each worker's last stop report, by tag."""
    reports = {}
    for tag in ("w1", "w2"):
        own = "\n".join(ln for ln in log_text.splitlines() if f" {tag} gridgate: stopped:" in ln)
        reports[tag] = last_stop_report(own)
    return reports


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
@pytest.mark.parametrize("kill", [False, True], ids=["steady", "sigkill-one"])
async def test_two_workers_share_the_traffic_exactly_once(
    services: Services,
    postgres: PrivatePostgres,
    unique: str,
    influx_db: str,
    tmp_path: Path,
    kill: bool,
    database: str,
) -> None:
    """The shared state (registry, alerts, outbox) in PostgreSQL, as across hosts, or in one
    SQLite file in WAL mode, as on one host."""
    url = postgres.new_database() if database == "postgresql" else None
    community, registry_url, _ = registered_community(30, 77, unique, tmp_path, url)
    base_ms = int(time.time() * 1000) - 3_600_000
    meters = [r for r in family_readings(unique, READINGS, base_ms) if r.family is Family.METER]
    alarms = smoke_alarms(community)
    messages = [gridgate_json.encode(r) for r in meters]
    for n, alarm in enumerate(alarms):  # interleaved: each worker gets some of each
        for i, message in enumerate(alarm):
            messages.insert((i * len(messages)) // ALARMS + n, message)
    audit_path = tmp_path / "audit.sqlite3"
    env = gateway_env(services, unique, influx_db, tmp_path) | {
        "GRIDGATE_REGISTRY_URL": registry_url,
        "GRIDGATE_AUDIT_PATH": str(audit_path),
        "GRIDGATE_MQTT_SHARED_GROUP": f"g-{unique}",
    }
    log_path = tmp_path / "workers.log"
    supervisor = start_workers(env, log_path)
    try:
        for start in range(0, len(messages), CHUNK):
            chunk = messages[start : start + CHUNK]
            await asyncio.to_thread(publish_all, services.mqtt_host, services.mqtt_port, chunk)
            if kill and start == len(messages) // 2 // CHUNK * CHUNK:
                os.kill(worker_pid(log_path.read_text(), "w1"), signal.SIGKILL)
        async with InfluxV1Client(services.influx_url, influx_db) as influx:
            expected = expected_points(meters)
            deadline = time.monotonic() + 120
            while (stored := await stored_points(influx)) != expected:
                assert not stored - expected, f"not published: {sorted(stored - expected)[:3]}"
                if time.monotonic() > deadline:
                    missing = sorted(expected - stored)[:3]
                    pytest.fail(f"lost: {missing}\n{pipeline_log(log_path)}")
                await asyncio.sleep(0.2)
            assert len(stored) == READINGS
        if kill:
            await wait_for(
                lambda: log_path.read_text().count("worker w1 started") == 2, 30, "w1 restarted"
            )
            assert "worker w1 died (signal 9)" in log_path.read_text()
        with Registry.open(registry_url) as registry, AuditStore(audit_path) as audit:
            store = AlertStore(registry, audit)
            alerts = store.alerts()
            assert sorted(a.kind for a in alerts) == ["building_fire", "fire", "fire"], [
                (a.kind, a.place, a.key) for a in alerts
            ]
            assert len({a.place for a in alerts if a.kind == "fire"}) == 2
            for alert in alerts:  # raised once, although both workers saw the alarms
                raised = [e for e in store.events(alert.id) if e.step == "raised"]
                assert len(raised) == 1, store.events(alert.id)
    finally:
        if supervisor.poll() is None:
            supervisor.send_signal(signal.SIGTERM)
            supervisor.wait(90)
    text = log_path.read_text()
    assert supervisor.returncode == 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    reports = worker_reports(text)
    for tag, report in reports.items():
        assert report["received"] > 0, f"{tag} got no share: {report}"
        assert report["backlog"] == 0 and report["dead_lettered"] == 0, report
    if not kill:  # one stop report per worker covers its whole run: the shares add up
        assert sum(r["received"] for r in reports.values()) == len(messages), reports


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(90)


def mosquitto_version() -> tuple[int, ...]:
    out = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout
    found = re.search(r"mosquitto version (\d+)\.(\d+)\.(\d+)", out)
    assert found, out[:200]
    return tuple(int(g) for g in found.groups())


@pytest.mark.parametrize("workers", [1, 2])
async def test_what_a_broker_restart_does_to_durable_sessions(
    services: Services, unique: str, influx_db: str, tmp_path: Path, workers: int
) -> None:
    """docs/scale-out.md, measured: the gateway stopped, the broker restarted, readings
    published while no gateway is connected, then the gateway back. One process (a plain
    durable subscription) gets them all. Two workers (`$share`) on Mosquitto < 2.0.12 lose
    exactly those published before a worker subscribed again: the broker does not restore
    shared subscriptions of durable sessions from its persistence. What comes after is
    delivered either way, because gridgate subscribes again on every connection."""
    broker = PrivateBroker(tmp_path / "mq")
    broker.start()
    base_ms = int(time.time() * 1000) - 3_600_000
    meters = [r for r in family_readings(unique, 900, base_ms) if r.family is Family.METER]
    before, away, after = meters[:300], meters[300:600], meters[600:]
    env = gateway_env(services, unique, influx_db, tmp_path) | {
        "GRIDGATE_MQTT_PORT": str(broker.port),
        "GRIDGATE_MQTT_SHARED_GROUP": f"g-{unique}" if workers > 1 else "",
    }
    log_path = tmp_path / "gateway.log"

    async def publish(readings: list[Reading]) -> None:
        encoded = [gridgate_json.encode(r) for r in readings]
        await asyncio.to_thread(publish_all, "127.0.0.1", broker.port, encoded)

    try:
        gateway = start_workers(env, log_path, workers)
        try:
            await publish(before)
            async with InfluxV1Client(services.influx_url, influx_db) as influx:
                await wait_for_points(influx, expected_points(before), log_path)
        finally:
            stop(gateway)
        broker.stop()
        broker.start()
        await publish(away)  # no gateway connected: only the broker's sessions can keep them
        gateway = start_workers(env, log_path, workers)
        try:
            await publish(after)
            kept = before + after + (away if workers == 1 else [])
            async with InfluxV1Client(services.influx_url, influx_db) as influx:
                await wait_for_points(influx, expected_points(kept), log_path)
                stored = await stored_points(influx)
            if workers == 1 or mosquitto_version() >= (2, 0, 12):
                assert expected_points(away) <= stored
            else:
                assert not expected_points(away) & stored, "2.0.11 kept them after all"
        finally:
            stop(gateway)
    finally:
        broker.stop()


async def wait_for_points(influx: InfluxV1Client, expected: set[Point], log_path: Path) -> None:
    """Until InfluxDB holds at least `expected`; failing after 60 s with the gateway's log."""
    deadline = time.monotonic() + 60
    while not expected <= (stored := await stored_points(influx)):
        if time.monotonic() > deadline:
            missing = sorted(expected - stored)[:3]
            pytest.fail(f"missing {len(expected - stored)}: {missing}\n{pipeline_log(log_path)}")
        await asyncio.sleep(0.2)
