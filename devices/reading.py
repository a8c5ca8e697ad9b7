"""The canonical reading every adapter produces and every later stage consumes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from devices.families import Channel, Family
from devices.location import Location

SCHEMA_VERSION = 1

# `time_ns` of a reading whose device sends no clock (DL/T 645 frames, most binary protocols):
# the gateway stamps it with the time the message arrived. Decoders stay pure.
RECEIVE_TIME = 0

# A stored value: InfluxDB fields are float, int, bool or string.
Value = float | int | bool | str


@dataclass(slots=True, frozen=True)
class Reading:
    """One observation of one device at one instant.

    `kind` is ``telemetry`` for periodic values, the event kind (``fall``, ``door_forced`` …)
    for events and the status kind for liveness. `values` holds the family's canonical fields
    (see `devices.models`); straight out of an adapter it may also hold vendor fields the
    privacy policy has not seen yet — privacy drops every field it does not allow.
    """

    device_id: str
    family: Family
    channel: Channel
    kind: str
    time_ns: int
    location: Location
    values: Mapping[str, Any]
    schema_version: int = SCHEMA_VERSION

    def with_values(self, values: Mapping[str, Any]) -> Reading:
        return replace(self, values=values)

    def with_location(self, location: Location) -> Reading:
        return replace(self, location=location)
