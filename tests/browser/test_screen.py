"""The property firm's monitoring screen (大屏, R6) in real headless Chromium at 1920×1080, with
an operator's key: it loads with a clean console and shows the API's counts; a gas leak
published over MQTT appears within 2 s of being raised, without a reload, and its building's
tile turns red; a unit head acknowledges it on the phone page and the screen shows who, live,
its countdown now the resolve limit's; a dropped live feed is shown as such and comes back by
itself; no raw personal value is in the DOM; at 1366×768 nothing runs off the side."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By

from gateway.registry import Registry, Role
from simulators.mqtt_tools import drop_session, publish_all
from tests.support.api import add_accounts, api_key, api_settings, running_api
from tests.support.browser import chromium, console_errors, screenshot, wait, wait_text
from tests.support.community import gas_detectors, leaking
from tests.support.leak_search import planted
from tests.support.member_page import acknowledge_on_the_phone
from tests.support.polling import wait_for
from tests.support.readings import personal_entries
from tests.support.registered import registered_community
from tests.support.services import Services

pytestmark = [pytest.mark.integration, pytest.mark.browser]


class Screen:
    """The screen in its own thread's browser, driven step by step from the test."""

    def __init__(self, url: str, key: str, size: tuple[int, int]) -> None:
        self.url, self.key, self.size = url, key, size
        self.steps: list[tuple[Any, threading.Event, dict[str, Any]]] = []
        self.lock = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            with chromium(*self.size) as driver:
                driver.get(f"{self.url}/")
                wait(driver, "#key").send_keys(self.key)
                driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
                wait(driver, "#fresh.live")
                while True:
                    with self.lock:
                        while not self.steps:
                            self.lock.wait()
                        step, done, out = self.steps.pop(0)
                    if step is None:
                        done.set()
                        return
                    try:
                        out["value"] = step(driver)
                    except BaseException as exc:  # handed to the test
                        out["error"] = exc
                    done.set()
        except BaseException as exc:
            self.error = exc

    async def do(self, step: Any) -> Any:
        done, out = threading.Event(), {}
        with self.lock:
            self.steps.append((step, done, out))
            self.lock.notify()
        while not done.wait(0.01):
            if self.error is not None:
                raise self.error
            await asyncio.sleep(0.02)
        if "error" in out:
            raise out["error"]
        return out.get("value")

    async def close(self) -> None:
        if self.thread.is_alive():
            await self.do(None)
        self.thread.join(10)


