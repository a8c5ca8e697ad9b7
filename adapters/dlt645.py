"""DL/T 645-2007 electricity-meter replies, as concentrators forward them over MQTT.

Topic:   gridgate/raw/{community}/dlt645/{concentrator_id}
Payload: one or more frames back to back, raw bytes or hex text ("68 12 90 …", any case,
         any whitespace). Frame: ``FE×n 68 A0..A5 68 C L DATA CS 16`` — address BCD low
         byte first, every DATA byte +33h on the wire, DATA = DI0..DI3 then the value (BCD,
         low byte first), CS = sum from the first 68 through DATA mod 256.

A normal read reply (C = 91, or B1 "more follows") is one meter telemetry reading; an
abnormal reply (C = D1, one error byte) is one ``fault`` event, so a meter that refuses a
read is visible rather than a decoding crash. The device id is the 12-digit address printed
on the meter (``123456789012``); the registry adds the place below community.

Time: data frames carry no clock. Concentrators commonly read the meter's own clock with the
data — 04000101 (date and week day, YYMMDDWW, WW 0 = Sunday) and 04000102 (time, hhmmss),
both BCD low byte first like any value. Those two replies are no readings themselves: when
a message holds both for a meter, every reading of that meter in the message gets that
clock (China Standard Time, whole seconds), so its charts line up with devices that send
their own time (and with simulated time in an accelerated demo). A meter without both keeps
`RECEIVE_TIME` and the pipeline stamps it on arrival. The week day is not checked against
the date (meters are often set wrong), only for being 0..6. Rejected: an impossible or
non-BCD clock (``bad_time``), a date without a time or the reverse (``incomplete_clock``),
two different clocks for one meter (``conflicting_clock``), and clocks with no data at all
(``empty``: the pipeline would store nothing and say nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, timezone
from math import isfinite
from typing import Any

from adapters._frames import (
    START,
    FrameSpec,
    address_bytes,
    bcd_digits,
    bcd_int,
    community_of,
    finish,
    location,
    payload_bytes,
    raw_subscription,
    raw_topic,
    split_frames,
    to_bcd,
)
from adapters.base import RECEIVE_TIME
from devices.errors import RejectedInput
from devices.families import TELEMETRY_KIND, Channel, Family, MeterEvent
from devices.location import Location
from devices.reading import Reading

name = "dlt645"
SUBSCRIPTION = raw_subscription(name)
SPEC = FrameSpec(protocol="DL/T 645", header_len=10, second_start=7)

READ = 0x11
REPLY = 0x91  # read reply, normal
REPLY_MORE = 0xB1  # read reply, normal, follow-up frames exist
REPLY_ERROR = 0xD1  # read reply, abnormal: one error byte
_DIRECTION = 0x80  # D7: meter → master
_ABNORMAL = 0x40  # D6
_FUNCTION = 0x1F  # D4..D0
_OFFSET = 0x33
_UNSHIFT = bytes((b - _OFFSET) & 0xFF for b in range(256))
_SHIFT = bytes((b + _OFFSET) & 0xFF for b in range(256))
_BROADCAST = (b"\xaa" * 6, b"\x99" * 6)  # wildcard and broadcast: no meter replies as them

# The meter's clock, read along with the data (DL/T 645-2007 table A.5, parameters).
DATE_DI = "04000101"  # 日期及星期: YYMMDDWW, WW 0 = Sunday; on the wire WW DD MM YY
TIME_DI = "04000102"  # 时间: hhmmss; on the wire ss mm hh
_DATE_ID = bytes.fromhex(DATE_DI)[::-1]
_TIME_ID = bytes.fromhex(TIME_DI)[::-1]
_DATE_LEN, _TIME_LEN = 4, 3
CHINA_STANDARD_TIME = timezone(timedelta(hours=8))  # meters keep local time; China has one zone
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
_NS = 1_000_000_000

# Error byte of an abnormal reply, bit 0 first (DL/T 645-2007 ERR word).
ERROR_BITS = (
    "other",
    "no_such_data",
    "unauthorised",  # wrong password or not authorised
    "baud_rate",  # baud rate cannot be changed
    "yearly_zones",  # too many yearly time zones
    "daily_periods",  # too many daily periods
    "tariffs",  # too many tariffs
    "reserved",
)
_FAULT_MAX = 64  # MeterData.fault's max_length


@dataclass(frozen=True, slots=True)
class DataItem:
    """One data identifier: which canonical fields its value fills and how it is packed."""

    di: str  # DI3..DI0 as the standard prints it; DI0 goes first on the wire
    fields: tuple[str, ...]
    width: int  # BCD bytes per field
    decimals: int
    signed: bool = False  # top bit of the highest byte is the sign

    @property
    def size(self) -> int:
        return self.width * len(self.fields)

    @property
    def wire_id(self) -> bytes:
        return bytes.fromhex(self.di)[::-1]

    def decode(self, raw: bytes) -> dict[str, float]:
        scale = 10**self.decimals
        out: dict[str, float] = {}
        for i, field in enumerate(self.fields):
            chunk = raw[i * self.width : (i + 1) * self.width]
            negative = self.signed and bool(chunk[-1] & 0x80)
            if negative:
                chunk = chunk[:-1] + bytes([chunk[-1] & 0x7F])
            units = bcd_int(chunk)
            # int / int is correctly rounded: the closest double to the printed decimal.
            out[field] = (-units if negative else units) / scale
        return out

    def encode(self, values: Sequence[float]) -> bytes:
        if len(values) != len(self.fields):
            raise ValueError(f"data identifier {self.di} takes {len(self.fields)} value(s)")
        out = b""
        for field, value in zip(self.fields, values, strict=True):
            if isinstance(value, bool) or not isinstance(value, int | float) or not isfinite(value):
                raise ValueError(f"{field} must be a finite number")
            units = round(value * 10**self.decimals)
            negative = units < 0
            if negative and not self.signed:
                raise ValueError(f"{field} cannot be negative")
            limit = 8 * 10 ** (2 * self.width - 1) if self.signed else 10 ** (2 * self.width)
            if abs(units) >= limit:
                raise ValueError(f"{field} = {value} does not fit data identifier {self.di}")
            chunk = to_bcd(abs(units), self.width)
            if negative:
                chunk = chunk[:-1] + bytes([chunk[-1] | 0x80])
            out += chunk
        return out


ENERGY = DataItem("00010000", ("energy_kwh",), 4, 2)
VOLTAGE = DataItem("02010100", ("voltage_v",), 2, 1)
CURRENT = DataItem("02020100", ("current_a",), 3, 3, signed=True)
POWER = DataItem("02030000", ("power_kw",), 3, 4, signed=True)
VOLTAGE_BLOCK = DataItem("0201FF00", ("voltage_v", "voltage_b_v", "voltage_c_v"), 2, 1)

DATA_ITEMS: dict[str, DataItem] = {
    item.di: item for item in (ENERGY, VOLTAGE, CURRENT, POWER, VOLTAGE_BLOCK)
}
_BY_WIRE_ID = {item.wire_id: item for item in DATA_ITEMS.values()}


def topic_for(community: str, concentrator_id: str) -> str:
    return raw_topic(community, name, concentrator_id)


def decode(topic: str, payload: bytes) -> list[Reading]:
    """The message's readings; a meter whose date and time came along is stamped with them.

    Clocks are applied after every frame is read: a concentrator may send the clock before
    or after the data, and frames of several meters may interleave.
    """
    place = location(community_of(topic, name))
    readings: list[Reading] = []
    clocks: dict[str, _Clock] = {}
    for frame in split_frames(payload_bytes(payload), SPEC):
        got = _reading(frame, place)
        if isinstance(got, Reading):
            readings.append(got)
            continue
        clock = clocks.get(got.device_id)
        if clock is None:
            clock = clocks[got.device_id] = _Clock()
        clock.add(got)
    if clocks:
        stamps = {device_id: clock.time_ns() for device_id, clock in clocks.items()}
        readings = [
            r if (t := stamps.get(r.device_id)) is None else replace(r, time_ns=t) for r in readings
        ]
    if not readings:  # the pipeline would store nothing and dead-letter nothing
        raise RejectedInput("empty", "the message holds meter clocks but no data")
    return readings


def fault_name(error_bits: int) -> str:
    """The error byte's set bits as names joined by ``+`` (bounded to fit the model)."""
    names = [n for bit, n in enumerate(ERROR_BITS) if error_bits >> bit & 1]
    if not names:
        return "unspecified"
    joined = "+".join(names)
    return joined if len(joined) <= _FAULT_MAX else "multiple"


