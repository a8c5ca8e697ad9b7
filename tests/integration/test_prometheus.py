"""A real Prometheus scrapes gridgate's /metrics and evaluates the alerting rules gridgate
ships (deploy/prometheus/gridgate-rules.yml): nothing fires while all is well, and
GridgateInfluxDBDown fires once InfluxDB is stopped (readings go to the spool)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from pathlib import Path

import httpx
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


async def assert_rules_name_real_metrics(api_url: str) -> None:
    """Every gridgate_* series a rule names is one /metrics exposes (counters end in _total
    there): a renamed metric must not leave a rule that can never fire."""
    async with httpx.AsyncClient() as client:
        exposition = (await client.get(f"{api_url}/metrics")).text
    exposed = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            exposed |= {name, f"{name}_total"} if kind == "counter" else {name}
            exposed |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    named = set(re.findall(r"\bgridgate_[a-z_]+", RULES.read_text()))
    assert named and named <= exposed, named - exposed


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
        stopped = False
        try:
            await wait_for(prometheus.targets_up, 30, "gridgate scraped")
            await assert_rules_name_real_metrics(api.url)
            per_community = f'gridgate_community_readings_total{{community="{unique}"}}'
            # two bursts, scraped apart: a counter that appears and stays flat is a silent
            # community (GridgateCommunitySilent, with its 30 minutes shortened to none)
            for upto in (100, 200):
                await asyncio.to_thread(
                    publish_all, services.mqtt_host, services.mqtt_port, messages[upto - 100 : upto]
                )
                await wait_for(
                    lambda n=upto: prometheus.value(per_community) == n, 30,  # type: ignore[misc]
                    f"{upto} readings scraped",
                )  # fmt: skip
            # the rules evaluated on what was scraped once everything was in
            scraped = time.time() + 1.0  # one scrape interval on from now
            await wait_for(lambda: prometheus.evaluated_after(scraped), 30, "an evaluation")
            assert not prometheus.firing(), prometheus.firing()

            private_influx.stop()
            stopped = True
            await asyncio.to_thread(
                publish_all, services.mqtt_host, services.mqtt_port, messages[200:]
            )
            await wait_for(lambda: "GridgateInfluxDBDown" in prometheus.firing(), 60, "the rule")
            assert api.gateway.metrics.spooled > 0
        finally:
            prometheus.stop()
            if stopped:  # the fixture stops it once more, as it would a running one
                private_influx.start()
