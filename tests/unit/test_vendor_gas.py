from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters import vendor_gas
from devices.errors import ConfigError, RejectedInput
from devices.families import Channel, Family, SafetyEvent
from devices.location import Location
from devices.reading import Reading
from tests.support.vendor_json import JSON_VALUES, assert_canonical

IMEI = "868480051234567"
TOPIC = f"vendor/gasdet/c1/{IMEI}/data"
T_2024_05_20_083015 = 1_716_165_015_000_000_000


def payload(**over: Any) -> bytes:
    body: dict[str, Any] = {
        "imei": IMEI,
        "time": "2024-05-20 08:30:15",
        "status": 0,
        "gas": 2500,
        "co": 12.5,
        "temp": 235,
        "batV": 3.45,
    }
    body.update(over)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def reject(data: bytes, topic: str = TOPIC, codec: Any = vendor_gas) -> RejectedInput:
    with pytest.raises(RejectedInput) as info:
        codec.decode(topic, data)
    return info.value


def test_decodes_a_normal_report_with_unit_conversions() -> None:
    [r] = vendor_gas.decode(TOPIC, payload())
    assert (r.device_id, r.family, r.channel, r.kind) == (
        IMEI,
        Family.SAFETY,
        Channel.TELEMETRY,
        "telemetry",
    )
    assert r.time_ns == T_2024_05_20_083015 and r.location == Location("c1")
    assert r.values == {
        "detector": "gas",
        "gas_lel_pct": 5.0,  # 2500 ppm of methane / 50 000 ppm LEL
        "co_ppm": 10.91,  # 12.5 mg/m³ × 24.45 / 28.01 = 10.911…
        "temperature_c": 23.5,  # tenths
        "battery_pct": 75.0,  # 3.45 V on the 3.0–3.6 V scale
    }


def test_lpg_detectors_convert_with_their_own_lel() -> None:
    lpg = vendor_gas.configure(lel_ppm=21_000)
    [r] = lpg.decode(TOPIC, payload(gas=2100))
    assert r.values["gas_lel_pct"] == 10.0
    assert vendor_gas.decode(TOPIC, payload(gas=2100))[0].values["gas_lel_pct"] == 4.2


def test_a_gas_alarm_gives_an_event_and_the_measurements() -> None:
    event, telemetry = vendor_gas.decode(TOPIC, payload(status=1, gas=15_000))
    assert (event.channel, event.kind) == (Channel.EVENT, "gas_alarm")
    assert event.values == {"detector": "gas", "gas_lel_pct": 30.0}
    assert event.time_ns == telemetry.time_ns == T_2024_05_20_083015
    assert telemetry.kind == "telemetry" and telemetry.values["gas_lel_pct"] == 30.0


def test_above_the_lel_the_reading_saturates_instead_of_being_rejected() -> None:
    event, telemetry = vendor_gas.decode(TOPIC, payload(status=1, gas=80_000))
    assert event.values["gas_lel_pct"] == 100.0 == telemetry.values["gas_lel_pct"]


@pytest.mark.parametrize(
    ("status", "kind", "values"),
    [
        (1, "gas_alarm", {"gas_lel_pct": 5.0}),
        (2, "co_alarm", {"co_ppm": 10.91}),
        (3, "fault", {"fault_code": 17}),
        (4, "tamper", {"tamper": True}),
        (5, "low_battery", {"battery_pct": 75.0}),
        (6, "self_test", {"self_test_ok": True}),
        (7, "alarm_cleared", {}),
    ],
)
def test_status_codes_become_events(status: int, kind: str, values: dict[str, Any]) -> None:
    readings = vendor_gas.decode(TOPIC, payload(status=status, faultCode=17))
    assert [r.kind for r in readings] == [kind, "telemetry"]
    assert readings[0].values == {"detector": "gas", **values}


def test_an_event_without_measurements_is_one_reading() -> None:
    [r] = vendor_gas.decode(TOPIC, payload(status=4, gas=..., co=..., temp=..., batV=...))
    assert r.kind == "tamper" and r.values == {"detector": "gas", "tamper": True}


@pytest.mark.parametrize(
    ("volts", "pct"), [(2.7, 0.0), (3.0, 0.0), (3.3, 50.0), (3.6, 100.0), (4.2, 100.0)]
)
def test_battery_voltage_is_clamped_to_0_100(volts: float, pct: float) -> None:
    [r] = vendor_gas.decode(TOPIC, payload(batV=volts))
    assert r.values["battery_pct"] == pct


