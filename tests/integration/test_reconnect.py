"""The gateway rides out a broker restart: it reconnects with backoff, its persistent session
survives (broker persistence), and every reading published before and after lands."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters import gridgate_json
from gateway.storage.influx_v1 import InfluxV1Client
from simulators.mqtt_tools import publish_all
from tests.support.gateway_util import running_gateway, settings_for
from tests.support.polling import wait_for
from tests.support.readings import expected_points, family_readings, stored_points
from tests.support.services import Services

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateBroker:
    """A throwaway Mosquitto on a free loopback port with its own persistence directory."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.root = root
        (root / "data").mkdir(parents=True, exist_ok=True)
        user = "root" if os.geteuid() == 0 else ""
        (root / "mosquitto.conf").write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {root / 'data'}/\nmax_inflight_messages 10000\n"
            f"max_queued_messages 1000000\nautosave_interval 1\n"
            + (f"user {user}\n" if user else "")
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(self.root / "mosquitto.conf")])
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # Mosquitto saves its persistence file on SIGTERM
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    b = PrivateBroker(tmp_path / "mosquitto")
    b.start()
    yield b
    b.stop()


async def test_gateway_reconnects_after_broker_restart_and_loses_nothing(
    services: Services,
    broker: PrivateBroker,
    unique: str,
    influx_db: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    n = 100  # per family
    before = family_readings(unique, n, int(time.time() * 1000) - 600_000)
    after = family_readings(unique, n, int(time.time() * 1000) - 300_000)
    settings = settings_for(services, unique, influx_db, tmp_path).model_copy(
        update={"mqtt_port": broker.port}
    )
    caplog.set_level(logging.INFO, logger="gateway.mqtt.source")

    def logged(text: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if text in r.getMessage()]

    async with running_gateway(settings) as metrics:
        await asyncio.to_thread(
            publish_all, "127.0.0.1", broker.port, [gridgate_json.encode(r) for r in before]
        )
        await wait_for(lambda: metrics.written >= 4 * n, 30, "first half written")
        connects = len(logged("MQTT connected"))
        broker.stop()
        await wait_for(lambda: bool(logged("MQTT disconnected")), 30, "the gateway to notice")
        broker.start()
        # published while the gateway is still away: they wait in its persistent session
        await asyncio.to_thread(
            publish_all, "127.0.0.1", broker.port, [gridgate_json.encode(r) for r in after]
        )
        await wait_for(lambda: len(logged("MQTT connected")) > connects, 60, "the reconnect")
        assert "session present: True" in logged("MQTT connected")[-1]  # the session survived
        await wait_for(lambda: metrics.written >= 8 * n, 60, "second half written after reconnect")
    async with InfluxV1Client(services.influx_url, influx_db) as influx:
        stored = await stored_points(influx)
    expected = expected_points(before + after)
    assert len(expected) == 8 * n
    assert not expected - stored, f"lost: {sorted(expected - stored)[:5]}"
    assert not stored - expected, f"not published: {sorted(stored - expected)[:5]}"
    assert metrics.dead_lettered == 0
