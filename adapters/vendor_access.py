"""A foreign access-control vendor (face terminals, card readers, barrier gates): one JSON
event per passage or alarm, in the style of Chinese ACS platforms.

Topic:   vendor/acs/{community}/{deviceSn}/event
Payload: {"deviceSn": "ACS2024051234", "eventTime": "2024-05-20 08:30:15"  (UTC+8, ".SSS" ok),
          "eventType": 1, "openMode": "FACE", "direction": "IN", "passResult": 1,
          "doorName": "3号楼1单元门", "similarity": 92.5, "openDuration": 45,
          "personName": "张三", "certNo": "<18-digit ID>", "phone": "13800138000",
          "cardNo": "9F3A21C0", "plateNo": "京A12345",
          "faceImage": "<base64>", "faceFeature": "<base64>"}

eventType: 1 passage granted, 2 denied, 3 door forced, 4 door held open, 5 perimeter alarm,
6 vehicle in, 7 vehicle out, 8 tamper, 9 exit (exit button / free exit), 10 device fault.
`similarity` is a percentage (canonical 0..1); `openDuration` seconds (`held_open_s`);
`passResult` (1 opened, 0 refused) matters for vehicles and must agree with types 1 and 2.
Personal fields are mapped to their canonical names, not dropped: privacy decides. Unknown
fields pass through unchanged for privacy to drop and count.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from adapters.vendor_common import (
    DeviceId,
    Integer,
    LocalTime,
    Number,
    Text,
    TopicShape,
    VendorModel,
    add_extras,
    canonical,
    check_device,
    format_local_time,
    location,
    parse_local_time,
    parse_payload,
    unknown_values,
)
from devices.errors import RejectedInput
from devices.families import AccessEvent, Channel, Family
from devices.reading import Reading

name = "vendor_access"

TOPIC = TopicShape(("vendor", "acs"), "event")
SUBSCRIPTION = TOPIC.subscription

EVENT_TYPES: dict[int, AccessEvent] = {
    1: AccessEvent.ENTRY_GRANTED,
    2: AccessEvent.ENTRY_DENIED,
    3: AccessEvent.DOOR_FORCED,
    4: AccessEvent.DOOR_HELD_OPEN,
    5: AccessEvent.PERIMETER_BREACH,
    6: AccessEvent.VEHICLE_ENTRY,
    7: AccessEvent.VEHICLE_EXIT,
    8: AccessEvent.TAMPER,
    9: AccessEvent.EXIT,
    10: AccessEvent.FAULT,
}
_EVENT_CODES = {kind.value: code for code, kind in EVENT_TYPES.items()}
_IMPLIED_RESULT = {1: True, 2: False}  # these types say themselves whether the door opened

OPEN_MODES = {
    "FACE": "face",
    "CARD": "card",
    "QR": "qr",
    "PWD": "password",
    "PLATE": "plate",
    "REMOTE": "remote",
    "NONE": "none",
}
_MODE_CODES = {method: code for code, method in OPEN_MODES.items()}
_DIRECTIONS = {"IN": "in", "OUT": "out"}
_DIRECTION_CODES = {v: k for k, v in _DIRECTIONS.items()}

# vendor field → canonical field, for the ones copied as they are (personal data included).
_COPIED = {
    "doorName": "door",
    "personName": "person_name",
    "certNo": "id_number",
    "phone": "phone",
    "cardNo": "card_no",
    "plateNo": "plate",
    "faceImage": "face_image",
    "faceFeature": "face_feature",
}


class AcsEvent(VendorModel):
    deviceSn: DeviceId
    eventTime: LocalTime
    eventType: Integer
    openMode: Literal["FACE", "CARD", "QR", "PWD", "PLATE", "REMOTE", "NONE"] | None = None
    direction: Literal["IN", "OUT"] | None = None
    passResult: Literal[0, 1] | None = None
    similarity: Number | None = None
    openDuration: Number | None = None
    doorName: Text | None = None
    personName: Text | None = None
    certNo: Text | None = None
    phone: Text | None = None
    cardNo: Text | None = None
    plateNo: Text | None = None
    faceImage: str | None = None  # images are large: the payload size limit bounds them
    faceFeature: str | None = None


_VENDOR_KEYS = frozenset(AcsEvent.model_fields)


def decode(topic: str, payload: bytes) -> list[Reading]:
    community, device_id = TOPIC.parse(topic)
    event = parse_payload(AcsEvent, payload)
    check_device(event.deviceSn, device_id, "deviceSn")
    time_ns = parse_local_time(event.eventTime, "eventTime")
    kind = EVENT_TYPES.get(event.eventType)
    if kind is None:
        raise RejectedInput("bad_kind", "eventType is not a known event code (1-10)")
    granted = _IMPLIED_RESULT.get(event.eventType)
    if event.passResult is not None:
        if granted is not None and granted != bool(event.passResult):
            raise RejectedInput("bad_value", "passResult contradicts eventType")
        granted = bool(event.passResult)
    values: dict[str, Any] = {
        "method": OPEN_MODES[event.openMode] if event.openMode else None,
        "direction": _DIRECTIONS[event.direction] if event.direction else None,
        "granted": granted,
        "similarity": None if event.similarity is None else round(event.similarity / 100, 6),
        "held_open_s": event.openDuration,
    }
    for vendor_key, key in _COPIED.items():
        values[key] = getattr(event, vendor_key)
    data = add_extras(Family.ACCESS, canonical(Family.ACCESS, values), event.model_extra)
    return [
        Reading(
            device_id=device_id,
            family=Family.ACCESS,
            channel=Channel.EVENT,
            kind=kind.value,
            time_ns=time_ns,
            location=location(community),
            values=data,
        )
    ]


def encode(reading: Reading) -> tuple[str, bytes]:
    """The topic and payload this vendor's terminal would publish for `reading`.

    Canonical fields the format has no place for (e.g. `resident_ref`) are left out; a
    reading the format cannot express at all raises ValueError.
    """
    code = _EVENT_CODES.get(reading.kind)
    if reading.family is not Family.ACCESS or reading.channel is not Channel.EVENT or not code:
        raise ValueError(f"{name} only sends access events, not {reading.kind!r}")
    v = reading.values
    body: dict[str, Any] = {
        "deviceSn": reading.device_id,
        "eventTime": format_local_time(reading.time_ns),
        "eventType": code,
    }
    if v.get("method") is not None:
        body["openMode"] = _MODE_CODES[str(v["method"])]
    if v.get("direction") is not None:
        body["direction"] = _DIRECTION_CODES[str(v["direction"])]
    if v.get("granted") is not None and code not in _IMPLIED_RESULT:
        body["passResult"] = int(bool(v["granted"]))
    if v.get("similarity") is not None:
        body["similarity"] = round(float(v["similarity"]) * 100, 4)
    if v.get("held_open_s") is not None:
        body["openDuration"] = v["held_open_s"]
    for vendor_key, key in _COPIED.items():
        if v.get(key) is not None:
            body[vendor_key] = v[key]
    body.update(unknown_values(Family.ACCESS, v, _VENDOR_KEYS))
    return TOPIC.build(reading.location.community, reading.device_id), orjson.dumps(body)
