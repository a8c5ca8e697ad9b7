"""InfluxDB with `auth-enabled = true` (a private influxd): the gateway writes with its own
account (GRIDGATE_INFLUX_USERNAME/PASSWORD, sent as basic auth), an anonymous reader is
refused, and a wrong password stops `gridgate run` at once with an error naming the two
variables — never the password."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapters import gridgate_json
from gateway.storage.influx_v1 import InfluxV1Client
from simulators.mqtt_tools import drop_session, publish_all
from tests.support.gateway_util import gateway_env, start_gateway_process
from tests.support.influx_util import PrivateInflux
from tests.support.readings import expected_points, family_readings, stored_points
from tests.support.services import ROOT, Services

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-Influx-pw"


@pytest.fixture
def auth_influx(tmp_path: Path) -> Iterator[PrivateInflux]:
    influx = PrivateInflux(tmp_path / "influxd", auth=True)
    influx.start()
    # influxd takes the first admin without credentials; after that, nothing without them
    response = httpx.post(
        f"{influx.url}/query",
        params={"q": f"CREATE USER \"gridgate\" WITH PASSWORD '{PASSWORD}' WITH ALL PRIVILEGES"},
    )
    assert response.status_code == 200 and "error" not in response.text, response.text
    yield influx
    influx.stop()


async def test_the_gateway_writes_with_its_account_and_nobody_reads_without_one(
    auth_influx: PrivateInflux, services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    readings = family_readings(unique, 25, int(time.time() * 1000) - 600_000)
    env = gateway_env(services, unique, influx_db, tmp_path) | {
        "GRIDGATE_INFLUX_URL": auth_influx.url,
        "GRIDGATE_INFLUX_USERNAME": "gridgate",
        "GRIDGATE_INFLUX_PASSWORD": PASSWORD,
    }
    gateway = start_gateway_process(env, tmp_path / "gateway.log")
    try:
        await asyncio.to_thread(
            publish_all, services.mqtt_host, services.mqtt_port,
            [gridgate_json.encode(r) for r in readings],
        )  # fmt: skip
        expected = expected_points(readings)
        async with InfluxV1Client(
            auth_influx.url, influx_db, username="gridgate", password=PASSWORD
        ) as influx:
            deadline = time.monotonic() + 60
            while (stored := await stored_points(influx)) != expected:
                assert time.monotonic() < deadline, f"{len(stored)} of {len(expected)} stored"
                await asyncio.sleep(0.2)
        async with httpx.AsyncClient() as client:
            anonymous = await client.post(
                f"{auth_influx.url}/query", params={"db": influx_db, "q": "SHOW MEASUREMENTS"}
            )
        assert anonymous.status_code == 401
    finally:
        gateway.terminate()
        gateway.wait(30)
        drop_session(services.mqtt_host, services.mqtt_port, env["GRIDGATE_MQTT_CLIENT_ID"])
    assert PASSWORD not in (tmp_path / "gateway.log").read_text()


def test_a_wrong_password_stops_the_gateway_naming_the_settings(
    auth_influx: PrivateInflux, services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    wrong = "not-the-Password-1"
    env = gateway_env(services, unique, influx_db, tmp_path) | {
        "GRIDGATE_INFLUX_URL": auth_influx.url,
        "GRIDGATE_INFLUX_USERNAME": "gridgate",
        "GRIDGATE_INFLUX_PASSWORD": wrong,
    }
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "run", "--no-progress", "--workers", "1"],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "refused user 'gridgate' (401" in output, output
    assert "GRIDGATE_INFLUX_USERNAME" in output and "GRIDGATE_INFLUX_PASSWORD" in output
    assert wrong not in output
    assert "Traceback" not in output, output
