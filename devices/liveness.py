"""A device going online or offline (R1.3): what liveness tracking finds, what storage writes
and what the alert rules react to."""

from __future__ import annotations

from dataclasses import dataclass

from devices.families import Family
from devices.location import Location


@dataclass(frozen=True, slots=True)
class LivenessEvent:
    device_id: str
    family: Family
    location: Location
    online: bool
    at_ns: int
    reason: str  # "traffic", "status_online", "last_will", "silent"


__all__ = ["LivenessEvent"]