def test_battery_curve_is_configurable() -> None:
    codec = vendor_gas.configure(battery_empty_v=2.5, battery_full_v=3.0)
    [r] = codec.decode(TOPIC, payload(batV=2.75))
    assert r.values["battery_pct"] == 50.0


def test_unknown_fields_pass_through_on_the_telemetry_reading() -> None:
    event, telemetry = vendor_gas.decode(
        TOPIC, payload(status=1, rssi=-85, iccid="89860412345678901234", co_ppm=999)
    )
    assert "rssi" not in event.values
    assert telemetry.values["rssi"] == -85 and telemetry.values["iccid"] == "89860412345678901234"
    assert telemetry.values["vendor:co_ppm"] == 999  # cannot pose as the canonical field
    assert telemetry.values["co_ppm"] == 10.91


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{}", "missing_field"),
        (payload(imei=...), "missing_field"),
        (payload(time=...), "missing_field"),
        (payload(status=9), "bad_kind"),
        (payload(status=-1), "bad_kind"),
        (payload(status="alarm"), "wrong_type"),
        (payload(status=True), "wrong_type"),
        (payload(gas=-1), "out_of_range"),
        (payload(gas=1_000_001), "out_of_range"),
        (payload(gas="2500ppm"), "wrong_type"),
        (payload(co=-0.1), "out_of_range"),
        (payload(co=20_000), "out_of_range"),  # 17 457 ppm after conversion
        (payload(temp=3100), "out_of_range"),  # 310 °C
        (payload(temp=-600), "out_of_range"),
        (payload(batV=5.1), "out_of_range"),
        (payload(batV=-0.1), "out_of_range"),
        (payload(faultCode=70_000), "out_of_range"),
        (payload(time="2024-05-20T08:30:15Z"), "bad_timestamp"),
        (payload(time="2124-05-20 08:30:15"), "bad_timestamp"),
        (payload(imei="868480051234568"), "device_id_mismatch"),
        (payload(imei="8684800/51234567"), "bad_device_id"),
        (payload(gas=..., co=..., temp=..., batV=...), "empty"),
        (b'{"imei": "868480051234567", "time": "2024-05-20 08:30:15", "gas": NaN}', "out_of_range"),
        (
            b'{"imei": "868480051234567", "time": "2024-05-20 08:30:15", "temp": Infinity}',
            "out_of_range",
        ),
    ],
)
def test_rejections(data: bytes, reason: str) -> None:
    assert reject(data).reason == reason


def test_topic_rejections() -> None:
    assert reject(payload(), f"vendor/gasdet/c1/{IMEI}/status").reason == "bad_topic"
    assert reject(payload(), f"vendor/gas/c1/{IMEI}/data").reason == "bad_topic"
    assert reject(payload(), "vendor/gasdet/c1/86848005 1234567/data").reason == "bad_device_id"


@pytest.mark.parametrize(
    "over",
    [
        {"gas": "13800138000"},
        {"imei": "13800138000"},
        {"status": [13800138000]},
        {"time": "13800138000"},
    ],
)
def test_rejection_details_never_quote_values(over: dict[str, Any]) -> None:
    assert "13800138000" not in str(reject(payload(**over)))


