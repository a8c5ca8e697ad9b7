"""CJ/T 188 (2004 and 2018) water, gas and heat meter replies, as concentrators forward them.

Topic:   gridgate/raw/{community}/cjt188/{concentrator_id}
Payload: one or more frames back to back, raw bytes or hex text (any case, any whitespace).
Frame:   ``FE×n 68 T A0..A6 C L DI(2) SER DATA CS 16`` — T the meter type, address BCD A0
         first, CS = sum from 68 through DATA mod 256. No +33h offset, unlike DL/T 645.

Only the read-data reply for DI 901F (current metering data) is decoded, in both byte orders
(2004 sends ``90 1F``, 2018 ``1F 90``): cumulative and settlement-day volume (or heat), the
meter's clock (China Standard Time; all zeros = no clock → `RECEIVE_TIME`) and the status
word. The status bits beyond the valve and battery vary by vendor, so the bit layout is an
option: ``configure(valve_closed_bit=0, valve_abnormal_bit=1, battery_low_bit=2)`` returns
an adapter object for a route; module-level `decode`/`encode` use the standard layout.
An abnormal reply (C = C1) is one ``fault`` event carrying the status word when present.
The device id is the 14-digit address printed on the meter (``00000012345678``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from math import isfinite
from typing import Any

from adapters._frames import (
    START,
    FrameSpec,
    address_bytes,
    bcd_digits,
    bcd_fields,
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
from devices.errors import ConfigError, RejectedInput
from devices.families import TELEMETRY_KIND, Channel, Family, MeterEvent
from devices.location import Location
from devices.reading import Reading

name = "cjt188"
SUBSCRIPTION = raw_subscription(name)
SPEC = FrameSpec(protocol="CJ/T 188", header_len=11)
CHINA_STANDARD_TIME = timezone(timedelta(hours=8))

READ = 0x01
REPLY = 0x81
REPLY_ERROR = 0xC1
_DIRECTION = 0x80  # D7: meter → master
_ABNORMAL = 0x40  # D6
_FUNCTION = 0x1F  # D4..D0
_BROADCAST = b"\xaa" * 7

METER_TYPES: dict[int, str] = {
    0x10: "water",  # cold
    0x11: "water",  # hot
    0x12: "water",  # drinking
    0x13: "water",  # reclaimed
    0x20: "heat",
    0x21: "heat",
    0x22: "heat",
    0x30: "gas",
}
_DEFAULT_TYPE_CODE = {"water": 0x10, "heat": 0x20, "gas": 0x30}
_VOLUME_FIELD = {"water": "water_m3", "gas": "gas_m3", "heat": "energy_kwh"}

# Unit code → (numerator, denominator) turning the BCD count of hundredths into m³ or kWh,
# in integers so the division rounds once.
LITRE, CUBIC_METRE, LITRE_PER_HOUR, CUBIC_METRE_PER_HOUR = 0x29, 0x2C, 0x32, 0x35
WH, KWH, MWH, GJ = 0x02, 0x05, 0x08, 0x11
_VOLUME_UNITS = {LITRE: (1, 100_000), CUBIC_METRE: (1, 100)}
_ENERGY_UNITS = {WH: (1, 100_000), KWH: (1, 100), MWH: (10, 1), GJ: (25, 9)}  # 1 GJ = 2500/9 kWh

DI_901F = {"2004": b"\x90\x1f", "2018": b"\x1f\x90"}
_DI_ORDERS = frozenset(DI_901F.values())
REPLY_LEN = 0x16  # DI(2) SER(1) flow(4) unit(1) settlement(4) unit(1) time(7) ST(2)
_NO_CLOCK = bytes(7)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_YEAR, _END_YEAR = 2000, 2100  # sanity bounds, as for the JSON adapter
FAULT = "abnormal_reply"


@dataclass(frozen=True, slots=True)
class StatusLayout:
    """Where a vendor puts the valve and battery flags in the 16-bit status word ST.

    None means the vendor does not report that flag (the field is then left out).
    """

    valve_closed_bit: int | None = 0
    valve_abnormal_bit: int | None = 1
    battery_low_bit: int | None = 2

    def __post_init__(self) -> None:
        bits = (self.valve_closed_bit, self.valve_abnormal_bit, self.battery_low_bit)
        for bit in bits:
            if bit is not None and (isinstance(bit, bool) or not isinstance(bit, int)):
                raise ConfigError("CJ/T 188 status bits must be integers 0..15 or null")
            if bit is not None and not 0 <= bit <= 15:
                raise ConfigError("CJ/T 188 status bits must be 0..15 (ST is 16 bits)")
        set_bits = [b for b in bits if b is not None]
        if len(set(set_bits)) != len(set_bits):
            raise ConfigError("CJ/T 188 status flags must use different bits")

    def values(self, status: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.valve_closed_bit is not None:
            abnormal = self.valve_abnormal_bit is not None and status >> self.valve_abnormal_bit & 1
            closed = status >> self.valve_closed_bit & 1
            out["valve"] = "abnormal" if abnormal else "closed" if closed else "open"
        if self.battery_low_bit is not None:
            out["battery_low"] = bool(status >> self.battery_low_bit & 1)
        return out

    def word(self, valve: object = None, battery_low: object = None) -> int:
        """The status word for canonical values (encoders: ValueError if it cannot say so)."""
        status = 0
        if valve is not None:
            if self.valve_closed_bit is None or valve not in ("open", "closed", "abnormal"):
                raise ValueError("this status layout cannot carry that valve state")
            if valve == "abnormal":
                if self.valve_abnormal_bit is None:
                    raise ValueError("this status layout has no valve-abnormal bit")
                status |= 1 << self.valve_abnormal_bit
            if valve in ("closed", "abnormal"):  # the standard's 11 = abnormal
                status |= 1 << self.valve_closed_bit
        if battery_low is not None:
            if self.battery_low_bit is None or not isinstance(battery_low, bool):
                raise ValueError("this status layout cannot carry battery_low")
            status |= battery_low << self.battery_low_bit
        return status


class Cjt188Adapter:
    """The CJ/T 188 codec for one status-bit layout (one vendor's meters)."""

    name: str = "cjt188"

    def __init__(self, layout: StatusLayout | None = None) -> None:
        self.layout = layout or StatusLayout()

    def __repr__(self) -> str:
        return f"Cjt188Adapter({self.layout!r})"

    def decode(self, topic: str, payload: bytes) -> list[Reading]:
        return self.readings(payload, location(community_of(topic, name)))

    def readings(self, payload: bytes, place: Location) -> list[Reading]:
        """The frames in `payload` (raw or hex text) at `place`: for a carrier platform's
        push, whose topic is not a concentrator's."""
        return [self._reading(f, place) for f in split_frames(payload_bytes(payload), SPEC)]

    def encode(
        self,
        reading: Reading,
        *,
        concentrator: str = "conc01",
        meter_type_code: int | None = None,
        di_order: str = "2004",
    ) -> tuple[str, bytes]:
        """The topic and 901F reply (or abnormal reply) a concentrator would forward.

        `meter_type_code` defaults to 10 (cold water), 30 (gas) or 20 (heat) after the
        reading's meter_type; volumes go out in m³, heat in kWh, the clock to the second.
        """
        address = reading.device_id
        if len(address) != 14 or not address.isdigit():
            raise ValueError("a CJ/T 188 device id is the 14-digit meter address")
        if reading.family is not Family.METER:
            raise ValueError("CJ/T 188 carries meter readings only")
        topic = topic_for(reading.location.community, concentrator)
        values = dict(reading.values)
        meter_type = values.pop("meter_type", None) or _infer_type(values, meter_type_code)
        code = _DEFAULT_TYPE_CODE.get(meter_type) if meter_type_code is None else meter_type_code
        if code is None or METER_TYPES.get(code) != meter_type:
            raise ValueError(f"meter type code does not fit a {meter_type} meter")
        if reading.channel is Channel.EVENT and reading.kind == MeterEvent.FAULT:
            return topic, _encode_fault_values(address, code, values)
        if reading.channel is not Channel.TELEMETRY:
            raise ValueError("CJ/T 188 carries telemetry and fault events only")
        field = _VOLUME_FIELD[meter_type]
        if field not in values:
            raise ValueError(f"a {meter_type} reading needs {field}")
        current = values.pop(field)
        settlement = 0.0 if meter_type == "heat" else values.pop("settlement_m3", 0.0)
        status = self.layout.word(values.pop("valve", None), values.pop("battery_low", None))
        if values:
            raise ValueError(f"CJ/T 188 cannot carry {sorted(values)}")
        when = None if reading.time_ns == RECEIVE_TIME else _from_ns(reading.time_ns)
        frame = encode_reply(
            address,
            current,
            settlement,
            when,
            status,
            meter_type_code=code,
            unit=KWH if meter_type == "heat" else CUBIC_METRE,
            di_order=di_order,
        )
        return topic, frame

    def _reading(self, frame: bytes, place: Location) -> Reading:
        control = frame[9]
        if not control & _DIRECTION:
            raise RejectedInput("not_a_reply", f"control code {control:02X} is a master request")
        if control & _FUNCTION != READ:
            raise RejectedInput(
                "unsupported_control", f"control code {control:02X} is not a read-data reply"
            )
        device_id = _device_id(frame[2:9])
        meter_type = METER_TYPES.get(frame[1])
        if meter_type is None:
            raise RejectedInput("unknown_meter_type", f"meter type {frame[1]:02X} is not known")
        data = frame[11:-2]
        if control & _ABNORMAL:
            return _fault(device_id, meter_type, data, place)
        if len(data) < 2:
            raise RejectedInput("bad_length", "a read reply is shorter than its data identifier")
        if data[:2] not in _DI_ORDERS:
            di = data[:2].hex().upper()
            raise RejectedInput("unknown_data_id", f"data identifier {di} is not supported")
        if len(data) != REPLY_LEN:
            raise RejectedInput("bad_length", "L does not match data identifier 901F")
        current = _quantity(meter_type, data[3:7], data[7])
        settlement = _quantity(meter_type, data[8:12], data[12])
        time_ns = _time_ns(data[13:20])
        status = data[20] | data[21] << 8
        values: dict[str, Any] = {"meter_type": meter_type, _VOLUME_FIELD[meter_type]: current}
        if meter_type != "heat":  # no canonical field for settlement-day heat
            values["settlement_m3"] = settlement
        values.update(self.layout.values(status))
        return Reading(
            device_id, Family.METER, Channel.TELEMETRY, TELEMETRY_KIND, time_ns, place, values
        )


DEFAULT = Cjt188Adapter()


def configure(**options: object) -> Cjt188Adapter:
    """An adapter for a route's options: valve_closed_bit, valve_abnormal_bit, battery_low_bit."""
    known = {"valve_closed_bit", "valve_abnormal_bit", "battery_low_bit"}
    unknown = set(options) - known
    if unknown:
        raise ConfigError(f"unknown cjt188 option(s) {sorted(unknown)}; known: {sorted(known)}")
    bits: dict[str, int | None] = {}
    for key, value in options.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"cjt188 option {key} must be an integer 0..15 or null")
        bits[key] = value
    return Cjt188Adapter(StatusLayout(**bits))


