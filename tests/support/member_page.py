"""What a grid member does on the phone page (/m/) in the browser tests: shared by the member
page's own test and the screen's (which watches the acknowledgement arrive)."""

from __future__ import annotations

from typing import Any

from selenium.webdriver.common.by import By

from tests.support.api import PASSWORD
from tests.support.browser import chromium, console_errors, screenshot, wait, wait_text


def acknowledge_on_the_phone(url: str, user: str) -> dict[str, Any]:
    """What a unit head does on the page; returns what the page showed."""
    seen: dict[str, Any] = {}
    with chromium(375, 812) as driver:
        driver.get(f"{url}/m/")
        wait(driver, "#username").send_keys(user)
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
        first = wait(driver, "#alerts li")
        wait_text(driver, "#live", "实时")
        seen["first_item"] = first.text
        seen["first_class"] = first.get_attribute("class")
        seen["count"] = driver.find_element(By.ID, "count").text
        seen["list_shot"] = screenshot(driver, "member-list-375x812.png")
        first.click()
        wait(driver, "button[data-action=acknowledge]")
        seen["actions_before"] = [
            b.get_attribute("data-action")
            for b in driver.find_elements(By.CSS_SELECTOR, "#actions button")
        ]
        seen["deadline_shown"] = "逐级上报" in driver.find_element(By.ID, "detail").text
        driver.find_element(By.CSS_SELECTOR, "button[data-action=acknowledge]").click()
        wait_text(driver, "#detail", "已接收")
        wait_text(driver, "#timeline", "接收")
        seen["detail"] = driver.find_element(By.ID, "detail").text
        seen["timeline"] = driver.find_element(By.ID, "timeline").text
        seen["actions_after"] = [
            b.get_attribute("data-action")
            for b in driver.find_elements(By.CSS_SELECTOR, "#actions button")
        ]
        seen["detail_shot"] = screenshot(driver, "member-alert-375x812.png")
        # the live feed drops: the page says so and reconnects by itself
        driver.execute_script("window.gridgateMember.socket.close()")
        wait_text(driver, "#live", "中断")
        wait_text(driver, "#live", "实时")
        seen["reconnected"] = True
        seen["width"] = driver.execute_script("return document.documentElement.scrollWidth")
        seen["dom"] = driver.page_source
        seen["errors"] = console_errors(driver)
    return seen
