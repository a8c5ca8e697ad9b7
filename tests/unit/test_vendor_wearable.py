from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters import vendor_wearable
from devices.errors import RejectedInput
from devices.families import Channel, ElderEvent, Family
from devices.location import Location
from devices.reading import Reading
from tests.support.vendor_json import JSON_VALUES, assert_canonical

IMEI = "865432101234567"
TOPIC = f"vendor/band/c1/{IMEI}/up"
T0 = 1_716_165_000_000_000_000  # 2024-05-20 08:30:00 UTC+8
MIN = 60_000_000_000


def sample(minute: int = 0, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "t": f"2024-05-20 08:{30 + minute:02d}:00",
        "hr": 72,
        "spo2": 97,
        "step": 1200 + minute,
        "temp": 365,
        "wear": 1,
    }
    body.update(over)
    return {k: v for k, v in body.items() if v is not ...}


def upload(**over: Any) -> bytes:
    body: dict[str, Any] = {
        "imei": IMEI,
        "samples": [sample(0), sample(1), sample(2)],
        "alarm": {"type": None, "t": None},
        "gps": {"lat": 31.2304, "lng": 121.4737},
        "bat": 85,
    }
    body.update(over)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def reject(data: bytes, topic: str = TOPIC) -> RejectedInput:
    with pytest.raises(RejectedInput) as info:
        vendor_wearable.decode(topic, data)
    return info.value


def test_decodes_one_reading_per_sample_with_the_fix_on_the_latest() -> None:
    readings = vendor_wearable.decode(TOPIC, upload())
    assert [r.time_ns for r in readings] == [T0, T0 + MIN, T0 + 2 * MIN]
    assert all(
        (r.device_id, r.family, r.channel, r.kind, r.location)
        == (IMEI, Family.ELDER, Channel.TELEMETRY, "telemetry", Location("c1"))
        for r in readings
    )
    assert readings[0].values == {
        "heart_rate_bpm": 72.0,
        "spo2_pct": 97.0,
        "steps": 1200,
        "body_temp_c": 36.5,  # tenths of °C
        "worn": True,
    }
    assert readings[2].values == {
        "heart_rate_bpm": 72.0,
        "spo2_pct": 97.0,
        "steps": 1202,
        "body_temp_c": 36.5,
        "worn": True,
        "battery_pct": 85.0,
        "latitude": 31.2304,
        "longitude": 121.4737,
    }


def test_latest_is_by_time_not_by_position() -> None:
    readings = vendor_wearable.decode(TOPIC, upload(samples=[sample(5), sample(1)]))
    assert "latitude" in readings[0].values and "latitude" not in readings[1].values


def test_an_alarm_becomes_an_event_with_the_position() -> None:
    *_, event = vendor_wearable.decode(
        TOPIC, upload(alarm={"type": "FALL", "t": "2024-05-20 08:32:41"})
    )
    assert (event.channel, event.kind) == (Channel.EVENT, "fall")
    assert event.time_ns == T0 + 2 * MIN + 41_000_000_000
    assert event.values == {"battery_pct": 85.0, "latitude": 31.2304, "longitude": 121.4737}


@pytest.mark.parametrize(
    ("code", "kind"),
    [("SOS", "sos"), ("FALL", "fall"), ("LOWBAT", "low_battery"), ("OFFWRIST", "wear_off"),
     ("ONWRIST", "wear_on"), ("FENCE_OUT", "geofence_exit"), ("FENCE_IN", "geofence_enter"),
     ("NOMOVE", "inactivity"), ("FAULT", "fault")],
)  # fmt: skip
def test_alarm_codes(code: str, kind: str) -> None:
    [event] = vendor_wearable.decode(
        TOPIC, upload(samples=[], alarm={"type": code, "t": "2024-05-20 08:30:00"})
    )
    assert event.kind == kind and event.time_ns == T0


def test_zero_means_not_measured() -> None:
    [r] = vendor_wearable.decode(
        TOPIC, upload(samples=[sample(hr=0, spo2=0, temp=0, wear=0)], gps=..., bat=...)
    )
    assert r.values == {"steps": 1200, "worn": False}


def test_a_gps_fix_of_zero_zero_is_no_fix() -> None:
    [r] = vendor_wearable.decode(TOPIC, upload(samples=[sample()], gps={"lat": 0, "lng": 0}))
    assert "latitude" not in r.values and "longitude" not in r.values


