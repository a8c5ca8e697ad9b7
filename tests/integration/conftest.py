"""Real services for integration tests: one start per session, isolated names per test.

`scripts/services.sh start` installs (if missing) and starts Mosquitto and influxd on loopback;
it is idempotent, so running it from several xdist workers at once is safe (it takes a lock).
Each test gets its own MQTT topic prefix (a community id) and its own InfluxDB database.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.support.services import ROOT, Services

__all__ = ["ROOT", "Services"]  # still importable from here (tests/integration/test_privacy_leak*)


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
    """A short id unique to this test: use it as community id / database suffix."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def influx_db(unique: str) -> Iterator[str]:
    """A fresh InfluxDB database name for this test (created by whoever writes first)."""
    yield f"gg_{unique}"
