"""The people's half of the loop (R5.4, R6) through the real services: a gas leak published
over MQTT → the unit head lists it through the API → acknowledges → its acknowledgement
deadline passes on the alerts' fake clock without an escalation → handles, resolves with
feedback, closes with a rating → the timeline shows every step with who and when →
`gridgate audit verify` passes. The live feed sees the alert raised."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import websockets

from gateway.registry import Registry, Role
from simulators.mqtt_tools import drop_session, publish_all
from tests.support.alert_world import Clock
from tests.support.api import add_accounts, api_settings, assert_problem, audit_verify, running_api
from tests.support.community import gas_detectors, leaking
from tests.support.registered import registered_community
from tests.support.services import Services

pytestmark = pytest.mark.integration

S = 1_000_000_000
ACK_WITHIN_S = 300  # level I, shipped routing policy


async def test_a_gas_leak_is_acknowledged_handled_resolved_and_closed_through_the_api(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    community, registry_url, _ = registered_community(60, 71, unique, tmp_path)
    detector = gas_detectors(community)[0]
    settings = api_settings(
        services, unique, influx_db, tmp_path, registry_url, escalation_check_s=0.05
    )
    with Registry.open(registry_url) as registry:
        unit_head = registry.members_for(detector.location, [Role.UNIT_HEAD])[0].id
    add_accounts(settings, {unit_head: {}})
    clock = Clock(time.time_ns())
    try:
        async with running_api(settings, clock) as api:
            token = await api.login(unit_head)
            ws_url = api.url.replace("http", "ws") + "/api/v1/ws/alerts"
            async with websockets.connect(ws_url, additional_headers={
                "Authorization": f"Bearer {token}"}) as feed:  # fmt: skip
                snapshot = json.loads(await asyncio.wait_for(feed.recv(), 10))
                assert snapshot == {"type": "snapshot", "alerts": []}
                publish_all(services.mqtt_host, services.mqtt_port, leaking(detector))
                pushed = await _next_alert(feed, "gas_leak")
            async with api.client(token) as c:
                listed = await _alerts(c, kind="gas_leak")
                assert [a["id"] for a in listed] == [pushed["id"]]
                alert = listed[0]
                assert alert["severity"] == "I"
                assert alert["place"].startswith(f"{unique}/")
                assert alert["allowed_actions"] == ["acknowledge"]
                alert_id = alert["id"]
                r = await c.post(f"/api/v1/alerts/{alert_id}/acknowledge")
                assert r.status_code == 200, r.text
                assert r.json()["state"] == "acknowledged"
                assert r.json()["ack_deadline"] is None
                assert r.json()["acknowledged_by"] is not None  # who, in the answer too
                acked_at = clock()

                # the deadline passes: no escalation (the escalator is also run here, at once)
                clock.advance(ACK_WITHIN_S + 1)
                assert api.gateway.alerts is not None
                assert api.gateway.alerts.escalator.due() == []
                await asyncio.sleep(0.5)  # and its own loop runs ten times meanwhile
                detail = (await c.get(f"/api/v1/alerts/{alert_id}")).json()
                assert detail["escalation_level"] == 0
                assert "escalated" not in [s["step"] for s in detail["timeline"]]

                # a finished action again is a conflict naming what is allowed
                again = assert_problem(await c.post(f"/api/v1/alerts/{alert_id}/close",
                                                    json={"rating": 5}), 409)  # fmt: skip
                assert again["allowed_actions"] == ["start-handling", "resolve", "coordinate"]

                clock.advance(60)
                r = await c.post(f"/api/v1/alerts/{alert_id}/start-handling")
                assert r.json()["state"] == "handling"
                clock.advance(600)
                feedback = "关阀通风，燃气公司已到场；住户电话 13812345678"
                r = await c.post(f"/api/v1/alerts/{alert_id}/resolve", json={"feedback": feedback})
                assert r.json()["state"] == "resolved", r.text
                clock.advance(60)
                r = await c.post(f"/api/v1/alerts/{alert_id}/close", json={"rating": 5})
                assert r.json()["state"] == "closed"
                assert r.json()["allowed_actions"] == ["reopen"]

                detail = (await c.get(f"/api/v1/alerts/{alert_id}")).json()
        steps = {s["step"]: s for s in detail["timeline"]}
        assert list(steps)[:2] == ["raised", "notified"]
        for step in ("acknowledged", "handling", "resolved", "closed"):
            assert steps[step]["actor"] == unit_head, step
        assert _ns(steps["acknowledged"]["at"]) == pytest.approx(acked_at, abs=1_000)
        assert _ns(steps["handling"]["at"]) == pytest.approx(acked_at + 361 * S, abs=1_000)
        assert steps["closed"]["detail"] == {"rating": 5}
        assert detail["rating"] == 5
        assert "13812345678" not in json.dumps(detail)  # scrubbed before it was stored
        assert detail["feedback"].startswith("关阀通风")
        assert detail["deliveries"] and all(d["for_seq"] == 1 for d in detail["deliveries"])
        assert {d["state"] for d in detail["deliveries"]} == {"sent"}
        verified = await asyncio.to_thread(audit_verify, settings)
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)


async def _alerts(client: Any, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    async def look() -> bool:
        r = await client.get("/api/v1/alerts", params=params)
        assert r.status_code == 200, r.text
        found[:] = r.json()["data"]
        return bool(found)

    deadline = time.monotonic() + 30
    while not await look():
        assert time.monotonic() < deadline, "no alert listed"
        await asyncio.sleep(0.1)
    return found


async def _next_alert(feed: Any, kind: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        message = json.loads(await asyncio.wait_for(feed.recv(), deadline - time.monotonic()))
        if message["type"] == "alert" and message["alert"]["kind"] == kind:
            alert: dict[str, Any] = message["alert"]
            return alert


def _ns(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso).timestamp() * 1e9)


async def test_a_feed_client_that_falls_behind_is_closed_with_4008(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    """A one-message queue and three alerts found in one poll: the client is closed with a
    clear code rather than buffered, and a new connection starts from a fresh snapshot."""
    community, registry_url, _ = registered_community(60, 76, unique, tmp_path)
    settings = api_settings(
        services, unique, influx_db, tmp_path, registry_url, api_feed_queue=1, api_feed_poll_s=2.0
    )
    with Registry.open(registry_url) as registry:
        chief = registry.members_for(community.devices[0].location, [Role.GRID_CHIEF])[0].id
    add_accounts(settings, {chief: {}})
    leaks = [m for d in gas_detectors(community)[:3] for m in leaking(d)]
    try:
        async with running_api(settings) as api:
            token = await api.login(chief)
            url = api.url.replace("http", "ws") + f"/api/v1/ws/alerts?token={token}"
            async with websockets.connect(url) as feed:
                assert json.loads(await asyncio.wait_for(feed.recv(), 10))["type"] == "snapshot"
                publish_all(services.mqtt_host, services.mqtt_port, leaks)
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    while True:
                        await asyncio.wait_for(feed.recv(), 30)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4008
            async with websockets.connect(url) as again:
                snapshot = json.loads(await asyncio.wait_for(again.recv(), 10))
            assert snapshot["type"] == "snapshot"
            assert {a["kind"] for a in snapshot["alerts"]} == {"gas_leak"}
            assert len(snapshot["alerts"]) == 3
            async with websockets.connect(url.split("?")[0] + "?token=ggt_forged") as denied:
                with pytest.raises(websockets.ConnectionClosed) as refused:
                    await asyncio.wait_for(denied.recv(), 10)
            assert refused.value.rcvd is not None and refused.value.rcvd.code == 4401
            async with api.client() as c:
                metrics = (await c.get("/metrics")).text
            assert (
                'gridgate_api_websocket_slow_closed_total{feed="/api/v1/ws/alerts"} 1.0' in metrics
            )
    finally:
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)
