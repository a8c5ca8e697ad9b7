"""How a reading becomes an InfluxDB point (R4).

Measurement = family (``access``, ``safety``, ``meter``, ``elder``) or ``device_status`` for
liveness. Tags: community, grid, building, unit (low-cardinality places), kind, and ``device``
— InfluxDB overwrites a point with the same series and timestamp, so without a per-device
series two detectors of one unit reporting in the same millisecond would silently overwrite
each other. Device ids are equipment serials, not personal data. Everything else, including
the room (a household), is a field.
"""

from __future__ import annotations

from devices.families import Channel
from devices.liveness import LivenessEvent
from devices.reading import Reading
from gateway.storage.line_protocol import (
    escape_field_key,
    escape_measurement,
    escape_tag_key,
    format_field_value,
)
from gateway.storage.line_protocol import escape_key as escape_tag_value

STATUS_MEASUREMENT = "device_status"
LIVENESS_MEASUREMENT = "liveness"
_PREFIX_CACHE_LIMIT = 200_000


def measurement_of(reading: Reading) -> str:
    return STATUS_MEASUREMENT if reading.channel is Channel.STATUS else reading.family.value


class PointEncoder:
    """Encodes readings to lines; caches the series key, which repeats for every device."""

    def __init__(self) -> None:
        self._prefixes: dict[tuple[object, ...], str] = {}

    def series_key(self, reading: Reading) -> str:
        loc = reading.location
        key = (reading.family, reading.channel, reading.kind, reading.device_id, loc)
        prefix = self._prefixes.get(key)
        if prefix is None:
            tags = {
                "building": loc.building,
                "community": loc.community,
                "device": reading.device_id,
                "grid": loc.grid,
                "kind": reading.kind,
                "unit": loc.unit,
            }
            prefix = escape_measurement(measurement_of(reading)) + "".join(
                f",{escape_tag_key(k)}={escape_tag_value(v)}" for k, v in sorted(tags.items()) if v
            )
            if len(self._prefixes) >= _PREFIX_CACHE_LIMIT:
                self._prefixes.clear()
            self._prefixes[key] = prefix
        return prefix

    def encode(self, reading: Reading) -> str:
        """One line of line protocol; raises ValueError for a value InfluxDB cannot hold."""
        # `schema` is on every point: it versions the fields and makes count("schema") exact.
        parts = [f"schema={reading.schema_version}i"]
        parts.extend(
            f"{escape_field_key(k)}={format_field_value(v)}" for k, v in reading.values.items()
        )
        if reading.location.room:
            parts.append(f"room={format_field_value(reading.location.room)}")
        return f"{self.series_key(reading)} {','.join(parts)} {reading.time_ns}"

    def encode_liveness(self, event: LivenessEvent) -> str:
        """A device going online or offline: measurement `liveness`, same tags as readings."""
        loc = event.location
        tags = {
            "building": loc.building,
            "community": loc.community,
            "device": event.device_id,
            "family": event.family.value,
            "grid": loc.grid,
            "unit": loc.unit,
        }
        key = escape_measurement(LIVENESS_MEASUREMENT) + "".join(
            f",{escape_tag_key(k)}={escape_tag_value(v)}" for k, v in sorted(tags.items()) if v
        )
        online = "true" if event.online else "false"
        reason = format_field_value(event.reason)
        return f"{key} schema=1i,online={online},reason={reason} {event.at_ns}"
