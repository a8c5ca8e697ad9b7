"""Escalation (逐级上报) and dead deliveries through the real services, on a fake clock.

The gateway runs with real Mosquitto, InfluxDB and SQLite; only the alerts' wall clock is a
fake `Clock` the test moves forward, so the 5-minute acknowledgement limit of a level-I alert
passes in a moment. A gas detector reports 60 %LEL (above the level-2 alarm, severity I) over
MQTT; grid members are real MQTT subscribers; the emergency webhook is a real HTTP server.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.alerts.lifecycle import Lifecycle
from gateway.alerts.model import Alert
from gateway.alerts.store import AlertStore
from gateway.audit.store import AuditStore
from gateway.registry import Registry, Role
from gateway.settings import Settings
from simulators.mqtt_tools import drop_session, publish_all
from tests.support.alert_world import Clock
from tests.support.community import community_settings, gas_detectors, leaking
from tests.support.gateway_util import running_gateway
from tests.support.members import FIRST_RESPONDERS, Members
from tests.support.polling import wait_for
from tests.support.registered import registered_community
from tests.support.services import Services
from tests.support.webhook_receiver import SECRET, Receiver, running_receiver

pytestmark = pytest.mark.integration

S = 1_000_000_000
ACK_WITHIN_S = 300  # level I in the shipped routing policy


def fast_escalation_settings(
    services: Services, unique: str, influx_db: str, tmp: Path, registry_url: str
) -> Settings:
    """A registered community's gateway that looks for overdue alerts every 50 ms."""
    return community_settings(
        services, unique, influx_db, tmp, registry_url,
        audit_path=tmp / "audit.sqlite3", escalation_check_s=0.05,
    )  # fmt: skip


def steps(members: Members, alert_id: int) -> dict[str, list[str]]:
    """member → the steps of `alert_id` they were told about, in order of arrival."""
    with members._lock:
        return {
            m: [p["step"] for p in ps if p["alert_id"] == alert_id]
            for m, ps in members.received.items()
            if any(p["alert_id"] == alert_id for p in ps)
        }


def told(members: Members, alert_id: int, step: str) -> set[str]:
    return {m for m, ss in steps(members, alert_id).items() if step in ss}


async def test_unacknowledged_level_i_escalates_grid_chief_then_duty_desk_then_street_office(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    community, registry_url, _ = registered_community(60, 51, unique, tmp_path)
    ignored, taken = gas_detectors(community)[:2]
    settings = fast_escalation_settings(services, unique, influx_db, tmp_path, registry_url)
    clock = Clock(time.time_ns())
    members = Members(services.mqtt_host, services.mqtt_port, unique)
    with Registry.open(registry_url) as registry:
        role_of = {m.id: m.role for m in registry.members()}
        first = {m.id for m in registry.members_for(ignored.location, FIRST_RESPONDERS)}
        by_role = {
            role: {m.id for m in registry.members_for(ignored.location, [role])}
            for role in (Role.GRID_CHIEF, Role.DUTY_DESK, Role.STREET_OFFICE)
        }
    assert all(by_role.values())  # the community has someone at every level
    try:
        async with running_gateway(settings, alert_clock_ns=clock):
            publish_all(services.mqtt_host, services.mqtt_port, leaking(ignored) + leaking(taken))
            with Registry.open(registry_url) as registry:
                store = AlertStore(registry, AuditStore(settings.audit_path))

                def gas_alerts() -> dict[str, Any]:
                    return {a.location.unit: a for a in store.alerts() if a.kind == "gas_leak"}

                await wait_for(lambda: len(gas_alerts()) == 2, 30, "both gas alerts")
                a = gas_alerts()[ignored.location.unit]
                b = gas_alerts()[taken.location.unit]
                assert a.severity.name == b.severity.name == "I"
                await wait_for(
                    lambda: told(members, a.id, "raised") == first, 30, "first responders"
                )
                await wait_for(lambda: bool(told(members, b.id, "raised")), 30, "b's members")
                # someone in b02 acknowledges: that alert must never escalate
                acker = next(iter(told(members, b.id, "raised")))
                Lifecycle(store, clock_ns=clock).acknowledge(b.id, acker)

                due_at = clock.now + ACK_WITHIN_S * S  # the raise was at the clock's start
                for level, role in enumerate(
                    (Role.GRID_CHIEF, Role.DUTY_DESK, Role.STREET_OFFICE), start=1
                ):
                    assert alert_of(store, a.id).ack_deadline_ns == due_at
                    clock.now = due_at
                    await wait_for(
                        lambda role=role: by_role[role] <= told(members, a.id, "escalated"),
                        30,
                        f"escalation to {role.value}",
                    )
                    assert alert_of(store, a.id).escalation_level == level
                    due_at += ACK_WITHIN_S * S  # each level gets the same time again
                    # the escalator handles every overdue alert in one pass: had the
                    # acknowledged one been due, it would have escalated in the same pass
                    assert alert_of(store, b.id).escalation_level == 0
                    assert not told(members, b.id, "escalated")
                # past the street office there is nobody higher: marked exhausted, left open
                clock.advance(ACK_WITHIN_S)
                await wait_for(lambda: "exhausted" in store_steps(store, a.id), 10, "exhausted")
                assert alert_of(store, a.id).state.value in ("raised", "notified")

        escalated = told(members, a.id, "escalated")
        chain = set().union(*by_role.values())
        assert escalated == chain | first  # the chain, plus reminders to the first responders
        assert {role_of[m] for m in escalated - first} == {
            Role.GRID_CHIEF, Role.DUTY_DESK, Role.STREET_OFFICE
        }  # fmt: skip
        # every level's members were told once per step that reached them (deduplicated by key)
        for member in by_role[Role.STREET_OFFICE]:
            assert steps(members, a.id)[member] == ["escalated"]
        assert AuditStore(settings.audit_path).verify().ok
    finally:
        members.close()
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)