@pytest.mark.parametrize(
    "options",
    [
        {"lel_ppm": 0},
        {"lel_ppm": -50_000},
        {"lel_ppm": 2_000_000},
        {"lel_ppm": "50000"},
        {"lel_ppm": True},
        {"lel_ppm": float("nan")},
        {"battery_empty_v": 3.6, "battery_full_v": 3.0},
        {"battery_full_v": 9},
    ],
)
def test_bad_options_are_config_errors(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        vendor_gas.configure(**options)


def test_unknown_options_are_type_errors() -> None:
    with pytest.raises(TypeError):
        vendor_gas.configure(lel=21_000)  # type: ignore[call-arg]


# -- round trip ---------------------------------------------------------------------------

IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}", fullmatch=True)
TIME_NS = st.integers(min_value=946_684_800_000, max_value=4_102_444_799_999).map(
    lambda ms: ms * 1_000_000
)
MEASUREMENTS = {
    "gas_lel_pct": st.integers(0, 10_000).map(lambda k: k / 100),
    "co_ppm": st.integers(0, 1_000_000).map(lambda k: k / 100),
    "temperature_c": st.integers(-500, 3000).map(lambda k: k / 10),
    "battery_pct": st.integers(0, 1000).map(lambda k: k / 10),
}
EVENT_FIELDS: dict[SafetyEvent, dict[str, st.SearchStrategy[Any]]] = {
    SafetyEvent.GAS_ALARM: {"gas_lel_pct": MEASUREMENTS["gas_lel_pct"]},
    SafetyEvent.CO_ALARM: {"co_ppm": MEASUREMENTS["co_ppm"]},
    SafetyEvent.LOW_BATTERY: {"battery_pct": MEASUREMENTS["battery_pct"]},
    SafetyEvent.FAULT: {"fault_code": st.integers(0, 65_535)},
    SafetyEvent.TAMPER: {"tamper": st.just(True)},
    SafetyEvent.SELF_TEST: {"self_test_ok": st.just(True)},
    SafetyEvent.ALARM_CLEARED: {},
}


@st.composite
def gas_readings(draw: st.DrawFn) -> Reading:
    event = draw(st.sampled_from([None, *EVENT_FIELDS]))
    fields = MEASUREMENTS if event is None else EVENT_FIELDS[event]
    values: dict[str, Any] = {"detector": "gas"}
    for key in draw(st.sets(st.sampled_from(sorted(fields)))) if fields else ():
        values[key] = draw(fields[key])
    if event is SafetyEvent.TAMPER:
        values["tamper"] = True  # implied by the status code
    elif event is SafetyEvent.SELF_TEST:
        values["self_test_ok"] = True
    if event is None and len(values) == 1:
        values["gas_lel_pct"] = 0.0  # a report has at least one measurement
    return Reading(
        device_id=draw(IDS),
        family=Family.SAFETY,
        channel=Channel.TELEMETRY if event is None else Channel.EVENT,
        kind="telemetry" if event is None else event.value,
        time_ns=draw(TIME_NS),
        location=Location(draw(IDS)),
        values=values,
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gas_readings(), st.sampled_from([50_000, 21_000, 40_000, 17_000]))
def test_round_trip(reading: Reading, lel_ppm: int) -> None:
    codec = vendor_gas.configure(lel_ppm=lel_ppm)
    topic, body = codec.encode(reading)
    assert topic == f"vendor/gasdet/{reading.location.community}/{reading.device_id}/data"
    readings = codec.decode(topic, body)
    assert reading in readings
    assert 1 <= len(readings) <= 2


@pytest.mark.parametrize("kind", ["smoke_alarm", "heat_alarm"])
def test_encode_refuses_kinds_a_gas_detector_cannot_raise(kind: str) -> None:
    reading = Reading("s-1", Family.SAFETY, Channel.EVENT, kind, 10**18, Location("c"), {})
    with pytest.raises(ValueError):
        vendor_gas.encode(reading)


def test_simulated_detectors_encode_and_decode() -> None:
    from simulators.fleet import SafetyDetector, make_fleet

    fleet = [d for d in make_fleet("c1", 100, seed=5) if isinstance(d, SafetyDetector)]
    for device in fleet:
        for step in range(10):
            reading = device.next_reading(T_2024_05_20_083015 + step * 1_000_000_000)
            decoded = vendor_gas.decode(*vendor_gas.encode(reading))
            assert reading.kind in [r.kind for r in decoded]
            merged = {k: v for r in decoded for k, v in r.values.items()}
            for key in ("gas_lel_pct", "co_ppm", "temperature_c", "battery_pct"):
                assert merged.get(key) == reading.values.get(key)


# -- fuzz ---------------------------------------------------------------------------------

KEYS = [*vendor_gas.GasReport.model_fields, "extra"]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), JSON_VALUES, max_size=6), st.booleans())
def test_fuzz_vendor_shaped_payloads_only_ever_reject(over: dict[str, Any], lpg: bool) -> None:
    codec = vendor_gas.configure(lel_ppm=21_000) if lpg else vendor_gas
    with contextlib.suppress(RejectedInput):
        assert_canonical(codec.decode(TOPIC, payload(**over)))
