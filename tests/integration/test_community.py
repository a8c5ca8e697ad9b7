"""The simulated community through the real services (issue 3): registered devices, their
registry locations as tags, exact point counts per family, and liveness of one device."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from gateway.registry import Registry
from gateway.registry.importer import import_file
from gateway.settings import Settings
from gateway.storage.influx_v1 import InfluxV1Client, quote_literal
from gateway.storage.retention import qualified, rp_name
from privacy.keys import KeyRing
from simulators.community import Community, build_community
from tests.integration.conftest import ROOT, Services
from tests.integration.gateway_util import key_file, running_gateway, settings_for, wait_for
from tests.integration.mqtt_util import drop_session

pytestmark = pytest.mark.integration

FAMILIES = ("access", "safety", "meter", "elder")


def registered_community(
    households: int, seed: int, code: str, tmp: Path
) -> tuple[Community, str, Path]:
    community = build_community(households, seed, code)
    fleet = community.write_fleet(tmp / "fleet.yaml")
    url = f"sqlite:///{tmp / 'registry.sqlite3'}"
    with Registry.open(url) as registry:
        import_file(registry, fleet, keyring=KeyRing.from_file(key_file(tmp)))
    return community, url, fleet


async def simulate(services: Services, args: list[str]) -> dict[str, Any]:
    """`gridgate simulate --households …` as a real process; its JSON report."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "simulate", *args, "--quiet",
        "--host", services.mqtt_host, "--port", str(services.mqtt_port),
        cwd=ROOT, stdout=subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 0, out[-2000:]
    report: dict[str, Any] = json.loads(out)
    return report


def community_settings(
    services: Services, code: str, influx_db: str, tmp: Path, registry_url: str, **extra: Any
) -> Settings:
    return settings_for(services, code, influx_db, tmp).model_copy(
        update={"require_registration": True, "registry_url": registry_url, **extra}
    )


async def test_3000_households_land_with_registry_locations_and_exact_counts(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    community, registry_url, fleet = registered_community(3000, 11, unique, tmp_path)
    settings = community_settings(services, unique, influx_db, tmp_path, registry_url)
    try:
        async with running_gateway(settings) as metrics:
            report = await simulate(
                services,
                ["--households", "3000", "--speed", "600", "--duration", "10", "--seed", "11",
                 "--community", unique, "--fleet-out", str(fleet)],
            )  # fmt: skip
            sent = report["publisher"]["published_ok"]
            assert sent == report["messages"]["total"] > 50_000
            await wait_for(lambda: metrics.acked >= sent, 120, "every message handled")
        assert metrics.rejected == {} and metrics.dead_lettered == 0

        async with InfluxV1Client(services.influx_url, influx_db) as influx:
            for family in FAMILIES:  # the simulator's count of points, per family, exactly
                assert (
                    await influx.count(family, "schema", rp=rp_name(family))
                    == report["expected_points"][family]
                )
            assert await influx.count(
                "device_status", "schema", rp=rp_name("device_status")
            ) == sum(report["expected_status_points"].values())
            rows = await influx.query(
                'SELECT last("schema") FROM '
                + ", ".join(qualified(m) for m in (*FAMILIES, "device_status"))
                + f" WHERE community = {quote_literal(unique)}"
                + ' GROUP BY "device", "grid", "building", "unit"'
            )
        with Registry.open(registry_url) as registry:
            registered = {info.device_id: info.location for info in registry.all_devices()}
        tags: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
        for row in rows:
            tags[row["device"]].add(
                (row.get("grid", ""), row.get("building", ""), row.get("unit", ""))
            )
        assert set(tags) <= set(registered)  # nothing stored for an unregistered device
        for device_id, seen in tags.items():
            loc = registered[device_id]
            assert seen == {(loc.grid, loc.building, loc.unit)}, device_id
        # every meter, detector and wearable reported within 100 simulated minutes
        reporting = {d.device_id for d in community.devices if d.family.value != "access"}
        assert reporting <= set(tags)
    finally:
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)


async def test_device_offline_scenario_flips_exactly_that_device_and_back(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    community, registry_url, fleet = registered_community(60, 5, unique, tmp_path)
    wearable = next(d for d in community.devices if d.family.value == "elder")
    # Battery devices report at least every 30 simulated minutes (3 s real at 600×): a 10 s
    # battery timeout flips only the one kept silent by the scenario (30 s real).
    settings = community_settings(
        services, unique, influx_db, tmp_path, registry_url,
        offline_after_battery_s=10.0, liveness_sweep_s=0.5,
    )  # fmt: skip
    try:
        async with running_gateway(settings) as metrics:
            await simulate(
                services,
                ["--households", "60", "--speed", "600", "--duration", "45", "--seed", "5",
                 "--community", unique, "--fleet-out", str(fleet),
                 "--scenario", f"device-offline@{wearable.device_id}@2h@span=5h"],
            )  # fmt: skip
            await wait_for(lambda: metrics.backlog == 0, 30, "everything handled")
        async with InfluxV1Client(services.influx_url, influx_db) as influx:
            rows = await influx.query(
                f'SELECT "online", "reason" FROM {qualified("liveness")} GROUP BY "device" ORDER BY time'
            )
        history: dict[str, list[tuple[bool, str]]] = defaultdict(list)
        for row in rows:
            history[row["device"]].append((row["online"], row["reason"]))
        offline = {device for device, h in history.items() if any(not on for on, _ in h)}
        assert offline == {wearable.device_id}
        assert history[wearable.device_id] == [
            (True, "traffic"), (False, "silent"), (True, "status_online"),
        ]  # fmt: skip
        with Registry.open(registry_url) as registry:
            state = registry.liveness(wearable.device_id)
        assert state is not None and state.online is True
    finally:
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)
