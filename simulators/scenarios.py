"""Trouble injected by name at a place (R7): what the alert rules and screens exist for.

`inject(community, name, place, at_sim_time)` returns an `Injection`: behaviour *overrides*
(a gas detector in a leaking kitchen reports every minute with rising %LEL; a water meter sees
no use; a device falls silent), *extras* (one-off readings such as a fall or a forced door)
and *raw* messages (hostile input that must be rejected). The schedule applies them, so
scenario readings go through the same device state, format and accounting as normal ones and
a device never reports twice in one second.

Places are written like ``b03`` (a building), ``b03/u2`` (a unit), ``b03/u2/1201`` (a
household) or a device id. Times are simulated epoch seconds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from random import Random
from typing import Any

import orjson

from adapters.base import MAX_PAYLOAD_BYTES
from devices.families import AccessEvent, AccessMethod, Channel, ElderEvent, Family, StatusKind
from devices.topics import build_topic
from simulators import malformed
from simulators.community import Community, CommunityDevice, Equipment, Household
from simulators.formats import STATUS_FORMAT
from simulators.people import fake_id_number, fake_name, fake_phone

# Behaviour overrides a device model understands.
GAS_LEAK = "gas_leak"
SMOKE = "smoke"
FALLEN = "fallen"
NO_WATER = "no_water"
LEAK = "leak"
SILENT = "silent"
FLAPPING = "flapping"  # alarm for two reports, normal for one, again and again

ALARM_INTERVAL_S = 60  # a detector in alarm, or a fallen elder's band, reports every minute
GAS_LEAK_SPAN_S = 25 * 60
SMOKE_SPAN_S = 15 * 60
FALL_SPAN_S = 30 * 60
INACTIVE_SPAN_S = 13 * 3600  # > the 12 h of the solitary-elder water rule
LEAK_FLOW_M3H = 0.06  # a running toilet: 1 L/min, visible in every half hour at 0.01 m³
LEAK_SPAN_S = 24 * 3600  # "usage in every half-hour of a whole day"
OFFLINE_SPAN_MIN_S = 30 * 60
LIVENESS_TIMEOUT_S: Mapping[str, float] = {"mains": 600.0, "battery": 4 * 3600.0}
"""The gateway's default offline timeouts per power class (gateway.pipeline.liveness), in real
seconds."""

# Expected rejections when the gateway runs with the registry (unknown devices refused): the
# malformed cases that decode cleanly use made-up ids, so the registry refuses them first.
UNREGISTERED = "unregistered"
FAMILY_MISMATCH = "family_mismatch"

# ppm / %LEL ramp of a kitchen leak: level-1 alarm at 25 %LEL, level-2 at 50 (GB/T 50493).
_GAS_RAMP = ((0, 2.0), (60, 10.0), (120, 20.0), (180, 30.0), (240, 40.0), (300, 50.0),
             (360, 60.0), (900, 60.0), (1500, 0.0))  # fmt: skip
GAS_LEVELS = (25.0, 50.0)
STORM_SPAN_S = 10 * 60
FLAP_LEL = 60.0  # above the level-2 alarm (50 %LEL)
FLAP_SMOKE_DB_M = 3.0


def flapping_high(elapsed_s: int) -> bool:
    """A flapping detector's phase: two reports (minutes) in alarm, then one back to normal."""
    return (elapsed_s // ALARM_INTERVAL_S) % 3 != 2


def gas_leak_lel(elapsed_s: float) -> float:
    """%LEL in the kitchen `elapsed_s` after a leak starts: 0 → 30 → 60, then ventilated."""
    if elapsed_s <= 0:
        return _GAS_RAMP[0][1]
    for (t0, v0), (t1, v1) in itertools.pairwise(_GAS_RAMP):
        if elapsed_s <= t1:
            return round(v0 + (v1 - v0) * (elapsed_s - t0) / (t1 - t0), 1)
    return 0.0


def smoke_density(elapsed_s: float) -> float:
    """dB/m of a spreading fire's smoke at one detector: alarm level within a minute."""
    return round(min(3.0, 0.2 + 0.2 * elapsed_s / 60), 3)


@dataclass(slots=True, frozen=True)
class Override:
    """`effect` changes a device's behaviour in [start_s, end_s)."""

    device_id: str
    effect: str
    start_s: int
    end_s: int

    def active(self, t: int) -> bool:
        return self.start_s <= t < self.end_s


@dataclass(slots=True, frozen=True)
class Extra:
    """One extra reading of a registered device at `at_s` (format: the device's own, or the
    status format for liveness messages)."""

    at_s: int
    device_id: str
    channel: Channel
    kind: str
    values: Mapping[str, Any]
    label: str


RawMaker = Callable[[int], tuple[str, bytes]]


@dataclass(slots=True, frozen=True)
class Raw:
    """A message no registered device would send, and the rejection it must get.

    `make(now_ms)` builds it when it is due, so clock-relative cases (future/stale stamps) are
    relative to the real clock at sending time.
    """

    at_s: int
    case: str
    reason: str
    make: RawMaker


@dataclass(slots=True)
class Injection:
    scenario: str
    place: str
    at_s: int
    devices: tuple[str, ...]
    overrides: list[Override] = field(default_factory=list)
    extras: list[Extra] = field(default_factory=list)
    raw: list[Raw] = field(default_factory=list)
    note: str = ""
    end_s: int = 0

    def log(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "place": self.place,
            "at_sim_s": self.at_s,
            "until_sim_s": max(self.end_s, self.at_s),
            "devices": list(self.devices),
            "overrides": len(self.overrides),
            "extra_messages": len(self.extras),
            "hostile_messages": len(self.raw),
            "note": self.note,
        }


class ScenarioError(ValueError):
    """An unknown scenario, or a place where it cannot happen."""


# -- places -----------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Place:
    """A resolved place: the households under it (in order) or one device."""

    text: str
    building: str = ""
    unit: str = ""
    households: tuple[Household, ...] = ()
    device: CommunityDevice | None = None


def resolve_place(community: Community, place: str) -> Place:
    text = place.strip().strip("/")
    device = community.device(text)
    if device is not None:
        homes = tuple(h for h in community.households if h.id == device.household)
        loc = device.location
        return Place(text, loc.building, loc.unit, homes, device)
    if text in ("", "*", community.code):
        return Place(text, households=community.households)
    parts = text.split("/")
    if len(parts) > 3:
        raise ScenarioError(f"place {place!r}: expected building[/unit[/room]] or a device id")
    building = parts[0]
    unit = parts[1] if len(parts) > 1 else ""
    room = parts[2] if len(parts) > 2 else ""
    homes = tuple(
        h
        for h in community.households
        if h.building == building and (not unit or h.unit == unit) and (not room or h.room == room)
    )
    if not homes:
        grid = tuple(h for h in community.households if h.grid == text)
        if grid:
            return Place(text, households=grid)
        raise ScenarioError(f"place {place!r} is not in community {community.code}")
    return Place(text, building, unit, homes)


def _device_at(
    community: Community, place: Place, equipment: Equipment, *, elder: bool = False
) -> CommunityDevice:
    if place.device is not None:
        if place.device.equipment is not equipment:
            raise ScenarioError(f"device {place.device.device_id} is not a {equipment.value}")
        return place.device
    for h in place.households:
        if elder and not h.elder_alone:
            continue
        found = community.household_device(h.id, equipment)
        if found is not None:
            return found
    who = "an elder living alone" if elder else "a household"
    raise ScenarioError(f"no {equipment.value} of {who} at {place.text!r}")


# -- scenarios --------------------------------------------------------------------------------


def _gas_leak(community: Community, place: Place, at: int, **_: Any) -> Injection:
    d = _device_at(community, place, Equipment.GAS_DETECTOR)
    inj = Injection("gas-leak", place.text, at, (d.device_id,), end_s=at + GAS_LEAK_SPAN_S)
    inj.overrides.append(Override(d.device_id, GAS_LEAK, at, at + GAS_LEAK_SPAN_S))
    inj.note = (
        "gas_lel_pct 2 → 30 → 60 %LEL in 6 min, held, ventilated by 25 min; gas_alarm at 25 and 50"
    )
    return inj


def _smoke_spreading(
    community: Community, place: Place, at: int, *, units: int = 3, per_unit: int = 2, **_: Any
) -> Injection:
    """Detectors fire unit after unit (stairwells carry smoke), two floors per unit."""
    if place.device is not None or not place.building:
        raise ScenarioError("smoke-spreading needs a building or unit (b03 or b03/u2)")
    building = next(b for b in community.buildings if b.code == place.building)
    codes = [u.code for u in building.units]
    first = codes.index(place.unit) if place.unit else 0
    order = codes[first:] + codes[:first]
    inj = Injection("smoke-spreading", place.text, at, ())
    devices: list[str] = []
    step = 0
    for unit_code in order[: max(1, units)]:
        homes = [
            h for h in community.households if h.building == building.code and h.unit == unit_code
        ]
        if not homes:
            continue
        mid = len(homes) // 2  # the fire starts mid-building: the floors above fill with smoke
        for h in homes[mid : mid + per_unit]:
            d = community.household_device(h.id, Equipment.SMOKE_DETECTOR)
            if d is None:
                continue
            start = at + step * 90
            inj.overrides.append(Override(d.device_id, SMOKE, start, start + SMOKE_SPAN_S))
            devices.append(d.device_id)
            step += 1
    if not devices:
        raise ScenarioError(f"no smoke detectors at {place.text!r}")
    inj.devices = tuple(devices)
    inj.end_s = at + (step - 1) * 90 + SMOKE_SPAN_S
    inj.note = f"{len(devices)} smoke alarms in {min(units, len(order))} units, 90 s apart"
    return inj


def _alarm_storm(
    community: Community, place: Place, at: int, *, span: float = STORM_SPAN_S, **_: Any
) -> Injection:
    """Every gas and smoke detector at `place` flaps in and out of alarm (a bad firmware push,
    a lightning strike, a cooking-fume evening): the notification volume must stay bounded."""
    if place.device is not None:
        raise ScenarioError("alarm-storm needs a place with detectors (b03, g01 or * for all)")
    span_s = max(ALARM_INTERVAL_S, int(span))
    inj = Injection("alarm-storm", place.text or "*", at, (), end_s=at + span_s)
    devices: list[str] = []
    for h in place.households:
        for equipment in (Equipment.GAS_DETECTOR, Equipment.SMOKE_DETECTOR):
            d = community.household_device(h.id, equipment)
            if d is not None:
                inj.overrides.append(Override(d.device_id, FLAPPING, at, at + span_s))
                devices.append(d.device_id)
    if not devices:
        raise ScenarioError(f"no detectors at {place.text!r}")
    inj.devices = tuple(devices)
    inj.note = (
        f"{len(devices)} detectors report every minute for {span_s // 60} min, two minutes in "
        f"alarm ({FLAP_LEL:g} %LEL / {FLAP_SMOKE_DB_M:g} dB/m) and one back to normal"
    )
    return inj


def _elder_event(kind: ElderEvent, name: str) -> Callable[..., Injection]:
    def make(community: Community, place: Place, at: int, **_: Any) -> Injection:
        d = _device_at(community, place, Equipment.WEARABLE, elder=True)
        inj = Injection(name, place.text, at, (d.device_id,))
        values: dict[str, Any] = {"battery_pct": 71.0, **_position(community, d)}
        if kind is ElderEvent.FALL:
            values |= {"heart_rate_bpm": 108.0, "activity": "lying", "worn": True}
            inj.overrides.append(Override(d.device_id, FALLEN, at, at + FALL_SPAN_S))
            inj.end_s = at + FALL_SPAN_S
            inj.note = "fall alarm, then lying still with a raised heart rate for 30 min"
        else:
            inj.note = "SOS button pressed"
        inj.extras.append(Extra(at, d.device_id, Channel.EVENT, kind.value, values, name))
        return inj

    return make


def _position(community: Community, device: CommunityDevice) -> dict[str, float]:
    """A GPS fix inside the community (the band sends one with every alarm, for dispatch)."""
    rng = Random(f"gps:{community.code}:{device.device_id}")
    return {
        "latitude": round(31.2304 + rng.uniform(-0.002, 0.002), 6),
        "longitude": round(121.4737 + rng.uniform(-0.002, 0.002), 6),
    }


def _elder_inactive(
    community: Community, place: Place, at: int, *, hours: float = INACTIVE_SPAN_S / 3600, **_: Any
) -> Injection:
    d = _device_at(community, place, Equipment.WATER_METER, elder=True)
    span = int(hours * 3600)
    inj = Injection("elder-inactive", place.text, at, (d.device_id,), end_s=at + span)
    inj.overrides.append(Override(d.device_id, NO_WATER, at, at + span))
    inj.note = f"water meter of an elder living alone shows no use for {hours:g} h"
    return inj


def _water_leak(
    community: Community, place: Place, at: int, *, hours: float = LEAK_SPAN_S / 3600, **_: Any
) -> Injection:
    d = _device_at(community, place, Equipment.WATER_METER)
    span = int(hours * 3600)
    inj = Injection("water-leak", place.text, at, (d.device_id,), end_s=at + span)
    inj.overrides.append(Override(d.device_id, LEAK, at, at + span))
    inj.note = f"continuous flow of {LEAK_FLOW_M3H} m³/h on top of normal use for {hours:g} h"
    return inj


def _gate_forced(community: Community, place: Place, at: int, **_: Any) -> Injection:
    if place.device is not None:
        gate = place.device
        if gate.family is not Family.ACCESS:
            raise ScenarioError(f"device {gate.device_id} is not a gate")
    else:
        found = community.unit_gate(place.building, place.unit or "u1")
        if found is None:
            raise ScenarioError(f"no unit gate at {place.text!r}")
        gate = found
    inj = Injection("gate-forced", place.text, at, (gate.device_id,))
    values = {"door": gate.door, "method": AccessMethod.NONE.value, "granted": False}
    inj.extras.append(
        Extra(
            at, gate.device_id, Channel.EVENT, AccessEvent.DOOR_FORCED.value, values, "gate-forced"
        )
    )
    inj.note = "door forced open without a credential"
    return inj


def offline_span_s(power: str, speed: float) -> int:
    """Sim seconds a device must stay silent for the gateway's real-time timeout to pass."""
    real = LIVENESS_TIMEOUT_S.get(power, LIVENESS_TIMEOUT_S["mains"]) + 120
    return max(OFFLINE_SPAN_MIN_S, math.ceil(real * speed))


def _device_offline(
    community: Community,
    place: Place,
    at: int,
    *,
    span: float | None = None,
    announce: bool = False,
    speed: float = 1.0,
    **_: Any,
) -> Injection:
    """Silent for `span` sim seconds (default: long enough for the gateway's timeout at this
    speed), optionally announcing ``offline`` first (an MQTT last will), then back with
    ``online`` and its normal reports."""
    if place.device is not None:
        d = place.device
    elif place.unit and len(place.households) > 1:
        gate = community.unit_gate(place.building, place.unit)
        if gate is None:
            raise ScenarioError(f"no unit gate at {place.text!r}")
        d = gate
    else:
        d = _device_at(community, place, Equipment.ELECTRICITY_METER)
    length = int(span) if span is not None else offline_span_s(d.power, speed)
    end = at + length
    inj = Injection("device-offline", place.text, at, (d.device_id,), end_s=end)
    inj.overrides.append(Override(d.device_id, SILENT, at, end))
    if announce:
        inj.extras.append(
            Extra(at, d.device_id, Channel.STATUS, StatusKind.OFFLINE.value, {}, "device-offline")
        )
    inj.extras.append(
        Extra(end, d.device_id, Channel.STATUS, StatusKind.ONLINE.value, {}, "device-offline")
    )
    how = "announced offline, then " if announce else ""
    inj.note = (
        f"{how}silent for {length} sim s (≈{length / max(speed, 1e-9):.0f} real s at this speed;"
        f" {d.power} timeout {LIVENESS_TIMEOUT_S.get(d.power, 600):.0f} s), back with 'online'"
        f" via {STATUS_FORMAT}"
    )
    return inj


def _hostile(community: Community, place: Place, at: int, *, seed: int = 0, **_: Any) -> Injection:
    """Every malformed case, spoofed ids, oversize vendor payloads and line-protocol injection
    through registered devices (which must be stored correctly escaped)."""
    rng = Random(f"hostile:{seed}:{community.code}:{place.text}:{at}")
    code = community.code
    inj = Injection("hostile", place.text, at, ())
    t = at

    def raw(case: str, reason: str, make: RawMaker) -> None:
        nonlocal t
        inj.raw.append(Raw(t, case, reason, make))
        t += 1

    for case in sorted(malformed.CASES):
        label = _probe_label(case, code)
        reason = UNREGISTERED if label in (malformed.VALID, malformed.UNSTORABLE) else label
        case_seed = f"{seed}:{code}:{case}:{at}"

        def make(now_ms: int, case: str = case, case_seed: str = case_seed) -> tuple[str, bytes]:
            # a fresh generator per call: iterating a schedule twice gives the same bytes
            topic, payload, _ = malformed.bad_message(
                Random(case_seed), code, now_ms=now_ms, case=case
            )
            return topic, payload

        raw(case, reason, make)

    homes = place.households or community.households
    meter = community.household_device(homes[0].id, Equipment.ELECTRICITY_METER)
    smoke = community.household_device(homes[0].id, Equipment.SMOKE_DETECTOR)
    gate = community.unit_gate(homes[0].building, homes[0].unit)
    assert meter is not None and smoke is not None and gate is not None
    devices = [meter.device_id, smoke.device_id, gate.device_id]

    def body(device_id: str, ts_s: int, kind: str, data: dict[str, Any]) -> bytes:
        return orjson.dumps(
            {"v": 1, "device_id": device_id, "ts": ts_s * 1000, "kind": kind, "data": data}
        )

    # A registered meter's id on the elder topic: a device claiming another family.
    spoof_topic = build_topic(code, Family.ELDER, meter.device_id, Channel.TELEMETRY)
    spoof = body(meter.device_id, at, "telemetry", {"heart_rate_bpm": 72.0, "spo2_pct": 97.0})
    raw("spoof_family", FAMILY_MISMATCH, _fixed(spoof_topic, spoof))
    # A lookalike id one digit off a registered meter's: not in the registry.
    lookalike = meter.device_id[:-1] + str((int(meter.device_id[-1]) + 5) % 10)
    while community.device(lookalike) is not None:
        lookalike = str(rng.randrange(10**11, 10**12))
    fake_topic = build_topic(code, Family.METER, lookalike, Channel.TELEMETRY)
    fake = body(lookalike, at, "telemetry", {"meter_type": "electricity", "energy_kwh": 1.5})
    raw("spoof_unregistered", UNREGISTERED, _fixed(fake_topic, fake))
    # A registered gate's topic carrying another gate's id (a terminal speaking for another).
    other = next(
        (g for g in community.devices_of(Equipment.UNIT_GATE) if g.device_id != gate.device_id),
        gate,
    )
    if other is not gate:
        person = {
            "person_name": fake_name(rng),
            "id_number": fake_id_number(rng),
            "phone": fake_phone(rng),
        }
        mis_topic = build_topic(code, Family.ACCESS, gate.device_id, Channel.EVENT)
        mis = body(
            other.device_id, at, "entry_granted", {"door": gate.door, "granted": True, **person}
        )
        raw("spoof_other_device", malformed.DEVICE_ID_MISMATCH, _fixed(mis_topic, mis))
    # Oversize vendor payloads: a face image far beyond the limit, and a concentrator flood.
    big = "A" * (MAX_PAYLOAD_BYTES + 4096)
    acs_topic = f"vendor/acs/{code}/{gate.device_id}/event"
    acs = orjson.dumps(
        {
            "deviceSn": gate.device_id,
            "eventTime": "2025-01-01 08:00:00",
            "eventType": 1,
            "faceImage": big,
        }
    )
    raw("oversize_vendor_access", malformed.OVERSIZE, _fixed(acs_topic, acs))
    conc_topic = f"gridgate/raw/{code}/dlt645/conc-{homes[0].building}"
    flood = b"68" * (MAX_PAYLOAD_BYTES // 2 + 1024)
    raw("oversize_dlt645", malformed.OVERSIZE, _fixed(conc_topic, flood))

    # Line-protocol metacharacters through registered devices: legal, stored escaped.
    door_values = {
        "door": malformed.HOSTILE_DOOR,
        "method": AccessMethod.CARD.value,
        "direction": "in",
        "granted": True,
        "card_no": f"{rng.getrandbits(32):08X}",
    }
    inj.extras.append(
        Extra(t, gate.device_id, Channel.EVENT, AccessEvent.ENTRY_GRANTED.value, door_values,
              "hostile:registered_injection_door")
    )  # fmt: skip
    t += 1
    field_values = {
        "detector": "smoke",
        "smoke_alarm": False,
        'evil",tag=x field=1 1\\': "x=1 y",  # unknown key: privacy drops it
    }
    inj.extras.append(
        Extra(t, smoke.device_id, Channel.TELEMETRY, "telemetry", field_values,
              "hostile:registered_injection_field")
    )  # fmt: skip
    t += 1
    inj.devices = tuple(devices)
    inj.end_s = t
    inj.note = (
        f"{len(inj.raw)} messages to reject (every malformed case, spoofed family/id/device,"
        " oversize vendor payloads) and 2 legal ones with line-protocol metacharacters"
    )
    return inj


def _fixed(topic: str, payload: bytes) -> RawMaker:
    def make(now_ms: int) -> tuple[str, bytes]:
        return topic, payload

    return make


def _probe_label(case: str, community: str) -> str:
    """The label malformed.py gives a case (it does not depend on the draw)."""
    _, _, label = malformed.bad_message(Random(0), community, now_ms=1_750_000_000_000, case=case)
    return label


Maker = Callable[..., Injection]
SCENARIOS: dict[str, Maker] = {
    "gas-leak": _gas_leak,
    "smoke-spreading": _smoke_spreading,
    "elder-fall": _elder_event(ElderEvent.FALL, "elder-fall"),
    "elder-sos": _elder_event(ElderEvent.SOS, "elder-sos"),
    "elder-inactive": _elder_inactive,
    "water-leak": _water_leak,
    "gate-forced": _gate_forced,
    "device-offline": _device_offline,
    "hostile": _hostile,
    "alarm-storm": _alarm_storm,
}


def inject(
    community: Community, name: str, place: str, at_sim_time: int, **options: Any
) -> Injection:
    """The overrides and extra messages of scenario `name` at `place` from `at_sim_time`.

    Options: smoke-spreading ``units``/``per_unit``; elder-inactive and water-leak ``hours``;
    device-offline ``span`` (sim s), ``announce`` and ``speed`` (for the default span);
    hostile ``seed``; alarm-storm ``span`` (sim s, default 10 min).
    """
    maker = SCENARIOS.get(name)
    if maker is None:
        raise ScenarioError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")
    resolved = resolve_place(community, place)
    return maker(community, resolved, int(at_sim_time), **options)