def alert_of(store: AlertStore, alert_id: int) -> Alert:
    alert = store.alert(alert_id)
    assert alert is not None
    return alert


def store_steps(store: AlertStore, alert_id: int) -> list[str]:
    return [e.step for e in store.events(alert_id)]


async def test_a_dead_emergency_webhook_raises_an_alert_to_the_duty_desk(
    services: Services,
    unique: str,
    influx_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with running_receiver() as receiver:
        await dead_webhook_raises_alert(
            services, unique, influx_db, tmp_path, receiver, monkeypatch
        )


async def dead_webhook_raises_alert(
    services: Services,
    unique: str,
    influx_db: str,
    tmp_path: Path,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver.answer = lambda hit, nth: 503  # the dispatch centre's endpoint is down
    monkeypatch.setenv("GRIDGATE_EMERGENCY_WEBHOOK_URL", f"{receiver.origin}/dispatch")
    monkeypatch.setenv("GRIDGATE_WEBHOOK_SECRETS", json.dumps({receiver.origin: SECRET}))
    community, registry_url, _ = registered_community(60, 53, unique, tmp_path)
    detector = gas_detectors(community)[0]
    settings = fast_escalation_settings(services, unique, influx_db, tmp_path, registry_url)
    clock = Clock(time.time_ns())
    members = Members(services.mqtt_host, services.mqtt_port, unique)
    with Registry.open(registry_url) as registry:
        duty_desk = {m.id for m in registry.members_for(detector.location, [Role.DUTY_DESK])}
    try:
        async with running_gateway(settings, alert_clock_ns=clock):
            publish_all(services.mqtt_host, services.mqtt_port, leaking(detector))
            await wait_for(lambda: bool(receiver.hits), 30, "the first webhook attempt")
            # walk the clock through the retries (8 attempts, backoff doubling from 2 s)
            for _ in range(12):
                if members.of_kind("delivery_failed"):
                    break
                clock.advance(600)
                hits = len(receiver.hits)
                await wait_for(lambda hits=hits: len(receiver.hits) > hits
                               or bool(members.of_kind("delivery_failed")), 30, "a retry")  # fmt: skip
            await wait_for(lambda: bool(members.of_kind("delivery_failed")), 30, "the alert")
        failed = members.of_kind("delivery_failed")
        assert set(failed) == duty_desk
        # several deliveries died: one alert (repeats counted), raised once to each member (and,
        # being level I and unacknowledged while the clock runs on, escalated like any other)
        payloads = [p for ps in failed.values() for p in ps]
        assert len({p["alert_id"] for p in payloads}) == 1
        assert [p["step"] for p in payloads].count("raised") == len(duty_desk)
        assert {p["severity"] for p in payloads} == {"I"}
        # the raise's delivery was tried 8 times, then given up (the escalations' reminders,
        # later, are still being retried): never retried forever
        tries = receiver.seen()
        assert tries[receiver.hits[0].delivery] == 8 and max(tries.values()) == 8
        assert all(h.signed for h in receiver.hits)
        with Registry.open(registry_url) as registry:
            store = AlertStore(registry, AuditStore(settings.audit_path))
            [gas] = [a for a in store.alerts() if a.kind == "gas_leak"]
            [dead] = [a for a in store.alerts() if a.kind == "delivery_failed"]
            assert "delivery_failed" in store_steps(store, gas.id)
            assert dead.place == unique and dead.state.value in ("raised", "notified")
    finally:
        members.close()
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)
