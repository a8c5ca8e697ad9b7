"""Free text from devices (door, the access vendor's doorName, a meter's fault, a status
message's firmware) reaches InfluxDB only as its policy text rule allows (R3.2): through the
real adapters, then the de-identifier, with names, phones, ID numbers and plates planted in
every spelling the audit found."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from adapters import cjt188, dlt645, gridgate_json, vendor_access
from devices.families import Channel, Family
from devices.location import Location
from devices.reading import Reading
from privacy.deidentify import Deidentifier
from privacy.identifiers import find_identifier
from privacy.keys import KeyRing
from privacy.policy import LONG_NUMBER, holds_identifier, load_policy, scrub_text

RING = KeyRing(
    [("k1", bytes.fromhex("8f2b6c1d0e4a9f3b7c5d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b"))]
)
POLICY = load_policy()
TS = 1_716_165_015_000

# What a device may plant, and how the planted text must never reappear.
SECRETS = [
    "张三",  # a name
    "欧阳娜娜",
    "13812345678",  # a phone
    "tel:138-1234-5678",
    "+86 138 1234 5678",
    "913812345678",  # a stray digit in front
    "11010519491231002X",  # an ID number
    "110105-19491231-002X",
    "11010519491231002xroom",  # lower-case x, then text
    "京A12345",  # a plate
    "京 A·12345",
]
# The secret alone and inside text a device could plausibly send.
CONTEXTS = ["{}", "3号楼{}", "gate {}", "{}家门", "E3 {} call", "v1.2.3-{}"]


def _planted() -> list[tuple[str, str]]:
    return [(ctx.format(secret), secret) for secret in SECRETS for ctx in CONTEXTS]


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def _pieces(secret: str) -> list[str]:
    """What must not survive of `secret`: itself, its core (the ID number without the text
    after it), and its identifying characters (the name, the plate's letters and digits)."""
    core = secret.removesuffix("room").removeprefix("tel:")
    return [secret, core, core.replace(" ", "").replace("·", "")]


def assert_clean(out: Reading, secret: str) -> None:
    texts = [v for v in out.values.values() if isinstance(v, str)]
    for text in texts:
        for piece in _pieces(secret):
            assert piece not in text, (secret, text)
        digits = _digits(secret)
        if len(digits) >= 5:
            assert digits not in _digits(text), (secret, text)
        if not text.isascii():
            continue  # non-ASCII text is only kept when a pattern admits it: checked below
        assert find_identifier(text, loose=True) is None, (secret, text)
    for text in texts:
        assert not holds_identifier(text), (secret, text)


def apply(reading: Reading) -> Reading:
    return Deidentifier(POLICY, RING).apply(reading)


def gridgate(family: str, channel: str, kind: str, data: dict[str, Any]) -> Reading:
    topic = f"gridgate/v1/c1/{family}/d-1/{channel}"
    body = {"v": 1, "device_id": "d-1", "ts": TS, "kind": kind, "data": data}
    [reading] = gridgate_json.decode(topic, json.dumps(body, ensure_ascii=False).encode())
    return reading


def door(value: str) -> Reading:
    return gridgate("access", "event", "entry_granted", {"method": "card", "door": value})


def door_name(value: str) -> Reading:
    body = {"deviceSn": "ACS1", "eventTime": "2024-05-20 08:30:15", "eventType": 1,
            "openMode": "CARD", "doorName": value}  # fmt: skip
    [reading] = vendor_access.decode("vendor/acs/c1/ACS1/event", orjson.dumps(body))
    return reading


def fault(value: str) -> Reading:
    return gridgate("meter", "event", "fault", {"meter_type": "water", "fault": value})


def firmware(value: str) -> Reading:
    return gridgate("safety", "status", "heartbeat", {"rssi_dbm": -70, "firmware": value})


SOURCES = {"door": door, "doorName": door_name, "fault": fault, "firmware": firmware}
FIELD = {"door": "door", "doorName": "door", "fault": "fault", "firmware": "firmware"}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(("value", "secret"), _planted())
def test_planted_identifiers_never_reach_storage(source: str, value: str, secret: str) -> None:
    reading = SOURCES[source](value)
    assert reading.values[FIELD[source]] == value  # the adapter passes it on: privacy decides
    out = apply(reading)
    assert_clean(out, secret)
    stored = out.values.get(FIELD[source])
    assert stored is None or stored != value


ALLOWED = {
    "door": ["东门", "3号楼1单元门", "北门人行通道", "东门车道2", "东围墙", "地下车库入口",
             "2单元门", "A座大堂", "Gate A", "B3-U1 main", '东门, 1="A"'],
    "doorName": ["3号楼1单元门", "南门", "西门车道1", "gate-7"],
    "fault": ["no_such_data", "no_such_data+unauthorised", "abnormal_reply", "unspecified",
              "multiple", dlt645.fault_name(0xFF), cjt188.FAULT],
    "firmware": ["2.3.1", "v1.2.3", "1.2.3-rc1", "V10.0", "4.0.12+build.7"],
}  # fmt: skip


@pytest.mark.parametrize(
    ("source", "value"), [(source, v) for source, values in ALLOWED.items() for v in values]
)
def test_allowed_values_are_kept_as_they_are(source: str, value: str) -> None:
    reading = SOURCES[source](value)
    out = apply(reading)
    assert out.values[FIELD[source]] == value
    assert out is reading  # nothing to change: the reading itself goes on


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("door", "物业办公室"),  # not door words: a deployment extends the vocabulary
        ("door", "东门\n车道1"),  # control characters
        ("door", "1号楼-13800138000"),
        ("firmware", "build of 2024-05-20"),
        ("firmware", "1.2.3-13812345678"),
        ("firmware", "１.２.３"),  # full-width digits are not a version
    ],
)
def test_other_free_text_is_dropped_where_the_rule_says_drop(source: str, value: str) -> None:
    counts = Deidentifier(POLICY, RING)
    out = counts.apply(SOURCES[source](value))
    assert FIELD[source] not in out.values
    assert counts.counts["text_dropped"] == 1


