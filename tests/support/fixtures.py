"""The real-service fixtures integration and browser tests share (their conftests import them):
one start of the services per session, a unique community id and InfluxDB database per test."""

from __future__ import annotations

import os
import re
import subprocess
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from tests.support.services import ROOT, Services


@pytest.fixture(scope="session")
def services() -> Services:
    subprocess.run([str(ROOT / "scripts" / "services.sh"), "start"], check=True, cwd=ROOT)
    return Services(
        mqtt_host="127.0.0.1",
        mqtt_port=int(os.environ.get("GRIDGATE_MQTT_PORT", "18830")),
        influx_url=f"http://127.0.0.1:{int(os.environ.get('GRIDGATE_INFLUX_PORT', '18086'))}",
    )


@pytest.fixture
def unique() -> str:
    """A short id unique to this test: use it as community id / database suffix. No run of
    four digits: ids built from it (``m-<code>-0001``) must not look like a phone number,
    or the registry rightly refuses them (t1bf1441237 made 14412370001)."""
    while True:
        code = "t" + uuid.uuid4().hex[:10]
        if not re.search(r"\d{4}", code):
            return code


@pytest.fixture
def influx_db(services: Services, unique: str) -> Iterator[str]:
    """A fresh InfluxDB database name for this test (created by whoever writes first), dropped
    afterwards: a developer's InfluxDB that kept every test's database took over a minute to
    start after a few hundred runs."""
    name = f"gg_{unique}"
    yield name
    query = urllib.parse.urlencode({"q": f'DROP DATABASE "{name}"'}).encode()
    try:
        with urllib.request.urlopen(f"{services.influx_url}/query", query, timeout=10):
            pass
    except OSError:  # InfluxDB is down: the database stays, costing only start-up time
        pass