def test_unknown_fields_pass_through_where_they_belong() -> None:
    body = {
        "imei": IMEI,
        "samples": [sample(0, bp="120/80"), sample(1)],
        "alarm": {"type": "SOS", "t": "2024-05-20 08:31:30", "sosNumber": "13800138000"},
        "gps": {"lat": 31.2, "lng": 121.4, "accuracy": 15},
        "iccid": "8986",
        "heart_rate_bpm": 250,
    }
    first, second, event = vendor_wearable.decode(TOPIC, json.dumps(body).encode())
    assert first.values["bp"] == "120/80" and "bp" not in second.values
    assert second.values["iccid"] == "8986" and second.values["accuracy"] == 15
    assert second.values["vendor:heart_rate_bpm"] == 250  # cannot pose as a measurement
    assert event.values["sosNumber"] == "13800138000" and "iccid" not in event.values


def test_an_alarm_alone_carries_the_unknown_fields() -> None:
    body = {"imei": IMEI, "alarm": {"type": "SOS", "t": "2024-05-20 08:30:00"}, "iccid": "8986"}
    [event] = vendor_wearable.decode(TOPIC, json.dumps(body).encode())
    assert event.values == {"iccid": "8986"}


def test_up_to_the_cap_is_fine() -> None:
    samples = [sample(0, t=f"2024-05-20 {8 + i // 60:02d}:{i % 60:02d}:00") for i in range(120)]
    assert len(vendor_wearable.decode(TOPIC, upload(samples=samples))) == 120


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{}", "missing_field"),
        (upload(imei=...), "missing_field"),
        (upload(samples=[], alarm=...), "empty"),
        (upload(samples=[], alarm={"type": None}), "empty"),
        (upload(samples=..., alarm=None), "empty"),
        (upload(samples=[sample(0)] * 121), "too_many"),
        (upload(samples=[sample(0), sample(0)]), "bad_value"),  # same time twice
        (upload(samples={"t": "2024-05-20 08:30:00"}), "wrong_type"),
        (upload(samples=[sample(t=...)]), "missing_field"),
        (upload(samples=[sample(t="08:30")]), "bad_timestamp"),
        (upload(samples=[sample(hr=301)]), "out_of_range"),
        (upload(samples=[sample(hr=-5)]), "out_of_range"),
        (upload(samples=[sample(hr="fast")]), "wrong_type"),
        (upload(samples=[sample(spo2=101)]), "out_of_range"),
        (upload(samples=[sample(temp=470)]), "out_of_range"),  # 47.0 °C
        (upload(samples=[sample(temp=150)]), "out_of_range"),  # 15.0 °C
        (upload(samples=[sample(step=-1)]), "out_of_range"),
        (upload(samples=[sample(step=1.5)]), "bad_value"),
        (upload(samples=[sample(wear=2)]), "bad_value"),
        (upload(gps={"lat": 91, "lng": 121.4}), "out_of_range"),
        (upload(gps={"lat": 31.2, "lng": -181}), "out_of_range"),
        (upload(gps={"lat": 31.2}), "missing_field"),
        (upload(bat=101), "out_of_range"),
        (upload(alarm={"type": "HELP", "t": "2024-05-20 08:30:00"}), "bad_value"),
        (upload(alarm={"type": "SOS"}), "missing_field"),
        (upload(alarm={"type": "SOS", "t": "yesterday"}), "bad_timestamp"),
        (upload(alarm="SOS"), "wrong_type"),
        (upload(imei="865432101234568"), "device_id_mismatch"),
        (upload(imei="8654321012345#7"), "bad_device_id"),
    ],
)
def test_rejections(data: bytes, reason: str) -> None:
    assert reject(data).reason == reason


def test_topic_rejections() -> None:
    assert reject(upload(), f"vendor/band/c1/{IMEI}/down").reason == "bad_topic"
    assert reject(upload(), f"vendor/band/c1/{IMEI}").reason == "bad_topic"
    assert reject(upload(), "vendor/band/c1/86 5432101234567/up").reason == "bad_device_id"


@pytest.mark.parametrize(
    "over",
    [
        {"samples": [sample(hr="13800138000x")]},
        {"samples": [sample(t="13800138000")]},
        {"imei": "13800138000 "},
        {"alarm": {"type": "13800138000", "t": "2024-05-20 08:30:00"}},
        {"gps": {"lat": "13800138000", "lng": 1}},
        {"samples": [sample(hr=13800138000)]},
    ],
)
def test_rejection_details_never_quote_values(over: dict[str, Any]) -> None:
    assert "13800138000" not in str(reject(upload(**over)))


