"""A whole simulated community at the seeds' scale (R7): places, households, residents, devices
in a mix of vendor formats, and the grid members responsible for each place (R5.1).

`build_community` is pure and deterministic per (households, seed, community): the same
arguments give the same places, ids, residents and adapter mix, so the fleet file a test
imports and the traffic the schedule publishes always describe the same community.

Place codes (``g01``, ``b03``, ``u2``, ``1201``) are what the registry turns into storage tags,
so every device's `Location` uses codes; display names (第一网格, 3号楼, 2单元) go to the fleet
file only. Ids are globally unique per community code (a short hash of it is part of every
numeric id), because one registry may hold several simulated communities.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path
from random import Random
from typing import Any

from devices.families import Family
from devices.info import DeviceInfo
from devices.location import Location
from devices.topics import is_valid_id
from simulators import formats
from simulators.people import (
    Resident,
    fake_card_no,
    fake_face_feature,
    fake_id_number,
    fake_name,
    fake_phone,
    fake_plate,
)

HOUSEHOLDS_PER_GRID = 300  # seed 003: a grid is a few hundred households
HOUSEHOLDS_PER_BUILDING = 100
UNITS_PER_BUILDING = 4
ELDER_ALONE_SHARE = 0.08
FACE_CONSENT_SHARE = 0.70  # households, and separately residents (R3.3: consent is per person)
CAR_SHARE = 0.45  # households with a registered vehicle
HOUSEHOLDS_PER_GRID_WORKER = 150
DEFAULT_COMMUNITY = "xf"
DEFAULT_NAME = "幸福小区"
DEFAULT_STREET = "城东街道"
MEMBER_TOPIC = "gridgate/alerts/member/{id}"


class Equipment(StrEnum):
    """What a device is, which decides its behaviour (a family has several kinds)."""

    ELECTRICITY_METER = "electricity_meter"
    WATER_METER = "water_meter"
    GAS_DETECTOR = "gas_detector"
    SMOKE_DETECTOR = "smoke_detector"
    WEARABLE = "wearable"
    UNIT_GATE = "unit_gate"
    COMMUNITY_GATE = "community_gate"
    VEHICLE_BARRIER = "vehicle_barrier"


FAMILY_OF: dict[Equipment, Family] = {
    Equipment.ELECTRICITY_METER: Family.METER,
    Equipment.WATER_METER: Family.METER,
    Equipment.GAS_DETECTOR: Family.SAFETY,
    Equipment.SMOKE_DETECTOR: Family.SAFETY,
    Equipment.WEARABLE: Family.ELDER,
    Equipment.UNIT_GATE: Family.ACCESS,
    Equipment.COMMUNITY_GATE: Family.ACCESS,
    Equipment.VEHICLE_BARRIER: Family.ACCESS,
}

# Water meters and detectors are NB-IoT/LoRa battery devices (CJ/T 188 has a battery-low bit);
# electricity meters and gates hang on the mains. Power decides the gateway's offline timeout.
POWER_OF: dict[Equipment, str] = {
    Equipment.ELECTRICITY_METER: "mains",
    Equipment.WATER_METER: "battery",
    Equipment.GAS_DETECTOR: "battery",
    Equipment.SMOKE_DETECTOR: "battery",
    Equipment.WEARABLE: "battery",
    Equipment.UNIT_GATE: "mains",
    Equipment.COMMUNITY_GATE: "mains",
    Equipment.VEHICLE_BARRIER: "mains",
}

# The seeded vendor-format mix per kind of equipment: (adapter, weight).
ADAPTER_MIX: dict[Equipment, tuple[tuple[str, float], ...]] = {
    Equipment.ELECTRICITY_METER: (("dlt645", 40), ("vendor_meter", 30), ("gridgate_json", 30)),
    Equipment.WATER_METER: (("cjt188", 40), ("vendor_meter", 30), ("gridgate_json", 30)),
    Equipment.GAS_DETECTOR: (("vendor_gas", 50), ("gridgate_json", 50)),
    Equipment.SMOKE_DETECTOR: (("gridgate_json", 100),),
    Equipment.WEARABLE: (("vendor_wearable", 50), ("gridgate_json", 50)),
    Equipment.UNIT_GATE: (("vendor_access", 50), ("gridgate_json", 50)),
    Equipment.COMMUNITY_GATE: (("vendor_access", 50), ("gridgate_json", 50)),
    Equipment.VEHICLE_BARRIER: (("vendor_access", 50), ("gridgate_json", 50)),
}
VENDOR_OF: dict[str, str] = {
    "dlt645": "huaming-electric",
    "cjt188": "qingquan-water",
    "vendor_meter": "zhiyuan-iot",
    "vendor_gas": "anxin-gas",
    "vendor_wearable": "kangbao-band",
    "vendor_access": "shitong-acs",
    "gridgate_json": "gridgate-sim",
    "onenet": "weian-nb-smoke",
    "ctwing": "qingquan-nb-water",
    "hikvision_isapi": "hikvision",
}
# NB-IoT devices pushed by their carrier platform over HTTP (a share chosen per community,
# drawn from a stream of its own so that communities without them stay as they were).
NBIOT_PLATFORM: dict[Equipment, str] = {
    Equipment.SMOKE_DETECTOR: "onenet",
    Equipment.WATER_METER: "ctwing",
}
# Hikvision face terminals and plate cameras pushing ISAPI events over HTTP (a share chosen
# per community, drawn apart like the NB-IoT devices).
ISAPI_EQUIPMENT = frozenset(
    {Equipment.UNIT_GATE, Equipment.COMMUNITY_GATE, Equipment.VEHICLE_BARRIER}
)
_GATE_NAMES = ("北门", "南门", "东门", "西门")
FACE_GATES = frozenset({Equipment.UNIT_GATE, Equipment.COMMUNITY_GATE})
_NUMERALS = "零一二三四五六七八九"


def chinese_number(n: int) -> str:
    """1 → 一, 10 → 十, 21 → 二十一: grid names read the way a street office writes them."""
    if n < 0:
        raise ValueError("n must be >= 0")
    if n < 10:
        return _NUMERALS[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return ("" if tens == 1 else _NUMERALS[tens]) + "十" + (_NUMERALS[ones] if ones else "")
    return str(n)


@dataclass(slots=True, frozen=True)
class Unit:
    code: str  # "u2"
    name: str  # "2单元"
    building: str
    grid: str
    rooms: tuple[str, ...]  # "0101", "1202": floor then door, as Chinese estates number them


@dataclass(slots=True, frozen=True)
class Building:
    code: str  # "b03"
    name: str  # "3号楼"
    grid: str
    units: tuple[Unit, ...]


@dataclass(slots=True, frozen=True)
class Grid:
    code: str  # "g01"
    name: str  # "第一网格"
    buildings: tuple[Building, ...]

    @property
    def households(self) -> int:
        return sum(len(u.rooms) for b in self.buildings for u in b.units)


@dataclass(slots=True, frozen=True)
class Household:
    id: str
    grid: str
    building: str
    unit: str
    room: str
    elder_alone: bool
    face_consent: bool
    residents: tuple[Resident, ...]
    resident_consent: tuple[bool, ...] = ()  # per resident, same order as `residents`

    def location(self, community: str) -> Location:
        return Location(community, self.grid, self.building, self.unit, self.room)

    def resident_id(self, index: int) -> str:
        """``r-xf-b03-u2-1201-1``: the registry's id of `residents[index]` (no personal data)."""
        return f"r-{self.id.removeprefix('h-')}-{index + 1}"

    @property
    def place(self) -> str:
        """The place as scenarios name it: ``b03/u2/1201``."""
        return f"{self.building}/{self.unit}/{self.room}"


