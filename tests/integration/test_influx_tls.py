"""The gateway writing to an https InfluxDB whose certificate a locally generated CA signed;
another CA is refused with an error that says the certificate is not trusted and names the
variable; a missing CA file is named at start."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters import gridgate_json
from devices.errors import ConfigError, StorageError
from devices.families import Family
from gateway.runtime import influx_ca
from gateway.storage.influx_v1 import InfluxV1Client
from gateway.storage.retention import rp_name
from simulators.mqtt_tools import drop_session, publish_all
from tests.support.gateway_util import running_gateway, settings_for
from tests.support.influx_util import PrivateInflux
from tests.support.polling import wait_for
from tests.support.readings import family_readings
from tests.support.services import Services
from tests.support.tls import Certs, make_certs

pytestmark = pytest.mark.integration


@pytest.fixture
def https_influx(tmp_path: Path) -> Iterator[tuple[PrivateInflux, Certs]]:
    certs = make_certs(tmp_path / "pki")
    influx = PrivateInflux(tmp_path / "influxd", https=(certs.cert, certs.key))
    influx.start()
    try:
        yield influx, certs
    finally:
        influx.stop()


async def test_the_gateway_writes_to_an_https_influxdb_with_its_ca(
    https_influx: tuple[PrivateInflux, Certs],
    services: Services,
    unique: str,
    influx_db: str,
    tmp_path: Path,
) -> None:
    influx, certs = https_influx
    assert influx.url.startswith("https://")
    settings = settings_for(services, unique, influx_db, tmp_path).model_copy(
        update={"influx_url": influx.url, "influx_tls_ca_file": certs.ca}
    )
    readings = family_readings(unique, 5, int(time.time() * 1000) - 60_000)
    try:
        async with running_gateway(settings) as metrics:
            await asyncio.to_thread(publish_all, services.mqtt_host, services.mqtt_port,
                                    [gridgate_json.encode(r) for r in readings])  # fmt: skip
            await wait_for(lambda: metrics.written == len(readings), 30, "written over https")
    finally:
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)
    async with InfluxV1Client(influx.url, influx_db, ca_file=certs.ca) as client:
        stored = [await client.count(f.value, "schema", rp=rp_name(f.value)) for f in Family]
    assert sum(stored) == len(readings)

    other = make_certs(tmp_path / "other", name="another")
    async with InfluxV1Client(influx.url, influx_db, ca_file=other.ca) as client:
        with pytest.raises(StorageError, match="certificate is not trusted") as refused:
            await client.ensure_schema()
    assert "GRIDGATE_INFLUX_TLS_CA_FILE" in str(refused.value) and refused.value.retryable


def test_a_missing_influx_ca_file_is_named_at_start(
    services: Services, unique: str, tmp_path: Path
) -> None:
    settings = settings_for(services, unique, "db", tmp_path).model_copy(
        update={"influx_tls_ca_file": tmp_path / "missing.crt"}
    )
    with pytest.raises(ConfigError, match=r"GRIDGATE_INFLUX_TLS_CA_FILE=.*no such file"):
        influx_ca(settings)
