"""DL/T 645-2007 adapter: DOMAIN.md test vectors, every corruption, round trips and fuzzing."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters import dlt645
from adapters.base import MAX_PAYLOAD_BYTES, RECEIVE_TIME, Adapter
from devices.errors import RejectedInput
from devices.families import Channel, Family
from devices.location import Location
from devices.models import MeterData
from devices.reading import Reading

TOPIC = "gridgate/raw/c1/dlt645/conc01"
ADDRESS = "123456789012"
WAKE = bytes.fromhex("FE FE FE FE")

ENERGY_REQUEST = "68 12 90 78 56 34 12 68 11 04 33 33 34 33 68 16"
VOLTAGE_REQUEST = "68 12 90 78 56 34 12 68 11 04 33 34 34 35 6B 16"
ENERGY = "68 12 90 78 56 34 12 68 91 08 33 33 34 33 AB 89 67 45 CC 16"
VOLTAGE = "68 12 90 78 56 34 12 68 91 06 33 34 34 35 34 55 76 16"
CURRENT = "68 12 90 78 56 34 12 68 91 07 33 34 35 35 56 84 33 FC 16"
POWER = "68 12 90 78 56 34 12 68 91 07 33 33 36 35 78 56 34 F1 16"
ABNORMAL = "68 12 90 78 56 34 12 68 D1 01 35 8D 16"

REPLIES: list[tuple[str, str, dict[str, float]]] = [
    (ENERGY, "00010000", {"energy_kwh": 123456.78}),
    (VOLTAGE, "02010100", {"voltage_v": 220.1}),
    (CURRENT, "02020100", {"current_a": 5.123}),
    (POWER, "02030000", {"power_kw": 1.2345}),
]
VALID_FRAMES = [bytes.fromhex(v) for v, _, _ in REPLIES] + [bytes.fromhex(ABNORMAL)]


def frame(text: str) -> bytes:
    return bytes.fromhex(text)


def reason(payload: bytes, topic: str = TOPIC) -> str:
    with pytest.raises(RejectedInput) as info:
        dlt645.decode(topic, payload)
    return info.value.reason


def assert_plain(values: Any) -> None:
    for value in values.values():
        assert type(value) in (float, int, bool, str), type(value)
        assert not isinstance(value, Decimal)


# --- the test vectors -----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "di", "expected"), REPLIES)
def test_decodes_each_reply_vector_exactly(text: str, di: str, expected: dict[str, float]) -> None:
    [r] = dlt645.decode(TOPIC, frame(text))
    assert r.device_id == ADDRESS
    assert r.family is Family.METER and r.channel is Channel.TELEMETRY and r.kind == "telemetry"
    assert r.time_ns == RECEIVE_TIME
    assert r.location == Location("c1")
    assert r.values == {"meter_type": "electricity", **expected}
    assert_plain(r.values)
    MeterData.model_validate(r.values)


@pytest.mark.parametrize(("text", "di", "expected"), REPLIES)
@pytest.mark.parametrize(
    "form",
    [
        lambda t: WAKE + frame(t),
        lambda t: b"\xfe" + frame(t),
        lambda t: t.encode(),
        lambda t: t.replace(" ", "").encode(),
        lambda t: t.lower().encode(),
        lambda t: ("FE FE FE FE " + t).encode(),
        lambda t: ("\n".join(t.split(" ")) + "\r\n").encode(),
        lambda t: ("  " + t.lower().replace(" ", "") + "\n").encode(),
    ],
    ids=["wake4", "wake1", "hex", "hex-nospace", "hex-lower", "hex-wake", "hex-lines", "hex-pad"],
)
def test_accepts_every_payload_form(
    text: str, di: str, expected: dict[str, float], form: Any
) -> None:
    [r] = dlt645.decode(TOPIC, form(text))
    assert r.device_id == ADDRESS
    assert r.values == {"meter_type": "electricity", **expected}


def test_abnormal_reply_is_a_fault_event() -> None:
    for payload in (frame(ABNORMAL), WAKE + frame(ABNORMAL), ABNORMAL.lower().encode()):
        [r] = dlt645.decode(TOPIC, payload)
        assert r.device_id == ADDRESS
        assert r.family is Family.METER and r.channel is Channel.EVENT and r.kind == "fault"
        assert r.time_ns == RECEIVE_TIME
        assert r.values == {"meter_type": "electricity", "fault_code": 2, "fault": "no_such_data"}
        assert_plain(r.values)


@pytest.mark.parametrize(
    ("bits", "fault"),
    [
        (0x01, "other"),
        (0x02, "no_such_data"),
        (0x04, "unauthorised"),
        (0x08, "baud_rate"),
        (0x10, "yearly_zones"),
        (0x20, "daily_periods"),
        (0x40, "tariffs"),
        (0x06, "no_such_data+unauthorised"),
        (0x00, "unspecified"),
    ],
)
def test_fault_names_every_error_bit(bits: int, fault: str) -> None:
    [r] = dlt645.decode(TOPIC, dlt645.encode_fault(ADDRESS, bits))
    assert r.values["fault"] == fault and r.values["fault_code"] == bits


def test_fault_name_always_fits_the_model() -> None:
    for bits in range(256):
        MeterData.model_validate({"fault": dlt645.fault_name(bits), "fault_code": bits})


def test_several_frames_in_one_payload_decode_in_order() -> None:
    texts = [ENERGY, VOLTAGE, ABNORMAL, CURRENT, POWER]
    expected = [
        {"energy_kwh": 123456.78},
        {"voltage_v": 220.1},
        {"fault_code": 2, "fault": "no_such_data"},
        {"current_a": 5.123},
        {"power_kw": 1.2345},
    ]
    binary = b"".join(WAKE + frame(t) for t in texts)
    hex_text = "\n".join(texts).encode()
    packed = "".join(t.replace(" ", "") for t in texts).lower().encode()
    for payload in (binary, hex_text, packed, b"".join(frame(t) for t in texts)):
        readings = dlt645.decode(TOPIC, payload)
        assert [
            {k: v for k, v in r.values.items() if k != "meter_type"} for r in readings
        ] == expected


def test_frames_of_different_meters_keep_their_ids() -> None:
    payload = dlt645.encode_reading("000000000001", "00010000", 1.5) + dlt645.encode_reading(
        "999999999998", "02010100", 230.0, wake=2
    )
    assert [r.device_id for r in dlt645.decode(TOPIC, payload)] == ["000000000001", "999999999998"]


def test_voltage_block_fills_three_phases() -> None:
    payload = dlt645.encode_reading(ADDRESS, "0201FF00", [220.1, 219.9, 0.0])
    [r] = dlt645.decode(TOPIC, payload)
    assert r.values == {
        "meter_type": "electricity",
        "voltage_v": 220.1,
        "voltage_b_v": 219.9,
        "voltage_c_v": 0.0,
    }


def test_negative_current_and_power_use_the_sign_bit() -> None:
    current = dlt645.encode_reading(ADDRESS, "02020100", -5.123)
    assert current[-3] == (0x00 | 0x80) + 0x33  # top byte 00 with the sign bit, +33h
    power = dlt645.encode_reading(ADDRESS, "02030000", -79.9999)
    first, second = dlt645.decode(TOPIC, current + power)
    assert first.values["current_a"] == -5.123
    assert second.values["power_kw"] == -79.9999
    [zero] = dlt645.decode(
        TOPIC, dlt645.build_frame(ADDRESS, 0x91, bytes.fromhex("00010202 000080"))
    )
    assert math.copysign(1.0, zero.values["current_a"]) == 1.0  # "minus zero" is plain zero


# --- encoders reproduce the vectors byte for byte ---------------------------------------------


def test_encoders_produce_the_vectors_byte_exactly() -> None:
    assert dlt645.encode_request(ADDRESS, "00010000") == frame(ENERGY_REQUEST)
    assert dlt645.encode_request(ADDRESS, "02010100") == frame(VOLTAGE_REQUEST)
    assert dlt645.encode_reading(ADDRESS, "00010000", 123456.78) == frame(ENERGY)
    assert dlt645.encode_reading(ADDRESS, "02010100", 220.1) == frame(VOLTAGE)
    assert dlt645.encode_reading(ADDRESS, "02020100", 5.123) == frame(CURRENT)
    assert dlt645.encode_reading(ADDRESS, "02030000", 1.2345) == frame(POWER)
    assert dlt645.encode_fault(ADDRESS, 0x02) == frame(ABNORMAL)
    assert dlt645.encode_reading(ADDRESS, "00010000", 123456.78, wake=4) == WAKE + frame(ENERGY)
    more = dlt645.encode_reading(ADDRESS, "00010000", 123456.78, control=dlt645.REPLY_MORE)
    assert more[8] == 0xB1
    [r] = dlt645.decode(TOPIC, more)  # "more follows" is still a normal reply
    assert r.values["energy_kwh"] == 123456.78


def test_encode_reading_gives_topic_and_one_frame_per_field() -> None:
    reading = Reading(
        device_id=ADDRESS,
        family=Family.METER,
        channel=Channel.TELEMETRY,
        kind="telemetry",
        time_ns=RECEIVE_TIME,
        location=Location("c1"),
        values={
            "meter_type": "electricity",
            "energy_kwh": 123456.78,
            "voltage_v": 220.1,
            "current_a": 5.123,
            "power_kw": 1.2345,
        },
    )
    topic, payload = dlt645.encode(reading, concentrator="conc-7")
    assert topic == "gridgate/raw/c1/dlt645/conc-7"
    assert payload == frame(ENERGY) + frame(VOLTAGE) + frame(CURRENT) + frame(POWER)
    assert [r.values for r in dlt645.decode(topic, payload)] == [
        {"meter_type": "electricity", **expected} for _, _, expected in REPLIES
    ]


def test_encode_a_fault_event() -> None:
    reading = Reading(
        ADDRESS,
        Family.METER,
        Channel.EVENT,
        "fault",
        0,
        Location("c1"),
        {"fault_code": 2, "fault": "no_such_data"},
    )
    assert dlt645.encode(reading) == (TOPIC, frame(ABNORMAL))


@pytest.mark.parametrize(
    ("device_id", "values"),
    [
        ("12345678901", {"energy_kwh": 1.0}),  # 11 digits
        ("12345678901A", {"energy_kwh": 1.0}),
        (ADDRESS, {"water_m3": 1.0}),  # not carried by DL/T 645
        (ADDRESS, {"meter_type": "water", "energy_kwh": 1.0}),
        (ADDRESS, {"energy_kwh": 1_000_000.0}),  # beyond XXXXXX.XX
        (ADDRESS, {"energy_kwh": -1.0}),
        (ADDRESS, {"energy_kwh": float("nan")}),
        (ADDRESS, {"current_a": 800.0}),  # beyond the sign bit
        (ADDRESS, {"voltage_b_v": 220.0}),  # block needs all three phases
        (ADDRESS, {"meter_type": "electricity"}),  # nothing to send
    ],
)
def test_encode_refuses_what_the_protocol_cannot_carry(
    device_id: str, values: dict[str, Any]
) -> None:
    reading = Reading(
        device_id, Family.METER, Channel.TELEMETRY, "telemetry", 0, Location("c1"), values
    )
    with pytest.raises(ValueError):
        dlt645.encode(reading)


def test_encoder_argument_errors() -> None:
    with pytest.raises(ValueError):
        dlt645.encode_reading(ADDRESS, "04000101", 1.0)  # a clock is no reading: encode_clock
    with pytest.raises(ValueError):
        dlt645.encode_reading(ADDRESS, "0201FF00", [1.0, 2.0])
    with pytest.raises(ValueError):
        dlt645.encode_request(ADDRESS, "0001")
    with pytest.raises(ValueError):
        dlt645.encode_fault(ADDRESS, 256)
    with pytest.raises(ValueError):
        dlt645.topic_for("c/1", "conc01")


# --- rejections -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "vector", VALID_FRAMES, ids=["energy", "voltage", "current", "power", "fault"]
)
def test_rejects_each_corruption_with_its_reason(vector: bytes) -> None:
    n = len(vector)
    for wake in (b"", WAKE):
        flipped_cs = vector[:-2] + bytes([vector[-2] ^ 0xFF]) + vector[-1:]
        assert reason(wake + flipped_cs) == "bad_checksum"
        assert reason(wake + vector[:-1] + b"\x00") == "bad_frame_end"
        assert reason(wake + vector[:-1]) == "bad_frame_end"  # complete but for its 16
        assert reason(wake + vector[:-1] + frame(ENERGY)) == "bad_frame_end"
        for cut in range(1, n - 1):
            assert reason(wake + vector[:cut]) == "truncated", cut
        for length in range(256):
            if length != vector[9]:
                changed = vector[:9] + bytes([length]) + vector[10:]
                assert reason(wake + changed) == "bad_length", length
    assert reason(b"") == "no_frame"
    assert reason(WAKE) == "no_frame"


def test_every_flipped_data_byte_is_caught() -> None:
    vector = frame(ENERGY)
    for i in range(10, len(vector) - 2):
        for bit in range(8):
            corrupt = bytearray(vector)
            corrupt[i] ^= 1 << bit
            assert reason(bytes(corrupt)) == "bad_checksum"


def test_rejects_request_frames() -> None:
    for text in (ENERGY_REQUEST, VOLTAGE_REQUEST):
        assert reason(frame(text)) == "not_a_reply"
        assert reason(text.encode()) == "not_a_reply"
    # a request inside a batch of replies rejects the batch: it is one message
    assert reason(frame(ENERGY) + frame(ENERGY_REQUEST)) == "not_a_reply"


@pytest.mark.parametrize("address", ["AAAAAAAAAAAA", "999999999999"])
def test_rejects_broadcast_address(address: str) -> None:
    assert reason(dlt645.encode_reading(address, "00010000", 1.0)) == "broadcast_address"


@pytest.mark.parametrize("address", ["12345678901A", "F23456789012", "1234567AA012"])
def test_rejects_non_bcd_address(address: str) -> None:
    assert reason(dlt645.encode_reading(address, "00010000", 1.0)) == "bad_bcd"


def test_rejects_non_bcd_values() -> None:
    data = bytes.fromhex("00000100") + bytes.fromhex("7856341A")  # DI0..DI3, then a nibble A
    assert reason(dlt645.build_frame(ADDRESS, 0x91, data)) == "bad_bcd"
    sign_and_junk = bytes.fromhex("00010202") + bytes.fromhex("23518A")  # A under the sign bit
    assert reason(dlt645.build_frame(ADDRESS, 0x91, sign_and_junk)) == "bad_bcd"


def test_unknown_data_identifier_is_named_in_the_detail() -> None:
    # 04000103 (demand period) sits next to the clock identifiers but is not supported
    payload = dlt645.build_frame(ADDRESS, 0x91, bytes.fromhex("03010004") + b"\x15")
    with pytest.raises(RejectedInput) as info:
        dlt645.decode(TOPIC, payload)
    assert info.value.reason == "unknown_data_id"
    assert "04000103" in info.value.detail
    assert ADDRESS not in str(info.value)


def test_length_must_match_the_data_identifier() -> None:
    short = dlt645.build_frame(ADDRESS, 0x91, bytes.fromhex("00000100") + b"\x78\x56\x34")
    assert reason(short) == "bad_length"
    long = dlt645.build_frame(ADDRESS, 0x91, bytes.fromhex("00010102") + b"\x01\x22\x00")
    assert reason(long) == "bad_length"
    assert reason(dlt645.build_frame(ADDRESS, 0x91, b"\x00\x00")) == "bad_length"
    assert reason(dlt645.build_frame(ADDRESS, 0xD1, b"\x02\x00")) == "bad_length"
    assert reason(dlt645.build_frame(ADDRESS, 0xD1, b"")) == "bad_length"


@pytest.mark.parametrize("control", [0x93, 0x94, 0x88, 0xB2, 0xD4, 0x9C])
def test_rejects_replies_other_than_read(control: int) -> None:
    assert reason(dlt645.build_frame(ADDRESS, control, b"")) == "unsupported_control"


def test_rejects_garbage_and_bad_hex() -> None:
    assert reason(b"hello world") in {"no_frame", "truncated"}
    assert reason(b"\x00\x01\x02") == "no_frame"
    assert reason(b'{"v": 1}') == "no_frame"
    assert reason(frame(ENERGY) + b"\x00") == "garbage"
    assert reason(frame(ENERGY) + b"\xfe\xfe\x12") == "garbage"
    assert reason(b"68 12 9") == "bad_hex"
    assert reason(b"0x68 0x12") == "no_frame"  # not hex text: read as binary, starts with '0'
    missing_second_start = bytearray(frame(ENERGY))
    missing_second_start[7] = 0x00
    assert reason(bytes(missing_second_start)) == "no_frame"


def test_rejects_oversize_payload() -> None:
    assert reason(WAKE * (MAX_PAYLOAD_BYTES // 4 + 1)) == "oversize"


@pytest.mark.parametrize(
    "topic",
    [
        "gridgate/raw/c1/dlt645",
        "gridgate/raw/c1/dlt645/conc01/extra",
        "gridgate/raw/c1/cjt188/conc01",
        "gridgate/v1/c1/dlt645/conc01",
        "gridgate/raw/c 1/dlt645/conc01",
        "gridgate/raw/c1/dlt645/",
        "gridgate/raw//dlt645/conc01",
        "",
    ],
)
def test_rejects_bad_topics(topic: str) -> None:
    assert reason(frame(ENERGY), topic) == "bad_topic"


def test_details_never_carry_the_address() -> None:
    corruptions = [frame(ENERGY)[:-2] + b"\x00\x16", frame(ENERGY)[:12], frame(ENERGY_REQUEST)]
    for payload in corruptions:
        with pytest.raises(RejectedInput) as info:
            dlt645.decode(TOPIC, payload)
        assert ADDRESS not in str(info.value) and "1290785634" not in str(info.value)


def test_module_is_an_adapter() -> None:
    adapter: Adapter = dlt645
    assert adapter.name == "dlt645"
    assert dlt645.SUBSCRIPTION == "gridgate/raw/+/dlt645/+"
    assert dlt645.topic_for("c1", "conc01") == TOPIC


# --- the meter clock (04000101 date and week day, 04000102 time) -----------------------------

# 2026-12-04 14:30:00 China Standard Time, a Friday (WW = 05), for meter 123456789012.
# Built by hand: DI0..DI3 then the value low byte first, every DATA byte +33h.
#   date: DI 04000101 → 01 01 00 04 → 34 34 33 37; YYMMDDWW 26 12 04 05 → 05 04 12 26 → 38 37 45 59
#   time: DI 04000102 → 02 01 00 04 → 35 34 33 37; hhmmss 14 30 00 → 00 30 14 → 33 63 47
DATE = "68 12 90 78 56 34 12 68 91 08 34 34 33 37 38 37 45 59 FE 16"
TIME = "68 12 90 78 56 34 12 68 91 07 35 34 33 37 33 63 47 CE 16"
CLOCK = DATE + " " + TIME
CLOCK_WHEN = datetime(2026, 12, 4, 14, 30, 0, tzinfo=timezone(timedelta(hours=8)))
CLOCK_NS = 1_796_365_800 * 1_000_000_000  # 2026-12-04T06:30:00Z
OTHER = "000000000042"


def plain_frame(address: str, control: int, data: bytes) -> bytes:
    """A reply built independently of the encoder: the test's own +33h and checksum."""
    body = (
        b"\x68"
        + bytes.fromhex(address)[::-1]
        + bytes([0x68, control, len(data)])
        + bytes((b + 0x33) & 0xFF for b in data)
    )
    return body + bytes([sum(body) & 0xFF, 0x16])


