"""WeCom and DingTalk group robots (issue 16): real HTTP robots that check the documented body
and DingTalk's signature; a level-I alert posted once; a storm of 200 level-IV alerts merged
into digests, at most 20 messages in any minute of the delivery clock, none dropped, and a
level-I alert in the middle of it posted before the digests waiting; and, through a running
gateway, a gas leak told to the building's group chat once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gateway.alerts.delivery import DeliveryWorker, Outbox
from gateway.alerts.delivery.robots import ROBOT_CHANNELS, Robot, RobotSender
from gateway.alerts.model import Notification
from gateway.registry import Registry
from simulators.mqtt_tools import drop_session, publish_all
from tests.support.alert_world import Clock
from tests.support.community import community_settings, gas_detectors, leaking
from tests.support.gateway_util import running_gateway
from tests.support.polling import wait_for
from tests.support.registered import registered_community
from tests.support.robot_receivers import DINGTALK_SECRET, running_robots
from tests.support.services import Services

pytestmark = pytest.mark.integration

S = 1_000_000_000
MINUTE = 60 * S


def notification(alert_id: int, robot: str, severity: str, at_ns: int) -> Notification:
    payload = {
        "alert_id": alert_id, "event_seq": 1, "step": "raised", "kind": "battery",
        "severity": severity, "place": "xf/g01/b01", "place_names": ["幸福小区", "第一网格", "1号楼"],
        "raised_at": "2026-12-05T00:30:00Z", "subject_ref": "k1:aaaaaaaaaaaaaaaaaaaaaaaaaa",
        "device_id": "sd-1",
    }  # fmt: skip
    kind = "wecom" if robot == "wecom-b01" else "dingtalk"
    return Notification(f"{alert_id}:1:robot:{robot}:{kind}", alert_id, f"robot:{robot}", kind,
                        robot, payload)  # fmt: skip


def most_in_a_minute(times: list[int]) -> int:
    times = sorted(times)
    return max((sum(1 for t in times if start <= t < start + MINUTE) for start in times), default=0)


async def test_level_i_once_and_a_storm_of_200_within_the_rate_with_nothing_dropped(
    tmp_path: Path,
) -> None:
    clock = Clock(1_764_900_000 * S)
    registry = Registry.open(f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    outbox = Outbox(registry.engine, clock_ns=clock)
    dead: list[object] = []
    with running_robots(clock) as robots:
        sender = RobotSender(
            {"wecom-b01": Robot("wecom-b01", "wecom", robots.wecom_url),
             "ding-b01": Robot("ding-b01", "dingtalk", robots.dingtalk_url, DINGTALK_SECRET)},
            clock_ns=clock, link_for=lambda alert_id: f"https://gw.example.cn/m/?alert={alert_id}",
        )  # fmt: skip
        worker = DeliveryWorker(
            outbox, None, None, clock_ns=clock, on_dead=dead.append, robots=sender,
            channels=ROBOT_CHANNELS, concurrency=200, lease_s=180, poll_s=0.05,
        )  # fmt: skip
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        try:
            # one level-I alert: one message on each robot
            outbox.enqueue([notification(1, r, "I", clock()) for r in ("wecom-b01", "ding-b01")])
            worker.notify()
            await wait_for(lambda: len(robots.of("wecom")) == len(robots.of("dingtalk")) == 1,
                           30, "the level-I alert on both robots")  # fmt: skip
            first = robots.of("wecom")[0].text
            assert "一级（特别重大）红色" in first and "幸福小区 第一网格 1号楼" in first
            assert "https://gw.example.cn/m/?alert=1" in first
            assert "k1:" not in first and "sd-1" not in first  # no pseudonym, no device

            # the storm: 200 level-IV alerts at once, a level-I one in the middle, time walking
            storm = list(range(100, 300))
            for alert_id in storm[:100]:
                outbox.enqueue([notification(alert_id, r, "IV", clock()) for r in ("wecom-b01", "ding-b01")])  # fmt: skip
            worker.notify()
            await wait_for(lambda: len(robots.of("wecom")) >= 2, 30, "the storm begins")
            outbox.enqueue([notification(2, r, "I", clock()) for r in ("wecom-b01", "ding-b01")])
            for alert_id in storm[100:]:
                outbox.enqueue([notification(alert_id, r, "IV", clock()) for r in ("wecom-b01", "ding-b01")])  # fmt: skip
            worker.notify()
            for _ in range(40):  # 10 simulated minutes, 15 s at a time
                told = {i for p in robots.of("wecom") for i in p.alert_ids}
                if set(storm) | {2} <= told and set(storm) | {2} <= {
                    i for p in robots.of("dingtalk") for i in p.alert_ids
                }:
                    break
                clock.advance(15)
                await asyncio.sleep(0.2)
            assert robots.refused == []  # every body and signature as documented
            for robot in ("wecom", "dingtalk"):
                posts = robots.of(robot)
                told = [i for p in posts for i in p.alert_ids]
                assert set(storm) <= set(told), (
                    f"{robot}: dropped {sorted(set(storm) - set(told))[:5]}"
                )
                assert most_in_a_minute([p.at_ns for p in posts]) <= 20, robot
                assert len(posts) < 40, f"{robot}: a burst is merged, not posted one by one"
                # level I went out before every digest that was waiting when it arrived
                level_i = next(n for n, p in enumerate(posts) if 2 in p.alert_ids)
                waiting_after = [
                    n for n, p in enumerate(posts) if set(p.alert_ids) & set(storm[100:])
                ]
                assert level_i < min(waiting_after), robot
                assert posts[level_i].alert_ids == [2]
            assert sender.messages == len(robots.of("wecom")) + len(robots.of("dingtalk"))
            total = 2 * (len(storm) + 2)
            await wait_for(
                lambda: outbox.counts().get("sent") == total, 30, "every item marked sent"
            )
            assert not outbox.counts().get("pending")
            assert dead == []
        finally:
            stop.set()
            await asyncio.wait_for(running, 30)
            await sender.aclose()
            registry.engine.dispose()


ROUTING = """\
version: 1
severities:
  I: {roles: [unit_head, building_head, grid_worker, property_duty], ack_within_s: 300, resolve_within_s: 7200}
  II: {roles: [unit_head, building_head, grid_worker, property_duty], ack_within_s: 900, resolve_within_s: 28800}
  III: {roles: [grid_worker, property_duty], ack_within_s: 3600, resolve_within_s: 86400}
  IV: {roles: [property_duty], ack_within_s: 86400, resolve_within_s: 604800}
