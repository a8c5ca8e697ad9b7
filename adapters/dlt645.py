"""DL/T 645-2007 electricity-meter replies, as concentrators forward them over MQTT.

Topic:   gridgate/raw/{community}/dlt645/{concentrator_id}
Payload: one or more frames back to back, raw bytes or hex text ("68 12 90 …", any case,
         any whitespace). Frame: ``FE×n 68 A0..A5 68 C L DATA CS 16`` — address BCD low
         byte first, every DATA byte +33h on the wire, DATA = DI0..DI3 then the value (BCD,
         low byte first), CS = sum from the first 68 through DATA mod 256.

A normal read reply (C = 91, or B1 "more follows") is one meter telemetry reading; an
abnormal reply (C = D1, one error byte) is one ``fault`` event, so a meter that refuses a
read is visible rather than a decoding crash. Meters send no clock, so readings carry
`RECEIVE_TIME` and the pipeline stamps them; the registry adds the place below community.
The device id is the 12-digit address printed on the meter (``123456789012``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    place = location(community_of(topic, name))
    return [_reading(frame, place) for frame in split_frames(payload_bytes(payload), SPEC)]


def fault_name(error_bits: int) -> str:
    """The error byte's set bits as names joined by ``+`` (bounded to fit the model)."""
    names = [n for bit, n in enumerate(ERROR_BITS) if error_bits >> bit & 1]
    if not names:
        return "unspecified"
    joined = "+".join(names)
    return joined if len(joined) <= _FAULT_MAX else "multiple"


def _reading(frame: bytes, place: Location) -> Reading:
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


def encode_fault(address: str, error_bits: int, *, wake: int = 0) -> bytes:
    """A meter's abnormal read reply with the given error byte."""
    if isinstance(error_bits, bool) or not 0 <= error_bits <= 0xFF:
        raise ValueError("error_bits must be a byte")
    return build_frame(address, REPLY_ERROR, bytes([error_bits]), wake=wake)


def encode(reading: Reading, *, concentrator: str = "conc01") -> tuple[str, bytes]:
    """The topic and frames a concentrator would forward for `reading`.

    One reply frame per canonical field present (the voltage block when phase B or C is
    there), so decoding gives back the same values; a fault event becomes an abnormal reply.
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
        return topic, _encode_fault_values(address, values)
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
    return topic, frames


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
