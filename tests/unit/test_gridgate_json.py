from __future__ import annotations

import json
from typing import Any

import pytest

from adapters import gridgate_json
from devices.errors import RejectedInput
from devices.families import Channel, Family
from devices.location import Location
from devices.reading import Reading

TS = 1_732_190_000_123
TOPIC = "gridgate/v1/c1/safety/sd-001/telemetry"


def payload(**over: Any) -> bytes:
    body: dict[str, Any] = {
        "v": 1,
        "device_id": "sd-001",
        "ts": TS,
        "kind": "telemetry",
        "loc": {"grid": "g01", "building": "3号楼", "unit": "2单元", "room": "1201"},
        "data": {"detector": "gas", "gas_lel_pct": 3.5, "co_ppm": 2, "battery_pct": 88},
    }
    body.update(over)
    return json.dumps(body, ensure_ascii=False).encode()


def reject_reason(topic: str, data: bytes) -> str:
    with pytest.raises(RejectedInput) as info:
        gridgate_json.decode(topic, data)
    return info.value.reason


def test_decodes_a_safety_reading() -> None:
    [r] = gridgate_json.decode(TOPIC, payload())
    assert r.device_id == "sd-001"
    assert r.family is Family.SAFETY and r.channel is Channel.TELEMETRY
    assert r.time_ns == TS * 1_000_000
    assert r.location == Location("c1", "g01", "3号楼", "2单元", "1201")
    assert r.values == {"detector": "gas", "gas_lel_pct": 3.5, "co_ppm": 2.0, "battery_pct": 88.0}
    assert isinstance(r.values["co_ppm"], float)  # ints coerced: no field-type conflicts


def test_iso_time_without_offset_is_china_standard_time() -> None:
    [r] = gridgate_json.decode(TOPIC, payload(ts="2024-05-20T08:30:15.250"))
    assert r.time_ns == 1_716_165_015_250_000_000  # 2024-05-20T00:30:15.25Z


@pytest.mark.parametrize(
    ("family", "channel", "kind", "data"),
    [
        (
            "access",
            "event",
            "entry_granted",
            {"method": "face", "direction": "in", "granted": True},
        ),
        ("access", "event", "door_forced", {"door": "东门"}),
        ("safety", "event", "smoke_alarm", {"smoke_alarm": True, "smoke_density_db_m": 0.4}),
        ("meter", "telemetry", "telemetry", {"meter_type": "water", "water_m3": 1234.56}),
        ("meter", "telemetry", "telemetry", {"energy_kwh": 123456.78, "power_kw": -1.2345}),
        ("elder", "telemetry", "telemetry", {"heart_rate_bpm": 72, "spo2_pct": 97, "worn": True}),
        ("elder", "event", "fall", {}),
        ("elder", "status", "offline", {}),
    ],
)
def test_round_trip_every_family(
    family: str, channel: str, kind: str, data: dict[str, Any]
) -> None:
    reading = Reading(
        device_id="dev-1",
        family=Family(family),
        channel=Channel(channel),
        kind=kind,
        time_ns=TS * 1_000_000,
        location=Location("c1", "g02", "5号楼", "1单元", "0301"),
        values=data,
    )
    topic, body = gridgate_json.encode(reading)
    [back] = gridgate_json.decode(topic, body)
    assert back.family == reading.family and back.channel == reading.channel
    assert back.kind == kind and back.time_ns == reading.time_ns
    assert back.location == reading.location
    assert dict(back.values) == data  # 72 == 72.0: ints come back as the model's floats


@pytest.mark.parametrize(
    ("topic", "data", "reason"),
    [
        (TOPIC, b"not json at all", "not_json"),
        (TOPIC, b"[1, 2, 3]", "wrong_type"),
        (TOPIC, b"", "not_json"),
        (TOPIC, b'{"device_id": "sd-001", "ts": 1732190000123}', "missing_field"),
        (TOPIC, payload(data={"gas_lel_pct": "lots"}), "wrong_type"),
        (TOPIC, payload(data={"gas_lel_pct": 180}), "out_of_range"),
        (TOPIC, payload(data={"co_ppm": -5}), "out_of_range"),
        (TOPIC, payload(data={"detector": "laser"}), "bad_value"),
        (TOPIC, payload(ts="yesterday"), "wrong_type"),
        (TOPIC, payload(ts=5), "bad_timestamp"),
        (TOPIC, payload(ts=99_999_999_999_999), "bad_timestamp"),
        (TOPIC, payload(device_id="sd-002"), "device_id_mismatch"),
        (TOPIC, payload(kind="smoke_alarm"), "bad_kind"),
        (TOPIC, payload(v=7), "out_of_range"),
        (TOPIC, payload(loc={"building": "3\n号楼"}), "bad_value"),
        (TOPIC, payload(loc={"floor": 3}), "bad_value"),
        (TOPIC, b"{" + b" " * 70_000 + b"}", "oversize"),
        ("gridgate/v1/c1/toaster/sd-001/telemetry", payload(), "unknown_family"),
        ("gridgate/v1/c1/safety/sd 001/telemetry", payload(), "bad_device_id"),
        ("gridgate/v1/c1/safety/sd-001/gossip", payload(), "bad_topic"),
        ("other/c1/safety/sd-001/telemetry", payload(), "bad_topic"),
        ("gridgate/v1/safety/sd-001/telemetry", payload(), "bad_topic"),
    ],
)
def test_rejects_bad_input_with_a_reason(topic: str, data: bytes, reason: str) -> None:
    assert reject_reason(topic, data) == reason


def test_rejection_detail_never_quotes_the_value() -> None:
    with pytest.raises(RejectedInput) as info:
        gridgate_json.decode(TOPIC, payload(data={"gas_lel_pct": "13800138000张三"}))
    assert "13800138000" not in str(info.value) and "张三" not in str(info.value)
    assert "gas_lel_pct" in info.value.detail


def test_unknown_vendor_fields_reach_privacy_to_be_dropped() -> None:
    [r] = gridgate_json.decode(TOPIC, payload(data={"gas_lel_pct": 1.0, "idCardNo": "x"}))
    assert r.values["idCardNo"] == "x"  # kept here on purpose; privacy drops and counts it
