from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters import vendor_meter
from devices.errors import ConfigError, RejectedInput
from devices.families import Channel, Family, MeterEvent
from devices.location import Location
from devices.reading import Reading
from tests.support.vendor_json import JSON_VALUES, assert_canonical

METER = "20240520001"
TOPIC = f"vendor/meter/c1/{METER}/report"
TS = 1_716_165_015  # 2024-05-20 08:30:15 UTC+8


def water(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "meterNo": METER,
        "type": "WATER",
        "data": {
            "total": {"value": 1234560, "unit": "L"},
            "flow": {"value": 12.5, "unit": "L/h"},
            "valve": "OPEN",
            "batteryV": 3.4,
        },
        "ts": TS,
    }
    body.update(over)
    return body


def electricity(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "meterNo": METER,
        "type": "ELEC",
        "data": {
            "total": {"value": 123456.78, "unit": "kWh"},
            "voltage": 220.1,
            "current": 5.123,
            "power": {"value": 1234.5, "unit": "W"},
        },
        "ts": TS,
    }
    body.update(over)
    return body


def data(body: dict[str, Any], **over: Any) -> bytes:
    """`body` with its `data` object changed (`...` removes a key)."""
    inner = {**body["data"], **over}
    body = {**body, "data": {k: v for k, v in inner.items() if v is not ...}}
    return raw(body)