@pytest.mark.parametrize(
    ("value", "scrubbed"),
    [
        ("sensor E3 open circuit", "sensor E3 open circuit"),  # no identifier: as it is
        ("张三", "<redacted>"),
        ("tel:138-1234-5678", "tel:<redacted>"),
        ("call 138 - 1234 - 5678 now", "call <redacted> now"),  # spaced out
        ("owner 11010519491231002xroom", "owner <redacted>room"),
        ("id 110105 19491231 002X", "id <redacted>"),
        ("plate 京 A·12345 blocked", "plate <redacted> blocked"),
        ("张三 13812345678", "<redacted>"),
        ("一三八一二三四五六七八", "<redacted>"),  # digits as Chinese numerals
        ("serial 123456789012345", "serial <redacted>"),  # free text needs no long numbers
        ("E3 ３８１２３４５６７８１", "E<redacted>"),  # full-width digits
    ],
)
def test_fault_text_is_scrubbed(value: str, scrubbed: str) -> None:
    d = Deidentifier(POLICY, RING)
    out = d.apply(fault(value))
    assert out.values["fault"] == scrubbed == scrub_text(value)
    assert find_identifier(scrubbed, loose=True) is None
    assert d.counts["text_scrubbed"] == (scrubbed != value)


def test_long_numbers_count_as_identifiers_in_free_text() -> None:
    assert LONG_NUMBER == 11
    assert holds_identifier("gate 1234567890") is False  # ten digits
    assert holds_identifier("gate 12345678901") is True
    assert holds_identifier("3号楼1单元门") is False  # digits among CJK are not joined up
    assert holds_identifier("1号3号8号1号2号3号4号5号6号7号8") is True  # …unless they add up


def test_a_reading_with_several_free_text_fields_and_statuses() -> None:
    """Status readings of every family use the status table and its firmware rule."""
    for family in Family:
        r = Reading("d", family, Channel.STATUS, "heartbeat", TS * 1_000_000, Location("c"),
                    {"uptime_s": 1.0, "firmware": "张三 13812345678"})  # fmt: skip
        assert apply(r).values == {"uptime_s": 1.0}


def test_overlong_free_text_is_dropped_unchecked() -> None:
    d = Deidentifier(POLICY, RING)
    long_text = "a" * 50_000 + "13812345678"
    r = Reading("m", Family.METER, Channel.EVENT, "fault", TS * 1_000_000, Location("c"),
                {"fault_code": 1, "fault": long_text})  # fmt: skip
    assert d.apply(r).values == {"fault_code": 1}
    assert d.counts["text_dropped"] == 1
    assert scrub_text("x" * 5_000 + "张") == "<redacted>"  # one word, replaced whole