def _text(driver: Any, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


async def test_the_screen_shows_the_community_live(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    community, registry_url, _ = registered_community(150, 82, unique, tmp_path)
    detector = next(d for d in gas_detectors(community) if d.location.building == "b01")
    settings = api_settings(services, unique, influx_db, tmp_path, registry_url)
    with Registry.open(registry_url) as registry:
        head = registry.members_for(detector.location, [Role.UNIT_HEAD])[0].id
    add_accounts(settings, {head: {}})
    key = api_key(settings, "operator", unique)
    b01 = f"{unique}/g01/b01"
    try:
        async with running_api(settings) as api:
            async with api.client(key) as c:
                status = (await c.get("/api/v1/devices/status")).json()
            screen = Screen(api.url, key, (1920, 1080))
            screen.thread.start()
            try:
                first = await screen.do(lambda d: {
                    "open": _text(d, "#open-count"),
                    "online": d.find_element(By.ID, "online-rate").get_attribute("data-online"),
                    "total": d.find_element(By.ID, "online-rate").get_attribute("data-total"),
                    "tiles": len(d.find_elements(By.CSS_SELECTOR, "#map .tile")),
                    "red": len(d.find_elements(By.CSS_SELECTOR, "#map .tile.sev-I")),
                })  # fmt: skip
                assert first == {"open": "0", "online": str(status["online"]),
                                 "total": str(status["total"]), "tiles": 2, "red": 0}  # fmt: skip

                store = api.gateway.alerts.engine.store  # type: ignore[union-attr]
                # gates report entries with everything a terminal may send about a person
                publish_all(services.mqtt_host, services.mqtt_port, personal_entries(community))
                publish_all(services.mqtt_host, services.mqtt_port, leaking(detector))
                await wait_for(lambda: bool(store.open_alerts()), 30, "the gas alert")
                [alert] = store.open_alerts()
                raised = time.monotonic()
                entries_stored = asyncio.create_task(_suppressed_entries(api.url, key))

                def shown(d: Any) -> float:
                    wait(d, f"#alerts tr[data-alert-id='{alert.id}']", timeout=2)
                    return time.monotonic() - raised

                latency = await screen.do(shown)
                row = await screen.do(lambda d: {
                    "text": _text(d, f"#alerts tr[data-alert-id='{alert.id}']"),
                    "flash": d.find_element(By.CSS_SELECTOR, f"tr[data-alert-id='{alert.id}']").get_attribute("class"),
                    "tile": d.find_element(By.CSS_SELECTOR, f".tile[data-place='{b01}']").get_attribute("class"),
                    "due": d.find_element(By.CSS_SELECTOR, f"tr[data-alert-id='{alert.id}'] .countdown").get_attribute("data-due"),
                    "open": _text(d, "#open-count"),
                })  # fmt: skip
                assert latency < 2.0
                assert "燃气泄漏" in row["text"] and "I" in row["text"]
                assert row["flash"] == "flash"  # a new level-I alert flashes (and sounds)
                assert "sev-I" in row["tile"] and row["open"] == "1"
                assert _ms(row["due"]) == _ms_of(alert.ack_deadline_ns)
                await screen.do(lambda d: screenshot(d, "screen-1920x1080.png"))

                def building(d: Any) -> str:
                    d.find_element(By.CSS_SELECTOR, f".tile[data-place='{b01}']").click()
                    wait_text(d, "#building", "台设备")
                    return _text(d, "#building")

                in_b01 = sum(1 for x in community.devices if x.location.building == "b01")
                shown_b01 = await screen.do(building)
                assert f"{in_b01} 台设备" in shown_b01 and "1单元" in shown_b01

                # the unit head acknowledges on the phone: the screen shows who, live
                phone = await asyncio.to_thread(acknowledge_on_the_phone, api.url, head)
                assert phone["errors"] == []

                def acknowledged(d: Any) -> dict[str, Any]:
                    css = f"#alerts tr[data-alert-id='{alert.id}']"
                    wait_text(d, f"{css} .acker", head, timeout=10)
                    return {"state": _text(d, f"{css} .state"),
                            "due": d.find_element(By.CSS_SELECTOR, f"{css} .countdown").get_attribute("data-due")}  # fmt: skip

                after = await screen.do(acknowledged)
                now = store.alert(alert.id)
                assert now is not None and now.ack_deadline_ns is None
                assert after["state"] == "已接收"
                # the acknowledgement countdown stopped; what is left is the resolve limit
                assert _ms(after["due"]) == _ms_of(now.resolve_deadline_ns)

                # the live feed drops: the screen says so, then reconnects by itself
                def dropped(d: Any) -> str:
                    d.execute_script("window.gridgateScreen.socket.close()")
                    wait(d, "#fresh.stale", timeout=5)
                    stale = _text(d, "#fresh")
                    wait(d, "#fresh.live", timeout=10)
                    return stale

                assert "中断" in await screen.do(dropped)
                assert await entries_stored >= 1  # the entries arrived: few persons, suppressed
                await screen.do(lambda d: d.execute_script("return loadCharts()"))
                page = await screen.do(
                    lambda d: {"dom": d.page_source, "errors": console_errors(d)}
                )
                assert page["errors"] == []
                assert not [v for v in planted() if v in page["dom"]]
            finally:
                await screen.close()

            small = Screen(api.url, key, (1366, 768))
            small.thread.start()
            try:
                width = await small.do(lambda d: (
                    wait(d, f"#alerts tr[data-alert-id='{alert.id}']"),
                    screenshot(d, "screen-1366x768.png"),
                    d.execute_script("return document.documentElement.scrollWidth"),
                )[2])  # fmt: skip
                assert width <= 1366
            finally:
                await small.close()
    finally:
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)


async def _suppressed_entries(url: str, key: str) -> int:
    """Suppressed entry cells, once the planted entries are in InfluxDB."""
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
        deadline = time.monotonic() + 30
        while True:
            found = (await c.get("/api/v1/aggregates/entries")).json()
            if found["suppressed"] or time.monotonic() > deadline:
                return int(found["suppressed"])
            await asyncio.sleep(0.2)


def _ms(due: str | None) -> int | None:
    return int(due) if due else None


def _ms_of(ns: int | None) -> int | None:
    return None if ns is None else ns // 1_000_000
