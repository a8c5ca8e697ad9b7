"""An alarm storm's outcome: the alerts it left, their steps, and what each member was told,
checked against the bound the alert engine promises (notifications bounded by places, not
readings: each alert told to its recipients once when raised, once per severity upgrade, once
when it first clears and once when it first comes back, plus whom its escalations reached). Shared by tests/integration/test_alert_storm.py (at 120×)
and bench/alarm_storm.py (in real time)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devices.places import PlaceLevel
from gateway.alerts.delivery import Outbox
from gateway.alerts.model import Alert
from gateway.alerts.store import AlertStore
from gateway.audit.store import AuditStore
from gateway.registry import Registry, Role
from tests.support.members import FIRST_RESPONDERS, Members
from tests.support.polling import wait_for

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
        """Notified alerts × their recipients × (raise + at most one upgrade + the first
        clearing + the first return), plus whom their escalations reached (none at
        accelerated speed: the deadlines are real minutes)."""
        return sum(4 * self.recipients[a] + self.escalated.get(a, 0) for a in self.notified)

    def check(self) -> None:
        alerts = self.alerts
        # one alert per (place, condition): the detectors flapped, nothing was re-raised
        assert len({(a.place, a.key) for a in alerts}) == len(alerts)
        assert self.steps["reopened"] >= len({a.place for a in alerts if a.kind == "gas_leak"})
        # each member told about an alert once per step: raised, upgraded, escalated a level,
        # first cleared, first back — however often its detector flapped
        steps = {"raised", "upgraded", "escalated", "cleared", "reopened"}
        for member, payloads in self.received.items():
            told = Counter((p["alert_id"], p["step"], p["escalation_level"]) for p in payloads)
            assert set(told.values()) == {1}, member
            assert {step for _, step, _ in told} <= steps
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
