"""Browser tests: the real services (tests/support/fixtures.py) and Debian's Chromium."""

from __future__ import annotations

import pytest

from tests.support.browser import ensure_browser
from tests.support.fixtures import influx_db, services, unique


@pytest.fixture(scope="session", autouse=True)
def browser_installed() -> None:
    ensure_browser()


__all__ = ["influx_db", "services", "unique"]
