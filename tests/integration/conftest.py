"""Real services for integration tests: one start per session, isolated names per test.

`scripts/services.sh start` installs (if missing) and starts Mosquitto and influxd on loopback;
it is idempotent, so running it from several xdist workers at once is safe (it takes a lock).
Each test gets its own MQTT topic prefix (a community id) and its own InfluxDB database. The
fixtures live in tests/support/fixtures.py (the browser tests use them too).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fixtures import influx_db, services, unique
from tests.support.influx_util import PrivateInflux
from tests.support.postgres import PrivatePostgres
from tests.support.services import ROOT, Services

__all__ = [
    "ROOT",
    "Services",
    "influx_db",
    "postgres",
    "private_influx",
    "services",
    "unique",
]


@pytest.fixture
def private_influx(tmp_path: Path) -> Iterator[PrivateInflux]:
    """An influxd of this test's own, which it may stop, freeze or restart: the shared one
    serves every other test in parallel."""
    influx = PrivateInflux(tmp_path / "influxd")
    influx.start()
    yield influx
    influx.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PrivatePostgres]:
    """One PostgreSQL per test process (an xdist worker); each test makes its own database."""
    server = PrivatePostgres()
    server.start()
    yield server
    server.stop()