# -- round trip ---------------------------------------------------------------------------

IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}", fullmatch=True)
TIME_NS = st.integers(min_value=946_684_800_000, max_value=4_102_444_799_999).map(
    lambda ms: ms * 1_000_000
)
SAMPLE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "heart_rate_bpm": st.integers(1, 3000).map(lambda k: k / 10),
    "spo2_pct": st.integers(1, 100).map(float),
    "steps": st.integers(0, 1_000_000),
    "body_temp_c": st.integers(200, 460).map(lambda k: k / 10),
    "worn": st.booleans(),
}
COORDINATES = st.tuples(
    st.floats(-90, 90, allow_nan=False).filter(bool),
    st.floats(-180, 180, allow_nan=False),
)
EXTRA_KEYS = st.from_regex(r"ext[A-Z][a-z]{0,8}", fullmatch=True)


@st.composite
def elder_readings(draw: st.DrawFn) -> Reading:
    kind = draw(st.sampled_from([None, *vendor_wearable.ALARMS.values()]))
    values: dict[str, Any] = {}
    if kind is None:
        for key in draw(st.sets(st.sampled_from(sorted(SAMPLE_FIELDS)))):
            values[key] = draw(SAMPLE_FIELDS[key])
    if draw(st.booleans()):
        values["latitude"], values["longitude"] = draw(COORDINATES)
    if draw(st.booleans()):
        values["battery_pct"] = draw(st.integers(0, 1000)) / 10
    values.update(
        draw(
            st.dictionaries(
                EXTRA_KEYS, st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5), max_size=2
            )
        )
    )
    return Reading(
        device_id=draw(IDS),
        family=Family.ELDER,
        channel=Channel.TELEMETRY if kind is None else Channel.EVENT,
        kind="telemetry" if kind is None else kind.value,
        time_ns=draw(TIME_NS),
        location=Location(draw(IDS)),
        values=values,
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(elder_readings())
def test_round_trip(reading: Reading) -> None:
    topic, body = vendor_wearable.encode(reading)
    assert topic == f"vendor/band/{reading.location.community}/{reading.device_id}/up"
    assert vendor_wearable.decode(topic, body) == [reading]


@pytest.mark.parametrize("kind", [ElderEvent.FALL, ElderEvent.SOS])
def test_encode_writes_the_vendor_alarm(kind: ElderEvent) -> None:
    reading = Reading(IMEI, Family.ELDER, Channel.EVENT, kind.value, T0, Location("c1"), {})
    _topic, body = vendor_wearable.encode(reading)
    assert json.loads(body) == {
        "imei": IMEI,
        "alarm": {"type": kind.value.upper(), "t": "2024-05-20 08:30:00"},
    }


def test_simulated_wearables_encode_and_decode() -> None:
    from simulators.fleet import ElderWearable, make_fleet

    fleet = [d for d in make_fleet("c1", 100, seed=11) if isinstance(d, ElderWearable)]
    assert fleet
    for device in fleet:
        for step in range(10):
            reading = device.next_reading(T0 + step * 1_000_000_000)
            [back] = vendor_wearable.decode(*vendor_wearable.encode(reading))
            assert back.kind == reading.kind and back.time_ns == reading.time_ns
            if back.channel is Channel.TELEMETRY:
                for key in ("heart_rate_bpm", "spo2_pct", "body_temp_c", "steps", "worn"):
                    assert back.values[key] == reading.values[key]


# -- fuzz ---------------------------------------------------------------------------------

KEYS = [*vendor_wearable.BandUpload.model_fields, "extra"]
SAMPLE_KEYS = [*vendor_wearable.Sample.model_fields, "extra"]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(KEYS), JSON_VALUES, max_size=4),
    st.lists(st.dictionaries(st.sampled_from(SAMPLE_KEYS), JSON_VALUES, max_size=4), max_size=3),
)
def test_fuzz_vendor_shaped_payloads_only_ever_reject(
    top: dict[str, Any], samples: list[dict[str, Any]]
) -> None:
    body = {"samples": [sample(i, **s) for i, s in enumerate(samples)], **top}
    with contextlib.suppress(RejectedInput):
        assert_canonical(vendor_wearable.decode(TOPIC, upload(**body)))
