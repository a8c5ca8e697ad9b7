from __future__ import annotations

import contextlib
import json
from random import Random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters import vendor_access
from devices.errors import RejectedInput
from devices.families import AccessEvent, AccessMethod, Channel, Family
from devices.location import Location
from devices.reading import Reading
from simulators.people import fake_face_feature, fake_id_number, fake_name, fake_phone, fake_plate
from tests.support.vendor_json import JSON_VALUES, assert_canonical

TOPIC = "vendor/acs/c1/ACS2024051234/event"
T_2024_05_20_083015 = 1_716_165_015_000_000_000  # 2024-05-20 08:30:15 in UTC+8
ID_NUMBER = "11010519491231002X"
PHONE = "13800138000"


def payload(**over: Any) -> bytes:
    body: dict[str, Any] = {
        "deviceSn": "ACS2024051234",
        "eventTime": "2024-05-20 08:30:15",
        "eventType": 1,
        "openMode": "FACE",
        "direction": "IN",
        "doorName": "3号楼1单元门",
        "personName": "张三",
        "certNo": ID_NUMBER,
        "phone": PHONE,
        "cardNo": "9F3A21C0",
        "faceImage": "/9j/4AAQSkZJRgABAQ==",
        "faceFeature": "AAECAwQFBgcICQ==",
        "similarity": 92.5,
    }
    body.update(over)
    return json.dumps({k: v for k, v in body.items() if v is not ...}, ensure_ascii=False).encode()


def reject(data: bytes, topic: str = TOPIC) -> RejectedInput:
    with pytest.raises(RejectedInput) as info:
        vendor_access.decode(topic, data)
    return info.value


def test_decodes_a_face_entry_with_every_personal_field_mapped() -> None:
    [r] = vendor_access.decode(TOPIC, payload())
    assert (r.device_id, r.family, r.channel, r.kind) == (
        "ACS2024051234",
        Family.ACCESS,
        Channel.EVENT,
        "entry_granted",
    )
    assert r.time_ns == T_2024_05_20_083015
    assert r.location == Location("c1")
    assert r.values == {
        "method": "face",
        "direction": "in",
        "granted": True,
        "door": "3号楼1单元门",
        "similarity": 0.925,  # percent → 0..1
        "person_name": "张三",
        "id_number": ID_NUMBER,
        "phone": PHONE,
        "card_no": "9F3A21C0",
        "face_image": "/9j/4AAQSkZJRgABAQ==",
        "face_feature": "AAECAwQFBgcICQ==",
    }


@pytest.mark.parametrize(
    ("event_type", "kind", "granted"),
    [
        (1, "entry_granted", True),
        (2, "entry_denied", False),
        (3, "door_forced", None),
        (4, "door_held_open", None),
        (5, "perimeter_breach", None),
        (6, "vehicle_entry", None),
        (7, "vehicle_exit", None),
        (8, "tamper", None),
        (9, "exit", None),
        (10, "fault", None),
    ],
)
def test_event_codes(event_type: int, kind: str, granted: bool | None) -> None:
    [r] = vendor_access.decode(TOPIC, payload(eventType=event_type))
    assert r.kind == kind
    assert r.values.get("granted") is granted


def test_vehicle_at_the_barrier() -> None:
    body = {
        "deviceSn": "GATE-N1",
        "eventTime": "2024-05-20 18:02:07.480",
        "eventType": 6,
        "openMode": "PLATE",
        "direction": "IN",
        "passResult": 1,
        "plateNo": "京A12345",
        "doorName": "北门车道1",
    }
    [r] = vendor_access.decode("vendor/acs/c1/GATE-N1/event", json.dumps(body).encode())
    assert r.kind == "vehicle_entry"
    assert r.time_ns == 1_716_199_327_480_000_000
    assert r.values == {
        "method": "plate",
        "direction": "in",
        "granted": True,
        "door": "北门车道1",
        "plate": "京A12345",
    }


def test_door_held_open_duration_is_seconds() -> None:
    [r] = vendor_access.decode(
        TOPIC, payload(eventType=4, openDuration=45, openMode=..., similarity=..., direction=...)
    )
    assert r.kind == "door_held_open" and r.values["held_open_s"] == 45.0