def topic_for(community: str, concentrator_id: str) -> str:
    return raw_topic(community, name, concentrator_id)


def decode(topic: str, payload: bytes) -> list[Reading]:
    return DEFAULT.decode(topic, payload)


def encode(
    reading: Reading,
    *,
    concentrator: str = "conc01",
    meter_type_code: int | None = None,
    di_order: str = "2004",
) -> tuple[str, bytes]:
    return DEFAULT.encode(
        reading, concentrator=concentrator, meter_type_code=meter_type_code, di_order=di_order
    )


def _device_id(address: bytes) -> str:
    if address == _BROADCAST:
        raise RejectedInput("broadcast_address", "a reply from the broadcast address is no reading")
    return bcd_digits(address)


def _quantity(meter_type: str, raw: bytes, unit: int) -> float:
    units = _ENERGY_UNITS if meter_type == "heat" else _VOLUME_UNITS
    factor = units.get(unit)
    if factor is None:
        raise RejectedInput(
            "bad_unit", f"unit code {unit:02X} is not valid for a {meter_type} meter"
        )
    num, den = factor
    return bcd_int(raw) * num / den


def _time_ns(raw: bytes) -> int:
    if raw == _NO_CLOCK:
        return RECEIVE_TIME
    century, year, month, day, hour, minute, second = bcd_fields(raw)
    year += century * 100
    if not _MIN_YEAR <= year < _END_YEAR:
        raise RejectedInput("bad_time", f"meter clock year is outside {_MIN_YEAR}..{_END_YEAR - 1}")
    try:
        when = datetime(year, month, day, hour, minute, second, tzinfo=CHINA_STANDARD_TIME)
    except ValueError:
        raise RejectedInput("bad_time", "meter clock holds an impossible date or time") from None
    return (when - _EPOCH) // timedelta(seconds=1) * 1_000_000_000