@dataclass(frozen=True, slots=True)
class _ClockPart:
    """One clock reply: the meter's date (year, month, day) or time (hour, minute, second)."""

    device_id: str
    di: str  # DATE_DI or TIME_DI
    value: tuple[int, int, int]


@dataclass(slots=True)
class _Clock:
    """A meter's clock as the frames of one message tell it."""

    ymd: tuple[int, int, int] | None = None
    hms: tuple[int, int, int] | None = None

    def add(self, part: _ClockPart) -> None:
        is_date = part.di == DATE_DI
        seen = self.ymd if is_date else self.hms
        if seen is not None and seen != part.value:  # a repeat of the same value is harmless
            what = "dates" if is_date else "times"
            raise RejectedInput(
                "conflicting_clock", f"a meter sent two different {what} ({part.di}) in one message"
            )
        if is_date:
            self.ymd = part.value
        else:
            self.hms = part.value

    def time_ns(self) -> int:
        if self.hms is None:
            detail = f"a meter sent its date ({DATE_DI}) but not its time ({TIME_DI})"
            raise RejectedInput("incomplete_clock", detail)
        if self.ymd is None:
            detail = f"a meter sent its time ({TIME_DI}) but not its date ({DATE_DI})"
            raise RejectedInput("incomplete_clock", detail)
        when = datetime(*self.ymd, *self.hms, tzinfo=CHINA_STANDARD_TIME)
        return (when - _EPOCH) // _SECOND * _NS


