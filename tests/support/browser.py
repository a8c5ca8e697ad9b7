"""Debian's headless Chromium driven by Selenium for the browser tests: installed by
`scripts/services.sh browser` (no download at run time), one fresh profile per session, the
page's console collected so a test can assert it stayed clean."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.services import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = ROOT / ".run" / "screenshots"


def ensure_browser() -> None:
    subprocess.run([str(ROOT / "scripts" / "services.sh"), "browser"], check=True, cwd=ROOT)


@contextmanager
def chromium(width: int, height: int) -> Iterator[webdriver.Chrome]:
    """A headless Chromium window of `width`×`height` CSS pixels; quit on exit."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    with tempfile.TemporaryDirectory(prefix="gridgate-chromium-") as profile:
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--disable-quic", "--no-first-run",
                     "--force-device-scale-factor=1", f"--window-size={width},{height}",
                     f"--user-data-dir={profile}"):  # fmt: skip
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        try:
            driver.set_window_size(width, height)
            # the page's viewport exactly (a window's size includes what the browser keeps)
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600,
            })  # fmt: skip
            yield driver
        finally:
            driver.quit()


def wait(driver: webdriver.Chrome, css: str, timeout: float = 15) -> Any:
    """The element `css` names once it is visible."""
    return WebDriverWait(driver, timeout).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, css))
    )


def wait_text(driver: webdriver.Chrome, css: str, text: str, timeout: float = 15) -> None:
    WebDriverWait(driver, timeout).until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text)
    )


def console_errors(driver: webdriver.Chrome) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    driver.save_screenshot(str(path))
    return path
