"""A real Prometheus scrapes gridgate's /metrics and evaluates the alerting rules gridgate
ships (deploy/prometheus/gridgate-rules.yml): nothing fires while all is well, and
GridgateInfluxDBDown fires once InfluxDB is stopped (readings go to the spool)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest

from adapters import gridgate_json
from simulators.mqtt_tools import publish_all
from tests.support.api import running_api
from tests.support.gateway_util import settings_for
from tests.support.influx_util import PrivateInflux
from tests.support.polling import wait_for
from tests.support.prometheus import RULES, PrivatePrometheus
from tests.support.readings import family_readings
from tests.support.services import Services

pytestmark = pytest.mark.integration


def test_the_shipped_rules_are_valid() -> None:
    done = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def test_a_stopped_influxdb_fires_the_rule(
    private_influx: PrivateInflux, services: Services, unique: str, tmp_path: Path
) -> None:
    settings = settings_for(services, unique, "prom", tmp_path).model_copy(
        update={"influx_url": private_influx.url, "influx_timeout_s": 2, "spool_probe_s": 0.2}
    )
    readings = family_readings(unique, 100, int(time.time() * 1000) - 3_600_000)
    messages = [gridgate_json.encode(r) for r in readings]
    async with running_api(settings) as api:
        target = api.url.removeprefix("http://")
        prometheus = PrivatePrometheus(tmp_path / "prometheus", [target])
        prometheus.start()
        try:
            await wait_for(prometheus.targets_up, 30, "gridgate scraped")
            await asyncio.to_thread(
                publish_all, services.mqtt_host, services.mqtt_port, messages[:200]
            )
            await wait_for(lambda: api.gateway.metrics.written >= 200, 30, "200 written")
            await asyncio.sleep(3)  # three evaluations with everything well
            assert not prometheus.firing(), prometheus.firing()

            private_influx.stop()
            await asyncio.to_thread(
                publish_all, services.mqtt_host, services.mqtt_port, messages[200:]
            )
            await wait_for(lambda: "GridgateInfluxDBDown" in prometheus.firing(), 60, "the rule")
            assert api.gateway.metrics.spooled > 0
        finally:
            prometheus.stop()
            private_influx.start()
