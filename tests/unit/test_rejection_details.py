"""Rejection details name positions, never anything the device wrote (R3.2).

A `RejectedInput.detail` reaches the dead-letter store and a WARNING log line. pydantic puts
the *keys* of a payload into its error locations (an unknown `loc` key: `loc.<key>:
extra_forbidden`), and a device can make a key of a name, a phone or an ID number. Every
adapter is fed payloads with such keys at the top level, inside `loc` and nested, and no
planted key may come back in the detail.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from adapters import (
    cjt188,
    ctwing,
    dlt645,
    gridgate_json,
    hikvision_isapi,
    onenet,
    vendor_access,
    vendor_gas,
    vendor_meter,
    vendor_wearable,
)
from adapters.base import KEY_PLACEHOLDER, rejection_from, safe_location
from adapters.registry import ADAPTERS, default_registry
from devices.errors import RejectedInput
from privacy.identifiers import find_identifier

TS = 1_716_165_015_000
KEYS = [
    "11010519491231002X",  # an ID number
    "110105-19491231-002X",
    "11010519491231002xroom",
    "13812345678",  # a phone
    "tel:138-1234-5678",
    "913812345678",
    "张三",  # a name
    "zhang_san_13812345678",
    "京A12345",  # a plate
]


def _dump(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


def _nested(key: str) -> dict[str, Any]:
    return {key: {key: [{key: key}]}}


# Each maker plants `key` and returns a (topic, payload) every adapter must reject.
Maker = Callable[[str], tuple[str, bytes]]


def _gridgate_loc(key: str) -> tuple[str, bytes]:
    body = {"device_id": "d-1", "ts": TS, "kind": "entry_granted", key: 1,
            "loc": {key: "x", "room": "1201"}, "data": {"method": "card"}}  # fmt: skip
    return "gridgate/v1/c1/access/d-1/event", _dump(body)


def _gridgate_loc_nested(key: str) -> tuple[str, bytes]:
    body = {"device_id": "d-1", "ts": TS, "kind": "entry_granted",
            "loc": {"room": {key: 1}, "unit": [key], **_nested(key)},
            "data": {**_nested(key), "door": {key: 1}}}  # fmt: skip
    return "gridgate/v1/c1/access/d-1/event", _dump(body)


def _gridgate_data(key: str) -> tuple[str, bytes]:
    body = {"device_id": "d-1", "ts": [key], "kind": "telemetry", **_nested(key),
            "data": {key: 1, "gas_lel_pct": {key: 2}}}  # fmt: skip
    return "gridgate/v1/c1/safety/d-1/telemetry", _dump(body)


def _gridgate_status(key: str) -> tuple[str, bytes]:
    body = {"device_id": "d-1", "ts": TS, "kind": "heartbeat", "loc": {key: {key: 1}},
            "data": {"firmware": {key: key}, key: 1}}  # fmt: skip
    return "gridgate/v1/c1/meter/d-1/status", _dump(body)


def _access(key: str) -> tuple[str, bytes]:
    body = {"deviceSn": "ACS1", "eventTime": {key: 1}, "eventType": 1, **_nested(key),
            "doorName": [key]}  # fmt: skip
    return "vendor/acs/c1/ACS1/event", _dump(body)


def _access_converted(key: str) -> tuple[str, bytes]:  # refused after unit conversion
    body = {"deviceSn": "ACS1", "eventTime": "2024-05-20 08:30:15", "eventType": 1,
            "similarity": 500, **_nested(key)}  # fmt: skip
    return "vendor/acs/c1/ACS1/event", _dump(body)


def _gas(key: str) -> tuple[str, bytes]:
    body = {"imei": "865432101234567", "time": "2024-05-20 08:30:15", "gas": {key: 1},
            "status": key, **_nested(key)}  # fmt: skip
    return "vendor/gasdet/c1/865432101234567/data", _dump(body)


def _meter(key: str) -> tuple[str, bytes]:
    body = {"meterNo": "M1", "type": "WATER", "ts": TS // 1000, **_nested(key),
            "data": {**_nested(key), "total": {"value": {key: 1}, "unit": key, key: 1},
                     "flow": {key: 1}}}  # fmt: skip
    return "vendor/meter/c1/M1/report", _dump(body)


def _wearable(key: str) -> tuple[str, bytes]:
    body = {"imei": "865432101234567", **_nested(key),
            "samples": [{"t": "2024-05-20 08:30:00", "hr": 72}, {"t": {key: 1}, key: 1}],
            "alarm": {"type": key, key: {key: 1}}, "gps": {key: 1}}  # fmt: skip
    return "vendor/band/c1/865432101234567/up", _dump(body)


def _dlt645(key: str) -> tuple[str, bytes]:
    return dlt645.topic_for("c1", "conc-1"), _dump(_nested(key))


def _cjt188(key: str) -> tuple[str, bytes]:
    return cjt188.topic_for("c1", "conc-1"), _dump(_nested(key))


IMEI = "868480051234567"


def _onenet(key: str) -> tuple[str, bytes]:
    body = {"type": 3, "imei": IMEI, "at": TS, key: _nested(key)}
    return f"$push/c1/onenet/safety/{IMEI}", _dump(body)


def _onenet_fields(key: str) -> tuple[str, bytes]:
    body = {"type": 1, "imei": IMEI, "at": TS, "value": {"smoke_state": key, key: key}}
    return f"$push/c1/onenet/safety/{IMEI}", _dump(body)


def _ctwing(key: str) -> tuple[str, bytes]:
    body = {"messageType": "dataReport", "IMEI": IMEI, "timestamp": TS,
            "payload": {"battery": key, key: _nested(key)}}  # fmt: skip
    return f"$push/c1/ctwing/meter/{IMEI}", _dump(body)


def _isapi(key: str) -> tuple[str, bytes]:
    body = {"dateTime": "not a time", "eventType": "AccessControllerEvent", key: _nested(key),
            "AccessControllerEvent": {"majorEventType": key, "subEventType": 75, key: key}}  # fmt: skip
    return "$push/c1/hikvision_isapi/access/T1", _dump(body)


def _isapi_wrapped(key: str) -> tuple[str, bytes]:
    return "$push/c1/hikvision_isapi/access/T1", _dump({"EventNotificationAlert": {key: key}})


MAKERS: dict[str, list[Maker]] = {
    hikvision_isapi.name: [_isapi, _isapi_wrapped],
    onenet.name: [_onenet, _onenet_fields],
    ctwing.name: [_ctwing],
    gridgate_json.name: [_gridgate_loc, _gridgate_loc_nested, _gridgate_data, _gridgate_status],
    vendor_access.name: [_access, _access_converted],
    vendor_gas.name: [_gas],
    vendor_meter.name: [_meter],
    vendor_wearable.name: [_wearable],
    dlt645.name: [_dlt645],
    cjt188.name: [_cjt188],
}
CASES = [
    pytest.param(adapter, maker, key, id=f"{maker.__name__}-{i}")
    for adapter, makers in MAKERS.items()
    for maker in makers
    for i, key in enumerate(KEYS)
]


def test_every_adapter_is_covered() -> None:
    assert set(MAKERS) == set(ADAPTERS)


def assert_clean(exc: RejectedInput, key: str) -> None:
    for text in (exc.detail, str(exc)):
        assert key not in text, text
        assert find_identifier(text, loose=True) is None, text
        assert text.isascii(), text  # no name, no plate: nothing the device wrote
    assert exc.detail, "a rejection still says where"


@pytest.mark.parametrize(("adapter", "maker", "key"), CASES)
def test_planted_keys_never_reach_the_detail(adapter: str, maker: Maker, key: str) -> None:
    topic, payload = maker(key)
    with pytest.raises(RejectedInput) as info:
        ADAPTERS[adapter].decode(topic, payload)
    assert_clean(info.value, key)
    with pytest.raises(RejectedInput) as routed:  # the same through the shipped routes
        default_registry().decode(topic, payload)
    assert_clean(routed.value, key)


def test_positions_are_kept_and_keys_replaced() -> None:
    with pytest.raises(RejectedInput) as info:
        gridgate_json.decode(*_gridgate_loc("11010519491231002X"))
    assert info.value.reason == "bad_value"
    assert info.value.detail == f"loc.{KEY_PLACEHOLDER}: extra_forbidden"

    # a field name of another model is still the device's key where this model has none
    topic, _ = _gridgate_loc("x")
    body = {"device_id": "d-1", "ts": TS, "kind": "exit", "loc": {"device_id": "d-1"}, "data": {}}
    with pytest.raises(RejectedInput) as info:
        gridgate_json.decode(topic, _dump(body))
    assert info.value.detail == f"loc.{KEY_PLACEHOLDER}: extra_forbidden"

    with pytest.raises(RejectedInput) as info:
        gridgate_json.decode(*_gridgate_loc_nested("张三"))
    detail = info.value.detail
    assert "loc.room: string_type" in detail and "loc.unit: string_type" in detail
    assert f"loc.{KEY_PLACEHOLDER}: extra_forbidden" in detail
    assert detail.count(f"loc.{KEY_PLACEHOLDER}: extra_forbidden") == 1  # repeats merged

    with pytest.raises(RejectedInput) as info:
        gridgate_json.decode(*_gridgate_data("13812345678"))
    assert info.value.detail.startswith("ts.int: int_type; ts.datetime: ")  # union labels

    with pytest.raises(RejectedInput) as info:
        vendor_wearable.decode(*_wearable("13812345678"))
    assert info.value.detail.startswith("samples.1.t: string_type")

    with pytest.raises(RejectedInput) as info:
        vendor_meter.decode(*_meter("13812345678"))
    assert "data.total.value: float_type" in info.value.detail

    with pytest.raises(RejectedInput) as info:
        vendor_access.decode(*_access_converted("13812345678"))
    assert info.value.detail == "after conversion: similarity: less_than_equal"


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = 0


class _Outer(BaseModel):
    items: list[_Inner] = []
    table: dict[str, _Inner] = {}
    either: _Inner | int = 0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"items": [{"n": "x"}]}, "items.0.n: int_parsing"),
        ({"items": [{"13812345678": 1}]}, f"items.0.{KEY_PLACEHOLDER}: extra_forbidden"),
        ({"table": {"13812345678": {"n": "x"}}}, f"table.{KEY_PLACEHOLDER}.{KEY_PLACEHOLDER}"),
        ({"either": {"张三": 1}}, f"either._Inner.{KEY_PLACEHOLDER}: extra_forbidden"),
        ({"either": {"n": "x"}}, "either._Inner.n: int_parsing"),
    ],
)
def test_locations_follow_the_model_position_by_position(
    body: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ValidationError) as info:
        _Outer.model_validate(body)
    detail = rejection_from(info.value, _Outer).detail
    assert detail.startswith(expected), detail
    assert "13812345678" not in detail and "张三" not in detail


def test_without_the_model_every_name_is_a_placeholder() -> None:
    assert safe_location(("loc", "13812345678"), None) == f"{KEY_PLACEHOLDER}.{KEY_PLACEHOLDER}"
    assert safe_location(("samples", 3, "t"), None) == f"{KEY_PLACEHOLDER}.3.{KEY_PLACEHOLDER}"
    assert safe_location((), None) == ""