@dataclass(slots=True, frozen=True)
class CommunityDevice:
    """A registry entry (`DeviceInfo`'s fields) plus what the simulator needs to drive it."""

    device_id: str
    family: Family
    equipment: Equipment
    adapter: str  # the format it publishes in (after falling back if an adapter is missing)
    vendor: str
    location: Location
    household: str = ""
    power: str = "mains"
    installed: date | None = None
    door: str = ""  # display name of a gate or lane
    concentrator: str = ""  # DL/T 645 and CJ/T 188 meters reach MQTT through one per building
    di_order: str = ""  # CJ/T 188 data-identifier byte order ("2004" or "2018")
    gate_approved: bool | None = None  # access devices: owners agreed to face recognition

    def info(self) -> DeviceInfo:
        return DeviceInfo(
            device_id=self.device_id,
            family=self.family,
            adapter=self.adapter,
            vendor=self.vendor,
            location=self.location,
            household=self.household,
            power=self.power,
            installed=self.installed,
            gate_approved=bool(self.gate_approved),
        )


@dataclass(slots=True, frozen=True)
class Member:
    id: str
    name: str
    role: str  # grid_chief, grid_worker, building_head, unit_head, duty_desk, …
    scope: tuple[Mapping[str, str], ...]
    channels: tuple[Mapping[str, str], ...]