def raw(body: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def reject(payload: bytes, topic: str = TOPIC) -> RejectedInput:
    with pytest.raises(RejectedInput) as info:
        vendor_meter.decode(topic, payload)
    return info.value


def test_decodes_a_water_report_with_unit_conversions() -> None:
    [r] = vendor_meter.decode(TOPIC, raw(water()))
    assert (r.device_id, r.family, r.channel, r.kind) == (
        METER,
        Family.METER,
        Channel.TELEMETRY,
        "telemetry",
    )
    assert r.time_ns == TS * 1_000_000_000 and r.location == Location("c1")
    assert r.values == {
        "meter_type": "water",
        "water_m3": 1234.56,  # litres → m³
        "flow_m3h": 0.0125,  # L/h → m³/h
        "valve": "open",
        "battery_low": False,  # 3.4 V ≥ 3.3 V
    }


def test_decodes_an_electricity_report() -> None:
    [r] = vendor_meter.decode(TOPIC, raw(electricity()))
    assert r.values == {
        "meter_type": "electricity",
        "energy_kwh": 123456.78,
        "voltage_v": 220.1,
        "current_a": 5.123,
        "power_kw": 1.2345,  # W → kW
    }


@pytest.mark.parametrize(
    ("body", "key", "value"),
    [
        (data(water(), total={"value": 1234.567, "unit": "m3"}), "water_m3", 1234.567),
        (data(water(), flow={"value": 0.75, "unit": "m3/h"}), "flow_m3h", 0.75),
        (data(water(), flow={"value": -30, "unit": "L/h"}), "flow_m3h", -0.03),
        (data(electricity(), total={"value": 5_000_500, "unit": "Wh"}), "energy_kwh", 5000.5),
        (data(electricity(), power={"value": -1.5, "unit": "kW"}), "power_kw", -1.5),
        (data(water(), valve="CLOSE"), "valve", "closed"),
        (data(water(), valve="ERR"), "valve", "abnormal"),
        (data(water(), batteryV=3.29), "battery_low", True),
        (data(water(), batteryV=3.3), "battery_low", False),
        (raw(water(type="GAS", data={"total": {"value": 812.5, "unit": "m3"}})), "gas_m3", 812.5),
    ],
)
def test_units_and_codes(body: bytes, key: str, value: Any) -> None:
    [r] = vendor_meter.decode(TOPIC, body)
    assert r.values[key] == value


def test_battery_threshold_is_configurable() -> None:
    codec = vendor_meter.configure(battery_low_v=3.5)
    [r] = codec.decode(TOPIC, raw(water()))
    assert r.values["battery_low"] is True


@pytest.mark.parametrize(
    ("event", "kind", "values"),
    [
        ("VALVE_OPEN", "valve_opened", {"valve": "open"}),
        ("VALVE_CLOSE", "valve_closed", {"valve": "open"}),  # as the data says
        ("REVERSE", "reverse_flow", {"flow_m3h": 0.0125}),
        ("TAMPER", "tamper", {}),
        ("FAULT", "fault", {"fault_code": 3}),
        ("LOWBAT", "low_battery", {"battery_low": True}),
    ],
)
def test_events_come_with_the_telemetry(event: str, kind: str, values: dict[str, Any]) -> None:
    first, second = vendor_meter.decode(TOPIC, raw(water(event=event, errCode=3)))
    assert (first.channel, first.kind) == (Channel.EVENT, kind)
    assert first.values == {"meter_type": "water", **values}
    assert second.kind == "telemetry" and second.values["water_m3"] == 1234.56


def test_an_event_without_data_is_one_reading() -> None:
    [r] = vendor_meter.decode(TOPIC, raw(water(event="TAMPER", data=...)))
    assert r.kind == "tamper" and r.values == {"meter_type": "water"}


def test_unknown_fields_at_any_level_pass_through() -> None:
    body = water(signal=-97, data={**water()["data"], "temperature": 12, "valve": "OPEN"})
    body["data"]["total"] = {"value": 1, "unit": "L", "precision": 3}
    [r] = vendor_meter.decode(TOPIC, raw(body | {"valve": "CLOSE", "ownerName": "张三"}))
    assert r.values["signal"] == -97 and r.values["temperature"] == 12
    assert r.values["precision"] == 3 and r.values["ownerName"] == "张三"
    assert r.values["valve"] == "open" and r.values["vendor:valve"] == "CLOSE"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{}", "missing_field"),
        (raw(water(meterNo=...)), "missing_field"),
        (raw(water(ts=...)), "missing_field"),
        (raw(water(type=...)), "missing_field"),
        (raw(water(type="HEAT")), "bad_value"),
        (raw(water(ts=TS * 1000)), "bad_timestamp"),  # milliseconds, not seconds
        (raw(water(ts=0)), "bad_timestamp"),
        (raw(water(ts="2024-05-20 08:30:15")), "wrong_type"),
        (raw(water(ts=1716165015.5)), "bad_value"),
        (raw(water(data=[1, 2])), "wrong_type"),
        (raw(water(event="EXPLODED")), "bad_value"),
        (data(water(), total={"value": 1}), "missing_field"),
        (data(water(), total={"value": 1, "unit": "gallon"}), "bad_value"),
        (data(water(), total={"value": 1, "unit": "kWh"}), "bad_value"),  # not a water unit
        (data(electricity(), total={"value": 1, "unit": "L"}), "bad_value"),
        (data(water(), flow={"value": 1, "unit": "W"}), "bad_value"),
        (data(electricity(), power={"value": 1, "unit": "L/h"}), "bad_value"),
        (data(water(), voltage=220), "bad_value"),  # electric fields on a water meter
        (data(electricity(), flow={"value": 1, "unit": "L/h"}), "bad_value"),
        (data(water(), total={"value": -5, "unit": "L"}), "out_of_range"),
        (data(water(), total={"value": 2e12, "unit": "m3"}), "out_of_range"),
        (data(water(), flow={"value": 2_000_000, "unit": "L/h"}), "out_of_range"),
        (data(electricity(), voltage=1200), "out_of_range"),
        (data(electricity(), current=-1001), "out_of_range"),
        (data(water(), batteryV=7.2), "out_of_range"),
        (data(water(), valve="HALF"), "bad_value"),
        (data(water(), valve=True), "bad_value"),
        (raw(water(errCode=-1, event="FAULT")), "out_of_range"),
        (raw(water(meterNo="20240520002")), "device_id_mismatch"),
        (raw(water(meterNo="2024 0520001")), "bad_device_id"),
        (raw(water(data={})), "empty"),
        (raw(water(data=...)), "empty"),
    ],
)
def test_rejections(payload: bytes, reason: str) -> None:
    assert reject(payload).reason == reason


