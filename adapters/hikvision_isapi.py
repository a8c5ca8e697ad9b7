"""Hikvision (or compatible) face terminals and barrier cameras, as their ISAPI HTTP event push
("listening host") sends events: one event JSON, bare or wrapped in ``EventNotificationAlert``.

`gateway.push` receives the POST (JSON, or multipart with the event part and its pictures),
checks the terminal's token, drops the pictures and hands the event JSON on under the topic
``$push/{community}/hikvision_isapi/access/{device_id}`` — community and device from the
registry, never from the body.

Access (``eventType`` ``AccessControllerEvent``)::

    {"ipAddress": "10.0.3.21", "macAddress": "…", "dateTime": "2024-05-20T08:30:15+08:00",
     "eventType": "AccessControllerEvent", "eventState": "active",
     "AccessControllerEvent": {"deviceName": "3号楼1单元门", "majorEventType": 5,
        "subEventType": 75, "name": "<name>", "employeeNoString": "<resident id>",
        "cardNo": "", "doorNo": 1, "cardReaderNo": 1, "serialNo": 1042,
        "currentVerifyMode": "cardOrFace", "picturesNumber": 1, "mask": "no", …}}

The method comes from the event code, never from ``currentVerifyMode`` (the terminal's
configured mode): major 5 with minor 75/77 face passed, 76/78/80 face failed, 1/2 card passed,
6–9 card refused, 156/157 QR code, 181/150 password, 1024 remote opening, 23 exit button,
27 door forced, 28 door held open; major 1 minor 1028 (0x404) the terminal torn off the wall.
Any other code is kept as ``unknown_event`` with ``event_major``/``event_minor``, not refused.
``cardReaderNo`` 1 is the way in, 2 the way out. Name, employee number and card number map to
their canonical fields, for privacy: the name is dropped, the employee number resolved to the
resident (with consent, at an approved terminal), the card number pseudonymised.

Barrier cameras (``eventType`` ``ANPR``): ``ANPR.licensePlate`` (or ``plateNumber``) and
``ANPR.direction`` ``forward`` (towards the camera: entering) or ``reverse`` (leaving).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
from pydantic import Field

from adapters.base import check_size
from adapters.nbiot import parse_push_topic, push_topic
from adapters.vendor_common import (
    Integer,
    Text,
    VendorModel,
    add_extras,
    canonical,
    epoch_s_to_ns,
    location,
    parse_payload,
)
from devices.errors import RejectedInput
from devices.families import AccessEvent, AccessMethod, Channel, Family
from devices.reading import Reading

name = "hikvision_isapi"
PLATFORM = "hikvision_isapi"
MAJOR_ALARM, MAJOR_EVENT = 1, 5
NS = 1_000_000_000
_CST = timezone(timedelta(hours=8))
SERIAL_SPREAD_NS = 1_000_000

# (major, minor) → (event, method)
_PASSED, _FAILED = AccessEvent.ENTRY_GRANTED, AccessEvent.ENTRY_DENIED
CODES: dict[tuple[int, int], tuple[AccessEvent, AccessMethod]] = {
    **{(MAJOR_EVENT, m): (_PASSED, AccessMethod.FACE) for m in (0x4B, 0x4D)},
    **{(MAJOR_EVENT, m): (_FAILED, AccessMethod.FACE) for m in (0x4C, 0x4E, 0x50)},
    **{(MAJOR_EVENT, m): (_PASSED, AccessMethod.CARD) for m in (0x01, 0x02)},
    **{(MAJOR_EVENT, m): (_FAILED, AccessMethod.CARD) for m in (0x06, 0x07, 0x08, 0x09)},
    (MAJOR_EVENT, 0x9C): (_PASSED, AccessMethod.QR),
    (MAJOR_EVENT, 0x9D): (_FAILED, AccessMethod.QR),
    (MAJOR_EVENT, 0xB5): (_PASSED, AccessMethod.PASSWORD),
    (MAJOR_EVENT, 0x96): (_FAILED, AccessMethod.PASSWORD),
    (MAJOR_EVENT, 0x400): (_PASSED, AccessMethod.REMOTE),
    (MAJOR_EVENT, 0x17): (AccessEvent.EXIT, AccessMethod.NONE),
    (MAJOR_EVENT, 0x1B): (AccessEvent.DOOR_FORCED, AccessMethod.NONE),
    (MAJOR_EVENT, 0x1C): (AccessEvent.DOOR_HELD_OPEN, AccessMethod.NONE),
    (MAJOR_ALARM, 0x404): (AccessEvent.TAMPER, AccessMethod.NONE),
}
# The code each (event, method) is sent with (the first listed), for `encode`.
_CODE_OF: dict[tuple[AccessEvent, AccessMethod], tuple[int, int]] = {}
for _code, _meaning in CODES.items():
    _CODE_OF.setdefault(_meaning, _code)
_READERS = {1: "in", 2: "out"}
_ANPR_DIRECTIONS = {"forward": AccessEvent.VEHICLE_ENTRY, "reverse": AccessEvent.VEHICLE_EXIT}
_GRANTED = {AccessEvent.ENTRY_GRANTED: True, AccessEvent.ENTRY_DENIED: False}


class AccessBody(VendorModel):
    majorEventType: Integer = Field(ge=0, le=65_535)
    subEventType: Integer = Field(ge=0, le=65_535)
    deviceName: Text | None = None
    name: Text | None = None
    employeeNoString: Text | None = None
    employeeNo: Integer | Text | None = None  # older firmware: a number
    cardNo: Text | None = None
    doorNo: Integer | None = None
    cardReaderNo: Integer | None = None
    serialNo: Integer | None = Field(default=None, ge=0)


class AnprBody(VendorModel):
    licensePlate: Text | None = None
    plateNumber: Text | None = None
    direction: Text | None = None


class IsapiEvent(VendorModel):
    dateTime: Text
    eventType: Text
    AccessControllerEvent: AccessBody | None = None
    ANPR: AnprBody | None = None


class Wrapped(VendorModel):
    EventNotificationAlert: IsapiEvent


def terminal_token(secret: str, device_id: str) -> str:
    """The token in a terminal's push URL: HMAC-SHA256 of its id under the gateway's secret,
    so a leaked URL opens one terminal's door, and a new secret closes them all."""
    mac = hmac.new(secret.encode(), f"hikvision:{device_id}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:18]).decode()  # 24 characters


def event_of(payload: bytes) -> IsapiEvent:
    """The event, bare or wrapped in ``EventNotificationAlert``."""
    check_size(payload)
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise RejectedInput("not_json", "the event is not JSON") from None
    if isinstance(data, dict) and "EventNotificationAlert" in data:
        return parse_payload(Wrapped, payload).EventNotificationAlert
    return parse_payload(IsapiEvent, payload)


def _time_ns(text: str) -> int:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise RejectedInput("bad_timestamp", "dateTime is not ISO 8601") from None
    if when.tzinfo is None:
        raise RejectedInput("bad_timestamp", "dateTime has no UTC offset")
    seconds = int(when.timestamp())
    return epoch_s_to_ns(seconds, "dateTime") + when.microsecond * 1000


def decode(topic: str, payload: bytes) -> list[Reading]:
    community, _family, device_id = parse_push_topic(topic, PLATFORM, (Family.ACCESS,))
    event = event_of(payload)
    time_ns = _time_ns(event.dateTime)
    place = location(community)
    if event.eventType == "ANPR":
        return [_anpr(device_id, time_ns, place, event.ANPR)]
    if event.eventType != "AccessControllerEvent" or event.AccessControllerEvent is None:
        raise RejectedInput("unsupported_event", "only AccessControllerEvent and ANPR events")
    body = event.AccessControllerEvent
    if body.serialNo is not None:
        # dateTime has whole seconds, and InfluxDB keeps one point per series and time: two
        # passages at a door in one second would be one. The terminal's event number orders
        # them within the second, as nanoseconds (below a millisecond: no time is invented).
        time_ns += body.serialNo % SERIAL_SPREAD_NS
    known = CODES.get((body.majorEventType, body.subEventType))
    values: dict[str, Any]
    if known is None:
        kind = AccessEvent.UNKNOWN_EVENT
        values = {"event_major": body.majorEventType, "event_minor": body.subEventType}
    else:
        kind, method = known
        values = {"method": method.value}
        if kind in _GRANTED:
            values["granted"] = _GRANTED[kind]
    if body.cardReaderNo in _READERS:
        values["direction"] = _READERS[body.cardReaderNo]
    if body.deviceName:
        values["door"] = body.deviceName
    elif body.doorNo is not None:
        values["door"] = f"Door {body.doorNo}"
    employee = body.employeeNoString or (None if body.employeeNo is None else str(body.employeeNo))
    for field, value in (("person_name", body.name), ("employee_no", employee),
                         ("card_no", body.cardNo)):  # fmt: skip
        if value:
            values[field] = value
    values = canonical(Family.ACCESS, values)
    # what the terminal adds (mask, FaceRect, currentVerifyMode …): privacy drops and counts it
    values = add_extras(Family.ACCESS, values, body.model_extra)
    return [Reading(device_id, Family.ACCESS, Channel.EVENT, kind.value, time_ns, place, values)]


def _anpr(device_id: str, time_ns: int, place: Any, anpr: AnprBody | None) -> Reading:
    if anpr is None:
        raise RejectedInput("missing_field", "an ANPR event needs ANPR")
    plate = anpr.licensePlate or anpr.plateNumber
    kind = _ANPR_DIRECTIONS.get(anpr.direction or "")
    values: dict[str, Any] = {"method": AccessMethod.PLATE.value}
    if plate and plate.lower() not in ("unknown", "无车牌"):
        values["plate"] = plate
    if kind is None:
        kind = AccessEvent.UNKNOWN_EVENT
    else:
        values["direction"] = "in" if kind is AccessEvent.VEHICLE_ENTRY else "out"
    values = canonical(Family.ACCESS, values)
    return Reading(device_id, Family.ACCESS, Channel.EVENT, kind.value, time_ns, place, values)


def encode(reading: Reading, *, serial_no: int = 1, pictures: int = 0) -> tuple[str, bytes]:
    """The push topic and event JSON a terminal (or camera) sends for `reading`; ValueError
    for a reading no code here says."""
    if reading.family is not Family.ACCESS or reading.channel is not Channel.EVENT:
        raise ValueError(f"{name} sends access events only")
    v = reading.values
    when = datetime.fromtimestamp(reading.time_ns // NS).astimezone(_CST)
    topic = push_topic(reading.location.community, PLATFORM, Family.ACCESS.value, reading.device_id)
    event: dict[str, Any] = {
        "ipAddress": "10.0.0.2",
        "portNo": 80,
        "protocol": "HTTP",
        "dateTime": when.isoformat(),
        "activePostCount": 1,
    }
    kind = AccessEvent(reading.kind)
    if kind in (AccessEvent.VEHICLE_ENTRY, AccessEvent.VEHICLE_EXIT):
        direction = "forward" if kind is AccessEvent.VEHICLE_ENTRY else "reverse"
        event |= {"eventType": "ANPR", "eventState": "active",
                  "ANPR": {"licensePlate": v.get("plate") or "unknown", "direction": direction,
                           "confidenceLevel": 97}}  # fmt: skip
        return topic, orjson.dumps(event)
    method = AccessMethod(v.get("method") or AccessMethod.NONE.value)
    code = _CODE_OF.get((kind, method)) or _CODE_OF.get((kind, AccessMethod.NONE))
    if code is None:
        raise ValueError(f"{name} has no code for {kind.value} by {method.value}")
    body: dict[str, Any] = {
        "deviceName": v.get("door") or "Door 1",
        "majorEventType": code[0],
        "subEventType": code[1],
        "doorNo": 1,
        "cardReaderNo": 2 if v.get("direction") == "out" else 1,
        "serialNo": serial_no,
        "currentVerifyMode": "cardOrFace",
        "picturesNumber": pictures,
    }
    if v.get("person_name"):
        body["name"] = v["person_name"]
    if v.get("employee_no"):
        body["employeeNoString"] = v["employee_no"]
    if v.get("card_no"):
        body["cardNo"] = v["card_no"]
    event |= {"eventType": "AccessControllerEvent", "eventState": "active",
              "AccessControllerEvent": body}  # fmt: skip
    return topic, orjson.dumps(event)
