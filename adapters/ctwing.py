"""China Telecom CTWing (天翼物联网平台 AIoT) subscription push, one message of it: a device's
data report or its online/offline report. `gateway.push` has checked the token and looked the
device up by IMEI; the topic carries what the registry said (see `adapters.nbiot`).

Topic:   $push/{community}/ctwing/{family}/{imei}
Payload: {"messageType": "dataReport", "deviceId": "…", "IMEI": "868…", "productId": "…",
          "timestamp": 1700…000, "payload": {"smoke_state": 1, "battery": 80}}
         {"messageType": "dataReport", …, "payload": {"APPdata": "<base64>"}}
         {"messageType": "deviceOnlineOfflineReport", …, "eventType": 1}   (1 online, 0 off)

``payload`` is either the product's JSON fields (`adapters.nbiot` lists them by family) or,
for products with a transparent (透传) profile, ``APPdata``: the device's own bytes in base64.
For a water meter those bytes are a CJ/T 188 read reply (901F); its clock is used when it has
one, ``timestamp`` otherwise. The identity is the registry's (the IMEI), never the address in
the frame. Other message types (command responses, …) are refused as `unsupported_message`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import replace
from typing import Any

import orjson

from adapters import cjt188
from adapters.nbiot import fields_of, online_status, origin, push_topic, readings
from adapters.vendor_common import (
    DeviceId,
    Integer,
    Text,
    VendorModel,
    parse_payload,
)
from devices.errors import RejectedInput
from devices.families import Family
from devices.reading import RECEIVE_TIME, Reading

name = "ctwing"
PLATFORM = "ctwing"
DATA_REPORT = "dataReport"
ONLINE_OFFLINE = "deviceOnlineOfflineReport"
PRODUCT_ID = "15012345"  # the simulator's product on CTWing


class CtwingMessage(VendorModel):
    messageType: Text
    IMEI: DeviceId
    timestamp: Integer
    deviceId: Text | None = None
    payload: dict[str, Any] | None = None
    eventType: Integer | None = None


def decode(topic: str, payload: bytes) -> list[Reading]:
    msg = parse_payload(CtwingMessage, payload)  # first: a malformed body says so, not "no device"
    family, imei, time_ns, place = origin(
        topic, PLATFORM, msg.IMEI, "IMEI", msg.timestamp, "timestamp"
    )
    if msg.messageType == ONLINE_OFFLINE:
        return [online_status(imei, family, time_ns, place, msg.eventType, "eventType")]
    if msg.messageType != DATA_REPORT:
        raise RejectedInput("unsupported_message", "only dataReport and online/offline reports")
    if msg.payload is None:
        raise RejectedInput("missing_field", "a dataReport needs payload")
    if "APPdata" not in msg.payload:
        return readings(imei, family, time_ns, place, msg.payload)
    if family is not Family.METER:
        raise RejectedInput("unsupported_payload", "APPdata is understood for water meters only")
    raw = msg.payload["APPdata"]
    try:
        frame = base64.b64decode(raw, validate=True) if isinstance(raw, str) else None
    except (binascii.Error, ValueError):
        frame = None
    if not frame:
        raise RejectedInput("bad_encoding", "APPdata is not base64")
    out = []
    for r in cjt188.DEFAULT.readings(frame, place):
        when = time_ns if r.time_ns == RECEIVE_TIME else r.time_ns
        out.append(replace(r, device_id=imei, time_ns=when))
    return out


def encode(reading: Reading) -> tuple[str, bytes]:
    """The push topic and CTWing dataReport a device's reading arrives as: a water meter's
    as APPdata holding its CJ/T 188 reply (the meter address: the IMEI's last 14 digits),
    anything else as JSON fields."""
    imei = reading.device_id
    if reading.family is Family.METER:
        _, frame = cjt188.DEFAULT.encode(replace(reading, device_id=imei[-14:]))
        payload: dict[str, Any] = {"APPdata": base64.b64encode(frame).decode()}
    else:
        payload = fields_of(reading)
    message = {
        "messageType": DATA_REPORT,
        "deviceId": f"{PRODUCT_ID}{imei}",
        "productId": PRODUCT_ID,
        "IMEI": imei,
        "timestamp": reading.time_ns // 1_000_000,
        "payload": payload,
    }
    topic = push_topic(reading.location.community, PLATFORM, reading.family.value, imei)
    return topic, orjson.dumps(message)