def test_numeric_strings_are_numbers() -> None:
    [r] = vendor_meter.decode(TOPIC, data(water(), total={"value": "1234560", "unit": "L"}))
    assert r.values["water_m3"] == 1234.56


def test_topic_rejections() -> None:
    assert reject(raw(water()), f"vendor/meter/c1/{METER}/data").reason == "bad_topic"
    assert reject(raw(water()), f"vendor/meter/c1/{METER}").reason == "bad_topic"
    assert reject(raw(water()), f"vendor/meter/c 1/{METER}/report").reason == "bad_topic"


@pytest.mark.parametrize(
    "body",
    [
        water(ts="13800138000"),
        water(meterNo="13800138000"),
        water(type="13800138000"),
        water(data={"total": {"value": "13800138000x", "unit": "L"}}),
        water(data={"total": {"value": 1, "unit": "13800138000"}}),
        water(data={"valve": "13800138000"}),
    ],
)
def test_rejection_details_never_quote_values(body: dict[str, Any]) -> None:
    assert "13800138000" not in str(reject(raw(body)))


@pytest.mark.parametrize("value", [0, 0.2, 4.8, "3.3", None, True])
def test_bad_options_are_config_errors(value: Any) -> None:
    with pytest.raises(ConfigError):
        vendor_meter.configure(battery_low_v=value)


# -- round trip ---------------------------------------------------------------------------

IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}", fullmatch=True)
TIME_NS = st.integers(min_value=946_684_800, max_value=4_102_444_799).map(lambda s: s * 10**9)
WATERISH = {
    "flow_m3h": st.integers(-1_000_000, 1_000_000).map(lambda k: k / 1000),
    "valve": st.sampled_from(["open", "closed", "abnormal"]),
    "battery_low": st.booleans(),
}
FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "water": {"water_m3": st.integers(0, 10**10).map(lambda k: k / 1000), **WATERISH},
    "gas": {"gas_m3": st.integers(0, 10**10).map(lambda k: k / 1000), **WATERISH},
    "electricity": {
        "energy_kwh": st.integers(0, 10**9).map(lambda k: k / 100),
        "voltage_v": st.integers(0, 10_000).map(lambda k: k / 10),
        "current_a": st.integers(-1_000_000, 1_000_000).map(lambda k: k / 1000),
        "power_kw": st.integers(-10_000_000, 10_000_000).map(lambda k: k / 10_000),
        "valve": st.sampled_from(["open", "closed"]),
        "battery_low": st.booleans(),
    },
}
EVENT_FIELDS: dict[MeterEvent, tuple[str, ...]] = {
    MeterEvent.VALVE_OPENED: ("valve",),
    MeterEvent.VALVE_CLOSED: ("valve",),
    MeterEvent.REVERSE_FLOW: ("flow_m3h",),
    MeterEvent.TAMPER: (),
    MeterEvent.FAULT: ("fault_code",),
    MeterEvent.LOW_BATTERY: ("battery_low",),
}