def date_frame(yymmddww: str, address: str = ADDRESS) -> bytes:
    """A 04000101 reply for the date printed high byte first (``26120405``)."""
    return plain_frame(
        address, 0x91, bytes([0x01, 0x01, 0x00, 0x04]) + bytes.fromhex(yymmddww)[::-1]
    )


def time_frame(hhmmss: str, address: str = ADDRESS) -> bytes:
    """A 04000102 reply for the time printed high byte first (``143000``)."""
    return plain_frame(address, 0x91, bytes([0x02, 0x01, 0x00, 0x04]) + bytes.fromhex(hhmmss)[::-1])


def test_clock_vectors_are_built_as_the_standard_says() -> None:
    date, time_ = frame(DATE), frame(TIME)
    for f, length in ((date, 8), (time_, 7)):
        assert f[:8] == bytes([0x68, 0x12, 0x90, 0x78, 0x56, 0x34, 0x12, 0x68])
        assert f[8] == 0x91 and f[9] == length and f[-1] == 0x16
        assert f[-2] == sum(f[:-2]) % 256
    assert list(date[10:14]) == [0x01 + 0x33, 0x01 + 0x33, 0x00 + 0x33, 0x04 + 0x33]
    assert list(date[14:18]) == [0x05 + 0x33, 0x04 + 0x33, 0x12 + 0x33, 0x26 + 0x33]  # WW DD MM YY
    assert list(time_[10:14]) == [0x02 + 0x33, 0x01 + 0x33, 0x00 + 0x33, 0x04 + 0x33]
    assert list(time_[14:17]) == [0x00 + 0x33, 0x30 + 0x33, 0x14 + 0x33]  # ss mm hh
    assert date == date_frame("26120405") and time_ == time_frame("143000")
    assert int(CLOCK_WHEN.timestamp()) * 1_000_000_000 == CLOCK_NS
    assert CLOCK_WHEN.isoweekday() % 7 == 5