def _reading(frame: bytes, place: Location) -> Reading | _ClockPart:
    control = frame[8]
    if not control & _DIRECTION:
        raise RejectedInput("not_a_reply", f"control code {control:02X} is a master request")
    if control & _FUNCTION != READ:
        raise RejectedInput(
            "unsupported_control", f"control code {control:02X} is not a read reply"
        )
    device_id = _device_id(frame[1:7])
    data = frame[10:-2].translate(_UNSHIFT)
    if control & _ABNORMAL:
        if len(data) != 1:
            raise RejectedInput("bad_length", "an abnormal reply carries exactly one error byte")
        code = data[0]
        values: dict[str, Any] = {
            "meter_type": "electricity",
            "fault_code": code,
            "fault": fault_name(code),
        }
        return Reading(
            device_id,
            Family.METER,
            Channel.EVENT,
            MeterEvent.FAULT.value,
            RECEIVE_TIME,
            place,
            values,
        )
    if len(data) < 4:
        raise RejectedInput("bad_length", "a read reply is shorter than its data identifier")
    if data[:4] in (_DATE_ID, _TIME_ID):
        return _clock_part(device_id, data)
    item = _BY_WIRE_ID.get(data[:4])
    if item is None:
        di = data[3::-1].hex().upper()
        raise RejectedInput("unknown_data_id", f"data identifier {di} is not supported")
    if len(data) != 4 + item.size:
        raise RejectedInput("bad_length", f"L does not match data identifier {item.di}")
    values = {"meter_type": "electricity", **item.decode(data[4:])}
    return Reading(
        device_id, Family.METER, Channel.TELEMETRY, TELEMETRY_KIND, RECEIVE_TIME, place, values
    )


def _clock_part(device_id: str, data: bytes) -> _ClockPart:
    """A 04000101 or 04000102 reply (DATA without the +33h) as plain numbers, or `bad_time`."""
    is_date = data[:4] == _DATE_ID
    di, size, what = (DATE_DI, _DATE_LEN, "date") if is_date else (TIME_DI, _TIME_LEN, "time")
    if len(data) != 4 + size:
        raise RejectedInput("bad_length", f"L does not match data identifier {di}")
    digits = data[:3:-1].hex()  # high byte first: YYMMDDWW or hhmmss
    if not digits.isdigit():
        raise RejectedInput("bad_time", f"meter {what} ({di}) holds a nibble above 9")
    a, b, c = int(digits[0:2]), int(digits[2:4]), int(digits[4:6])
    if not is_date:
        if a > 23 or b > 59 or c > 59:
            raise RejectedInput("bad_time", f"meter time ({di}) is not a time of day")
        return _ClockPart(device_id, di, (a, b, c))
    if int(digits[6:8]) > 6:  # 0 = Sunday; a wrong but valid week day is common, and ignored
        raise RejectedInput("bad_time", f"meter week day ({di}) is not 0..6")
    try:
        date(2000 + a, b, c)
    except ValueError:
        raise RejectedInput("bad_time", f"meter date ({di}) is not a calendar date") from None
    return _ClockPart(device_id, di, (2000 + a, b, c))


def _device_id(address: bytes) -> str:
    if address in _BROADCAST:
        raise RejectedInput("broadcast_address", "a reply from the broadcast address is no reading")
    return bcd_digits(address)


# --- encoders (simulators, tests): ValueError on a caller's mistake --------------------------


def build_frame(address: str, control: int, data: bytes, *, wake: int = 0) -> bytes:
    """A frame from plain DATA (the +33h, checksum and 16 are added here).

    `address` is the printed 12-digit address; hex digits are allowed so that tests and
    simulators can build wildcard or deliberately broken frames.
    """
    if not 0 <= control <= 0xFF:
        raise ValueError("control must be a byte")
    if len(data) > 0xFF:
        raise ValueError("DATA longer than 255 bytes")
    body = (
        bytes([START])
        + address_bytes(address, 6)
        + bytes([START, control, len(data)])
        + data.translate(_SHIFT)
    )
    return finish(body, wake)


def encode_request(address: str, di: str, *, wake: int = 0) -> bytes:
    """The master's read request for `di` (DI3..DI0 hex, e.g. ``00010000``)."""
    return build_frame(address, READ, _di_bytes(di), wake=wake)


