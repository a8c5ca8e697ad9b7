"""Broken and hostile device messages, each labelled with the rejection the gateway must give.

Real fleets send truncated JSON, vendor key=value text, wrong types, spoofed ids, absurd
clocks and values — often with a resident's name, ID number and phone inside, because the
terminal put them there. The gateway must reject each with a stable reason and never leak the
personal data into logs or the dead-letter store, so many cases below carry fake PII.

Labels are `devices.errors.RejectedInput` reason codes. Three groups are not decode errors:
- `TIME_REASONS` decode fine but fail `devices.validation.check_time` (the clock-relative
  window is the gateway's, with `max_past_s < STALE_BY_S` and `max_future_s < FUTURE_BY_S`);
- `UNSTORABLE` decodes fine but holds text line protocol cannot carry (a newline, a tag
  value ending in a backslash): the gateway refuses it when encoding, it never alters data;
- `VALID` messages are hostile but legal (line-protocol metacharacters in a door or building
  name, an unknown personal field): they must be stored correctly escaped / de-identified.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from random import Random
from typing import Any

import orjson

from adapters.base import MAX_PAYLOAD_BYTES
from devices.families import Channel, Family
from devices.topics import PREFIX, build_topic
from simulators.people import fake_face_feature, fake_id_number, fake_name, fake_phone

NOT_JSON = "not_json"
WRONG_TYPE = "wrong_type"
MISSING_FIELD = "missing_field"
UNKNOWN_FAMILY = "unknown_family"
OVERSIZE = "oversize"
BAD_TIMESTAMP = "bad_timestamp"  # outside 2000–2100: the adapter itself refuses it
FUTURE_TIMESTAMP = "future_timestamp"
STALE_TIMESTAMP = "stale_timestamp"
DEVICE_ID_MISMATCH = "device_id_mismatch"
OUT_OF_RANGE = "out_of_range"
BAD_KIND = "bad_kind"
BAD_DEVICE_ID = "bad_device_id"
BAD_VALUE = "bad_value"
UNSTORABLE = "unstorable_value"
VALID = "valid"

TIME_REASONS = frozenset({FUTURE_TIMESTAMP, STALE_TIMESTAMP})
FUTURE_BY_S = 3 * 86_400  # far beyond any clock skew
STALE_BY_S = 400 * 86_400  # far beyond any offline buffering

# Line-protocol metacharacters that escaping handles: comma/equals/space (tag and field
# separators), quotes and backslashes (string field escaping), and a fake second point.
HOSTILE_DOOR = "北门\",zone=x hack,host=evil value=1 1\\ ''"
HOSTILE_BUILDING = '3号楼,unit=x "a"=b\\c d'  # no control characters: a legal place name
# Text no escaping can carry: a newline in a string field, a tag ending in a backslash or with
# a backslash before a separator.
UNSTORABLE_DOORS = ("北门\nhack,host=evil value=1 1", "东门\r\n车道1")
UNSTORABLE_BUILDINGS = ("3号楼\\", "3号楼\\ x", "3号楼\\,unit=x")

Case = Callable[[Random, str, int], tuple[str, bytes, str]]


def _hostile_id(rng: Random, family: Family) -> str:
    """A fresh id per hostile-but-valid message: it can never share a series and millisecond
    with another point, so stored counts stay exact."""
    return f"x{family.value[0]}-{rng.getrandbits(48):012x}"


def _device_id(rng: Random, family: Family) -> str:
    return f"{family.value[0]}-{rng.randint(1, 9999):04d}"


def _person(rng: Random) -> dict[str, Any]:
    return {
        "person_name": fake_name(rng),
        "id_number": fake_id_number(rng),
        "phone": fake_phone(rng),
    }


def _data(rng: Random, family: Family) -> tuple[Channel, str, dict[str, Any]]:
    """A plausible reading body for `family` (access ones carry PII, as terminals send)."""
    if family is Family.ACCESS:
        body = {"door": "2号楼1单元门", "method": "face", "direction": "in", "granted": True}
        body |= _person(rng) | {"face_feature": fake_face_feature(rng, 32)}
        return Channel.EVENT, "entry_granted", body
    if family is Family.SAFETY:
        return Channel.TELEMETRY, "telemetry", {"detector": "gas", "gas_lel_pct": 0.2}
    if family is Family.METER:
        return Channel.TELEMETRY, "telemetry", {"meter_type": "electricity", "energy_kwh": 1234.5}
    return Channel.TELEMETRY, "telemetry", {"heart_rate_bpm": 72.0, "spo2_pct": 97.0}


def _message(
    rng: Random,
    community: str,
    now_ms: int,
    family: Family | None = None,
    **override: Any,
) -> tuple[str, dict[str, Any]]:
    family = family or rng.choice(list(Family))
    channel, kind, data = _data(rng, family)
    device_id = override.pop("device_id", None) or _device_id(rng, family)
    body: dict[str, Any] = {
        "v": 1,
        "device_id": device_id,
        "ts": now_ms,
        "kind": kind,
        "loc": {"grid": "g01", "building": "2号楼", "unit": "1单元", "room": "602"},
        "data": data,
    }
    body.update(override)
    return build_topic(community, family, device_id, channel), body


def _dump(body: Any) -> bytes:
    return orjson.dumps(body)


def _truncated(rng: Random, community: str, now_ms: int) -> tuple[str, bytes, str]:
    topic, body = _message(rng, community, now_ms, Family.ACCESS)
    raw = _dump(body)
    return topic, raw[: rng.randint(1, len(raw) - 1)], NOT_JSON


def _garbage(rng: Random, community: str, now_ms: int) -> tuple[str, bytes, str]:
    topic, _ = _message(rng, community, now_ms)
    return topic, b"\xff\xfe" + rng.randbytes(rng.randint(0, 64)), NOT_JSON


def _vendor_text(rng: Random, community: str, now_ms: int) -> tuple[str, bytes, str]:
    topic, _ = _message(rng, community, now_ms, Family.ACCESS)
    who = _person(rng)
    text = f"name={who['person_name']};id={who['id_number']};tel={who['phone']};door=1"
    return topic, text.encode(), NOT_JSON


def _wrong_type_field(rng: Random, community: str, now_ms: int) -> tuple[str, bytes, str]:
    family = rng.choice(list(Family))
    field, bad = {
        Family.ACCESS: ("similarity", "很高"),
        Family.SAFETY: ("gas_lel_pct", "low"),
        Family.METER: ("energy_kwh", {"value": 12}),
        Family.ELDER: ("heart_rate_bpm", [72, 73]),
    }[family]
    topic, body = _message(rng, community, now_ms, family)
    body["data"][field] = bad
    return topic, _dump(body), WRONG_TYPE


def _wrong_type_shape(rng: Random, community: str, now_ms: int) -> tuple[str, bytes, str]:
    topic, body = _message(rng, community, now_ms, Family.ACCESS)
    variant = rng.randrange(4)
    if variant == 0:
        body["data"] = list(body["data"].values())  # data as an array, PII inside
    elif variant == 1:
        body["ts"] = "昨天下午"
    elif variant == 2:
        body["device_id"] = 12345
        topic = build_topic(community, Family.ACCESS, "12345", Channel.EVENT)
    else:
        return topic, _dump([body]), WRONG_TYPE  # a batch array where one object is expected
    return topic, _dump(body), WRONG_TYPE


def _missing(rng: Random, community: str, now_ms: int) -> tuple[str, bytes, str]:
    topic, body = _message(rng, community, now_ms, rng.choice(list(Family)))
    del body[rng.choice(("device_id", "ts", "data"))]
    return topic, _dump(body), MISSING_FIELD


def _unknown_family(rng: Random, community: str, now_ms: int) -> tuple[str, bytes, str]:
    _, body = _message(rng, community, now_ms, Family.ACCESS)
    family = rng.choice(("hvac", "parking", "fire", "Access", "elders"))
    return f"{PREFIX}/{community}/{family}/{body['device_id']}/event", _dump(body), UNKNOWN_FAMILY


def _oversize(rng: Random, community: str, now_ms: int) -> tuple[str, bytes, str]:
    topic, body = _message(rng, community, now_ms, Family.ACCESS)
    size = MAX_PAYLOAD_BYTES + rng.randint(1024, 64 * 1024)
    body["data"]["face_image"] = base64.b64encode(rng.randbytes(size * 3 // 4)).decode()
    return topic, _dump(body), OVERSIZE


def _bad_timestamp(rng: Random, community: str, now_ms: int) -> tuple[str, bytes, str]:
    ts: int | str = rng.choice((0, 1, 86_400_000, 5_000_000_000_000, "1900-01-01T00:00:00"))
    if rng.random() < 0.3:
        ts = now_ms // 1000  # seconds sent where milliseconds are expected: 1970
    topic, body = _message(rng, community, now_ms, ts=ts)
    return topic, _dump(body), BAD_TIMESTAMP


def _future(rng: Random, community: str, now_ms: int) -> tuple[str, bytes, str]:
    ahead_ms = (FUTURE_BY_S + rng.randint(0, 30 * 86_400)) * 1000
    topic, body = _message(rng, community, now_ms, ts=now_ms + ahead_ms)
    return topic, _dump(body), FUTURE_TIMESTAMP


def _stale(rng: Random, community: str, now_ms: int) -> tuple[str, bytes, str]:
    behind_ms = (STALE_BY_S + rng.randint(0, 300 * 86_400)) * 1000
    topic, body = _message(rng, community, now_ms, ts=now_ms - behind_ms)
    return topic, _dump(body), STALE_TIMESTAMP


def _mismatch(rng: Random, community: str, now_ms: int) -> tuple[str, bytes, str]:
    family = rng.choice(list(Family))
    topic, body = _message(rng, community, now_ms, family)
    body["device_id"] = body["device_id"] + "9"  # a device speaking for another (spoofing)
    return topic, _dump(body), DEVICE_ID_MISMATCH


def _out_of_range(rng: Random, community: str, now_ms: int) -> tuple[str, bytes, str]:
    family = rng.choice(list(Family))
    field, bad = {
        Family.ACCESS: ("similarity", rng.choice((1.7, -0.2))),
        Family.SAFETY: ("gas_lel_pct", rng.choice((180.0, -3.0))),
        Family.METER: ("voltage_v", rng.choice((5000.0, -220.0))),
        Family.ELDER: ("heart_rate_bpm", rng.choice((450.0, -1.0))),
    }[family]
    topic, body = _message(rng, community, now_ms, family)
    body["data"][field] = bad
    return topic, _dump(body), OUT_OF_RANGE


def _bad_kind(rng: Random, community: str, now_ms: int) -> tuple[str, bytes, str]:
    family = rng.choice((Family.SAFETY, Family.METER, Family.ELDER))
    topic, body = _message(rng, community, now_ms, family, kind=rng.choice(("fall", "explode")))
    return topic, _dump(body), BAD_KIND


def _bad_device_id(rng: Random, community: str, now_ms: int) -> tuple[str, bytes, str]:
    device_id = rng.choice(("m-01,host=evil", "m 01", "m-01=1", "-m01", "张三的表"))
    _, body = _message(rng, community, now_ms, Family.METER, device_id=device_id)
    topic = build_topic(community, Family.METER, device_id, Channel.TELEMETRY)
    return topic, _dump(body), BAD_DEVICE_ID


def _control_char_place(rng: Random, community: str, now_ms: int) -> tuple[str, bytes, str]:
    topic, body = _message(rng, community, now_ms)
    body["loc"]["building"] = "3号楼\nhack value=1"
    return topic, _dump(body), BAD_VALUE


def _injection_door(rng: Random, community: str, now_ms: int) -> tuple[str, bytes, str]:
    device_id = _hostile_id(rng, Family.ACCESS)
    topic, body = _message(rng, community, now_ms, Family.ACCESS, device_id=device_id)
    body["data"]["door"] = HOSTILE_DOOR
    return topic, _dump(body), VALID


def _unstorable(rng: Random, community: str, now_ms: int) -> tuple[str, bytes, str]:
    family = Family.ACCESS if rng.random() < 0.5 else rng.choice((Family.SAFETY, Family.METER))
    topic, body = _message(rng, community, now_ms, family, device_id=_hostile_id(rng, family))
    if family is Family.ACCESS:
        body["data"]["door"] = rng.choice(UNSTORABLE_DOORS)
    else:
        body["loc"]["building"] = rng.choice(UNSTORABLE_BUILDINGS)
    return topic, _dump(body), UNSTORABLE


def _injection_place(rng: Random, community: str, now_ms: int) -> tuple[str, bytes, str]:
    family = rng.choice((Family.SAFETY, Family.METER))
    device_id = _hostile_id(rng, family)
    topic, body = _message(rng, community, now_ms, family, device_id=device_id)
    body["loc"]["building"] = HOSTILE_BUILDING
    body["loc"]["unit"] = "1单元 x=1"
    return topic, _dump(body), VALID


def _unknown_personal_field(rng: Random, community: str, now_ms: int) -> tuple[str, bytes, str]:
    """A vendor field the model does not know, holding PII: privacy must drop it (R3.1)."""
    family = rng.choice((Family.METER, Family.ELDER))
    device_id = _hostile_id(rng, family)
    topic, body = _message(rng, community, now_ms, family, device_id=device_id)
    body["data"] |= {"owner_name": fake_name(rng), "owner_tel": fake_phone(rng)}
    return topic, _dump(body), VALID


CASES: dict[str, Case] = {
    "truncated_json": _truncated,
    "binary_garbage": _garbage,
    "vendor_text": _vendor_text,
    "wrong_type_field": _wrong_type_field,
    "wrong_type_shape": _wrong_type_shape,
    "missing_field": _missing,
    "unknown_family": _unknown_family,
    "oversize": _oversize,
    "bad_timestamp": _bad_timestamp,
    "future_timestamp": _future,
    "stale_timestamp": _stale,
    "device_id_mismatch": _mismatch,
    "out_of_range": _out_of_range,
    "bad_kind": _bad_kind,
    "bad_device_id": _bad_device_id,
    "control_char_place": _control_char_place,
    "injection_door": _injection_door,
    "unstorable_text": _unstorable,
    "injection_place": _injection_place,
    "unknown_personal_field": _unknown_personal_field,
}


def bad_message(
    rng: Random, community: str, *, now_ms: int | None = None, case: str | None = None
) -> tuple[str, bytes, str]:
    """(topic, payload, expected reason) of one broken or hostile message.

    `case` picks a named entry of `CASES` (tests walk them all); otherwise one is drawn from
    `rng`. `now_ms` is the wall clock the time-window cases are relative to.
    """
    if now_ms is None:
        now_ms = time.time_ns() // 1_000_000
    make = CASES[case] if case is not None else CASES[rng.choice(sorted(CASES))]
    return make(rng, community, now_ms)