@pytest.mark.parametrize(
    ("mode", "method"),
    [("FACE", "face"), ("CARD", "card"), ("QR", "qr"), ("PWD", "password"), ("PLATE", "plate"),
     ("REMOTE", "remote"), ("NONE", "none")],
)  # fmt: skip
def test_open_modes(mode: str, method: str) -> None:
    [r] = vendor_access.decode(TOPIC, payload(openMode=mode))
    assert r.values["method"] == method


def test_unknown_vendor_fields_pass_through_unchanged() -> None:
    [r] = vendor_access.decode(
        TOPIC, payload(temperature=36.6, maskWearing=1, visitor={"name": "李四"})
    )
    assert r.values["temperature"] == 36.6
    assert r.values["maskWearing"] == 1
    assert r.values["visitor"] == {"name": "李四"}  # privacy drops and counts it


def test_vendor_fields_named_like_canonical_ones_cannot_pose_as_them() -> None:
    [r] = vendor_access.decode(TOPIC, payload(door="王五", similarity=50, granted=False))
    assert r.values["door"] == "3号楼1单元门" and r.values["similarity"] == 0.5
    assert r.values["granted"] is True  # eventType 1 decides, not a stray vendor key
    assert r.values["vendor:door"] == "王五" and r.values["vendor:granted"] is False


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "not_json"),
        (b"[]", "wrong_type"),
        (payload(deviceSn=...), "missing_field"),
        (payload(eventTime=...), "missing_field"),
        (payload(eventType=...), "missing_field"),
        (payload(eventType="granted"), "wrong_type"),
        (payload(eventType=True), "wrong_type"),
        (payload(eventType=11), "bad_kind"),
        (payload(eventType=0), "bad_kind"),
        (payload(openMode="FINGER"), "bad_value"),
        (payload(direction="UP"), "bad_value"),
        (payload(passResult=2), "bad_value"),
        (payload(passResult=0), "bad_value"),  # contradicts eventType 1
        (payload(similarity=150), "out_of_range"),  # 1.5 after conversion
        (payload(similarity=-1), "out_of_range"),
        (payload(similarity="high"), "wrong_type"),
        (payload(openDuration=-3), "out_of_range"),
        (payload(openDuration=8 * 86400), "out_of_range"),
        (payload(plateNo="京A12345678901234567"), "too_long"),
        (payload(personName="张" * 65), "too_long"),
        (payload(phone=13800138000), "wrong_type"),
        (payload(eventTime="2024/05/20 08:30:15"), "bad_timestamp"),
        (payload(eventTime="1970-01-01 08:00:00"), "bad_timestamp"),
        (payload(eventTime=1716165015), "wrong_type"),
        (payload(deviceSn="ACS2024051235"), "device_id_mismatch"),
        (payload(deviceSn="ACS 2024"), "bad_device_id"),
    ],
)
def test_rejections(data: bytes, reason: str) -> None:
    assert reject(data).reason == reason


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("vendor/acs/c1/ACS2024051234/events", "bad_topic"),
        ("vendor/acs/c1/ACS2024051234", "bad_topic"),
        ("vendor/gasdet/c1/ACS2024051234/event", "bad_topic"),
        ("vendor/acs/c1/ACS 2024051234/event", "bad_device_id"),
        ("vendor/acs/c#1/ACS2024051234/event", "bad_topic"),
    ],
)
def test_topic_rejections(topic: str, reason: str) -> None:
    assert reject(payload(), topic).reason == reason


@pytest.mark.parametrize(
    "over",
    [
        {"phone": 13800138000},  # a number where text is expected
        {"similarity": "13800138000"},
        {"eventType": "13800138000"},  # parses as an int, then no such event code
        {"openMode": "13800138000"},
        {"certNo": [ID_NUMBER]},
        {"eventTime": f"{ID_NUMBER}"},
        {"deviceSn": f"{PHONE} 张三"},
        {"personName": "张三" * 40},
        {"direction": "张三"},
    ],
)
def test_rejection_details_never_quote_values(over: dict[str, Any]) -> None:
    text = str(reject(payload(**over)))
    for secret in (PHONE, "13800138000", ID_NUMBER, "张三"):
        assert secret not in text


# -- round trip ---------------------------------------------------------------------------

IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}", fullmatch=True)
TIME_NS = st.integers(min_value=946_684_800_000, max_value=4_102_444_799_999).map(
    lambda ms: ms * 1_000_000
)
TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=20,
)
EXTRA_KEYS = st.from_regex(r"ext[A-Z][a-z]{0,8}", fullmatch=True)
EXTRA_VALUES = st.none() | st.booleans() | st.integers(-(10**9), 10**9) | st.text(max_size=10)
PERSON = st.randoms(use_true_random=False).map(
    lambda rng: {
        "person_name": fake_name(Random(rng.random())),
        "id_number": fake_id_number(Random(rng.random())),
        "phone": fake_phone(Random(rng.random())),
        "plate": fake_plate(Random(rng.random())),
        "face_feature": fake_face_feature(Random(rng.random())),
        "card_no": f"{rng.getrandbits(32):08X}",
    }
)


@st.composite
def access_readings(draw: st.DrawFn) -> Reading:
    kind = draw(st.sampled_from([k for k in AccessEvent if k is not AccessEvent.UNKNOWN_EVENT]))
    values: dict[str, Any] = {}
    if draw(st.booleans()):
        values["method"] = draw(st.sampled_from(list(AccessMethod))).value
    if draw(st.booleans()):
        values["direction"] = draw(st.sampled_from(["in", "out"]))
    if kind is AccessEvent.ENTRY_GRANTED:
        values["granted"] = True
    elif kind is AccessEvent.ENTRY_DENIED:
        values["granted"] = False
    elif draw(st.booleans()):
        values["granted"] = draw(st.booleans())
    if draw(st.booleans()):
        values["door"] = draw(TEXT)
    if draw(st.booleans()):
        values["similarity"] = draw(st.integers(0, 1000)) / 1000
    if draw(st.booleans()):
        values["held_open_s"] = draw(st.integers(0, 7 * 86400 * 10)) / 10
    person = draw(PERSON)
    for key in draw(st.sets(st.sampled_from(sorted(person)))):
        values[key] = person[key]
    values.update(draw(st.dictionaries(EXTRA_KEYS, EXTRA_VALUES, max_size=3)))
    return Reading(
        device_id=draw(IDS),
        family=Family.ACCESS,
        channel=Channel.EVENT,
        kind=kind.value,
        time_ns=draw(TIME_NS),
        location=Location(draw(IDS)),
        values=values,
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(access_readings())
def test_round_trip(reading: Reading) -> None:
    topic, body = vendor_access.encode(reading)
    assert topic == f"vendor/acs/{reading.location.community}/{reading.device_id}/event"
    assert vendor_access.decode(topic, body) == [reading]


def test_encode_refuses_what_the_format_cannot_say() -> None:
    reading = Reading(
        "a-1", Family.ACCESS, Channel.TELEMETRY, "telemetry", 10**18, Location("c"), {}
    )
    with pytest.raises(ValueError):
        vendor_access.encode(reading)
    clash = Reading(
        "a-1", Family.ACCESS, Channel.EVENT, "exit", 10**18, Location("c"), {"eventType": 3}
    )
    with pytest.raises(ValueError):
        vendor_access.encode(clash)


def test_simulated_door_and_barrier_readings_encode_and_decode() -> None:
    from simulators.fleet import UnitDoor, VehicleBarrier, make_fleet

    fleet = [d for d in make_fleet("c1", 100, seed=3) if isinstance(d, UnitDoor | VehicleBarrier)]
    assert fleet
    now = T_2024_05_20_083015
    for device in fleet:
        for step in range(20):
            reading = device.next_reading(now + step * 1_000_000_000)
            [back] = vendor_access.decode(*vendor_access.encode(reading))
            assert back.kind == reading.kind and back.time_ns == reading.time_ns
            assert back.values == reading.values


# -- fuzz ---------------------------------------------------------------------------------

KEYS = [*vendor_access.AcsEvent.model_fields, "extra"]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), JSON_VALUES, max_size=6))
def test_fuzz_vendor_shaped_payloads_only_ever_reject(over: dict[str, Any]) -> None:
    with contextlib.suppress(RejectedInput):
        assert_canonical(vendor_access.decode(TOPIC, payload(**over)))
