"""China Mobile OneNET data push (数据推送), one message of it: an NB-IoT device's data point
or its online/offline change. `gateway.push` has checked the signature and looked the device
up by IMEI; the topic carries what the registry said (see `adapters.nbiot`).

Topic:   $push/{community}/onenet/{family}/{imei}
Payload: one element of the push body's ``msg`` (an object, or one of an array):
         {"type": 1, "imei": "868…", "dev_id": 5001, "ds_id": "smoke_state", "at": 1700…000,
          "value": 1}                                   a data point (``at`` in ms)
         {"type": 2, "imei": "868…", "dev_id": 5001, "status": 1, "login_type": 10,
          "at": 1700…000}                               online (1) / offline (0)

Each data point is one field (`adapters.nbiot` lists them by family); ``value`` may also be
an object of several fields, as devices with one datastream per report send.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any, Literal

import orjson

from adapters.nbiot import fields_of, online_status, origin, push_topic, readings
from adapters.vendor_common import (
    DeviceId,
    Integer,
    Text,
    VendorModel,
    parse_payload,
)
from devices.errors import RejectedInput
from devices.reading import Reading

name = "onenet"
PLATFORM = "onenet"


class OneNetMessage(VendorModel):
    type: Literal[1, 2]
    imei: DeviceId
    at: Integer
    dev_id: Integer | Text | None = None
    ds_id: Text | None = None
    value: Any = None
    status: Integer | None = None


def decode(topic: str, payload: bytes) -> list[Reading]:
    msg = parse_payload(OneNetMessage, payload)  # first: a malformed body says so, not "no device"
    family, imei, time_ns, place = origin(topic, PLATFORM, msg.imei, "imei", msg.at, "at")
    if msg.type == 2:
        return [online_status(imei, family, time_ns, place, msg.status, "status")]
    if isinstance(msg.value, dict):
        fields: dict[str, Any] = msg.value
    elif msg.ds_id:
        fields = {msg.ds_id: msg.value}
    else:
        raise RejectedInput("missing_field", "a data point needs ds_id (or an object value)")
    return readings(imei, family, time_ns, place, fields)


def encode(reading: Reading) -> tuple[str, bytes]:
    """The push topic and the OneNET message a device's reading arrives as (one type-1
    message whose value holds its fields). `body` wraps and signs messages as the platform
    sends them."""
    message = {
        "type": 1,
        "imei": reading.device_id,
        "dev_id": int(reading.device_id[-9:]),
        "ds_id": "report",
        "at": reading.time_ns // 1_000_000,
        "value": fields_of(reading),
    }
    topic = push_topic(
        reading.location.community, PLATFORM, reading.family.value, reading.device_id
    )
    return topic, orjson.dumps(message)


def compact(value: Any) -> str:
    """JSON as OneNET signs it: no spaces, keys in their order, characters as they are."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def signature(token: str, nonce: str, msg: str) -> str:
    """base64(md5(token + nonce + msg)): OneNET's push and URL-verification signature."""
    digest = hashlib.md5((token + nonce + msg).encode(), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def body(messages: list[Any], token: str, nonce: str) -> bytes:
    """The push body OneNET POSTs for `messages` (one: as an object; more: as an array)."""
    msg: Any = messages[0] if len(messages) == 1 else messages
    signed = {"msg": msg, "msg_signature": signature(token, nonce, compact(msg)), "nonce": nonce}
    return compact(signed).encode()
