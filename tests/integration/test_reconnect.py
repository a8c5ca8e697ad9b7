"""The gateway rides out a broker restart: it reconnects with backoff, its persistent session
survives (broker persistence), and every reading published before and after lands."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters import gridgate_json
from gateway.storage.influx_v1 import InfluxV1Client
from simulators.mqtt_tools import publish_all
from tests.support.broker import PrivateBroker
from tests.support.gateway_util import running_gateway, settings_for
from tests.support.polling import wait_for
from tests.support.readings import expected_points, family_readings, stored_points
from tests.support.services import Services

pytestmark = pytest.mark.integration


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
        # said as an error naming the broker and its settings, not a quiet warning
        [lost] = [r for r in caplog.records if "MQTT disconnected" in r.getMessage()]
        assert lost.levelname == "ERROR", lost.getMessage()
        assert f"127.0.0.1:{broker.port} (GRIDGATE_MQTT_HOST/GRIDGATE_MQTT_PORT)" in (
            lost.getMessage()
        )
        broker.start()
        # published while the gateway is still away: they wait in its persistent session
        await asyncio.to_thread(
            publish_all, "127.0.0.1", broker.port, [gridgate_json.encode(r) for r in after]
        )
        await wait_for(lambda: len(logged("MQTT connected")) > connects, 60, "the reconnect")
        assert "session present: True" in logged("MQTT connected")[-1]  # the session survived
        assert " again after " in logged("MQTT connected")[-1]  # the end of the outage is said
        await wait_for(lambda: metrics.written >= 8 * n, 60, "second half written after reconnect")
    async with InfluxV1Client(services.influx_url, influx_db) as influx:
        stored = await stored_points(influx)
    expected = expected_points(before + after)
    assert len(expected) == 8 * n
    assert not expected - stored, f"lost: {sorted(expected - stored)[:5]}"
    assert not stored - expected, f"not published: {sorted(stored - expected)[:5]}"
    assert metrics.dead_lettered == 0