def _fault(device_id: str, meter_type: str, data: bytes, place: Location) -> Reading:
    """An abnormal reply: ``SER ST`` per the standard, ``DI SER ST`` or ``DI SER`` in the wild."""
    has_di = data[:2] in _DI_ORDERS
    if len(data) == 3 and not has_di:
        status: int | None = data[1] | data[2] << 8
    elif len(data) == 5 and has_di:
        status = data[3] | data[4] << 8
    elif len(data) == 0 or (len(data) == 3 and has_di):
        status = None
    else:
        raise RejectedInput("bad_length", "an abnormal reply carries SER and ST")
    values: dict[str, Any] = {"meter_type": meter_type, "fault": FAULT}
    if status is not None:
        values["fault_code"] = status
    return Reading(
        device_id, Family.METER, Channel.EVENT, MeterEvent.FAULT.value, RECEIVE_TIME, place, values
    )


def _infer_type(values: Mapping[str, Any], meter_type_code: int | None) -> str:
    if meter_type_code is not None and meter_type_code in METER_TYPES:
        return METER_TYPES[meter_type_code]
    for meter_type, field in _VOLUME_FIELD.items():
        if field in values:
            return meter_type
    raise ValueError("cannot tell the meter type: give meter_type or meter_type_code")


def _from_ns(time_ns: int) -> datetime:
    return (_EPOCH + timedelta(seconds=time_ns // 1_000_000_000)).astimezone(CHINA_STANDARD_TIME)


# --- encoders (simulators, tests): ValueError on a caller's mistake --------------------------


def build_frame(
    address: str, control: int, data: bytes, *, meter_type_code: int = 0x10, wake: int = 0
) -> bytes:
    """A frame around `data` (checksum and 16 added here); hex digits allowed in `address`."""
    if not (0 <= control <= 0xFF and 0 <= meter_type_code <= 0xFF):
        raise ValueError("control and meter_type_code must be bytes")
    if len(data) > 0xFF:
        raise ValueError("DATA longer than 255 bytes")
    header = bytes([START, meter_type_code]) + address_bytes(address, 7)
    return finish(header + bytes([control, len(data)]) + data, wake)


def encode_request(
    address: str,
    *,
    meter_type_code: int = 0x10,
    di_order: str = "2004",
    ser: int = 0,
    wake: int = 0,
) -> bytes:
    """The master's read-data request for DI 901F."""
    return build_frame(
        address, READ, _di(di_order) + _byte(ser, "ser"), meter_type_code=meter_type_code, wake=wake
    )


def encode_reply(
    address: str,
    current: float,
    settlement: float = 0.0,
    when: datetime | None = None,
    status: int = 0,
    *,
    meter_type_code: int = 0x10,
    unit: int = CUBIC_METRE,
    settlement_unit: int | None = None,
    di_order: str = "2004",
    ser: int = 0,
    control: int = REPLY,
    wake: int = 0,
) -> bytes:
    """A meter's 901F reply. Quantities are in `unit`; a naive `when` is China Standard Time,
    None sends the all-zero clock of a meter without one."""
    if not 0 <= status <= 0xFFFF:
        raise ValueError("status must fit 16 bits")
    data = (
        _di(di_order)
        + _byte(ser, "ser")
        + _hundredths(current, "current")
        + _byte(unit, "unit")
        + _hundredths(settlement, "settlement")
        + _byte(unit if settlement_unit is None else settlement_unit, "settlement_unit")
        + _clock(when)
        + bytes([status & 0xFF, status >> 8])
    )
    return build_frame(address, control, data, meter_type_code=meter_type_code, wake=wake)


def encode_fault(
    address: str,
    status: int | None = None,
    *,
    meter_type_code: int = 0x10,
    ser: int = 0,
    wake: int = 0,
) -> bytes:
    """A meter's abnormal reply: ``SER ST`` (or no data when `status` is None)."""
    data = b""
    if status is not None:
        if isinstance(status, bool) or not 0 <= status <= 0xFFFF:
            raise ValueError("status must fit 16 bits")
        data = _byte(ser, "ser") + bytes([status & 0xFF, status >> 8])
    return build_frame(address, REPLY_ERROR, data, meter_type_code=meter_type_code, wake=wake)


def _encode_fault_values(address: str, code: int, values: Mapping[str, Any]) -> bytes:
    if values.get("fault", FAULT) != FAULT or set(values) - {"fault", "fault_code"}:
        raise ValueError(f"a CJ/T 188 fault carries fault={FAULT!r} and the status word only")
    status = values.get("fault_code")
    if status is not None and (not isinstance(status, int) or isinstance(status, bool)):
        raise ValueError("fault_code must be the integer status word")
    return encode_fault(address, status, meter_type_code=code)


def _di(di_order: str) -> bytes:
    try:
        return DI_901F[di_order]
    except KeyError:
        raise ValueError('di_order must be "2004" (90 1F) or "2018" (1F 90)') from None


def _byte(value: int, what: str) -> bytes:
    if isinstance(value, bool) or not 0 <= value <= 0xFF:
        raise ValueError(f"{what} must be a byte")
    return bytes([value])


def _hundredths(value: float, what: str) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int | float) or not isfinite(value):
        raise ValueError(f"{what} must be a finite number")
    return to_bcd(round(value * 100), 4)


def _clock(when: datetime | None) -> bytes:
    if when is None:
        return _NO_CLOCK
    if when.tzinfo is None:
        when = when.replace(tzinfo=CHINA_STANDARD_TIME)
    when = when.astimezone(CHINA_STANDARD_TIME)
    if not _MIN_YEAR <= when.year < _END_YEAR:
        raise ValueError(f"the meter clock covers {_MIN_YEAR}..{_END_YEAR - 1}")
    digits = when.strftime("%Y%m%d%H%M%S")
    return bytes.fromhex(digits)[::-1]
