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

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devices.places import PlaceLevel
from gateway.alerts.delivery import Outbox
from gateway.alerts.model import Alert
from gateway.alerts.store import AlertStore
from gateway.audit.store import AuditStore
from gateway.registry import Registry, Role
from tests.integration.conftest import Services
from tests.integration.gateway_util import running_gateway, wait_for
from tests.integration.mqtt_util import drop_session
from tests.integration.test_alert_scenarios import FIRST_RESPONDERS, Members
from tests.integration.test_community import community_settings, registered_community, simulate

pytestmark = pytest.mark.integration

MEMBER_TOPIC = "gridgate/alerts/member/"


@dataclass
class StormOutcome:
    """What a storm left: alerts, their steps, and what each member was told."""

    alerts: list[Alert]
    steps: Counter[str]
    recipients: dict[int, int]  # alert id → members its level-I routing reaches
    escalated: dict[int, int]  # alert id → members its escalations reached (reminders too)
    received: dict[str, list[dict[str, Any]]]
    notifications: int

    @property
    def notified(self) -> set[int]:
        return {p["alert_id"] for ps in self.received.values() for p in ps}

    @property
    def bound(self) -> int:
        """Notified alerts × their recipients × (raise + at most one upgrade), plus whom their
        escalations reached (none at accelerated speed: the deadlines are real minutes)."""
        return sum(2 * self.recipients[a] + self.escalated.get(a, 0) for a in self.notified)

    def check(self) -> None:
        alerts = self.alerts
        # one alert per (place, condition): the detectors flapped, nothing was re-raised
        assert len({(a.place, a.key) for a in alerts}) == len(alerts)
        assert self.steps["reopened"] >= len({a.place for a in alerts if a.kind == "gas_leak"})
        # each member told about an alert once per step: raised, upgraded or escalated a level
        for member, payloads in self.received.items():
            told = Counter((p["alert_id"], p["step"], p["escalation_level"]) for p in payloads)
            assert set(told.values()) == {1}, member
            assert {step for _, step, _ in told} <= {"raised", "upgraded", "escalated"}
        assert 0 < self.notifications <= self.bound
        # gas and fire per unit, one incident per building
        assert len(self.notified) <= 2 * len({a.place for a in alerts})

    def summary(self) -> str:
        return (
            f"{len(self.alerts)} alerts, {len(self.notified)} notified, "
            f"{self.notifications} notifications (bound {self.bound}), "
            f"{self.steps['reopened']} silent reopenings, {self.steps['grouped']} grouped, "
            f"{self.steps['escalated']} escalations"
        )


async def storm_outcome(registry_url: str, audit_path: Path, members: Members) -> StormOutcome:
    """Once every queued notification is sent and received: the outcome."""
    with Registry.open(registry_url) as registry:
        outbox = Outbox(registry.engine)
        await wait_for(lambda: outbox.counts().get("pending", 0) == 0, 120, "all sent")
        to_members = [i for i in outbox.items() if i.target.startswith(MEMBER_TOPIC)]
        await wait_for(lambda: members.count() == len(to_members), 30, "all received")
        store = AlertStore(registry, AuditStore(audit_path))
        alerts = store.alerts()
        events = {a.id: store.events(a.id) for a in alerts}
        steps = Counter(e.step for es in events.values() for e in es)
        recipients = {  # level I: the first responders (a building's: its unit heads too)
            a.id: len(registry.members_for(a.location, FIRST_RESPONDERS))
            + len(registry.members_within(a.location, [Role.UNIT_HEAD])
                  if a.level is PlaceLevel.BUILDING else [])
            for a in alerts
        }  # fmt: skip
        escalated = {  # each escalation: that level's roles, and the first responders again
            a.id: sum(
                recipients[a.id]
                + len(registry.members_for(a.location, [Role(r) for r in e.detail["roles"]]))
                for e in events[a.id]
                if e.step == "escalated"
            )
            for a in alerts
        }
    with members._lock:
        received = {m: list(ps) for m, ps in members.received.items()}
    return StormOutcome(alerts, steps, recipients, escalated, received, members.count())


async def test_ten_minute_hostile_alarm_storm_gives_a_bounded_number_of_notifications(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    _, registry_url, fleet = registered_community(300, 61, unique, tmp_path)
    settings = community_settings(services, unique, influx_db, tmp_path, registry_url).model_copy(
        update={"audit_path": tmp_path / "audit.sqlite3"}
    )
    members = Members(services, unique)
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
