"""What every foreign-JSON vendor adapter shares: topics, local times, canonical checks, and
that no bytes or JSON whatsoever make a decoder raise anything but RejectedInput."""

from __future__ import annotations

import contextlib
import json
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters import vendor_access, vendor_common, vendor_gas, vendor_meter, vendor_wearable
from adapters.vendor_common import TopicShape, format_local_time, parse_local_time
from devices.errors import RejectedInput
from devices.families import Family
from devices.reading import Reading
from tests.support.vendor_json import JSON_VALUES, assert_canonical

VENDORS: dict[ModuleType, str] = {
    vendor_access: "vendor/acs/c1/dev-1/event",
    vendor_gas: "vendor/gasdet/c1/dev-1/data",
    vendor_meter: "vendor/meter/c1/dev-1/report",
    vendor_wearable: "vendor/band/c1/dev-1/up",
}


def test_subscriptions_are_the_documented_topic_patterns() -> None:
    assert vendor_access.SUBSCRIPTION == "vendor/acs/+/+/event"
    assert vendor_gas.SUBSCRIPTION == "vendor/gasdet/+/+/data"
    assert vendor_meter.SUBSCRIPTION == "vendor/meter/+/+/report"
    assert vendor_wearable.SUBSCRIPTION == "vendor/band/+/+/up"


def test_vendor_common_is_not_an_adapter() -> None:
    assert not hasattr(vendor_common, "decode")


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2024-05-20 08:30:15", 1_716_165_015_000_000_000),  # 00:30:15 UTC
        ("2024-05-20 08:30:15.250", 1_716_165_015_250_000_000),
        ("2000-01-01 08:00:00", 946_684_800_000_000_000),
        ("2024-01-01 00:00:00", 1_704_038_400_000_000_000),  # still 2023 in UTC
    ],
)
def test_local_times_are_china_standard_time(text: str, ns: int) -> None:
    assert parse_local_time(text, "t") == ns
    assert format_local_time(ns) == text


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-20T08:30:15",
        "2024-05-20 08:30",
        "2024-5-20 08:30:15",
        "2024-02-30 08:30:15",
        "2024-05-20 24:00:00",
        "2024-05-20 08:30:15+08:00",
        "2024-05-20 08:30:15.5",
        "1999-12-31 23:59:59",
        "2100-01-01 08:00:00",
        "２０２４-05-20 08:30:15",  # full-width digits match \d without re.ASCII
        "",
    ],
)
def test_bad_local_times_are_bad_timestamps(text: str) -> None:
    with pytest.raises(RejectedInput) as info:
        parse_local_time(text, "eventTime")
    assert info.value.reason == "bad_timestamp" and "eventTime" in info.value.detail


@given(st.integers(min_value=946_684_800_000, max_value=4_102_444_799_999))
def test_local_time_round_trip_at_millisecond_resolution(ms: int) -> None:
    assert parse_local_time(format_local_time(ms * 1_000_000), "t") == ms * 1_000_000


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("vendor/x/c1/d1/up", None),
        ("vendor/x/c1/d1/down", "bad_topic"),
        ("vendor/y/c1/d1/up", "bad_topic"),
        ("vendor/x/c1/up", "bad_topic"),
        ("vendor/x/c1/d1/extra/up", "bad_topic"),
        ("vendor/x/c 1/d1/up", "bad_topic"),
        ("vendor/x/c1/d 1/up", "bad_device_id"),
        ("vendor/x/c1//up", "bad_device_id"),
        ("vendor/x/c1/" + "d" * 65 + "/up", "bad_device_id"),
    ],
)
def test_topic_shapes(topic: str, reason: str | None) -> None:
    shape = TopicShape(("vendor", "x"), "up")
    if reason is None:
        assert shape.parse(topic) == ("c1", "d1")
        assert shape.parse(topic) == ("c1", "d1")  # cached
        assert shape.build("c1", "d1") == topic
    else:
        with pytest.raises(RejectedInput) as info:
            shape.parse(topic)
        assert info.value.reason == reason


@pytest.mark.parametrize("module", list(VENDORS), ids=lambda m: m.name)
def test_oversize_payloads_are_refused_before_parsing(module: ModuleType) -> None:
    with pytest.raises(RejectedInput) as info:
        module.decode(VENDORS[module], b"{" + b" " * 70_000 + b"}")
    assert info.value.reason == "oversize"


@pytest.mark.parametrize("module", list(VENDORS), ids=lambda m: m.name)
@pytest.mark.parametrize(
    ("payload", "reason"),
    [(b"", "not_json"), (b"{", "not_json"), (b"\xff\xfe", "not_json"), (b"[1]", "wrong_type")],
)
def test_non_objects_are_refused(module: ModuleType, payload: bytes, reason: str) -> None:
    with pytest.raises(RejectedInput) as info:
        module.decode(VENDORS[module], payload)
    assert info.value.reason == reason


@pytest.mark.parametrize("module", list(VENDORS), ids=lambda m: m.name)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_only_ever_reject(module: ModuleType, data: bytes) -> None:
    with contextlib.suppress(RejectedInput):
        assert_canonical(module.decode(VENDORS[module], data))


@pytest.mark.parametrize("module", list(VENDORS), ids=lambda m: m.name)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=JSON_VALUES)
def test_fuzz_arbitrary_json_only_ever_rejects(module: ModuleType, value: Any) -> None:
    with contextlib.suppress(RejectedInput):
        assert_canonical(module.decode(VENDORS[module], json.dumps(value).encode()))


@pytest.mark.parametrize("module", list(VENDORS), ids=lambda m: m.name)
@settings(max_examples=200, deadline=None)
@given(
    topic=st.text(max_size=60) | st.from_regex(r"vendor/[a-z]{3,6}/[^/]{0,8}/[^/]{0,8}/[a-z]{2,6}")
)
def test_fuzz_arbitrary_topics_only_ever_reject(module: ModuleType, topic: str) -> None:
    with contextlib.suppress(RejectedInput):
        module.decode(topic, b"{}")


@pytest.mark.parametrize("module", list(VENDORS), ids=lambda m: m.name)
def test_encoders_refuse_other_families(module: ModuleType) -> None:
    from devices.families import Channel
    from devices.location import Location

    other = Family.ELDER if module is not vendor_wearable else Family.METER
    reading = Reading("d1", other, Channel.EVENT, "fault", 10**18, Location("c1"), {})
    with pytest.raises(ValueError):
        module.encode(reading)
