"""A small simulated fleet: devices of all four families placed in a community, with state.

Pure and deterministic: the same (community, devices, seed) gives the same devices, and the
same sequence of `now_ns` gives the same readings, so a failing test can be replayed. Each
device owns its own `random.Random` seeded from its id, so adding devices or reading them in a
different order does not change what the others report.

Readings stay inside the ranges of `devices.models` and are continuous (meters only count
up, batteries only drain, vital signs wander instead of jumping): alert rules and screens
should see a quiet, plausible community until a scenario injects trouble.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from random import Random
from typing import Any, ClassVar

from devices.families import (
    TELEMETRY_KIND,
    AccessEvent,
    AccessMethod,
    Channel,
    ElderEvent,
    Family,
    MeterEvent,
    SafetyEvent,
)
from devices.info import DeviceInfo
from devices.location import Location
from devices.reading import Reading
from devices.topics import is_valid_id
from simulators.people import Resident, fake_face_feature, fake_plate, fake_resident

NS_PER_MS = 1_000_000
ADAPTER = "gridgate_json"
VENDOR = "gridgate-sim"

# Share of each family in a fleet (R7: meters dominate, access devices are few but busy).
FAMILY_SHARES: dict[Family, float] = {
    Family.METER: 0.40,
    Family.SAFETY: 0.35,
    Family.ELDER: 0.10,
    Family.ACCESS: 0.15,
}
ID_PREFIX: dict[Family, str] = {
    Family.METER: "m",
    Family.SAFETY: "s",
    Family.ELDER: "e",
    Family.ACCESS: "a",
}
BUILDINGS_PER_GRID = 5
DEVICES_PER_BUILDING = 50
LOW_BATTERY_PCT = 20.0


def family_counts(devices: int) -> dict[Family, int]:
    """Split `devices` by `FAMILY_SHARES` (largest remainder), at least one each from 4 up."""
    if devices < 0:
        raise ValueError("devices must be >= 0")
    exact = {f: devices * share for f, share in FAMILY_SHARES.items()}
    counts = {f: math.floor(x) for f, x in exact.items()}
    if devices >= len(FAMILY_SHARES):
        for f in counts:
            counts[f] = max(counts[f], 1)
    order = sorted(FAMILY_SHARES, key=lambda f: exact[f] - math.floor(exact[f]), reverse=True)
    i = 0
    while sum(counts.values()) < devices:
        counts[order[i % len(order)]] += 1
        i += 1
    while sum(counts.values()) > devices:  # only after the at-least-one bump: take from the largest
        largest = max(counts, key=lambda f: counts[f])
        counts[largest] -= 1
    return counts


@dataclass(slots=True, frozen=True)
class Building:
    grid: str
    name: str  # "3号楼"
    units: int
    floors: int
    rooms_per_floor: int  # per unit

    def room_location(self, community: str, rng: Random) -> Location:
        unit = rng.randint(1, self.units)
        room = rng.randint(1, self.floors) * 100 + rng.randint(1, self.rooms_per_floor)
        return Location(community, self.grid, self.name, f"{unit}单元", str(room))


def make_buildings(community: str, count: int, seed: int) -> list[Building]:
    """Buildings numbered across the community (as Chinese estates do), five per grid."""
    rng = Random(f"gridgate-sim:{seed}:{community}:layout")
    return [
        Building(
            grid=f"g{i // BUILDINGS_PER_GRID + 1:02d}",
            name=f"{i + 1}号楼",
            units=rng.choice((1, 2, 2, 3, 4)),
            floors=rng.choice((6, 11, 18, 18, 26, 33)),
            rooms_per_floor=rng.choice((2, 2, 3, 4)),
        )
        for i in range(count)
    ]


class SimDevice(ABC):
    """One simulated device: identity, place and the state that keeps its readings continuous.

    Timestamps are the caller's clock in whole milliseconds (the wire format's resolution),
    bumped so that one device never reports twice in the same millisecond: InfluxDB would
    otherwise overwrite the earlier point and stored counts would not match sent counts.
    """

    family: ClassVar[Family]

    def __init__(self, device_id: str, location: Location, rng: Random, household: str = ""):
        if not is_valid_id(device_id):
            raise ValueError(f"device id {device_id!r} is not topic-safe")
        self.device_id = device_id
        self.location = location
        self.household = household
        self.rng = rng
        self.power = "mains"  # or "battery": decides the gateway's offline timeout
        self.last_ms = 0
        self.readings = 0

    def next_reading(self, now_ns: int) -> Reading:
        ms = max(now_ns // NS_PER_MS, self.last_ms + 1)
        dt_s = (ms - self.last_ms) / 1000 if self.last_ms else 0.0
        self.last_ms = ms
        self.readings += 1
        channel, kind, values = self._observe(dt_s)
        return Reading(
            device_id=self.device_id,
            family=self.family,
            channel=channel,
            kind=kind,
            time_ns=ms * NS_PER_MS,
            location=self.location,
            values=values,
        )

    def info(self) -> DeviceInfo:
        """The registry entry a property firm would hand over for this device (R1.2)."""
        return DeviceInfo(
            device_id=self.device_id,
            family=self.family,
            adapter=ADAPTER,
            vendor=VENDOR,
            location=self.location,
            household=self.household,
            power=self.power,
        )

    @abstractmethod
    def _observe(self, dt_s: float) -> tuple[Channel, str, dict[str, Any]]:
        """Advance the state by `dt_s` seconds and report it."""

    def _walk(self, value: float, step: float, lo: float, hi: float) -> float:
        return min(hi, max(lo, value + self.rng.gauss(0, step)))


def _telemetry(values: dict[str, Any]) -> tuple[Channel, str, dict[str, Any]]:
    return Channel.TELEMETRY, TELEMETRY_KIND, values


class _Battery:
    """A slowly draining battery that reports `low_battery` once when it crosses the limit."""

    def __init__(self, rng: Random) -> None:
        self.pct = rng.uniform(35.0, 100.0)
        self.warned = False

    def drain(self, rng: Random) -> bool:
        """Drain a little; True exactly once, when the level first falls below the limit."""
        self.pct = max(0.0, self.pct - rng.uniform(0.0, 0.004))
        if self.pct < LOW_BATTERY_PCT and not self.warned:
            self.warned = True
            return True
        return False


class ElectricityMeter(SimDevice):
    family = Family.METER

    def __init__(self, device_id: str, location: Location, rng: Random, household: str = ""):
        super().__init__(device_id, location, rng, household)
        self.energy_kwh = rng.uniform(200.0, 30_000.0)
        self.power_kw = rng.uniform(0.1, 1.5)
        self.voltage_v = rng.gauss(220.0, 3.0)

    def _observe(self, dt_s: float) -> tuple[Channel, str, dict[str, Any]]:
        self.power_kw = self._walk(self.power_kw, 0.08, 0.03, 8.0)
        self.voltage_v = self._walk(self.voltage_v, 0.6, 205.0, 235.0)
        self.energy_kwh += self.power_kw * dt_s / 3600
        power_factor = 0.95
        return _telemetry(
            {
                "meter_type": "electricity",
                "energy_kwh": round(self.energy_kwh, 2),
                "voltage_v": round(self.voltage_v, 1),
                "current_a": round(self.power_kw * 1000 / (self.voltage_v * power_factor), 3),
                "power_kw": round(self.power_kw, 4),
            }
        )


class WaterMeter(SimDevice):
    family = Family.METER

    def __init__(self, device_id: str, location: Location, rng: Random, household: str = ""):
        super().__init__(device_id, location, rng, household)
        self.power = "battery"
        self.water_m3 = rng.uniform(20.0, 3000.0)
        self.flow_m3h = 0.0
        self.battery = _Battery(rng)

    def _observe(self, dt_s: float) -> tuple[Channel, str, dict[str, Any]]:
        # Taps are mostly closed; when open, a household draws 0.1–1.5 m³/h.
        if self.flow_m3h == 0.0:
            if self.rng.random() < 0.05:
                self.flow_m3h = self.rng.uniform(0.1, 1.5)
        elif self.rng.random() < 0.3:
            self.flow_m3h = 0.0
        self.water_m3 += self.flow_m3h * dt_s / 3600
        low = self.battery.drain(self.rng)
        values: dict[str, Any] = {
            "meter_type": "water",
            "water_m3": round(self.water_m3, 3),
            "flow_m3h": round(self.flow_m3h, 3),
            "valve": "open",
            "battery_pct": round(self.battery.pct, 1),
        }
        if low:
            return Channel.EVENT, MeterEvent.LOW_BATTERY.value, values | {"battery_low": True}
        return _telemetry(values)


class SafetyDetector(SimDevice):
    family = Family.SAFETY
    SELF_TEST_CHANCE = 1 / 400

    def __init__(self, device_id: str, location: Location, rng: Random, household: str = ""):
        super().__init__(device_id, location, rng, household)
        self.detector: str = rng.choices(("smoke", "gas", "co", "combo"), (40, 35, 10, 15))[0]
        self.temperature_c = rng.uniform(18.0, 28.0)
        self.humidity_pct = rng.uniform(35.0, 70.0)
        # Kitchen gas detectors are mains powered; smoke/CO alarms run on batteries.
        self.battery = None if self.detector == "gas" else _Battery(rng)
        self.power = "mains" if self.battery is None else "battery"

    def _observe(self, dt_s: float) -> tuple[Channel, str, dict[str, Any]]:
        self.temperature_c = self._walk(self.temperature_c, 0.05, 5.0, 38.0)
        self.humidity_pct = self._walk(self.humidity_pct, 0.2, 15.0, 95.0)
        values: dict[str, Any] = {"detector": self.detector}
        low = False
        if self.battery is not None:
            low = self.battery.drain(self.rng)
            values["battery_pct"] = round(self.battery.pct, 1)
        if low:
            return Channel.EVENT, SafetyEvent.LOW_BATTERY.value, values
        if self.rng.random() < self.SELF_TEST_CHANCE:
            return Channel.EVENT, SafetyEvent.SELF_TEST.value, values | {"self_test_ok": True}
        if self.detector in ("smoke", "combo"):
            values["smoke_density_db_m"] = round(abs(self.rng.gauss(0, 0.01)), 3)
            values["smoke_alarm"] = False
        if self.detector in ("gas", "combo"):
            values["gas_lel_pct"] = round(abs(self.rng.gauss(0, 0.3)), 1)
        if self.detector in ("co", "combo"):
            values["co_ppm"] = round(abs(self.rng.gauss(0, 1.5)), 1)
        values["temperature_c"] = round(self.temperature_c, 1)
        values["humidity_pct"] = round(self.humidity_pct, 1)
        values["tamper"] = False
        return _telemetry(values)


class ElderWearable(SimDevice):
    """A wrist band for an elder living alone: health data, so sensitive (PIPL Art. 28)."""

    family = Family.ELDER

    def __init__(self, device_id: str, location: Location, rng: Random, household: str = ""):
        super().__init__(device_id, location, rng, household)
        self.power = "battery"
        self.heart_rate = rng.uniform(65.0, 85.0)
        self.spo2 = rng.uniform(96.0, 98.5)
        self.body_temp = rng.uniform(36.2, 36.8)
        self.steps = rng.randrange(0, 3000)
        self.inactive_min = 0.0
        self.battery = _Battery(rng)

    def _observe(self, dt_s: float) -> tuple[Channel, str, dict[str, Any]]:
        self.heart_rate = self._walk(self.heart_rate, 1.5, 60.0, 100.0)
        self.spo2 = self._walk(self.spo2, 0.3, 95.0, 99.0)
        self.body_temp = self._walk(self.body_temp, 0.02, 36.0, 37.2)
        walking = self.rng.random() < 0.3
        if walking:
            self.steps += self.rng.randint(5, 60)
            self.inactive_min = 0.0
        else:
            self.inactive_min = min(self.inactive_min + dt_s / 60, 7 * 1440)
        low = self.battery.drain(self.rng)
        values: dict[str, Any] = {
            "heart_rate_bpm": float(round(self.heart_rate)),
            "spo2_pct": float(round(self.spo2)),
            "body_temp_c": round(self.body_temp, 1),
            "steps": self.steps,
            "activity": "walking" if walking else "resting",
            "inactive_min": round(self.inactive_min, 1),
            "worn": True,
            "battery_pct": round(self.battery.pct, 1),
            "inside_geofence": True,
        }
        if low:
            return Channel.EVENT, ElderEvent.LOW_BATTERY.value, values
        return _telemetry(values)


class UnitDoor(SimDevice):
    """A unit entrance door terminal (face / card / QR): every reading is an entry event.

    Its payloads carry the resident's name, ID number, phone, card number and face feature,
    as real terminals do: that is exactly what the privacy layer has to remove.
    """

    family = Family.ACCESS

    def __init__(
        self,
        device_id: str,
        location: Location,
        rng: Random,
        residents: Sequence[Resident],
        door: str,
    ):
        super().__init__(device_id, location, rng)
        self.residents = residents
        self.door = door

    def _observe(self, dt_s: float) -> tuple[Channel, str, dict[str, Any]]:
        rng = self.rng
        method = rng.choices((AccessMethod.FACE, AccessMethod.CARD, AccessMethod.QR), (6, 3, 1))[0]
        direction = rng.choice(("in", "in", "out"))
        values: dict[str, Any] = {"door": self.door, "method": method.value, "direction": direction}
        if method is AccessMethod.FACE and rng.random() < 0.04:  # a stranger's face
            values |= {
                "granted": False,
                "similarity": round(rng.uniform(0.2, 0.6), 3),
                "face_feature": fake_face_feature(rng),
            }
            return Channel.EVENT, AccessEvent.ENTRY_DENIED.value, values
        who = rng.choice(self.residents)
        values["granted"] = True
        values["person_name"] = who.name
        if method is AccessMethod.FACE:
            values |= {
                "similarity": round(rng.uniform(0.86, 0.995), 3),
                "id_number": who.id_number,
                "phone": who.phone,
                "face_feature": who.face_feature,
            }
        elif method is AccessMethod.CARD:
            values |= {"card_no": who.card_no, "id_number": who.id_number}
        else:
            values["phone"] = who.phone
        return Channel.EVENT, AccessEvent.ENTRY_GRANTED.value, values


class VehicleBarrier(SimDevice):
    """A car park barrier at a community gate: plate recognition, owner data for residents."""

    family = Family.ACCESS

    def __init__(
        self,
        device_id: str,
        location: Location,
        rng: Random,
        residents: Sequence[Resident],
        door: str,
    ):
        super().__init__(device_id, location, rng)
        self.owners = [r for r in residents if r.plate]
        self.door = door

    def _observe(self, dt_s: float) -> tuple[Channel, str, dict[str, Any]]:
        rng = self.rng
        entering = rng.random() < 0.5
        kind = AccessEvent.VEHICLE_ENTRY if entering else AccessEvent.VEHICLE_EXIT
        values: dict[str, Any] = {
            "door": self.door,
            "method": AccessMethod.PLATE.value,
            "direction": "in" if entering else "out",
            "granted": True,
        }
        if self.owners and rng.random() < 0.85:
            owner = rng.choice(self.owners)
            values |= {"plate": owner.plate, "person_name": owner.name, "phone": owner.phone}
        else:  # a visitor's car: only the plate is known
            values["plate"] = fake_plate(rng)
        return Channel.EVENT, kind.value, values


def make_fleet(community: str, devices: int, seed: int) -> list[SimDevice]:
    """`devices` devices of all four families spread over a community's buildings."""
    if not is_valid_id(community):
        raise ValueError(f"community id {community!r} is not topic-safe")
    counts = family_counts(devices)
    n_buildings = max(1, math.ceil(devices / DEVICES_PER_BUILDING))
    buildings = make_buildings(community, n_buildings, seed)
    people_rng = Random(f"gridgate-sim:{seed}:{community}:residents")
    residents = [fake_resident(people_rng) for _ in range(max(20, 2 * devices))]

    def rng_for(device_id: str) -> Random:
        return Random(f"gridgate-sim:{seed}:{community}:{device_id}")

    fleet: list[SimDevice] = []
    for family in (Family.METER, Family.SAFETY, Family.ELDER, Family.ACCESS):
        for n in range(1, counts[family] + 1):
            device_id = f"{ID_PREFIX[family]}-{n:04d}"
            rng = rng_for(device_id)
            fleet.append(_make_device(family, device_id, n, rng, community, buildings, residents))
    return fleet


def _make_device(
    family: Family,
    device_id: str,
    n: int,
    rng: Random,
    community: str,
    buildings: Sequence[Building],
    residents: Sequence[Resident],
) -> SimDevice:
    building = rng.choice(buildings)
    if family is Family.ACCESS:
        # One access device in five is a car park barrier at a gate (the 2nd, 7th, …), so
        # any fleet with two or more has one.
        if n % 5 == 2:
            gate = rng.choice(("北门", "南门", "东门", "西门"))
            door = f"{gate}车道{rng.randint(1, 3)}"
            return VehicleBarrier(device_id, Location(community), rng, residents, door)
        unit = f"{rng.randint(1, building.units)}单元"
        location = Location(community, building.grid, building.name, unit)
        return UnitDoor(device_id, location, rng, residents, f"{building.name}{unit}门")
    location = building.room_location(community, rng)
    household = f"{location.building}-{location.unit}-{location.room}"
    if family is Family.METER:
        cls: type[SimDevice] = ElectricityMeter if rng.random() < 0.6 else WaterMeter
    elif family is Family.SAFETY:
        cls = SafetyDetector
    else:
        cls = ElderWearable
    return cls(device_id, location, rng, household if family is Family.ELDER else "")