def encode_reading(
    address: str,
    di: str,
    value: float | Sequence[float],
    *,
    control: int = REPLY,
    wake: int = 0,
) -> bytes:
    """A meter's normal read reply carrying `value` (three values for the voltage block)."""
    item = DATA_ITEMS.get(di.upper())
    if item is None:
        raise ValueError(f"data identifier {di} is not supported")
    values = [value] if isinstance(value, int | float) else list(value)
    return build_frame(address, control, item.wire_id + item.encode(values), wake=wake)


def encode_clock(address: str, when: datetime, *, wake: int = 0) -> bytes:
    """The meter's replies to 04000101 and 04000102: its date and week day, then its time.

    A naive `when` is China Standard Time; an aware one is converted to it. Seconds are
    truncated, as the meter counts whole seconds.
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=CHINA_STANDARD_TIME)
    when = when.astimezone(CHINA_STANDARD_TIME)
    if not 2000 <= when.year <= 2099:
        raise ValueError("a DL/T 645 meter clock covers 2000..2099 (two-digit year)")
    week = when.isoweekday() % 7  # DL/T 645: 0 = Sunday
    day = bytes.fromhex(f"{when:%y%m%d}{week:02d}")[::-1]
    clock = bytes.fromhex(f"{when:%H%M%S}")[::-1]
    return build_frame(address, REPLY, _DATE_ID + day, wake=wake) + build_frame(
        address, REPLY, _TIME_ID + clock, wake=wake
    )


def encode_fault(address: str, error_bits: int, *, wake: int = 0) -> bytes:
    """A meter's abnormal read reply with the given error byte."""
    if isinstance(error_bits, bool) or not 0 <= error_bits <= 0xFF:
        raise ValueError("error_bits must be a byte")
    return build_frame(address, REPLY_ERROR, bytes([error_bits]), wake=wake)


def encode(reading: Reading, *, concentrator: str = "conc01") -> tuple[str, bytes]:
    """The topic and frames a concentrator would forward for `reading`.

    One reply frame per canonical field present (the voltage block when phase B or C is
    there), so decoding gives back the same values; a fault event becomes an abnormal reply.
    A reading with a time (not `RECEIVE_TIME`) is followed by the meter's date and time
    frames, so it decodes back with that time (to the second) — a simulated meter's clock.
    """
    address = reading.device_id
    if len(address) != 12 or not address.isdigit():
        raise ValueError("a DL/T 645 device id is the 12-digit meter address")
    if reading.family is not Family.METER:
        raise ValueError("DL/T 645 carries meter readings only")
    topic = topic_for(reading.location.community, concentrator)
    values = dict(reading.values)
    if values.pop("meter_type", "electricity") != "electricity":
        raise ValueError("DL/T 645 meters are electricity meters")
    if reading.channel is Channel.EVENT and reading.kind == MeterEvent.FAULT:
        return topic, _encode_fault_values(address, values) + _clock_of(reading)
    if reading.channel is not Channel.TELEMETRY:
        raise ValueError("DL/T 645 carries telemetry and fault events only")
    block = "voltage_b_v" in values or "voltage_c_v" in values
    frames = b""
    for item in (ENERGY, VOLTAGE_BLOCK if block else VOLTAGE, CURRENT, POWER):
        if all(f in values for f in item.fields):
            frames += encode_reading(address, item.di, [values.pop(f) for f in item.fields])
    if values:
        raise ValueError(f"DL/T 645 cannot carry {sorted(values)}")
    if not frames:
        raise ValueError("the reading has no field DL/T 645 can carry")
    return topic, frames + _clock_of(reading)


def _clock_of(reading: Reading) -> bytes:
    """The clock frames for a reading's own time; none for one stamped on receipt."""
    if reading.time_ns == RECEIVE_TIME:
        return b""
    try:
        when = _EPOCH + timedelta(seconds=reading.time_ns // _NS)
    except OverflowError:
        raise ValueError("the reading's time is beyond any calendar") from None
    return encode_clock(reading.device_id, when)


def _encode_fault_values(address: str, values: Mapping[str, Any]) -> bytes:
    code = values.get("fault_code")
    if not isinstance(code, int) or isinstance(code, bool):
        raise ValueError("a fault reading needs an integer fault_code (the error byte)")
    fault = values.get("fault")
    if fault is not None and fault != fault_name(code):
        raise ValueError("fault does not name the bits of fault_code")
    if set(values) - {"fault_code", "fault"}:
        raise ValueError("an abnormal reply carries only the error byte")
    return encode_fault(address, code)


def _di_bytes(di: str) -> bytes:
    if len(di) != 8:
        raise ValueError("a data identifier is 8 hex digits, DI3..DI0")
    return bytes.fromhex(di)[::-1]
