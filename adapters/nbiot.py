"""NB-IoT devices behind carrier platforms (OneNET, CTWing): the push topic the gateway gives
each message, and the fields an NB-IoT smoke detector or water meter reports.

The platforms push over HTTP, not MQTT. `gateway.push` checks the platform's signature, looks
the device up in the registry by its IMEI (the registry's device id for NB-IoT devices) and
hands each message to the pipeline under a topic of its own making::

    $push/{community}/{platform}/{family}/{imei}

Community and family come from the registry, never from the body. A device the registry does
not know gets community ``-`` and family ``unregistered``, and its message is dead-lettered as
``unregistered``; a body no device could be found in gets ``unknown`` and ``-``. The ``$``
keeps these topics out of MQTT: a client cannot publish to them and no route filter matches
them, so nobody can pose as a platform through the broker.

Fields, by family (the platform's datastream ids for OneNET, payload keys for CTWing):

- safety (smoke detector): ``smoke_state`` 0 normal, 1 smoke alarm, 2 alarm cleared,
  3 fault, 4 tamper, 5 low battery, 6 self-test passed; ``smoke_density`` dB/m;
  ``temperature`` °C; ``battery`` %; ``fault_code``;
- meter (water meter): ``water_m3`` cumulative m³; ``flow`` m³/h; ``valve`` 0 open,
  1 closed, 2 abnormal; ``battery`` %; ``fault_code``.

Other fields pass through as vendor extras (privacy drops and counts them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.vendor_common import (
    add_extras,
    canonical,
    check_device,
    epoch_ms_to_ns,
    location,
)
from devices.errors import RejectedInput
from devices.families import TELEMETRY_KIND, Channel, Family, SafetyEvent, StatusKind
from devices.location import Location
from devices.reading import Reading
from devices.topics import is_valid_id

PUSH_PREFIX = "$push"
UNREGISTERED = "unregistered"
UNKNOWN = "unknown"
MALFORMED = "malformed"  # a body the listener could not take the message out of
NO_COMMUNITY = "-"
NO_DEVICE = "-"
PLATFORMS = ("onenet", "ctwing", "hikvision_isapi")  # the adapters of pushed messages

SMOKE_STATES: dict[int, SafetyEvent | None] = {
    0: None,
    1: SafetyEvent.SMOKE_ALARM,
    2: SafetyEvent.ALARM_CLEARED,
    3: SafetyEvent.FAULT,
    4: SafetyEvent.TAMPER,
    5: SafetyEvent.LOW_BATTERY,
    6: SafetyEvent.SELF_TEST,
}
VALVES = {0: "open", 1: "closed", 2: "abnormal"}
_SAFETY_FIELDS = {
    "smoke_density": "smoke_density_db_m",
    "temperature": "temperature_c",
    "battery": "battery_pct",
    "fault_code": "fault_code",
}
_METER_FIELDS = {
    "water_m3": "water_m3",
    "flow": "flow_m3h",
    "battery": "battery_pct",
    "fault_code": "fault_code",
}
PUSH_FAMILIES = (Family.SAFETY, Family.METER)


def push_topic(community: str, platform: str, family: str, imei: str) -> str:
    return f"{PUSH_PREFIX}/{community}/{platform}/{family}/{imei}"


def push_filter(platform: str) -> str:
    return f"{PUSH_PREFIX}/+/{platform}/+/+"


def parse_push_topic(
    topic: str, platform: str, families: tuple[Family, ...] = PUSH_FAMILIES
) -> tuple[str, Family, str]:
    """(community, family, device id) of a push topic; `unregistered` for a device the
    registry does not know, `unsupported_family` for one of a family not in `families`."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != PUSH_PREFIX or parts[2] != platform:
        raise RejectedInput("bad_topic", f"expected {push_topic('community', platform, 'f', 'i')}")
    community, family, imei = parts[1], parts[3], parts[4]
    if family == UNKNOWN:
        raise RejectedInput("no_device", "the body names no device")
    if family == MALFORMED:
        raise RejectedInput("malformed_body", "the push body holds no event that can be read")
    known = next((f for f in families if f.value == family), None)
    if family == UNREGISTERED or community == NO_COMMUNITY:
        raise RejectedInput("unregistered", "no device with this IMEI is in the registry")
    if known is None:
        raise RejectedInput("unsupported_family", f"{platform} sends no {family} readings")
    if not is_valid_id(imei) or not is_valid_id(community):
        raise RejectedInput("bad_device_id", "device id has characters outside [A-Za-z0-9_.:-]")
    return community, known, imei


