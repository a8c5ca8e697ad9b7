"""k-anonymity of person-related aggregates (R3.4): a cell that describes fewer than k persons
(k=5) is suppressed — no value, marked, counted in the response — never rounded. The points
are written to the real InfluxDB as the gateway stores them (de-identified: pseudonyms only),
and read back through the running API by an operator's key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.storage.influx_v1 import InfluxV1Client
from gateway.storage.retention import rp_name
from tests.support.api import api_key, api_settings, running_api
from tests.support.registered import registered_community
from tests.support.services import Services

pytestmark = pytest.mark.integration

S = 1_000_000_000


def _access(code: str, building: str, at_ns: int, *, resident: str = "", card: str = "") -> str:
    refs = (f',resident_ref="{resident}"' if resident else "") + (
        f',card_ref="{card}"' if card else ""
    )
    return (
        f"access,building={building},community={code},device=gate-{building},grid=g01,"
        f'kind=entry_granted,unit=u1 schema=1i,direction="in",granted=true{refs} {at_ns}'
    )


def _elder(code: str, building: str, device: str, at_ns: int, bpm: int) -> str:
    return (
        f"elder,building={building},community={code},device={device},grid=g01,kind=telemetry,"
        f"unit=u1 schema=1i,worn=true,heart_rate_bpm={bpm} {at_ns}"
    )


async def test_cells_of_fewer_than_k_persons_are_suppressed(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    _, registry_url, _ = registered_community(150, 74, unique, tmp_path)
    settings = api_settings(services, unique, influx_db, tmp_path, registry_url)
    key = api_key(settings, "operator", unique)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    h0 = int(hour.timestamp()) * S
    h1 = h0 + 3600 * S
    b1, b2 = f"{unique}/g01/b01", f"{unique}/g01/b02"
    access = (
        # b01, hour 0: 3 residents, 12 entries → fewer than 5 persons
        [_access(unique, "b01", h0 + i * 60 * S, resident=f"k1:r{i % 3}") for i in range(12)]
        # b02, hour 0: 6 residents, 8 entries → shown
        + [_access(unique, "b02", h0 + i * 60 * S, resident=f"k1:s{i % 6}") for i in range(8)]
        # b02, hour 1: 5 card holders → shown
        + [_access(unique, "b02", h1 + i * 60 * S, card=f"k1:c{i}") for i in range(5)]
        # b01, hour 1: two QR visitors, nobody known → suppressed
        + [_access(unique, "b01", h1 + i * 60 * S) for i in range(2)]
    )
    elder = [_elder(unique, "b01", f"w1-{i}", h0 + i * S, 70 + i) for i in range(4)] + [
        _elder(unique, "b02", f"w2-{i}", h0 + i * S, 60 + i) for i in range(5)
    ]
    async with running_api(settings) as api:  # the gateway created the retention policies
        async with InfluxV1Client(services.influx_url, influx_db) as influx:
            await influx.write(access, rp=rp_name("access"))
            await influx.write(elder, rp=rp_name("elder"))
        window = {"start": hour.isoformat(), "end": (hour + timedelta(hours=2)).isoformat()}
        async with api.client(key) as c:
            entries = (await c.get("/api/v1/aggregates/entries", params=window)).json()
            worn = (await c.get("/api/v1/aggregates/elder_worn", params=window)).json()
            counted = (await c.get("/api/v1/readings", params={
                **window, "measurement": "access", "field": "schema", "fn": "count",
                "group_by": "building"})).json()  # fmt: skip
            heart = (await c.get("/api/v1/readings", params={
                **window, "measurement": "elder", "field": "heart_rate_bpm", "fn": "mean",
                "group_by": "building"})).json()  # fmt: skip
            safety = (await c.get("/api/v1/readings", params={
                **window, "measurement": "safety", "field": "gas_lel_pct"})).json()  # fmt: skip

    assert entries["person_related"] is True and entries["k"] == 5
    assert cells(entries) == {
        (h0, b1): None,  # 12 entries by 3 persons: suppressed, not rounded
        (h0, b2): 8.0,
        (h1, b1): None,  # 2 entries by nobody known: suppressed
        (h1, b2): 5.0,
    }
    assert suppressed(entries) == {(h0, b1), (h1, b1)} and entries["suppressed"] == 2
    assert cells(counted) == cells(entries)  # the same cells through the general history
    assert cells(worn) == {(h0, b1): None, (h0, b2): 5.0}
    assert suppressed(worn) == {(h0, b1)}
    assert cells(heart) == {(h0, b1): None, (h0, b2): 62.0}
    assert safety["person_related"] is False and safety["k"] is None
    assert safety["suppressed"] == 0


def cells(response: dict[str, Any]) -> dict[tuple[int, str], float | None]:
    return {
        (int(datetime.fromisoformat(c["time"]).timestamp()) * S, c["place"]): c["value"]
        for c in response["data"]
    }


def suppressed(response: dict[str, Any]) -> set[tuple[int, str]]:
    return {
        (int(datetime.fromisoformat(c["time"]).timestamp()) * S, c["place"])
        for c in response["data"]
        if c["suppressed"]
    }