def test_encode_clock_produces_the_vectors_byte_exactly() -> None:
    assert dlt645.encode_clock(ADDRESS, CLOCK_WHEN) == frame(CLOCK)
    assert dlt645.encode_clock(ADDRESS, CLOCK_WHEN.replace(tzinfo=None)) == frame(CLOCK)  # CST
    assert dlt645.encode_clock(ADDRESS, CLOCK_WHEN.astimezone(UTC)) == frame(CLOCK)
    assert dlt645.encode_clock(ADDRESS, CLOCK_WHEN, wake=4) == WAKE + frame(DATE) + WAKE + frame(
        TIME
    )
    sunday = dlt645.encode_clock(ADDRESS, datetime(2026, 12, 6, 23, 59, 59))
    assert sunday == date_frame("26120600") + time_frame("235959")
    with pytest.raises(ValueError):
        dlt645.encode_clock(ADDRESS, datetime(1999, 12, 31, 23, 59, 59))
    with pytest.raises(ValueError):
        dlt645.encode_clock(ADDRESS, datetime(2100, 1, 1))


@pytest.mark.parametrize("order", ["clock-last", "clock-first", "clock-between"])
def test_clock_stamps_every_reading_of_its_meter(order: str) -> None:
    data = [frame(ENERGY), frame(VOLTAGE), frame(ABNORMAL), frame(CURRENT), frame(POWER)]
    clock = [frame(DATE), frame(TIME)]
    parts = {
        "clock-last": [*data, *clock],
        "clock-first": [clock[1], clock[0], *data],
        "clock-between": [data[0], clock[0], *data[1:3], clock[1], *data[3:]],
    }[order]
    for payload in (
        b"".join(parts),
        b"".join(WAKE + p for p in parts),
        b" ".join(p.hex().encode() for p in parts),
    ):
        readings = dlt645.decode(TOPIC, payload)
        assert len(readings) == 5  # the clock frames are no readings
        assert {r.time_ns for r in readings} == {CLOCK_NS}
        assert [r.kind for r in readings] == [
            "telemetry",
            "telemetry",
            "fault",
            "telemetry",
            "telemetry",
        ]
        assert readings[0].values == {"meter_type": "electricity", "energy_kwh": 123456.78}


