"""Alert scenarios through the real services: simulator → Mosquitto → gateway (rules, engine,
routing, outbox) → MQTT → real subscribers standing in for the grid members' apps."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.alerts.store import AlertStore
from gateway.audit.store import AuditStore
from gateway.registry import Registry, Role
from simulators.mqtt_tools import drop_session
from tests.support.community import community_settings, simulate
from tests.support.gateway_util import running_gateway
from tests.support.members import FIRST_RESPONDERS, Members
from tests.support.polling import wait_for
from tests.support.registered import registered_community
from tests.support.services import Services

pytestmark = pytest.mark.integration


async def test_gas_leak_reaches_exactly_the_responsible_members(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    community, registry_url, fleet = registered_community(300, 31, unique, tmp_path)
    home = next(h for h in community.households if h.building == "b03" and h.unit == "u2")
    settings = community_settings(services, unique, influx_db, tmp_path, registry_url).model_copy(
        update={"audit_path": tmp_path / "audit.sqlite3"}
    )
    members = Members(services.mqtt_host, services.mqtt_port, unique)
    try:
        async with running_gateway(settings):
            await simulate(
                services,
                ["--households", "300", "--speed", "600", "--duration", "20", "--seed", "31",
                 "--community", unique, "--fleet-out", str(fleet),
                 "--scenario", f"gas-leak@b03/u2/{home.room}@30m"],
            )  # fmt: skip
            await wait_for(lambda: bool(members.of_kind("gas_leak")), 30, "gas alerts delivered")
            await wait_for(lambda: any(p["severity"] == "I" for ps in members.of_kind("gas_leak").values() for p in ps), 30, "the level-I upgrade")  # fmt: skip
            # the leak is over within the run: whoever was told hears the all-clear
            await wait_for(lambda: all(any(p["step"] == "cleared" for p in ps) for ps in members.of_kind("gas_leak").values()), 30, "the all-clear")  # fmt: skip
        with Registry.open(registry_url) as registry:
            place = next(d for d in registry.all_devices() if d.household == home.id).location
            expected = {m.id for m in registry.members_for(place, FIRST_RESPONDERS)}
            everyone = {m.id: m for m in registry.members()}
        gas = members.of_kind("gas_leak")
        assert set(gas) == expected  # that unit's head, b03's head, the grid workers, property duty
        roles = {everyone[m].role for m in gas}
        assert roles == set(FIRST_RESPONDERS)
        # the alert is about b03/u2, and reached nobody scoped to another building
        assert all(p["building"] == "b03" and p["unit"] == "u2" for ps in gas.values() for p in ps)
        with Registry.open(registry_url) as registry:
            store = AlertStore(registry, AuditStore(settings.audit_path))
            [alert] = [a for a in store.alerts() if a.kind == "gas_leak"]
        assert alert.count > 2  # every further reading above the threshold counted, silently
        # repeats of the same condition did not notify again: per member one raise, one
        # upgrade, and once the leak was over one all-clear
        for payloads in gas.values():
            assert sorted(p["step"] for p in payloads) == ["cleared", "raised", "upgraded"]
        assert AuditStore(settings.audit_path).verify().ok
    finally:
        members.close()
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)


async def test_smoke_spreading_is_one_building_incident_not_one_notification_per_detector(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    _, registry_url, fleet = registered_community(300, 37, unique, tmp_path)
    settings = community_settings(services, unique, influx_db, tmp_path, registry_url).model_copy(
        update={"audit_path": tmp_path / "audit.sqlite3"}
    )
    members = Members(services.mqtt_host, services.mqtt_port, unique)
    try:
        async with running_gateway(settings):
            await simulate(
                services,
                ["--households", "300", "--speed", "600", "--duration", "20", "--seed", "37",
                 "--community", unique, "--fleet-out", str(fleet),
                 "--scenario", "smoke-spreading@b02@30m"],
            )  # fmt: skip
            await wait_for(lambda: bool(members.of_kind("building_fire")), 30, "the incident")
        with Registry.open(registry_url) as registry:
            store = AlertStore(registry, AuditStore(settings.audit_path))
            alerts = store.alerts()
        [incident] = [a for a in alerts if a.kind == "building_fire"]
        assert incident.place.endswith("/b02") and incident.severity.name == "I"
        unit_fires = [a for a in alerts if a.kind == "fire"]
        assert len(unit_fires) >= 2  # smoke in several units (6 detectors, one alert per unit)
        grouped = [a for a in unit_fires if a.incident_id == incident.id]
        assert len(grouped) >= len(unit_fires) - 1  # all but a first one raised before grouping
        # notifications: the incident, plus at most the one unit alert that came first
        notified_fire_alerts = {
            p["alert_id"] for ps in members.of_kind("fire").values() for p in ps
        }
        assert len(notified_fire_alerts) <= 1
        # the incident reached every unit head of b02 (their unit alerts were silenced)
        with Registry.open(registry_url) as registry:
            heads = {m.id for m in registry.members_within(incident.location, [Role.UNIT_HEAD])}
        assert heads and heads <= set(members.of_kind("building_fire"))
    finally:
        members.close()
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)


async def test_elder_living_alone_without_water_use_raises_the_water_alert(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    community, registry_url, fleet = registered_community(300, 41, unique, tmp_path)
    home = next(h for h in community.households if h.elder_alone)
    settings = community_settings(services, unique, influx_db, tmp_path, registry_url).model_copy(
        update={"audit_path": tmp_path / "audit.sqlite3"}
    )
    members = Members(services.mqtt_host, services.mqtt_port, unique)
    try:
        async with running_gateway(settings):
            # 20 simulated hours at 3600×: the household uses no water from hour 2 on.
            await simulate(
                services,
                ["--households", "300", "--speed", "3600", "--duration", "20", "--seed", "41",
                 "--community", unique, "--fleet-out", str(fleet),
                 "--scenario", f"elder-inactive@{home.building}/{home.unit}/{home.room}@2h@hours=16"],
            )  # fmt: skip
            await wait_for(lambda: bool(members.of_kind("elder_inactive")), 30, "the water alert")
        inactive = members.of_kind("elder_inactive")
        elsewhere = [
            {k: p.get(k) for k in ("alert_id", "step", "building", "unit", "place", "time")}
            for ps in inactive.values()
            for p in ps
            if (p["building"], p["unit"]) != (home.building, home.unit)
        ]
        assert not elsewhere, f"{home.building}/{home.unit}: {elsewhere}"
        with Registry.open(registry_url) as registry:
            store = AlertStore(registry, AuditStore(settings.audit_path))
            kinds = [a.kind for a in store.alerts() if a.kind == "elder_inactive"]
        assert kinds == ["elder_inactive"]  # that one household, no other elder
    finally:
        members.close()
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)
