"""The grid member's phone page (/m/, R5.7) in real headless Chromium at 375×812: a unit head
signs in, sees the gas leak published over MQTT a moment ago at the top of their list, opens
it and acknowledges it — the alert is acknowledged in the shared database, its escalation
deadline gone, the page shows the new state and the step in its timeline; the console stays
clean and no raw personal value is in the DOM."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.alerts.model import AlertState
from gateway.registry import Registry, Role
from simulators.mqtt_tools import drop_session, publish_all
from tests.support.api import add_accounts, api_settings, running_api
from tests.support.community import gas_detectors, leaking
from tests.support.leak_search import planted
from tests.support.member_page import acknowledge_on_the_phone
from tests.support.polling import wait_for
from tests.support.registered import registered_community
from tests.support.services import Services

pytestmark = [pytest.mark.integration, pytest.mark.browser]


async def test_a_unit_head_acknowledges_a_gas_leak_on_the_phone_page(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    community, registry_url, _ = registered_community(60, 81, unique, tmp_path)
    detector = gas_detectors(community)[0]
    settings = api_settings(services, unique, influx_db, tmp_path, registry_url)
    with Registry.open(registry_url) as registry:
        head = registry.members_for(detector.location, [Role.UNIT_HEAD])[0].id
    add_accounts(settings, {head: {}})
    try:
        async with running_api(settings) as api:
            publish_all(services.mqtt_host, services.mqtt_port, leaking(detector))
            store = api.gateway.alerts.engine.store  # type: ignore[union-attr]
            await wait_for(lambda: bool(store.open_alerts()), 30, "the gas alert")
            [alert] = store.open_alerts()
            assert alert.ack_deadline_ns is not None
            seen = await asyncio.to_thread(acknowledge_on_the_phone, api.url, head)
            after = store.alert(alert.id)
    finally:
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)
    assert seen["errors"] == []
    assert "燃气泄漏" in seen["first_item"] and "sev-I" in seen["first_class"]
    assert "1号楼" in seen["first_item"]  # the place by its names, not its key
    assert seen["count"] == "1"
    assert seen["actions_before"] == ["acknowledge"] and seen["deadline_shown"]
    assert after is not None and after.state is AlertState.ACKNOWLEDGED
    assert after.ack_deadline_ns is None  # the escalation for not acknowledging stopped
    assert "已接收" in seen["detail"] and head in seen["timeline"]
    assert seen["actions_after"] == ["start-handling", "resolve", "coordinate"]
    assert seen["width"] <= 375  # no sideways scrolling on a phone
    assert seen["reconnected"]
    assert not [v for v in planted() if v in seen["dom"]]
    for shot in (seen["list_shot"], seen["detail_shot"]):
        assert shot.stat().st_size > 5_000