def test_clock_of_one_meter_leaves_the_other_at_receive_time() -> None:
    other = dlt645.encode_reading(OTHER, "00010000", 1.5)
    payload = frame(ENERGY) + other + frame(DATE) + frame(TIME)
    mine, theirs = dlt645.decode(TOPIC, payload)
    assert (mine.device_id, mine.time_ns) == (ADDRESS, CLOCK_NS)
    assert (theirs.device_id, theirs.time_ns) == (OTHER, RECEIVE_TIME)


def test_two_meters_keep_their_own_clocks() -> None:
    payload = (
        frame(ENERGY)
        + dlt645.encode_reading(OTHER, "00010000", 1.5)
        + time_frame("000001", OTHER)
        + frame(CLOCK)
        + date_frame("26120300", OTHER)  # a wrong week day (it was a Thursday) is accepted
    )
    mine, theirs = dlt645.decode(TOPIC, payload)
    assert mine.time_ns == CLOCK_NS
    assert theirs.time_ns == int(datetime(2026, 12, 2, 16, 0, 1, tzinfo=UTC).timestamp()) * 10**9


def test_any_week_day_0_to_6_is_accepted() -> None:
    for week in range(7):
        [r] = dlt645.decode(TOPIC, frame(ENERGY) + date_frame(f"261204{week:02d}") + frame(TIME))
        assert r.time_ns == CLOCK_NS


