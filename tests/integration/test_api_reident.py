"""Re-identification through the API (R3.5): a request names a reason and a purpose; the
requester cannot approve it; an approver can; the identity is shown to the requester once,
to nobody else; an emergency claim is honoured only with an open level-I/II alert at the
place. Every step, refusals included, is in the audit log."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.audit.store import AuditStore
from gateway.registry import Registry, Role
from privacy.audit import AuditAction
from simulators.mqtt_tools import drop_session, publish_all
from tests.support.api import add_accounts, api_settings, assert_problem, running_api
from tests.support.community import gas_detectors, leaking
from tests.support.polling import wait_for
from tests.support.registered import registered_community
from tests.support.services import Services

pytestmark = pytest.mark.integration


async def test_graded_approval_and_the_emergency_path(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    community, registry_url, _ = registered_community(60, 75, unique, tmp_path)
    detector = gas_detectors(community)[0]
    settings = api_settings(services, unique, influx_db, tmp_path, registry_url)
    with Registry.open(registry_url) as registry:
        head = registry.members_for(detector.location, [Role.UNIT_HEAD])[0].id
        in_unit = {h.id: h for h in registry.households()
                   if (h.location.building, h.location.unit)
                   == (detector.location.building, detector.location.unit)}  # fmt: skip
        resident = next(r for r in registry.residents() if r.household in in_unit)
        pseudonym = next(iter(registry.pseudonyms_of(resident.id).values()))
        household = in_unit[resident.household]
    room = "/".join(p for p in (household.location.community, household.location.grid,
                                household.location.building, household.location.unit,
                                household.location.room) if p)  # fmt: skip
    unit = detector.location
    unit_key = f"{unit.community}/{unit.grid}/{unit.building}/{unit.unit}"
    add_accounts(settings, {head: {}, "approver1": {"role": "approver", "scope": unique}})
    body = {"pseudonym": pseudonym, "reason": "welfare check", "purpose": "call the family"}
    try:
        async with running_api(settings) as api:
            mine, approver = await api.login(head), await api.login("approver1")
            async with api.client(mine) as c:
                made = await c.post("/api/v1/reident/requests", json=body)
                assert made.status_code == 201, made.text
                request = made.json()
                assert request["status"] == "pending" and request["requester"] == head
                rid = request["id"]
                # no grant yet; the requester holds no approver role
                assert_problem(await c.post(f"/api/v1/reident/requests/{rid}/resolve"), 403)
                assert_problem(await c.post(f"/api/v1/reident/requests/{rid}/approve"), 403)
                assert_problem(await c.post("/api/v1/reident/requests",
                                            json={**body, "reason": ""}), 422)  # fmt: skip
            async with api.client(approver) as c:
                pending = (await c.get("/api/v1/reident/requests")).json()["data"]
                assert [r["id"] for r in pending] == [rid]
                r = await c.post(f"/api/v1/reident/requests/{rid}/approve")
                assert r.status_code == 200 and r.json()["status"] == "granted"
                # only the requester sees who it is
                assert_problem(await c.post(f"/api/v1/reident/requests/{rid}/resolve"), 404)
            async with api.client(mine) as c:
                shown = (await c.post(f"/api/v1/reident/requests/{rid}/resolve")).json()
                assert shown == {"request_id": rid, "resident_id": resident.id,
                                 "household_id": resident.household}  # fmt: skip
                again = assert_problem(await c.post(f"/api/v1/reident/requests/{rid}/resolve"), 403)
                assert "once" in again["detail"]

                # an emergency claim without an open critical alert is an ordinary request
                claim = {**body, "place": room, "emergency": True}
                quiet = (await c.post("/api/v1/reident/requests", json=claim)).json()
                assert quiet["status"] == "pending" and quiet["emergency"] is False
                # with a gas leak (level I) in the resident's unit it is granted at once
                assert room.startswith(unit_key + "/")
                publish_all(services.mqtt_host, services.mqtt_port, leaking(detector))
                store = api.gateway.alerts.engine.store  # type: ignore[union-attr]
                await wait_for(lambda: bool(store.open_alerts()), 30, "the gas alert")
                urgent = (await c.post("/api/v1/reident/requests", json=claim)).json()
                assert urgent["status"] == "granted" and urgent["emergency"] is True
                assert urgent["needs_review"] is True
            async with api.client(approver) as c:  # the approver does not uphold it
                reviewed = await c.post(f"/api/v1/reident/requests/{urgent['id']}/review",
                                        json={"upheld": False, "note": "no danger to life"})  # fmt: skip
                assert reviewed.status_code == 200, reviewed.text
                assert reviewed.json()["needs_review"] is False
                assert_problem(await c.post(f"/api/v1/reident/requests/{urgent['id']}/review",
                                            json={"upheld": True}), 409)  # fmt: skip
            async with api.client(mine) as c:  # revoked at once: nothing to resolve
                revoked = assert_problem(
                    await c.post(f"/api/v1/reident/requests/{urgent['id']}/resolve"), 403
                )
                assert "expired or was revoked" in revoked["detail"]
                # a place outside one's own is not there
                assert_problem(await c.post("/api/v1/reident/requests", json={
                    **body, "place": f"{unique}/g99"}), 404)  # fmt: skip
    finally:
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)
    with AuditStore(settings.audit_path) as audit:
        steps = [(r.action, r.actor, "refused" in r.details) for r in audit.records()
                 if r.subject == rid]  # fmt: skip
    assert (AuditAction.REIDENT_REQUEST, head, False) in steps
    assert (AuditAction.REIDENT_APPROVE, head, True) in steps  # the refused self-approval
    assert (AuditAction.REIDENT_APPROVE, "approver1", False) in steps
    assert steps.count((AuditAction.REIDENT_RESOLVE, head, False)) == 1
    assert (AuditAction.REIDENT_RESOLVE, head, True) in steps  # the second look, refused
