"""A device's registry entry (R1.2)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from devices.families import Family
from devices.location import Location


@dataclass(slots=True, frozen=True)
class DeviceInfo:
    device_id: str
    family: Family
    adapter: str
    vendor: str
    location: Location
    household: str = ""  # the household an elder device serves; empty otherwise
    power: str = "mains"  # "mains" or "battery": decides the offline timeout
    installed: date | None = None
    # Face-recognition gates only: the owners approved its installation (R3.3, seed 004)
    gate_approved: bool = False