def test_a_repeated_identical_clock_is_accepted() -> None:
    [r] = dlt645.decode(TOPIC, frame(ENERGY) + frame(CLOCK) + frame(CLOCK))
    assert r.time_ns == CLOCK_NS


def test_clock_edges_decode() -> None:
    cases = [
        ("00010106", "000000", datetime(2000, 1, 1, 0, 0, 0)),
        ("99123104", "235959", datetime(2099, 12, 31, 23, 59, 59)),
        ("28022902", "120000", datetime(2028, 2, 29, 12, 0, 0)),  # a leap day
    ]
    for day, clock, when in cases:
        [r] = dlt645.decode(TOPIC, frame(ENERGY) + date_frame(day) + time_frame(clock))
        expected = when.replace(tzinfo=timezone(timedelta(hours=8)))
        assert r.time_ns == int(expected.timestamp()) * 1_000_000_000


@pytest.mark.parametrize(
    ("day", "clock"),
    [
        ("2612044A", "143000"),  # week day nibble above 9
        ("26120407", "143000"),  # week day 7
        ("26120499", "143000"),
        ("261A0405", "143000"),  # month 1A
        ("26130405", "143000"),  # month 13
        ("26000405", "143000"),  # month 0
        ("26120005", "143000"),  # day 0
        ("26023001", "143000"),  # 30 February
        ("27022901", "143000"),  # 29 February of a common year
        ("F6120405", "143000"),
        ("26120405", "240000"),
        ("26120405", "146000"),
        ("26120405", "143060"),
        ("26120405", "1430A0"),
        ("26120405", "FF3000"),
    ],
)
def test_rejects_an_impossible_or_non_bcd_clock(day: str, clock: str) -> None:
    payload = frame(ENERGY) + date_frame(day) + time_frame(clock)
    with pytest.raises(RejectedInput) as info:
        dlt645.decode(TOPIC, payload)
    assert info.value.reason == "bad_time"
    assert ADDRESS not in str(info.value)