escalation:
  levels:
    - roles: [grid_chief]
robots:
  b01-wecom: {kind: wecom, url_env: GRIDGATE_TEST_WECOM_URL}
  community-ding: {kind: dingtalk, url_env: GRIDGATE_TEST_DING_URL, secret_env: GRIDGATE_TEST_DING_SECRET}
groups:
  - {robot: b01-wecom, building: b01}
  - {robot: community-ding, severities: [I]}
"""


async def test_a_gas_leak_reaches_the_buildings_group_chat_once(
    services: Services,
    unique: str,
    influx_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    community, registry_url, _ = registered_community(60, 53, unique, tmp_path)
    detector = next(d for d in gas_detectors(community) if d.location.building == "b01")
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING, encoding="utf-8")
    clock = Clock(time.time_ns())
    with running_robots(clock) as robots:
        monkeypatch.setenv("GRIDGATE_TEST_WECOM_URL", robots.wecom_url)
        monkeypatch.setenv("GRIDGATE_TEST_DING_URL", robots.dingtalk_url)
        monkeypatch.setenv("GRIDGATE_TEST_DING_SECRET", DINGTALK_SECRET)
        settings = community_settings(
            services, unique, influx_db, tmp_path, registry_url, routing_policy=routing,
            audit_path=tmp_path / "audit.sqlite3", public_url="https://gw.example.cn",
        )  # fmt: skip
        try:
            async with running_gateway(settings, alert_clock_ns=clock):
                publish_all(services.mqtt_host, services.mqtt_port, leaking(detector))
                await wait_for(lambda: robots.of("wecom") and robots.of("dingtalk"), 30,
                               "the gas leak in both group chats")  # fmt: skip
                await asyncio.sleep(0.5)  # anything more would arrive now: the readings repeat
            for robot in ("wecom", "dingtalk"):
                posts = robots.of(robot)
                raised = [p for p in posts if "新告警" in p.text or "告警升级" in p.text]
                assert len({i for p in raised for i in p.alert_ids}) == 1, (robot, posts)
                assert len([p for p in posts if "新告警" in p.text]) == 1, robot
                assert "燃气泄漏" in posts[0].text and "/m/?alert=" in posts[0].text
            assert robots.refused == []
        finally:
            drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)
