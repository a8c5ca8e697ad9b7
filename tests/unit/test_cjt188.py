"""CJ/T 188 adapter: DOMAIN.md test vectors, units, status layouts, corruptions, round trips, fuzz."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters import cjt188
from adapters.base import MAX_PAYLOAD_BYTES, RECEIVE_TIME, Adapter
from devices.errors import ConfigError, RejectedInput
from devices.families import Channel, Family
from devices.location import Location
from devices.models import MeterData
from devices.reading import Reading

TOPIC = "gridgate/raw/c1/cjt188/conc01"
ADDRESS = "00000012345678"
WAKE = bytes.fromhex("FE FE FE FE")
CST = timezone(timedelta(hours=8))

REQUEST = "68 10 78 56 34 12 00 00 00 01 03 90 1F 00 3F 16"
REPLY = (
    "68 10 78 56 34 12 00 00 00 81 16 90 1F 00 56 34 12 00 2C 00 00 12 00 2C "
    "15 30 08 20 05 24 20 05 00 93 16"
)
REPLY_VALUES = {
    "meter_type": "water",
    "water_m3": 1234.56,
    "settlement_m3": 1200.0,
    "valve": "closed",
    "battery_low": True,
}
REPLY_TIME_NS = int(datetime(2024, 5, 20, 8, 30, 15, tzinfo=CST).timestamp()) * 1_000_000_000
WHEN = datetime(2024, 5, 20, 8, 30, 15)


def frame(text: str) -> bytes:
    return bytes.fromhex(text)


def reason(payload: bytes, topic: str = TOPIC, adapter: Adapter = cjt188) -> str:
    with pytest.raises(RejectedInput) as info:
        adapter.decode(topic, payload)
    return info.value.reason


def reply(**over: Any) -> bytes:
    args: dict[str, Any] = {"current": 1234.56, "settlement": 1200.0, "when": WHEN, "status": 5}
    args.update(over)
    return cjt188.encode_reply(ADDRESS, **args)


def assert_plain(values: Any) -> None:
    for value in values.values():
        assert type(value) in (float, int, bool, str), type(value)
        assert not isinstance(value, Decimal)


# --- the test vectors -----------------------------------------------------------------------


def test_decodes_the_reply_vector_exactly() -> None:
    [r] = cjt188.decode(TOPIC, frame(REPLY))
    assert r.device_id == ADDRESS
    assert r.family is Family.METER and r.channel is Channel.TELEMETRY and r.kind == "telemetry"
    assert r.location == Location("c1")
    assert r.values == REPLY_VALUES
    assert r.time_ns == REPLY_TIME_NS == 1_716_165_015_000_000_000  # 2024-05-20T00:30:15Z
    assert_plain(r.values)
    MeterData.model_validate(r.values)


@pytest.mark.parametrize(
    "payload",
    [
        WAKE + frame(REPLY),
        b"\xfe" + frame(REPLY),
        REPLY.encode(),
        REPLY.replace(" ", "").encode(),
        REPLY.lower().encode(),
        ("FE FE FE FE\n" + REPLY + "\n").encode(),
        REPLY.replace(" ", "\r\n").encode(),
        ("\t" + REPLY.lower().replace(" ", "") + " ").encode(),
    ],
    ids=["wake4", "wake1", "hex", "hex-nospace", "hex-lower", "hex-wake", "hex-lines", "hex-pad"],
)
def test_accepts_every_payload_form(payload: bytes) -> None:
    [r] = cjt188.decode(TOPIC, payload)
    assert r.device_id == ADDRESS and r.values == REPLY_VALUES and r.time_ns == REPLY_TIME_NS


def test_accepts_the_2018_byte_order_of_the_data_identifier() -> None:
    payload = reply(di_order="2018")
    assert payload[11:13] == b"\x1f\x90"
    [r] = cjt188.decode(TOPIC, payload)
    assert r.values == REPLY_VALUES and r.time_ns == REPLY_TIME_NS


def test_several_frames_in_one_payload_decode_in_order() -> None:
    second = cjt188.encode_reply("00000000000042", 7.5, 7.0, None, 0, wake=2)
    payloads = [
        frame(REPLY) + second,
        WAKE + frame(REPLY) + WAKE + second + WAKE,
        (REPLY + "\n" + second.hex(" ")).encode(),
        (REPLY.replace(" ", "") + second.hex()).lower().encode(),
    ]
    for payload in payloads:
        first, other = cjt188.decode(TOPIC, payload)
        assert first.device_id == ADDRESS and first.values == REPLY_VALUES
        assert other.device_id == "00000000000042" and other.time_ns == RECEIVE_TIME
        assert other.values == {
            "meter_type": "water",
            "water_m3": 7.5,
            "settlement_m3": 7.0,
            "valve": "open",
            "battery_low": False,
        }


def test_encoders_produce_the_vectors_byte_exactly() -> None:
    assert cjt188.encode_request(ADDRESS) == frame(REQUEST)
    assert reply() == frame(REPLY)
    assert reply(when=datetime(2024, 5, 20, 0, 30, 15, tzinfo=UTC)) == frame(REPLY)
    assert cjt188.encode_reply(ADDRESS, 1234.56, 1200.0, WHEN, 5, wake=4) == WAKE + frame(REPLY)
    reading = Reading(
        ADDRESS,
        Family.METER,
        Channel.TELEMETRY,
        "telemetry",
        REPLY_TIME_NS,
        Location("c1"),
        REPLY_VALUES,
    )
    assert cjt188.encode(reading) == (TOPIC, frame(REPLY))
    topic, payload = cjt188.encode(reading, concentrator="c-9", di_order="2018")
    assert topic == "gridgate/raw/c1/cjt188/c-9" and payload[11:13] == b"\x1f\x90"


def test_request_frames_are_not_readings() -> None:
    assert reason(frame(REQUEST)) == "not_a_reply"
    assert reason(REQUEST.lower().encode()) == "not_a_reply"
    assert reason(cjt188.encode_request(ADDRESS, di_order="2018", wake=3)) == "not_a_reply"


# --- meter types and units ------------------------------------------------------------------


@pytest.mark.parametrize("code", [0x10, 0x11, 0x12, 0x13])
def test_every_water_type(code: int) -> None:
    [r] = cjt188.decode(TOPIC, reply(meter_type_code=code))
    assert r.values == REPLY_VALUES


def test_gas_meter() -> None:
    [r] = cjt188.decode(TOPIC, reply(meter_type_code=0x30, status=0))
    assert r.values == {
        "meter_type": "gas",
        "gas_m3": 1234.56,
        "settlement_m3": 1200.0,
        "valve": "open",
        "battery_low": False,
    }


def test_litres_become_cubic_metres() -> None:
    [r] = cjt188.decode(TOPIC, reply(current=123456.78, settlement=1000.0, unit=cjt188.LITRE))
    assert r.values["water_m3"] == 123.45678
    assert r.values["settlement_m3"] == 1.0
    mixed = reply(current=1.5, settlement=2500.0, settlement_unit=cjt188.LITRE)
    [m] = cjt188.decode(TOPIC, mixed)
    assert m.values["water_m3"] == 1.5 and m.values["settlement_m3"] == 2.5


@pytest.mark.parametrize(
    ("code", "unit", "value", "kwh"),
    [
        (0x20, cjt188.KWH, 1234.56, 1234.56),
        (0x21, cjt188.WH, 1234.56, 1.23456),
        (0x22, cjt188.MWH, 12.34, 12340.0),
        (0x20, cjt188.GJ, 1.0, 2500 / 9),
        (0x20, cjt188.GJ, 3.6, 1000.0),
        (0x20, cjt188.GJ, 999999.99, 99999999 * 25 / 9),
    ],
)
def test_heat_meters_report_kwh(code: int, unit: int, value: float, kwh: float) -> None:
    [r] = cjt188.decode(TOPIC, reply(meter_type_code=code, unit=unit, current=value, status=0))
    assert r.values == {
        "meter_type": "heat",
        "energy_kwh": kwh,
        "valve": "open",
        "battery_low": False,
    }
    MeterData.model_validate(r.values)


@pytest.mark.parametrize(
    ("code", "unit"),
    [
        (0x10, cjt188.LITRE_PER_HOUR),
        (0x10, cjt188.CUBIC_METRE_PER_HOUR),
        (0x10, cjt188.KWH),
        (0x30, cjt188.GJ),
        (0x20, cjt188.CUBIC_METRE),
        (0x10, 0x00),
    ],
)
def test_rejects_units_that_do_not_fit_the_meter(code: int, unit: int) -> None:
    assert reason(reply(meter_type_code=code, unit=unit)) == "bad_unit"
    assert reason(reply(meter_type_code=code, settlement_unit=unit)) == "bad_unit"


@pytest.mark.parametrize("code", [0x00, 0x14, 0x23, 0x31, 0x40, 0xFF])
def test_rejects_unknown_meter_types(code: int) -> None:
    assert reason(reply(meter_type_code=code)) == "unknown_meter_type"


# --- status word and its configurable layout ----------------------------------------------------


@pytest.mark.parametrize(
    ("status", "valve", "battery_low"),
    [
        (0x0000, "open", False),
        (0x0001, "closed", False),
        (0x0002, "abnormal", False),
        (0x0003, "abnormal", False),
        (0x0004, "open", True),
        (0x0005, "closed", True),
        (0xFFF8, "open", False),  # vendor bits ignored
        (0xFFFF, "abnormal", True),
    ],
)
def test_standard_status_bits(status: int, valve: str, battery_low: bool) -> None:
    [r] = cjt188.decode(TOPIC, reply(status=status))
    assert r.values["valve"] == valve and r.values["battery_low"] is battery_low


def test_configured_layout_moves_the_bits() -> None:
    adapter = cjt188.configure(valve_closed_bit=1, valve_abnormal_bit=0, battery_low_bit=9)
    assert adapter.name == "cjt188"
    [r] = adapter.decode(TOPIC, reply(status=0x0202))
    assert r.values["valve"] == "closed" and r.values["battery_low"] is True
    [r] = adapter.decode(
        TOPIC, reply(status=0x0005)
    )  # the standard's closed+battery means abnormal here
    assert r.values["valve"] == "abnormal" and r.values["battery_low"] is False
    [r] = cjt188.decode(TOPIC, reply(status=0x0202))  # the module keeps the standard layout
    assert r.values["valve"] == "abnormal" and r.values["battery_low"] is False


def test_layout_can_leave_out_flags_a_vendor_lacks() -> None:
    no_valve = cjt188.configure(valve_closed_bit=None, valve_abnormal_bit=None)
    [r] = no_valve.decode(TOPIC, reply())
    assert "valve" not in r.values and r.values["battery_low"] is True
    no_battery = cjt188.configure(battery_low_bit=None, valve_abnormal_bit=None)
    [r] = no_battery.decode(TOPIC, reply(status=0x0003))
    assert r.values["valve"] == "closed" and "battery_low" not in r.values


def test_configured_adapter_is_an_adapter_and_encodes_with_its_layout() -> None:
    adapter: Adapter = cjt188.configure(valve_closed_bit=4, battery_low_bit=15)
    assert adapter.name == "cjt188"
    configured = cjt188.configure(valve_closed_bit=4, battery_low_bit=15)
    reading = Reading(
        ADDRESS,
        Family.METER,
        Channel.TELEMETRY,
        "telemetry",
        REPLY_TIME_NS,
        Location("c1"),
        REPLY_VALUES,
    )
    topic, payload = configured.encode(reading)
    assert payload[-4] | payload[-3] << 8 == 1 << 4 | 1 << 15
    assert configured.decode(topic, payload)[0].values == REPLY_VALUES


@pytest.mark.parametrize(
    "options",
    [
        {"valve_bit": 0},
        {"valve_closed_bit": 16},
        {"battery_low_bit": -1},
        {"valve_closed_bit": True},
        {"valve_closed_bit": "0"},
        {"valve_closed_bit": 2},  # collides with battery_low_bit
        {"valve_abnormal_bit": 0},  # collides with valve_closed_bit
    ],
)
def test_bad_layout_options_refuse_to_start(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        cjt188.configure(**options)


def test_default_configure_equals_the_module() -> None:
    assert cjt188.configure().decode(TOPIC, frame(REPLY)) == cjt188.decode(TOPIC, frame(REPLY))


# --- the meter clock ----------------------------------------------------------------------------


def test_all_zero_clock_means_no_clock() -> None:
    [r] = cjt188.decode(TOPIC, reply(when=None))
    assert r.time_ns == RECEIVE_TIME and r.values == REPLY_VALUES


@pytest.mark.parametrize(
    "clock",
    [
        "15 30 08 30 02 24 20",  # 30 February
        "15 30 08 00 05 24 20",  # day 0
        "15 30 08 20 13 24 20",  # month 13
        "15 30 24 20 05 24 20",  # hour 24
        "15 60 08 20 05 24 20",  # minute 60
        "60 30 08 20 05 24 20",  # second 60
        "15 30 08 29 02 23 20",  # 2023 is no leap year
        "15 30 08 20 05 99 19",  # 1999: outside the sane window
        "15 30 08 20 05 00 21",  # 2100
        "01 00 00 00 00 00 00",  # not all zero, so a clock: year 0
    ],
)
def test_rejects_impossible_clocks(clock: str) -> None:
    payload = frame(REPLY)
    data = payload[11:-2]
    patched = data[:13] + bytes.fromhex(clock) + data[20:]
    assert reason(cjt188.build_frame(ADDRESS, 0x81, patched)) == "bad_time"


def test_leap_day_and_non_bcd_clock() -> None:
    data = frame(REPLY)[11:-2]
    leap = data[:13] + bytes.fromhex("59 59 23 29 02 24 20") + data[20:]
    [r] = cjt188.decode(TOPIC, cjt188.build_frame(ADDRESS, 0x81, leap))
    assert r.time_ns == int(datetime(2024, 2, 29, 23, 59, 59, tzinfo=CST).timestamp()) * 10**9
    junk = data[:13] + bytes.fromhex("FF FF FF FF FF FF FF") + data[20:]
    assert reason(cjt188.build_frame(ADDRESS, 0x81, junk)) == "bad_bcd"


# --- abnormal replies ---------------------------------------------------------------------------


def test_abnormal_reply_is_a_fault_event() -> None:
    payload = cjt188.encode_fault(ADDRESS, 0x0006)
    assert payload.hex(" ").upper() == "68 10 78 56 34 12 00 00 00 C1 03 00 06 00 56 16"
    [r] = cjt188.decode(TOPIC, payload)
    assert r.device_id == ADDRESS
    assert r.channel is Channel.EVENT and r.kind == "fault" and r.time_ns == RECEIVE_TIME
    assert r.values == {"meter_type": "water", "fault": "abnormal_reply", "fault_code": 6}
    assert_plain(r.values)


def test_abnormal_reply_variants() -> None:
    with_di = cjt188.build_frame(
        ADDRESS, 0xC1, bytes.fromhex("1F 90 00 34 12"), meter_type_code=0x30
    )
    [r] = cjt188.decode(TOPIC, with_di)
    assert r.values == {"meter_type": "gas", "fault": "abnormal_reply", "fault_code": 0x1234}
    di_only = cjt188.build_frame(ADDRESS, 0xC1, bytes.fromhex("90 1F 00"))
    [r] = cjt188.decode(TOPIC, di_only)
    assert r.values == {"meter_type": "water", "fault": "abnormal_reply"}
    [r] = cjt188.decode(TOPIC, cjt188.encode_fault(ADDRESS))
    assert r.values == {"meter_type": "water", "fault": "abnormal_reply"}
    for data in ("00", "00 01", "00 01 02 03", "12 34 00 01 02"):
        assert reason(cjt188.build_frame(ADDRESS, 0xC1, bytes.fromhex(data))) == "bad_length"


def test_fault_round_trip() -> None:
    reading = Reading(
        ADDRESS,
        Family.METER,
        Channel.EVENT,
        "fault",
        0,
        Location("c1"),
        {"meter_type": "gas", "fault": "abnormal_reply", "fault_code": 0xBEEF},
    )
    [back] = cjt188.decode(*cjt188.encode(reading))
    assert back == reading


# --- rejections -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "vector",
    [frame(REPLY), reply(di_order="2018"), cjt188.encode_fault(ADDRESS, 1)],
    ids=["reply", "reply-2018", "fault"],
)
def test_rejects_each_corruption_with_its_reason(vector: bytes) -> None:
    n = len(vector)
    for wake in (b"", WAKE):
        flipped_cs = vector[:-2] + bytes([vector[-2] ^ 0x5A]) + vector[-1:]
        assert reason(wake + flipped_cs) == "bad_checksum"
        assert reason(wake + vector[:-1] + b"\x61") == "bad_frame_end"
        assert reason(wake + vector[:-1]) == "bad_frame_end"
        assert reason(wake + vector[:-1] + frame(REPLY)) == "bad_frame_end"
        for cut in range(1, n - 1):
            assert reason(wake + vector[:cut]) == "truncated", cut
        for length in range(256):
            if length != vector[10]:
                changed = vector[:10] + bytes([length]) + vector[11:]
                assert reason(wake + changed) == "bad_length", length
    for i in range(11, n - 2):
        corrupt = bytearray(vector)
        corrupt[i] ^= 0x10
        assert reason(bytes(corrupt)) == "bad_checksum"


def test_rejects_addresses() -> None:
    assert reason(cjt188.encode_reply("AAAAAAAAAAAAAA", 1.0)) == "broadcast_address"
    for address in ("0000001234567A", "F0000012345678", "000000AA345678"):
        assert reason(cjt188.encode_reply(address, 1.0)) == "bad_bcd"


def test_rejects_non_bcd_quantities() -> None:
    data = bytearray(frame(REPLY)[11:-2])
    data[4] = 0x3A
    assert reason(cjt188.build_frame(ADDRESS, 0x81, bytes(data))) == "bad_bcd"


def test_rejects_unknown_data_identifier_naming_it() -> None:
    data = bytes.fromhex("90 2F") + frame(REPLY)[13:-2]
    with pytest.raises(RejectedInput) as info:
        cjt188.decode(TOPIC, cjt188.build_frame(ADDRESS, 0x81, data))
    assert info.value.reason == "unknown_data_id" and "902F" in info.value.detail
    assert ADDRESS not in str(info.value) and "12345678" not in str(info.value)


def test_length_must_match_901f() -> None:
    data = frame(REPLY)[11:-2]
    assert reason(cjt188.build_frame(ADDRESS, 0x81, data[:-1])) == "bad_length"
    assert reason(cjt188.build_frame(ADDRESS, 0x81, data + b"\x00")) == "bad_length"
    assert reason(cjt188.build_frame(ADDRESS, 0x81, b"\x90")) == "bad_length"


@pytest.mark.parametrize("control", [0x83, 0x84, 0x95, 0xA3, 0xC4])
def test_rejects_replies_other_than_read_data(control: int) -> None:
    assert reason(cjt188.build_frame(ADDRESS, control, b"")) == "unsupported_control"


def test_rejects_garbage_and_bad_hex() -> None:
    assert reason(b"") == "no_frame"
    assert reason(WAKE) == "no_frame"
    assert reason(b"\x00" + frame(REPLY)) == "no_frame"
    assert reason(frame(REPLY) + b"\x17") == "garbage"
    assert reason(REPLY.encode()[:-1]) == "bad_hex"
    assert reason(b"not a frame") == "no_frame"


def test_rejects_oversize_payload() -> None:
    assert reason(b"F" * (MAX_PAYLOAD_BYTES + 1)) == "oversize"


@pytest.mark.parametrize(
    "topic",
    [
        "gridgate/raw/c1/cjt188",
        "gridgate/raw/c1/dlt645/conc01",
        "gridgate/raw/c1/cjt188/conc01/x",
        "gridgate/raw/c1/cjt188/conc 01",
        "other/raw/c1/cjt188/conc01",
        "gridgate/raw/+/cjt188/conc01",
    ],
)
def test_rejects_bad_topics(topic: str) -> None:
    assert reason(frame(REPLY), topic) == "bad_topic"


def test_topic_check_is_per_protocol() -> None:
    from adapters import dlt645

    cjt188.decode(TOPIC, frame(REPLY))  # cached as a valid cjt188 topic …
    with pytest.raises(RejectedInput) as info:  # … which is still no dlt645 topic
        dlt645.decode(TOPIC, frame(REPLY))
    assert info.value.reason == "bad_topic"


def test_module_is_an_adapter() -> None:
    adapter: Adapter = cjt188
    assert adapter.name == "cjt188"
    assert cjt188.SUBSCRIPTION == "gridgate/raw/+/cjt188/+"
    assert cjt188.topic_for("c1", "conc01") == TOPIC


@pytest.mark.parametrize(
    ("values", "kwargs"),
    [
        ({"meter_type": "water"}, {}),  # no volume
        ({"water_m3": 1.0, "voltage_v": 220.0}, {}),
        ({"meter_type": "gas", "water_m3": 1.0}, {}),
        ({"water_m3": 1.0}, {"meter_type_code": 0x30}),
        ({"water_m3": 1.0}, {"di_order": "2010"}),
        ({"water_m3": 1_000_000.0}, {}),
        ({"water_m3": -0.5}, {}),
        ({"meter_type": "heat", "energy_kwh": 1.0, "settlement_m3": 1.0}, {}),
        ({"water_m3": 1.0, "valve": "half"}, {}),
        ({"meter_type": "electricity", "energy_kwh": 1.0}, {}),
    ],
)
def test_encode_refuses_what_the_protocol_cannot_carry(
    values: dict[str, Any], kwargs: dict[str, Any]
) -> None:
    reading = Reading(
        ADDRESS, Family.METER, Channel.TELEMETRY, "telemetry", 0, Location("c1"), values
    )
    with pytest.raises(ValueError):
        cjt188.encode(reading, **kwargs)


def test_encode_needs_a_14_digit_id_and_a_sane_clock() -> None:
    reading = Reading(
        "123", Family.METER, Channel.TELEMETRY, "telemetry", 0, Location("c1"), {"water_m3": 1.0}
    )
    with pytest.raises(ValueError):
        cjt188.encode(reading)
    with pytest.raises(ValueError):
        cjt188.encode_reply(ADDRESS, 1.0, when=datetime(1999, 12, 31))
    no_valve = cjt188.configure(valve_closed_bit=None, valve_abnormal_bit=None)
    with pytest.raises(ValueError):
        no_valve.encode(
            Reading(
                ADDRESS,
                Family.METER,
                Channel.TELEMETRY,
                "telemetry",
                0,
                Location("c1"),
                {"water_m3": 1.0, "valve": "closed"},
            )
        )


# --- round trips ----------------------------------------------------------------------------

addresses = st.text("0123456789", min_size=14, max_size=14)
hundredths = st.integers(0, 99_999_999).map(lambda k: k / 100)
# whole seconds from 2000-01-01 to 2099-12-31 (CST), or no clock at all
times = st.one_of(
    st.just(RECEIVE_TIME),
    st.integers(946_656_000, 4_102_415_999).map(lambda s: s * 1_000_000_000),
)


@st.composite
def meter_readings(draw: st.DrawFn) -> tuple[Reading, int]:
    meter_type, code = draw(
        st.sampled_from(
            [("water", c) for c in (0x10, 0x11, 0x12, 0x13)]
            + [("gas", 0x30)]
            + [("heat", c) for c in (0x20, 0x21, 0x22)]
        )
    )
    values: dict[str, Any] = {"meter_type": meter_type}
    if meter_type == "heat":
        values["energy_kwh"] = draw(hundredths)
    else:
        values["water_m3" if meter_type == "water" else "gas_m3"] = draw(hundredths)
        values["settlement_m3"] = draw(hundredths)
    values["valve"] = draw(st.sampled_from(["open", "closed", "abnormal"]))
    values["battery_low"] = draw(st.booleans())
    community = draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,10}", fullmatch=True))
    reading = Reading(
        draw(addresses),
        Family.METER,
        Channel.TELEMETRY,
        "telemetry",
        draw(times),
        Location(community),
        values,
    )
    return reading, code


@settings(max_examples=500, deadline=None)
@given(meter_readings(), st.sampled_from(["2004", "2018"]))
def test_encode_then_decode_gives_the_reading_back(
    case: tuple[Reading, int], di_order: str
) -> None:
    reading, code = case
    MeterData.model_validate(reading.values)
    topic, payload = cjt188.encode(reading, meter_type_code=code, di_order=di_order)
    [back] = cjt188.decode(topic, payload)
    assert back == reading
    assert_plain(back.values)


@settings(max_examples=300, deadline=None)
@given(addresses, hundredths, hundredths, st.integers(0, 0xFFFF), st.integers(0, 4))
def test_low_level_reply_round_trip(
    address: str, current: float, settlement: float, status: int, wake: int
) -> None:
    [r] = cjt188.decode(
        TOPIC, cjt188.encode_reply(address, current, settlement, None, status, wake=wake)
    )
    assert r.device_id == address
    assert r.values["water_m3"] == current and r.values["settlement_m3"] == settlement
    assert r.values["battery_low"] is bool(status & 4)


# --- fuzzing: whatever arrives, only RejectedInput comes out ------------------------------------

VALID_FRAMES = [
    frame(REPLY),
    reply(di_order="2018", meter_type_code=0x30),
    reply(meter_type_code=0x20, unit=cjt188.GJ),
    cjt188.encode_fault(ADDRESS, 7),
]


def decode_or_reject(payload: bytes, topic: str = TOPIC) -> None:
    try:
        readings = cjt188.decode(topic, payload)
    except RejectedInput as exc:
        assert exc.reason and isinstance(exc.detail, str)
        return
    assert readings
    for r in readings:
        assert isinstance(r, Reading)
        assert_plain(r.values)
        MeterData.model_validate(r.values)


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID_FRAMES)))
    if draw(st.booleans()):
        data = bytearray(WAKE) + data
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "append"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data.insert(i, draw(st.integers(0, 255)))
        elif op == "delete":
            del data[i]
        elif op == "truncate":
            del data[i:]
        else:
            data += draw(st.sampled_from([*VALID_FRAMES, b"\x16", b"\x68", b"\xfe"]))
    return bytes(data)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(payload: bytes) -> None:
    decode_or_reject(payload)
    decode_or_reject(b"\x68" + payload)


@settings(max_examples=2000, deadline=None)
@given(mutations())
def test_fuzz_mutated_vectors(payload: bytes) -> None:
    decode_or_reject(payload)
    decode_or_reject(payload.hex().encode())


@settings(max_examples=1000, deadline=None)
@given(st.binary(min_size=22, max_size=22), st.sampled_from([0x10, 0x20, 0x30, 0x13]))
def test_fuzz_data_of_well_framed_replies(data: bytes, code: int) -> None:
    """Checksums kept valid, so the fuzzing reaches the field decoders."""
    decode_or_reject(
        cjt188.build_frame(ADDRESS, 0x81, b"\x90\x1f" + data[2:], meter_type_code=code)
    )


@settings(max_examples=1000, deadline=None)
@given(st.text("0123456789abcdefABCDEF \n\t", max_size=200))
def test_fuzz_hex_text(text: str) -> None:
    decode_or_reject(text.encode())
    decode_or_reject(("68" + text).encode())


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_topics(topic: str) -> None:
    decode_or_reject(frame(REPLY), topic)