def test_rejects_half_a_clock_and_says_which_half_is_missing() -> None:
    with pytest.raises(RejectedInput) as info:
        dlt645.decode(TOPIC, frame(ENERGY) + frame(DATE))
    assert info.value.reason == "incomplete_clock"
    assert "not its time (04000102)" in info.value.detail
    with pytest.raises(RejectedInput) as info:
        dlt645.decode(TOPIC, frame(TIME) + frame(ENERGY))
    assert info.value.reason == "incomplete_clock"
    assert "not its date (04000101)" in info.value.detail
    # the other meter's complete clock does not complete this one's
    assert reason(frame(ENERGY) + frame(DATE) + time_frame("143000", OTHER)) == "incomplete_clock"
    # nor does half a clock of a meter without data pass
    assert (
        reason(frame(ENERGY) + frame(CLOCK) + date_frame("26120405", OTHER)) == "incomplete_clock"
    )


def test_rejects_conflicting_clocks() -> None:
    later = time_frame("143001")
    assert reason(frame(ENERGY) + frame(CLOCK) + later) == "conflicting_clock"
    assert reason(frame(ENERGY) + frame(CLOCK) + date_frame("26120505")) == "conflicting_clock"
    with pytest.raises(RejectedInput) as info:
        dlt645.decode(TOPIC, later + frame(CLOCK) + frame(ENERGY))
    assert "04000102" in info.value.detail and ADDRESS not in str(info.value)


def test_a_message_with_only_clocks_is_empty() -> None:
    assert reason(frame(CLOCK)) == "empty"
    assert reason(WAKE + frame(DATE) + WAKE + frame(TIME)) == "empty"
    assert reason(CLOCK.encode()) == "empty"


def test_clock_replies_of_the_wrong_length_are_rejected() -> None:
    assert reason(plain_frame(ADDRESS, 0x91, bytes.fromhex("01010004 05041226 00"))) == "bad_length"
    assert reason(plain_frame(ADDRESS, 0x91, bytes.fromhex("01010004 050412"))) == "bad_length"
    assert reason(plain_frame(ADDRESS, 0x91, bytes.fromhex("02010004 0030"))) == "bad_length"
    assert reason(plain_frame(ADDRESS, 0x91, bytes.fromhex("02010004 00301400"))) == "bad_length"