def origin(
    topic: str, platform: str, imei: str, imei_field: str, at_ms: int, at_field: str
) -> tuple[Family, str, int, Location]:
    """(family, IMEI, time, place) of a pushed message: the registry's answer from the topic,
    the body's IMEI checked against it, the body's epoch-milliseconds time."""
    community, family, registered = parse_push_topic(topic, platform)
    check_device(imei, registered, imei_field)
    return family, registered, epoch_ms_to_ns(at_ms, at_field), location(community)


def online_status(
    imei: str, family: Family, time_ns: int, place: Location, code: int | None, field: str
) -> Reading:
    """A platform's online (1) / offline (0) report as a status reading."""
    if code not in (0, 1):
        raise RejectedInput("bad_value", f"{field} of an online/offline report must be 0 or 1")
    kind = StatusKind.ONLINE if code == 1 else StatusKind.OFFLINE
    return Reading(imei, family, Channel.STATUS, kind.value, time_ns, place, {})


def _integer(fields: Mapping[str, Any], key: str) -> int | None:
    value = fields.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RejectedInput("wrong_type", f"{key} must be an integer code")
    return value


def readings(
    device_id: str, family: Family, time_ns: int, place: Location, fields: Mapping[str, Any]
) -> list[Reading]:
    """The event (a smoke state other than normal) and the telemetry in `fields`."""
    rest = dict(fields)
    event: SafetyEvent | None = None
    if family is Family.SAFETY:
        names = _SAFETY_FIELDS
        state = _integer(rest, "smoke_state")
        rest.pop("smoke_state", None)
        if state is not None:
            if state not in SMOKE_STATES:
                raise RejectedInput("bad_kind", "smoke_state is not a known code (0-6)")
            event = SMOKE_STATES[state]
        converted: dict[str, Any] = {"detector": "smoke"}
    else:
        names = _METER_FIELDS
        valve = _integer(rest, "valve")
        rest.pop("valve", None)
        converted = {"meter_type": "water"}
        if valve is not None:
            if valve not in VALVES:
                raise RejectedInput("bad_value", "valve is not a known code (0-2)")
            converted["valve"] = VALVES[valve]
    for key, field in names.items():
        if key in rest:
            converted[field] = rest.pop(key)
    measured = canonical(family, converted)
    out: list[Reading] = []
    explained: tuple[str, ...] = ()  # measurements the event carries instead of telemetry
    if event is not None:
        values: dict[str, Any] = {"detector": "smoke"}
        if event is SafetyEvent.SMOKE_ALARM:
            values["smoke_alarm"] = True
            explained = ("smoke_density_db_m",)
        elif event is SafetyEvent.TAMPER:
            values["tamper"] = True
        elif event is SafetyEvent.SELF_TEST:
            values["self_test_ok"] = True
        elif event is SafetyEvent.LOW_BATTERY:
            explained = ("battery_pct",)
        elif event is SafetyEvent.FAULT:
            explained = ("fault_code",)
        values.update((k, measured[k]) for k in explained if k in measured)
        out.append(Reading(device_id, family, Channel.EVENT, event.value, time_ns, place, values))
    kind_only = ("detector", "meter_type", *explained)
    if any(k not in kind_only for k in measured) or (rest and not out):
        out.append(
            Reading(device_id, family, Channel.TELEMETRY, TELEMETRY_KIND, time_ns, place, measured)
        )
    if not out:
        raise RejectedInput("empty", "no known field in the message")
    if rest:
        last = out[-1]
        out[-1] = last.with_values(add_extras(family, dict(last.values), rest))
    return out


_EVENT_STATES = {kind.value: code for code, kind in SMOKE_STATES.items() if kind is not None}
_FIELD_OF = {field: key for key, field in {**_SAFETY_FIELDS, **_METER_FIELDS}.items()}
_VALVE_CODES = {text: code for code, text in VALVES.items()}


def fields_of(reading: Reading) -> dict[str, Any]:
    """For `encode`: the device fields a reading is sent as (the inverse of `readings`).
    Raises ValueError for a reading these devices cannot send."""
    if reading.family not in PUSH_FAMILIES or reading.channel is Channel.STATUS:
        raise ValueError("NB-IoT pushes here carry safety and meter telemetry and events")
    fields: dict[str, Any] = {}
    if reading.channel is Channel.EVENT:
        if reading.family is not Family.SAFETY or reading.kind not in _EVENT_STATES:
            raise ValueError(f"an NB-IoT device here cannot report {reading.kind!r}")
        fields["smoke_state"] = _EVENT_STATES[reading.kind]
    elif reading.family is Family.SAFETY:
        fields["smoke_state"] = 0
    for name, value in reading.values.items():
        if name in ("detector", "meter_type", "smoke_alarm", "tamper", "self_test_ok"):
            continue
        if name == "valve":
            fields["valve"] = _VALVE_CODES[value]
        elif name in _FIELD_OF:
            fields[_FIELD_OF[name]] = value
        else:
            fields[name] = value  # a vendor extra
    return fields
