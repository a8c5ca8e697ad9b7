"""Who may see and do what through the API (R3.4): two buildings' heads, their grid worker,
an operator key scoped to one building, an auditor, an administrator and nobody at all, each
against every endpoint — inside their places an answer, outside 404 exactly as for what does
not exist, without credentials 401, with a role that may not do it 403. Logins: one answer
for every kind of failure, then throttled, and every failure audited."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.alerts.model import Alert
from gateway.audit.store import AuditStore
from gateway.registry import Registry, Role
from privacy.audit import AuditAction
from simulators.mqtt_tools import drop_session, publish_all
from tests.support.api import (
    PASSWORD,
    ApiHandle,
    add_accounts,
    api_key,
    api_settings,
    assert_problem,
    running_api,
)
from tests.support.community import gas_detectors, leaking
from tests.support.polling import wait_for
from tests.support.registered import registered_community
from tests.support.services import Services

pytestmark = pytest.mark.integration

READS = [
    "/api/v1/places",
    "/api/v1/members",
    "/api/v1/devices",
    "/api/v1/devices/status",
    "/api/v1/alerts",
    "/api/v1/readings?measurement=safety&field=gas_lel_pct",
    "/api/v1/aggregates/entries",
    "/api/v1/reident/requests",
]


async def test_every_caller_sees_and_does_only_what_its_role_and_places_allow(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    community, registry_url, _ = registered_community(150, 72, unique, tmp_path)
    by_building = {d.location.building: d for d in gas_detectors(community)}
    d1, d2 = by_building["b01"], by_building["b02"]
    b1, b2 = f"{unique}/g01/b01", f"{unique}/g01/b02"
    settings = api_settings(services, unique, influx_db, tmp_path, registry_url)
    with Registry.open(registry_url) as registry:
        head1 = registry.members_for(d1.location, [Role.BUILDING_HEAD])[0].id
        head2 = registry.members_for(d2.location, [Role.BUILDING_HEAD])[0].id
        worker = registry.members_for(d1.location, [Role.GRID_WORKER])[0].id
        in_b1 = {d.device_id for d in registry.all_devices() if d.location.building == "b01"}
    add_accounts(settings, {
        head1: {}, head2: {}, worker: {},
        "auditor1": {"role": "auditor", "scope": unique},
        "admin1": {"role": "admin", "scope": unique},
    })  # fmt: skip
    operator = api_key(settings, "operator", b2)
    try:
        async with running_api(settings) as api:
            publish_all(services.mqtt_host, services.mqtt_port, leaking(d1) + leaking(d2))
            alerts = await _gas_alerts(api, 2)
            a1 = next(a for a in alerts if a.place.startswith(b1 + "/"))
            a2 = next(a for a in alerts if a.place.startswith(b2 + "/"))
            tokens = {u: await api.login(u) for u in (head1, head2, worker, "auditor1", "admin1")}

            # nobody: 401 everywhere, as a problem
            async with api.client() as c:
                for path in [*READS, "/api/v1/audit", "/api/v1/deadletters/counts",
                             f"/api/v1/alerts/{a1.id}", f"/api/v1/devices/{d1.device_id}"]:  # fmt: skip
                    assert_problem(await c.get(path), 401)
                assert_problem(await c.post(f"/api/v1/alerts/{a1.id}/acknowledge"), 401)
            async with api.client("ggt_not-a-token") as c:
                assert_problem(await c.get("/api/v1/alerts"), 401)
            async with api.client(operator[:-2] + "xx") as c:  # a key with a wrong secret
                assert_problem(await c.get("/api/v1/alerts"), 401)

            # building heads: their building only; the other's alert does not exist for them
            for head, mine, theirs, place, other in (
                (head1, a1, a2, b1, b2), (head2, a2, a1, b2, b1)
            ):  # fmt: skip
                async with api.client(tokens[head]) as c:
                    for path in READS:
                        assert (await c.get(path)).status_code == 200, (head, path)
                    ids = [a["id"] for a in (await c.get("/api/v1/alerts")).json()["data"]]
                    assert ids == [mine.id]
                    assert_problem(await c.get(f"/api/v1/alerts/{theirs.id}"), 404)
                    missing = assert_problem(await c.get("/api/v1/alerts/999999"), 404)
                    outside = assert_problem(await c.get(f"/api/v1/alerts/{theirs.id}"), 404)
                    assert outside == missing  # outside looks exactly like nothing
                    assert_problem(await c.post(f"/api/v1/alerts/{theirs.id}/acknowledge"), 404)
                    assert_problem(await c.get("/api/v1/alerts", params={"place": other}), 404)
                    assert_problem(await c.get("/api/v1/readings", params={
                        "measurement": "safety", "field": "gas_lel_pct", "place": other}), 404)  # fmt: skip
                    places = (await c.get("/api/v1/places")).json()["data"]
                    assert [p["key"] for p in places] == [place]
                    members = {m["id"] for m in (await c.get("/api/v1/members")).json()["data"]}
                    assert head in members and worker in members
                    assert ({head1, head2} - {head}).isdisjoint(members)
                    assert all("channels" not in m and "target" not in str(m) for m in
                               (await c.get("/api/v1/members")).json()["data"])  # fmt: skip
                    assert_problem(await c.get("/api/v1/audit"), 403)
                    assert_problem(await c.post("/api/v1/audit/verify"), 403)
                    assert_problem(await c.get("/api/v1/deadletters/counts"), 403)
            async with api.client(tokens[head1]) as c:
                devices = await _all_devices(c)
                assert devices == in_b1
                assert (await c.get(f"/api/v1/devices/{d1.device_id}")).status_code == 200
                assert_problem(await c.get(f"/api/v1/devices/{d2.device_id}"), 404)
                status = (await c.get("/api/v1/devices/status")).json()
                assert status["total"] == len(in_b1)
                assert [b["key"] for b in status["by_building"]] == [b1]
                r = await c.post(f"/api/v1/alerts/{a1.id}/acknowledge")
                assert r.status_code == 200 and r.json()["state"] == "acknowledged"

            # the grid worker: both buildings, and may act on both
            async with api.client(tokens[worker]) as c:
                ids = {a["id"] for a in (await c.get("/api/v1/alerts")).json()["data"]}
                assert {a1.id, a2.id} <= ids
                r = await c.post(f"/api/v1/alerts/{a2.id}/acknowledge")
                assert r.status_code == 200, r.text

            # the operator's key (building 2): reads its building, never acts
            async with api.client(operator) as c:
                for path in READS[:-1]:
                    assert (await c.get(path)).status_code == 200, path
                ids = [a["id"] for a in (await c.get("/api/v1/alerts")).json()["data"]]
                assert ids == [a2.id]
                assert_problem(await c.get(f"/api/v1/alerts/{a1.id}"), 404)
                assert_problem(await c.post(f"/api/v1/alerts/{a2.id}/start-handling"), 403)
                assert_problem(await c.get(f"/api/v1/devices/{d1.device_id}"), 404)
                assert_problem(await c.get("/api/v1/audit"), 403)
                assert_problem(await c.get("/api/v1/deadletters/counts"), 403)
                assert_problem(await c.post("/api/v1/reident/requests", json={
                    "pseudonym": "k1:abc", "reason": "r", "purpose": "p"}), 403)  # fmt: skip
                me = (await c.get("/api/v1/auth/me")).json()
                assert me["roles"] == ["operator"] and me["scopes"] == [b2]

            # the auditor reads and verifies the log; the administrator counts dead letters
            async with api.client(tokens["auditor1"]) as c:
                log = (await c.get("/api/v1/audit", params={"action": "alert_action"})).json()
                assert log["count"] > 0
                assert {r["subject"] for r in log["data"]} >= {f"alert:{a1.id}", f"alert:{a2.id}"}
                verified = (await c.post("/api/v1/audit/verify")).json()
                assert verified["ok"] is True, verified
                assert_problem(await c.post(f"/api/v1/alerts/{a2.id}/resolve",
                                            json={"feedback": "x"}), 403)  # fmt: skip
                assert_problem(await c.get("/api/v1/deadletters/counts"), 403)
            async with api.client(tokens["admin1"]) as c:
                assert (await c.get("/api/v1/deadletters/counts")).status_code == 200
                assert (await c.get("/api/v1/audit")).status_code == 200
                assert_problem(await c.post("/api/v1/audit/verify"), 403)  # auditors only
                assert_problem(await c.post(f"/api/v1/alerts/{a2.id}/start-handling"), 403)
    finally:
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)


async def test_logins_answer_alike_are_throttled_and_audited(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    _, registry_url, _ = registered_community(60, 73, unique, tmp_path)
    settings = api_settings(services, unique, influx_db, tmp_path, registry_url)
    with Registry.open(registry_url) as registry:
        member = registry.members()[0].id
    add_accounts(settings, {member: {}})
    async with running_api(settings, ingest=False) as api, api.client() as c:

        async def login(user: str, password: str) -> Any:
            return await c.post("/api/v1/auth/token",
                                data={"username": user, "password": password})  # fmt: skip

        wrong = assert_problem(await login(member, "not the password"), 401)
        unknown = assert_problem(await login("nobody-here", PASSWORD), 401)
        phone = assert_problem(await login("13812345678", PASSWORD), 401)
        assert wrong == unknown == phone  # no account enumeration
        for _ in range(4):  # five failures for this account in all …
            assert_problem(await login(member, "still wrong"), 401)
        # … then even the right password waits
        throttled = assert_problem(await login(member, PASSWORD), 429)
        assert "try again" in throttled["detail"]
        metrics = (await c.get("/metrics")).text
        assert 'gridgate_api_login_failures_total{outcome="refused"} 7.0' in metrics
        assert 'gridgate_api_login_failures_total{outcome="throttled"} 1.0' in metrics
    with AuditStore(settings.audit_path) as audit:
        records = [r for r in audit.records() if r.action is AuditAction.LOGIN]
    outcomes = [(r.subject, r.details["outcome"]) for r in records]
    assert outcomes.count((f"user:{member}", "refused")) == 5
    assert outcomes.count(("user:unknown", "refused")) == 2
    assert outcomes[-1] == (f"user:{member}", "throttled")
    assert "13812345678" not in str([r.body() for r in records])


async def _gas_alerts(api: ApiHandle, n: int) -> list[Alert]:
    store = api.gateway.alerts.engine.store  # type: ignore[union-attr]

    def found() -> list[Alert]:
        return [a for a in store.alerts() if a.kind == "gas_leak"]

    await wait_for(lambda: len(found()) >= n, 30, f"{n} gas alerts")
    return found()


async def _all_devices(c: Any) -> set[str]:
    ids: set[str] = set()
    offset = 0
    while True:
        page = (await c.get("/api/v1/devices", params={"offset": offset, "limit": 500})).json()
        ids |= {d["id"] for d in page["data"]}
        offset += 500
        if offset >= page["count"]:
            return ids