def test_clock_frames_take_the_wake_up_prefix_and_more_follows() -> None:
    more = bytearray(frame(DATE))
    more[8] = 0xB1  # "more follows"
    more[-2] = sum(more[:-2]) % 256
    for payload in (
        WAKE + frame(ENERGY) + WAKE + frame(DATE) + WAKE + frame(TIME),
        b"\xfe" + frame(ENERGY) + b"\xfe\xfe" + frame(CLOCK),
        frame(ENERGY) + bytes(more) + frame(TIME),
        ("FE FE FE FE " + ENERGY + " FE FE FE FE " + CLOCK).encode(),
    ):
        [r] = dlt645.decode(TOPIC, payload)
        assert r.time_ns == CLOCK_NS


def test_every_flipped_clock_byte_is_caught() -> None:
    for vector in (frame(DATE), frame(TIME)):
        for i in range(10, len(vector) - 2):
            corrupt = bytearray(vector)
            corrupt[i] ^= 0x01
            assert reason(frame(ENERGY) + bytes(corrupt)) == "bad_checksum"


def test_encode_sends_the_readings_clock_after_the_data() -> None:
    reading = Reading(
        ADDRESS,
        Family.METER,
        Channel.TELEMETRY,
        "telemetry",
        CLOCK_NS + 999_999_999,  # the meter counts whole seconds
        Location("c1"),
        {"meter_type": "electricity", **{k: v for _, _, e in REPLIES for k, v in e.items()}},
    )
    topic, payload = dlt645.encode(reading)
    assert payload == frame(ENERGY) + frame(VOLTAGE) + frame(CURRENT) + frame(POWER) + frame(CLOCK)
    readings = dlt645.decode(topic, payload)
    assert len(readings) == 4 and {r.time_ns for r in readings} == {CLOCK_NS}
    fault = Reading(
        ADDRESS, Family.METER, Channel.EVENT, "fault", CLOCK_NS, Location("c1"),
        {"fault_code": 2, "fault": "no_such_data"},
    )  # fmt: skip
    assert dlt645.encode(fault) == (TOPIC, frame(ABNORMAL) + frame(CLOCK))
    [back] = dlt645.decode(TOPIC, frame(ABNORMAL) + frame(CLOCK))
    assert back.kind == "fault" and back.time_ns == CLOCK_NS


def test_encode_refuses_a_time_the_meter_clock_cannot_hold() -> None:
    for seconds in (946_684_800 - 8 * 3600 - 1, 4_102_444_800 - 8 * 3600):  # 1999 / 2100 in CST
        reading = Reading(
            ADDRESS, Family.METER, Channel.TELEMETRY, "telemetry", seconds * 10**9,
            Location("c1"), {"energy_kwh": 1.0},
        )  # fmt: skip
        with pytest.raises(ValueError):
            dlt645.encode(reading)


def test_readme_example_decodes() -> None:
    """The README's example: an energy reply with the meter clock, 2026-12-04 14:30:00 CST."""
    text = ENERGY + " " + CLOCK
    assert text == (
        "68 12 90 78 56 34 12 68 91 08 33 33 34 33 AB 89 67 45 CC 16 "
        "68 12 90 78 56 34 12 68 91 08 34 34 33 37 38 37 45 59 FE 16 "
        "68 12 90 78 56 34 12 68 91 07 35 34 33 37 33 63 47 CE 16"
    )
    [r] = dlt645.decode(TOPIC, bytes.fromhex(text))
    assert r.values == {"meter_type": "electricity", "energy_kwh": 123456.78}
    assert r.time_ns == CLOCK_NS


def test_gridgate_decode_prints_the_meter_time(capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    when = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    payload = (
        frame(ENERGY)
        + dlt645.encode_clock(ADDRESS, when)
        + dlt645.encode_reading("123456789013", "00010000", 1.5)  # a meter without its clock
    )
    args = ["decode", "--adapter", "dlt645", "--topic", TOPIC, "--hex", payload.hex(" ")]
    assert main(args) == 0
    mine, other = json.loads(capsys.readouterr().out)
    assert mine["time_ns"] == int(when.timestamp()) * 1_000_000_000
    assert mine["time"] == when.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert mine["time_source"] == "device"
    assert other["device_id"] == "123456789013" and other["time_source"] == "received"


# --- round trips ----------------------------------------------------------------------------

addresses = st.text("0123456789", min_size=12, max_size=12).filter(lambda a: a != "9" * 12)
energies = st.integers(0, 99_999_999).map(lambda k: k / 100)
voltages = st.integers(0, 9_999).map(lambda k: k / 10)
currents = st.integers(-799_999, 799_999).map(lambda k: k / 1000)
powers = st.integers(-799_999, 799_999).map(lambda k: k / 10_000)


@st.composite
def meter_readings(draw: st.DrawFn) -> Reading:
    values: dict[str, Any] = {"meter_type": "electricity"}
    fields = draw(
        st.sets(
            st.sampled_from(["energy_kwh", "voltage", "block", "current_a", "power_kw"]), min_size=1
        )
    )
    if "energy_kwh" in fields:
        values["energy_kwh"] = draw(energies)
    if "block" in fields:
        values.update(
            voltage_v=draw(voltages), voltage_b_v=draw(voltages), voltage_c_v=draw(voltages)
        )
    elif "voltage" in fields:
        values["voltage_v"] = draw(voltages)
    if "current_a" in fields:
        values["current_a"] = draw(currents)
    if "power_kw" in fields:
        values["power_kw"] = draw(powers)
    community = draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,10}", fullmatch=True))
    return Reading(
        draw(addresses),
        Family.METER,
        Channel.TELEMETRY,
        "telemetry",
        RECEIVE_TIME,
        Location(community),
        values,
    )