ROLES = (
    "grid_chief",
    "grid_worker",
    "building_head",
    "unit_head",
    "duty_desk",
    "street_office",
    "property_duty",
)


@dataclass(slots=True)
class Community:
    code: str
    name: str
    street: str
    seed: int
    grids: tuple[Grid, ...]
    households: tuple[Household, ...]
    devices: tuple[CommunityDevice, ...]
    members: tuple[Member, ...]
    fallbacks: dict[str, int] = field(default_factory=dict)  # missing adapter → devices moved
    _by_id: dict[str, CommunityDevice] = field(default_factory=dict, repr=False)
    _by_household: dict[str, list[CommunityDevice]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_id = {d.device_id: d for d in self.devices}
        if len(self._by_id) != len(self.devices):
            raise ValueError("device ids are not unique")
        for d in self.devices:
            if d.household:
                self._by_household.setdefault(d.household, []).append(d)

    # -- lookups ------------------------------------------------------------------------------

    @property
    def buildings(self) -> Iterator[Building]:
        for grid in self.grids:
            yield from grid.buildings

    @property
    def units(self) -> Iterator[Unit]:
        for building in self.buildings:
            yield from building.units

    def device(self, device_id: str) -> CommunityDevice | None:
        return self._by_id.get(device_id)

    def household_devices(self, household_id: str) -> list[CommunityDevice]:
        return list(self._by_household.get(household_id, ()))

    def household_device(self, household_id: str, equipment: Equipment) -> CommunityDevice | None:
        return next(
            (d for d in self._by_household.get(household_id, ()) if d.equipment is equipment), None
        )

    def devices_of(self, equipment: Equipment) -> list[CommunityDevice]:
        return [d for d in self.devices if d.equipment is equipment]

    def unit_gate(self, building: str, unit: str) -> CommunityDevice | None:
        return next(
            (
                d
                for d in self.devices
                if d.equipment is Equipment.UNIT_GATE
                and d.location.building == building
                and d.location.unit == unit
            ),
            None,
        )

    def counts(self) -> dict[str, Any]:
        """Sizes for reports and tests."""
        by_family: dict[str, int] = {}
        by_adapter: dict[str, int] = {}
        by_equipment: dict[str, int] = {}
        for d in self.devices:
            by_family[d.family.value] = by_family.get(d.family.value, 0) + 1
            by_adapter[d.adapter] = by_adapter.get(d.adapter, 0) + 1
            by_equipment[d.equipment.value] = by_equipment.get(d.equipment.value, 0) + 1
        roles: dict[str, int] = {}
        for m in self.members:
            roles[m.role] = roles.get(m.role, 0) + 1
        return {
            "grids": len(self.grids),
            "buildings": sum(1 for _ in self.buildings),
            "units": sum(1 for _ in self.units),
            "households": len(self.households),
            "elder_alone": sum(h.elder_alone for h in self.households),
            "residents": sum(len(h.residents) for h in self.households),
            "devices": len(self.devices),
            "devices_by_family": dict(sorted(by_family.items())),
            "devices_by_adapter": dict(sorted(by_adapter.items())),
            "devices_by_equipment": dict(sorted(by_equipment.items())),
            "members": len(self.members),
            "members_by_role": dict(sorted(roles.items())),
        }

    # -- the fleet file (docs/fleet-file.md) --------------------------------------------------

    def fleet_dict(self) -> dict[str, Any]:
        """The fleet file as data; `fleet_yaml` writes exactly this (tests compare the two)."""
        return {
            "version": 1,
            "community": {"code": self.code, "name": self.name, "street": self.street},
            "grids": [
                {
                    "code": g.code,
                    "name": g.name,
                    "buildings": [
                        {
                            "code": b.code,
                            "name": b.name,
                            "units": [
                                {"code": u.code, "name": u.name, "rooms": list(u.rooms)}
                                for u in b.units
                            ],
                        }
                        for b in g.buildings
                    ],
                }
                for g in self.grids
            ],
            "households": [
                {
                    "id": h.id,
                    "grid": h.grid,
                    "building": h.building,
                    "unit": h.unit,
                    "room": h.room,
                    "elder_alone": h.elder_alone,
                    "face_consent": h.face_consent,
                }
                for h in self.households
            ],
            "devices": [_device_row(d) for d in self.devices],
            "members": [
                {
                    "id": m.id,
                    "name": m.name,
                    "role": m.role,
                    "scope": [dict(s) for s in m.scope],
                    "channels": [dict(c) for c in m.channels],
                }
                for m in self.members
            ],
            # The property firm's resident list: ID numbers become pseudonyms on import and
            # are never stored; consent is per person (R3.3).
            "residents": [
                {
                    "id": h.resident_id(i),
                    "household": h.id,
                    "id_number": r.id_number,
                    "face_consent": h.resident_consent[i],
                    **({"plate": r.plate} if r.plate else {}),  # the registered car
                }
                for h in self.households
                for i, r in enumerate(h.residents)
            ],
        }

    def fleet_yaml(self) -> str:
        """YAML with one flow mapping per row: greppable, diffable, and fast to write for
        12 000 devices (a generic emitter takes seconds). Every scalar that could be read as
        a number, date or boolean is quoted, so any YAML loader gets the same text."""
        data = self.fleet_dict()
        out = [
            "# gridgate fleet file (docs/fleet-file.md), generated by `gridgate simulate`",
            f"# community {self.code}: {len(self.households)} households, "
            f"{len(self.devices)} devices, {len(self.members)} members (seed {self.seed})",
            "version: 1",
            f"community: {_flow(data['community'])}",
            "grids:",
        ]
        for g in data["grids"]:
            out.append(f"  - code: {_scalar(g['code'])}")
            out.append(f"    name: {_scalar(g['name'])}")
            out.append("    buildings:")
            for b in g["buildings"]:
                out.append(f"      - code: {_scalar(b['code'])}")
                out.append(f"        name: {_scalar(b['name'])}")
                out.append("        units:")
                out.extend(f"          - {_flow(u)}" for u in b["units"])
        for key in ("households", "devices", "members", "residents"):
            out.append(f"{key}:")
            out.extend(f"  - {_flow(row)}" for row in data[key])
        return "\n".join(out) + "\n"

    def write_fleet(self, path: str | Path) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.touch(mode=0o600)  # it lists residents' (invented) ID numbers: owner-only
        tmp.chmod(0o600)
        tmp.write_text(self.fleet_yaml(), encoding="utf-8")
        tmp.replace(target)  # a reader never sees half a file
        return target


def _device_row(d: CommunityDevice) -> dict[str, Any]:
    loc = d.location
    row: dict[str, Any] = {"id": d.device_id, "family": d.family.value, "adapter": d.adapter}
    row["vendor"] = d.vendor
    if not loc.grid:  # community-level gates: the place is the community itself
        row["community"] = loc.community
    for key in ("grid", "building", "unit", "room"):
        value = getattr(loc, key)
        if value:
            row[key] = value
    if d.household:
        row["household"] = d.household
    row["power"] = d.power
    if d.installed is not None:
        row["installed"] = d.installed.isoformat()
    if d.gate_approved is not None:
        row["gate_approved"] = d.gate_approved
    return row


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a YAML string


def _flow(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return _scalar(value)


# -- building ---------------------------------------------------------------------------------


def _split(total: int, parts: int) -> list[int]:
    """`total` as `parts` near-equal integers (larger ones first)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def community_digits(code: str) -> str:
    """Four digits derived from the community code, inside every numeric device id."""
    return f"{zlib.crc32(code.encode('utf-8')) % 10_000:04d}"


def _layout(households: int, rng: Random) -> tuple[Grid, ...]:
    n_grids = max(1, round(households / HOUSEHOLDS_PER_GRID))
    grids: list[Grid] = []
    building_no = 0
    for gi, grid_size in enumerate(_split(households, n_grids), 1):
        grid_code = f"g{gi:02d}"
        n_buildings = max(1, round(grid_size / HOUSEHOLDS_PER_BUILDING))
        buildings: list[Building] = []
        for b_size in _split(grid_size, n_buildings):
            building_no += 1
            b_code = f"b{building_no:02d}"
            per_unit = HOUSEHOLDS_PER_BUILDING / UNITS_PER_BUILDING
            n_units = min(UNITS_PER_BUILDING, max(1, math.ceil(b_size / per_unit)))
            per_floor = rng.choice((2, 2, 2, 3))
            units = []
            for ui, u_size in enumerate(_split(b_size, n_units), 1):
                floors = math.ceil(u_size / per_floor)
                rooms = [
                    f"{f:02d}{r:02d}" for f in range(1, floors + 1) for r in range(1, per_floor + 1)
                ]
                units.append(Unit(f"u{ui}", f"{ui}单元", b_code, grid_code, tuple(rooms[:u_size])))
            buildings.append(Building(b_code, f"{building_no}号楼", grid_code, tuple(units)))
        grids.append(Grid(grid_code, f"第{chinese_number(gi)}网格", tuple(buildings)))
    return tuple(grids)


def _resident(rng: Random, *, elder: bool, plate: bool, taken: set[str]) -> Resident:
    """One resident; `taken` holds the community's ID numbers so far: one person, one number
    (the registry refuses two residents with the same one)."""
    if elder:
        birth = date(1932, 1, 1) + timedelta(days=rng.randrange(365 * 24))  # 70-93 years old
    else:
        birth = date(1950, 1, 1) + timedelta(days=rng.randrange(365 * 68))
    male = rng.random() < 0.5
    id_number = fake_id_number(rng, birth=birth, male=male)
    while id_number in taken:  # rare: a draw again only then, so other values stay the same
        id_number = fake_id_number(rng, birth=birth, male=male)
    taken.add(id_number)
    return Resident(
        name=fake_name(rng),
        id_number=id_number,
        phone=fake_phone(rng),
        card_no=fake_card_no(rng),
        face_feature=fake_face_feature(rng),
        plate=fake_plate(rng) if plate else "",
    )


def _households(
    code: str, grids: Sequence[Grid], rng: Random, consent_rng: Random, people: str
) -> tuple[Household, ...]:
    """Households and their residents; `consent_rng` draws residents' consent apart from the
    rest, so adding it left every other generated value as it was. Each resident is drawn
    from a generator of their own (`people` + their household and place in it): the same
    resident is the same person in a community of any size, so importing a larger community
    over a smaller one never finds one person under two resident ids."""
    places = [
        (g.code, b.code, u.code, room) for g in grids for b in g.buildings for u in b.units
        for room in u.rooms
    ]  # fmt: skip
    n_elder = round(len(places) * ELDER_ALONE_SHARE)
    elder = set(rng.sample(range(len(places)), n_elder))
    out = []
    taken: set[str] = set()
    for i, (grid, building, unit, room) in enumerate(places):
        alone = i in elder
        size = 1 if alone else rng.choices((1, 2, 3, 4, 5), (10, 30, 35, 20, 5))[0]
        car = not alone and rng.random() < CAR_SHARE
        household = f"h-{code}-{building}-{unit}-{room}"
        residents = tuple(
            _resident(
                Random(f"{people}:{household}:{j}"), elder=alone, plate=car and j == 0, taken=taken
            )
            for j in range(size)
        )
        out.append(
            Household(
                id=household,
                grid=grid,
                building=building,
                unit=unit,
                room=room,
                elder_alone=alone,
                face_consent=rng.random() < FACE_CONSENT_SHARE,
                residents=residents,
                resident_consent=tuple(
                    consent_rng.random() < FACE_CONSENT_SHARE for _ in residents
                ),
            )
        )
    return tuple(out)


class _Ids:
    """Sequential, protocol-valid ids per kind of equipment."""

    def __init__(self, code: str) -> None:
        self.cc = community_digits(code)
        self.n: dict[Equipment, int] = {}

    def next(self, equipment: Equipment, *, imei: bool = False) -> str:
        """`imei`: an NB-IoT device, known by its 15-digit IMEI whatever it is."""
        counter = Equipment.UNIT_GATE if equipment is Equipment.COMMUNITY_GATE else equipment
        n = self.n.get(counter, 0) + 1
        self.n[counter] = n
        cc = self.cc
        if equipment is Equipment.ELECTRICITY_METER:
            return f"{cc}{n:08d}"  # 12 digits: the DL/T 645 meter address
        if equipment is Equipment.WATER_METER:
            if imei:
                return f"86{cc}4{n:08d}"
            return f"{cc}{n:010d}"  # 14 digits: the CJ/T 188 meter address
        if equipment is Equipment.GAS_DETECTOR:
            return f"86{cc}1{n:08d}"  # NB-IoT devices are known by their 15-digit IMEI
        if equipment is Equipment.SMOKE_DETECTOR:
            return f"86{cc}3{n:08d}"
        if equipment is Equipment.WEARABLE:
            return f"86{cc}2{n:08d}"
        if equipment is Equipment.VEHICLE_BARRIER:
            return f"LPR{cc}{n:05d}"
        return f"ACS{cc}{n:05d}"  # unit and community gates share one numbering


def build_community(
    households: int = 3000,
    seed: int = 0,
    community: str = DEFAULT_COMMUNITY,
    *,
    name: str = DEFAULT_NAME,
    street: str = DEFAULT_STREET,
    adapters: frozenset[str] | None = None,
    nbiot: float = 0.0,
    isapi: float = 0.0,
) -> Community:
    """The community: ≈ households/300 grids of 100-household buildings (4 units × ~25 rooms).

    `adapters` is the set of adapter modules that can encode (default: those installed); a
    device whose drawn format is missing publishes in ``gridgate_json`` instead, with the same
    id, and `Community.fallbacks` counts how many moved. `nbiot` is the share of smoke
    detectors and water meters that are NB-IoT devices behind a carrier platform (OneNET,
    CTWing), pushed to the gateway over HTTP; `isapi` the share of gates and barriers that are
    Hikvision terminals and cameras pushing ISAPI events.
    """
    if not (0.0 <= nbiot <= 1.0 and 0.0 <= isapi <= 1.0):
        raise ValueError("nbiot and isapi must be shares within 0..1")
    if households < 1:
        raise ValueError("households must be >= 1")
    if not is_valid_id(community):
        raise ValueError(f"community code {community!r} is not topic-safe")
    usable = formats.available_adapters() if adapters is None else adapters
    root = f"gridgate-community:{seed}:{community}"
    grids = _layout(households, Random(f"{root}:layout"))
    homes = _households(
        community,
        grids,
        Random(f"{root}:households"),
        Random(f"{root}:consent"),
        people=f"{root}:people",
    )
    mix_rng = Random(f"{root}:adapters")
    misc_rng = Random(f"{root}:devices")
    nbiot_rng = Random(f"{root}:nbiot")
    isapi_rng = Random(f"{root}:isapi")
    ids = _Ids(community)
    fallbacks: dict[str, int] = {}
    devices: list[CommunityDevice] = []

    def add(
        equipment: Equipment,
        location: Location,
        *,
        household: str = "",
        door: str = "",
        installed_from: date = date(2019, 6, 1),
    ) -> None:
        names, weights = zip(*ADAPTER_MIX[equipment], strict=True)
        drawn = mix_rng.choices(names, weights)[0]
        adapter = drawn if drawn in usable else "gridgate_json"
        if adapter != drawn:
            fallbacks[drawn] = fallbacks.get(drawn, 0) + 1
        pushed = nbiot > 0 and equipment in NBIOT_PLATFORM and nbiot_rng.random() < nbiot
        if pushed:
            drawn = adapter = NBIOT_PLATFORM[equipment]
        if isapi > 0 and equipment in ISAPI_EQUIPMENT and isapi_rng.random() < isapi:
            drawn = adapter = "hikvision_isapi"
        installed = installed_from + timedelta(days=misc_rng.randrange(365 * 5))
        device_id = ids.next(equipment, imei=pushed)
        meter_protocol = drawn in ("dlt645", "cjt188")
        family = FAMILY_OF[equipment]
        devices.append(
            CommunityDevice(
                device_id=device_id,
                family=family,
                equipment=equipment,
                adapter=adapter,
                vendor=VENDOR_OF[adapter],
                location=location,
                household=household,
                power=POWER_OF[equipment],
                installed=min(installed, date(2025, 6, 30)),
                door=door,
                concentrator=f"conc-{location.building}" if meter_protocol else "",
                di_order=misc_rng.choice(("2004", "2004", "2004", "2018"))
                if drawn == "cjt188"
                else "",
                # owners approved face recognition at their gates (seed 004); barriers read plates
                gate_approved=True if equipment in FACE_GATES else None,
            )
        )

    by_unit: dict[tuple[str, str], list[Household]] = {}
    for h in homes:
        by_unit.setdefault((h.building, h.unit), []).append(h)
    building_names = {b.code: b.name for g in grids for b in g.buildings}
    for grid in grids:
        for building in grid.buildings:
            for unit in building.units:
                for h in by_unit[(building.code, unit.code)]:
                    here = h.location(community)
                    for equipment in (
                        Equipment.ELECTRICITY_METER,
                        Equipment.WATER_METER,
                        Equipment.GAS_DETECTOR,
                        Equipment.SMOKE_DETECTOR,
                    ):
                        add(equipment, here, household=h.id)
                    if h.elder_alone:
                        add(
                            Equipment.WEARABLE,
                            here,
                            household=h.id,
                            installed_from=date(2023, 1, 1),
                        )
                door = f"{building_names[building.code]}{unit.name}门"
                add(
                    Equipment.UNIT_GATE,
                    Location(community, grid.code, building.code, unit.code),
                    door=door,
                )
    n_gates = min(4, max(2, 2 + len(homes) // 1500))
    for gate in _GATE_NAMES[:n_gates]:
        add(Equipment.COMMUNITY_GATE, Location(community), door=f"{gate}人行通道")
    for gate in _GATE_NAMES[:2]:
        add(Equipment.VEHICLE_BARRIER, Location(community), door=f"{gate}车道")
    members = _members(community, grids, Random(f"{root}:members"))
    return Community(
        code=community,
        name=name,
        street=street,
        seed=seed,
        grids=grids,
        households=homes,
        devices=tuple(devices),
        members=members,
        fallbacks=fallbacks,
    )


def _members(code: str, grids: Sequence[Grid], rng: Random) -> tuple[Member, ...]:
    """A unit head per unit, a building head per building, a grid chief and ~1 worker per 150
    households per grid, and the community's duty desk, street office and property duty."""
    out: list[Member] = []

    def add(role: str, *scope: Mapping[str, str]) -> None:
        member_id = f"m-{code}-{len(out) + 1:04d}"
        channel = {"kind": "mqtt", "target": MEMBER_TOPIC.format(id=member_id)}
        out.append(Member(member_id, fake_name(rng), role, tuple(scope), (channel,)))

    for grid in grids:
        add("grid_chief", {"grid": grid.code})
        for _ in range(max(1, round(grid.households / HOUSEHOLDS_PER_GRID_WORKER))):
            add("grid_worker", {"grid": grid.code})
        for building in grid.buildings:
            add("building_head", {"grid": grid.code, "building": building.code})
            for unit in building.units:
                add("unit_head", {"grid": grid.code, "building": building.code, "unit": unit.code})
    add("duty_desk", {"community": code})
    add("street_office", {"community": code})
    add("property_duty", {"community": code})  # the property firm's day shift
    add("property_duty", {"community": code})  # and night shift
    return tuple(out)