@st.composite
def meter_readings(draw: st.DrawFn) -> Reading:
    meter_type = draw(st.sampled_from(sorted(FIELDS)))
    event = draw(st.sampled_from([None, *EVENT_FIELDS]))
    strategies = {**FIELDS[meter_type], "fault_code": st.integers(0, 65_535)}
    if event is None:
        keys = draw(st.sets(st.sampled_from(sorted(FIELDS[meter_type])), min_size=1))
    else:
        allowed = [k for k in EVENT_FIELDS[event] if k in strategies]
        keys = set(draw(st.sets(st.sampled_from(allowed)))) if allowed else set()
    values: dict[str, Any] = {"meter_type": meter_type}
    values.update((k, draw(strategies[k])) for k in sorted(keys))
    if event is MeterEvent.LOW_BATTERY:
        values["battery_low"] = True  # implied by the event
    return Reading(
        device_id=draw(IDS),
        family=Family.METER,
        channel=Channel.TELEMETRY if event is None else Channel.EVENT,
        kind="telemetry" if event is None else event.value,
        time_ns=draw(TIME_NS),
        location=Location(draw(IDS)),
        values=values,
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meter_readings(), st.sampled_from([3.3, 3.0, 3.5]))
def test_round_trip(reading: Reading, battery_low_v: float) -> None:
    codec = vendor_meter.configure(battery_low_v=battery_low_v)
    topic, body = codec.encode(reading)
    assert topic == f"vendor/meter/{reading.location.community}/{reading.device_id}/report"
    readings = codec.decode(topic, body)
    assert reading in readings and 1 <= len(readings) <= 2


def test_encode_speaks_litres_watt_hours_and_watts() -> None:
    reading = Reading(
        "m-1",
        Family.METER,
        Channel.TELEMETRY,
        "telemetry",
        TS * 10**9,
        Location("c1"),
        {"meter_type": "water", "water_m3": 1234.56, "flow_m3h": 0.0125},
    )
    topic, body = vendor_meter.encode(reading)
    assert topic == "vendor/meter/c1/m-1/report"
    assert json.loads(body) == {
        "meterNo": "m-1",
        "type": "WATER",
        "ts": TS,
        "data": {"total": {"value": 1234560, "unit": "L"}, "flow": {"value": 12.5, "unit": "L/h"}},
    }


def test_encode_refuses_what_the_format_cannot_say() -> None:
    heat = Reading(
        "m-1",
        Family.METER,
        Channel.TELEMETRY,
        "telemetry",
        10**18,
        Location("c"),
        {"meter_type": "heat"},
    )
    with pytest.raises(ValueError):
        vendor_meter.encode(heat)
    status = Reading("m-1", Family.METER, Channel.STATUS, "online", 10**18, Location("c"), {})
    with pytest.raises(ValueError):
        vendor_meter.encode(status)


def test_simulated_meters_encode_and_decode() -> None:
    from simulators.fleet import ElectricityMeter, WaterMeter, make_fleet

    fleet = [
        d for d in make_fleet("c1", 100, seed=9) if isinstance(d, ElectricityMeter | WaterMeter)
    ]
    assert fleet
    for device in fleet:
        for step in range(10):
            reading = device.next_reading(TS * 10**9 + step * 10**9)
            decoded = vendor_meter.decode(*vendor_meter.encode(reading))
            assert reading.kind in [r.kind for r in decoded]
            merged = {k: v for r in decoded for k, v in r.values.items()}
            for key in (
                "water_m3",
                "flow_m3h",
                "energy_kwh",
                "voltage_v",
                "current_a",
                "power_kw",
                "valve",
            ):
                assert merged.get(key) == reading.values.get(key)


# -- fuzz ---------------------------------------------------------------------------------

KEYS = [*vendor_meter.MeterReport.model_fields, "extra"]
DATA_KEYS = [*vendor_meter.MeterValues.model_fields, "extra"]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(KEYS), JSON_VALUES, max_size=4),
    st.dictionaries(st.sampled_from(DATA_KEYS), JSON_VALUES, max_size=4),
    st.sampled_from([water, electricity]),
)
def test_fuzz_vendor_shaped_payloads_only_ever_reject(
    top: dict[str, Any], inner: dict[str, Any], base: Any
) -> None:
    body = base()
    body["data"] = {**body["data"], **inner}
    with contextlib.suppress(RejectedInput):
        assert_canonical(vendor_meter.decode(TOPIC, raw({**body, **top})))
