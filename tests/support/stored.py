"""What InfluxDB holds, counted the way the exactness tests compare it with what was sent."""

from __future__ import annotations

from gateway.storage.influx_v1 import InfluxV1Client
from gateway.storage.retention import qualified

MEASUREMENTS = ("access", "safety", "meter", "elder", "device_status")


async def stored_counts(influx: InfluxV1Client) -> dict[tuple[str, str], int]:
    """(measurement, device) → points stored, in the retention policy of each measurement."""
    out: dict[tuple[str, str], int] = {}
    for m in MEASUREMENTS:
        query = f'SELECT count("schema") FROM {qualified(m)} GROUP BY "device"'
        for row in await influx.query(query):
            out[(m, row["device"])] = int(row["count"])
    return out
