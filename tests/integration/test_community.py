"""The simulated community through the real services (issue 3): registered devices, their
registry locations as tags, exact point counts per family, and liveness of one device."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

import pytest

from gateway.registry import Registry
from gateway.storage.influx_v1 import InfluxV1Client, quote_literal
from gateway.storage.retention import qualified
from simulators.mqtt_tools import drop_session, publish_all
from simulators.scenarios import inject
from simulators.schedule import Schedule, SimClock
from tests.support.community import community_settings, simulate_recorded
from tests.support.gateway_util import running_gateway
from tests.support.polling import wait_for
from tests.support.registered import registered_community
from tests.support.services import Services
from tests.support.stored import stored_counts

# Still importable from here for tests/integration/test_privacy_leak.py (another change moves it).
__all__ = ["community_settings", "registered_community"]

pytestmark = pytest.mark.integration

FAMILIES = ("access", "safety", "meter", "elder")
MEASUREMENTS = (*FAMILIES, "device_status")
NS = 1_000_000_000
WINDOW_S = 1800  # simulated seconds published at a time (device-offline test)
PACE_S = 0.5  # real seconds between windows while the wristband is silent


async def stored_times(influx: InfluxV1Client, measurement: str) -> set[tuple[str, str, int]]:
    rows = await influx.query(
        f'SELECT "schema" FROM {qualified(measurement)} GROUP BY "device", "kind"'
    )
    return {(row["device"], row["kind"], row["time"]) for row in rows}


async def test_3000_households_land_with_registry_locations_and_exact_counts(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    community, registry_url, fleet = registered_community(3000, 11, unique, tmp_path)
    settings = community_settings(services, unique, influx_db, tmp_path, registry_url)
    try:
        async with running_gateway(settings) as metrics:
            report, expected = await simulate_recorded(
                services,
                ["--households", "3000", "--speed", "600", "--duration", "10", "--seed", "11",
                 "--community", unique, "--fleet-out", str(fleet)],
                tmp_path / "sent.json",
            )  # fmt: skip
            sent = report["publisher"]["published_ok"]
            assert sent == report["publisher"]["total"] == report["messages"]["total"] > 50_000
            assert expected.messages == sent  # every message sent was recorded (no hostile ones)
            await wait_for(lambda: metrics.acked >= sent, 120, "every message handled")
        assert metrics.rejected == {} and metrics.dead_lettered == 0

        async with InfluxV1Client(services.influx_url, influx_db) as influx:
            # Per device and measurement, exactly the points of the readings the simulator
            # generated (not what the adapters decode from them: see sim_record).
            counts = await stored_counts(influx)
            missing = {
                k: (n, counts.get(k, 0))
                for k, n in expected.counts.items()
                if counts.get(k, 0) != n
            }
            assert not missing, (
                f"(expected, stored) points, {len(missing)} devices: {sorted(missing.items())[:5]}"
            )
            assert counts.keys() == expected.counts.keys()  # nothing stored for other devices
            for m in MEASUREMENTS:  # and at the times the simulator gave them
                times = {
                    p for p in await stored_times(influx, m) if (m, p[0]) not in expected.untimed
                }
                want = expected.timed.get(m, set())
                assert times == want, (m, sorted(want - times)[:3], sorted(times - want)[:3])
            rows = await influx.query(
                'SELECT last("schema") FROM '
                + ", ".join(qualified(m) for m in MEASUREMENTS)
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
    """One wristband kept silent by the scenario goes offline, and only it, then comes back.

    The simulated clock is the test's: the schedule is generated up front and published in
    windows of half a simulated hour (every battery device reports at least every 31 simulated
    minutes), each once the gateway has handled the one before. Liveness is judged on the
    gateway's real clock, so the one real-time quantity left is the battery timeout: while
    the wristband is silent the windows are paced (`PACE_S`) until the gateway has written it
    offline — every other battery device is then seen every two or three paces, far inside
    the timeout — and the rest of the schedule goes at once."""
    community, registry_url, _ = registered_community(60, 5, unique, tmp_path)
    wearable = next(d for d in community.devices if d.family.value == "elder")
    timeout_s = 8.0
    settings = community_settings(
        services, unique, influx_db, tmp_path, registry_url,
        offline_after_battery_s=timeout_s, liveness_sweep_s=0.2,
    )  # fmt: skip
    start = time.time_ns() // NS - 2 * 86_400  # readings two days old: inside the 30-day limit
    silent_from, span = start + 2 * 3600, 24 * 3600
    clock = SimClock(600.0, time.time_ns(), start, silent_from + span + 3600)
    offline = inject(
        community, "device-offline", wearable.device_id, silent_from, span=span, speed=clock.speed
    )
    windows: dict[int, list[tuple[str, bytes]]] = defaultdict(list)
    for m in Schedule(community, clock, seed=5, injections=[offline]):
        windows[(m.time_s - start) // WINDOW_S].append((m.topic, m.payload))
    last_window = max(windows)
    silent_windows = range(
        (silent_from - start) // WINDOW_S + 1, (silent_from + span - start) // WINDOW_S
    )
    try:
        async with (
            running_gateway(settings) as metrics,
            InfluxV1Client(services.influx_url, influx_db) as influx,
        ):
            published = 0

            async def publish(first: int, last: int) -> None:
                nonlocal published
                messages = [msg for k in range(first, last + 1) for msg in windows.get(k, [])]
                published += await asyncio.to_thread(
                    publish_all, services.mqtt_host, services.mqtt_port, messages
                )
                await wait_for(lambda: metrics.acked >= published, 60, f"windows to {last} handled")

            async def history() -> list[tuple[bool, str]]:
                rows = await influx.query(
                    f'SELECT "online", "reason" FROM {qualified("liveness")}'
                    f' WHERE "device" = {quote_literal(wearable.device_id)} ORDER BY time'
                )
                return [(row["online"], row["reason"]) for row in rows]

            await publish(0, silent_windows[0])  # up to the first window it is silent in
            for k in silent_windows[1:]:
                if (await history())[-1:] == [(False, "silent")]:
                    break
                await asyncio.sleep(PACE_S)
                await publish(k, k)
            else:
                raise AssertionError(f"still online after {len(silent_windows)} silent windows")
            await publish(k, last_window)  # the rest, with its return at the end of the span
            await wait_for(lambda: metrics.backlog == 0, 30, "everything handled")
            back = [(True, "traffic"), (False, "silent"), (True, "status_online")]
            deadline = time.monotonic() + 30
            while (seen := await history()) != back and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert seen == back
            rows = await influx.query(
                f'SELECT "online" FROM {qualified("liveness")} WHERE "online" = false GROUP BY "device"'
            )
        assert {row["device"] for row in rows} == {wearable.device_id}  # nobody else went offline
        with Registry.open(registry_url) as registry:
            state = registry.liveness(wearable.device_id)
        assert state is not None and state.online is True
    finally:
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)
