"""Real services for integration tests: one start per session, isolated names per test.

`scripts/services.sh start` installs (if missing) and starts Mosquitto and influxd on loopback;
it is idempotent, so running it from several xdist workers at once is safe (it takes a lock).
Each test gets its own MQTT topic prefix (a community id) and its own InfluxDB database. The
fixtures live in tests/support/fixtures.py (the browser tests use them too).
"""

from __future__ import annotations

from tests.support.fixtures import influx_db, services, unique
from tests.support.services import ROOT, Services

__all__ = ["ROOT", "Services", "influx_db", "services", "unique"]
