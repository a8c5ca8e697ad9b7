"""InfluxDB 2.x native (`GRIDGATE_INFLUX_API=v2`) against a real server that accepts
`/api/v2/write`: a private VictoriaMetrics. The whole gateway (MQTT in, pipeline, privacy,
batches, acks) writes through influxdb-client; every reading of every family is read back
through the server's export API, exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters import gridgate_json
from devices.errors import StorageError
from devices.families import Family
from gateway.storage.influx_v2 import InfluxV2Client
from simulators.mqtt_tools import publish_all
from tests.support.gateway_util import running_gateway, settings_for
from tests.support.readings import VARYING, family_readings
from tests.support.services import Services
from tests.support.victoria import PrivateVictoria

pytestmark = pytest.mark.integration

PER_FAMILY = 400


@pytest.fixture(scope="module")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateVictoria]:
    server = PrivateVictoria(tmp_path_factory.mktemp("victoria"))
    server.start()
    yield server
    server.stop()


def stored(victoria: PrivateVictoria, community: str) -> list[tuple[str, str, int, float]]:
    """(family, device, time in ms, the varying value) of every stored sample, sorted; a list,
    not a set, so that a batch written twice would show."""
    out = []
    for family in Family:
        metric = f"{family.value}_{VARYING[family]}"
        for labels, t, v in victoria.samples(metric, community=community):
            out.append((family.value, labels["device"], t, v))
    return sorted(out)


async def test_n_readings_of_every_family_are_n_points(
    victoria: PrivateVictoria, services: Services, unique: str, tmp_path: Path
) -> None:
    readings = family_readings(unique, PER_FAMILY, int(time.time() * 1000) - 3_600_000)
    expected = sorted(
        (r.family.value, r.device_id, r.time_ns // 1_000_000, r.values[VARYING[r.family]])
        for r in readings
    )
    assert len(set(expected)) == 4 * PER_FAMILY
    settings = settings_for(services, unique, "unused", tmp_path).model_copy(
        update={"influx_api": "v2", "influx_url": victoria.url, "influx_bucket": f"b{unique}"}
    )
    async with running_gateway(settings) as metrics:
        messages = [gridgate_json.encode(r) for r in readings]
        await asyncio.to_thread(publish_all, services.mqtt_host, services.mqtt_port, messages)
        deadline = time.monotonic() + 60
        while metrics.acked < len(messages):
            assert time.monotonic() < deadline, metrics.snapshot()
            await asyncio.sleep(0.1)
    assert metrics.written == len(readings) and metrics.dead_lettered == 0, metrics.snapshot()
    samples = stored(victoria, unique)
    for family in Family:
        assert sum(s[0] == family.value for s in samples) == PER_FAMILY, family
    assert samples == expected
    assert "unsupported path" in victoria.log()  # it has no buckets API: said once, not fatal


async def test_a_server_that_is_down_is_retryable_and_a_refusal_is_not(
    victoria: PrivateVictoria,
) -> None:
    async with InfluxV2Client("http://127.0.0.1:9", org="o", bucket="b", token="t") as down:
        assert not await down.ping()
        with pytest.raises(StorageError) as info:
            await down.write(["m v=1 1"])
        assert info.value.retryable
    async with InfluxV2Client(victoria.url, org="o", bucket="b", token="t") as client:
        assert await client.ping()
        with pytest.raises(StorageError) as refused:
            await client.query("SELECT 1")
        assert not refused.value.retryable and "GRIDGATE_INFLUX_API=v1" in str(refused.value)


async def test_a_refused_token_names_the_setting(tmp_path: Path) -> None:
    """A server that wants other credentials (here Basic auth) answers 401: creating the
    buckets is refused for good, a write is retried (the points are not at fault)."""
    guarded = PrivateVictoria(tmp_path / "victoria", "-httpAuth.username=u", "-httpAuth.password=p")
    guarded.start()
    try:
        async with InfluxV2Client(guarded.url, org="o", bucket="b", token="wrong") as client:
            with pytest.raises(StorageError) as schema:
                await client.ensure_schema()
            with pytest.raises(StorageError) as write:
                await client.write(["m v=1 1"])
    finally:
        guarded.stop()
    assert not schema.value.retryable and "GRIDGATE_INFLUX_TOKEN" in str(schema.value)
    assert write.value.retryable and "GRIDGATE_INFLUX_TOKEN" in str(write.value)
