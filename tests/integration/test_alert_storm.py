"""A 10-minute `hostile` + alarm-storm run through the real services (accelerated time).

Every gas and smoke detector of the community flaps in and out of alarm every minute for ten
simulated minutes while the `hostile` scenario sends spoofed, oversized and malformed input.
Notifications are bounded by *places*, not readings:

- one open alert per (place, condition): repeats are counted, not sent;
- a condition back within 30 min of clearing reopens its alert silently (flapping);
- smoke in several units of a building is one building incident that silences its members;
- so each alert is told to its recipients once when raised, plus once per severity upgrade.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.mqtt_tools import drop_session
from tests.support.community import community_settings, simulate
from tests.support.gateway_util import running_gateway
from tests.support.members import Members
from tests.support.polling import wait_for
from tests.support.registered import registered_community
from tests.support.services import Services
from tests.support.storm import storm_outcome

pytestmark = pytest.mark.integration


async def test_ten_minute_hostile_alarm_storm_gives_a_bounded_number_of_notifications(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    _, registry_url, fleet = registered_community(300, 61, unique, tmp_path)
    settings = community_settings(services, unique, influx_db, tmp_path, registry_url).model_copy(
        update={"audit_path": tmp_path / "audit.sqlite3"}
    )
    members = Members(services.mqtt_host, services.mqtt_port, unique)
    try:
        async with running_gateway(settings) as metrics:
            # 12 simulated minutes at 120×: the storm from minute 1 to 11, hostile input too
            report = await simulate(
                services,
                ["--households", "300", "--speed", "120", "--duration", "6", "--seed", "61",
                 "--community", unique, "--fleet-out", str(fleet),
                 "--scenario", "alarm-storm@*@1m@span=10m", "--scenario", "hostile@b01@1m"],
            )  # fmt: skip
            sent = report["publisher"]["published_ok"]
            await wait_for(lambda: metrics.received >= sent, 60, "every message processed")
            outcome = await storm_outcome(registry_url, settings.audit_path, members)
    finally:
        members.close()
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)

    storm = report["scenario_messages"]["alarm-storm"]
    alarms = (
        report["messages"]["by_kind"]["gas_alarm"] + report["messages"]["by_kind"]["smoke_alarm"]
    )
    assert storm > 10 * 600 and alarms >= 2000  # 600 detectors, every minute, for 10 minutes
    # the hostile input was refused with its reasons, and the gateway kept going
    assert metrics.dead_lettered == sum(report["expected_rejections"].values())
    outcome.check()
    assert outcome.steps["grouped"] > 0  # unit fires inside their building's incident
    print("storm:", storm, "storm messages,", alarms, "alarm events ->", outcome.summary())