@settings(max_examples=500, deadline=None)
@given(meter_readings())
def test_encode_then_decode_gives_the_values_back(reading: Reading) -> None:
    MeterData.model_validate(reading.values)  # the generator stays within the model's ranges
    topic, payload = dlt645.encode(reading)
    readings = dlt645.decode(topic, payload)
    merged: dict[str, Any] = {}
    for r in readings:
        assert r.device_id == reading.device_id
        assert r.location == reading.location
        assert r.time_ns == RECEIVE_TIME
        assert r.values["meter_type"] == "electricity"
        assert_plain(r.values)
        merged.update({k: v for k, v in r.values.items() if k != "meter_type"})
    assert merged == {k: v for k, v in reading.values.items() if k != "meter_type"}


# 2000-01-01 00:00:00 .. 2099-12-31 23:59:59 China Standard Time: what the meter clock holds
clock_seconds = st.integers(946_656_000, 4_102_415_999)


@settings(max_examples=500, deadline=None)
@given(meter_readings(), clock_seconds, st.integers(0, 999_999_999))
def test_encode_then_decode_gives_the_time_back(
    reading: Reading, seconds: int, fraction: int
) -> None:
    """A simulated meter's readings come back at its (simulated) time, to the second."""
    reading = replace(reading, time_ns=seconds * 1_000_000_000 + fraction)
    topic, payload = dlt645.encode(reading)
    readings = dlt645.decode(topic, payload)
    assert readings
    assert {r.time_ns for r in readings} == {seconds * 1_000_000_000}
    assert {r.device_id for r in readings} == {reading.device_id}
    merged = {k: v for r in readings for k, v in r.values.items() if k != "meter_type"}
    assert merged == {k: v for k, v in reading.values.items() if k != "meter_type"}


@settings(max_examples=300, deadline=None)
@given(addresses, st.integers(0, 255), st.integers(0, 4))
def test_fault_round_trip(address: str, bits: int, wake: int) -> None:
    [r] = dlt645.decode(TOPIC, dlt645.encode_fault(address, bits, wake=wake))
    assert r.device_id == address and r.values["fault_code"] == bits
    reading = Reading(
        address,
        Family.METER,
        Channel.EVENT,
        "fault",
        0,
        Location("c1"),
        {"fault_code": bits, "fault": dlt645.fault_name(bits)},
    )
    [back] = dlt645.decode(*dlt645.encode(reading))
    assert back.values == {"meter_type": "electricity", **reading.values}


# --- fuzzing: whatever arrives, only RejectedInput comes out ------------------------------------


def decode_or_reject(payload: bytes, topic: str = TOPIC) -> None:
    try:
        readings = dlt645.decode(topic, payload)
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
    data = bytearray(draw(st.sampled_from([*VALID_FRAMES, frame(ENERGY + " " + CLOCK)])))
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
    decode_or_reject(payload.hex(" ").encode())


@settings(max_examples=1000, deadline=None)
@given(
    st.sampled_from(sorted(dlt645.DATA_ITEMS)),
    st.binary(max_size=8),
    st.sampled_from([0x91, 0xB1, 0xD1]),
)
def test_fuzz_data_of_well_framed_replies(di: str, value: bytes, control: int) -> None:
    """Checksums kept valid, so the fuzzing reaches the field decoders."""
    data = bytes.fromhex(di)[::-1] + value if control != 0xD1 else value
    decode_or_reject(dlt645.build_frame(ADDRESS, control, data))


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from([dlt645.DATE_DI, dlt645.TIME_DI]), st.binary(max_size=6))
def test_fuzz_well_framed_clock_replies(di: str, value: bytes) -> None:
    """Any clock value, with data and with or without the other half: a time or a reason."""
    clock = dlt645.build_frame(ADDRESS, 0x91, bytes.fromhex(di)[::-1] + value)
    other = frame(TIME) if di == dlt645.DATE_DI else frame(DATE)
    for payload in (clock, frame(ENERGY) + clock, frame(ENERGY) + clock + other):
        decode_or_reject(payload)


@settings(max_examples=1000, deadline=None)
@given(st.text("0123456789abcdefABCDEF \n\t", max_size=200))
def test_fuzz_hex_text(text: str) -> None:
    decode_or_reject(text.encode())
    decode_or_reject(("68" + text).encode())


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_topics(topic: str) -> None:
    decode_or_reject(frame(ENERGY), topic)
