"""A foreign smart-meter platform (water, electricity and gas meters behind an NB-IoT/LoRa
head-end): one nested JSON report per reading interval, values with explicit units.

Topic:   vendor/meter/{community}/{meterNo}/report
Payload: {"meterNo": "20240520001", "type": "WATER" | "ELEC" | "GAS", "ts": 1716165015,
          "data": {"total": {"value": 1234560, "unit": "L" | "m3" | "Wh" | "kWh"},
                   "flow": {"value": 12.5, "unit": "L/h" | "m3/h"},          (water, gas)
                   "voltage": 220.1, "current": 5.123,                        (electricity)
                   "power": {"value": 1234.5, "unit": "W" | "kW"},            (electricity)
                   "valve": "OPEN" | "CLOSE" | "ERR", "batteryV": 3.4},
          "event": "VALVE_OPEN" | "VALVE_CLOSE" | "REVERSE" | "TAMPER" | "FAULT" | "LOWBAT",
          "errCode": 3}

`ts` is epoch SECONDS (a value in milliseconds lands after 2100 and is refused). Totals and
flows are converted to m³, m³/h, kWh and kW; a unit or field that does not fit the meter type
is refused. `battery_low` is set when `batteryV` is below a threshold (3.3 V by default,
``configure(battery_low_v=…)``): these meters report a voltage, not a percentage. A message
gives an event reading (if `event` is set) and a telemetry reading (if `data` has values).
Unknown fields, at any level, pass through on the telemetry reading (else the event's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import orjson

from adapters.vendor_common import (
    DeviceId,
    Integer,
    Number,
    TopicShape,
    VendorModel,
    add_extras,
    canonical,
    check_device,
    epoch_s_to_ns,
    location,
    option_number,
    parse_payload,
    unknown_values,
)
from devices.errors import ConfigError, RejectedInput
from devices.families import TELEMETRY_KIND, Channel, Family, MeterEvent
from devices.location import Location
from devices.reading import Reading

name = "vendor_meter"

TOPIC = TopicShape(("vendor", "meter"), "report")
SUBSCRIPTION = TOPIC.subscription

METER_TYPES = {"WATER": "water", "ELEC": "electricity", "GAS": "gas"}
_TYPE_CODES = {v: k for k, v in METER_TYPES.items()}
_TOTAL_FIELD = {"WATER": "water_m3", "ELEC": "energy_kwh", "GAS": "gas_m3"}
# unit → factor to the canonical unit, per meter type (what fits which meter).
_TOTAL_UNITS = {
    "WATER": {"L": 0.001, "m3": 1.0},
    "GAS": {"L": 0.001, "m3": 1.0},
    "ELEC": {"Wh": 0.001, "kWh": 1.0},
}
_FLOW_UNITS = {"L/h": 0.001, "m3/h": 1.0}
_POWER_UNITS = {"W": 0.001, "kW": 1.0}
VALVES = {"OPEN": "open", "CLOSE": "closed", "ERR": "abnormal"}
_VALVE_CODES = {v: k for k, v in VALVES.items()}
EVENTS = {
    "VALVE_OPEN": MeterEvent.VALVE_OPENED,
    "VALVE_CLOSE": MeterEvent.VALVE_CLOSED,
    "REVERSE": MeterEvent.REVERSE_FLOW,
    "TAMPER": MeterEvent.TAMPER,
    "FAULT": MeterEvent.FAULT,
    "LOWBAT": MeterEvent.LOW_BATTERY,
}
_EVENT_CODES = {kind.value: code for code, kind in EVENTS.items()}
# Which telemetry values explain each event, copied onto the event reading.
_EVENT_FIELDS: dict[MeterEvent, tuple[str, ...]] = {
    MeterEvent.VALVE_OPENED: ("valve",),
    MeterEvent.VALVE_CLOSED: ("valve",),
    MeterEvent.REVERSE_FLOW: ("flow_m3h",),
}
_DIGITS = 6  # unit conversions by 1000 must not leave float noise in stored values


_EventCode = Literal["VALVE_OPEN", "VALVE_CLOSE", "REVERSE", "TAMPER", "FAULT", "LOWBAT"]


class Quantity(VendorModel):
    value: Number
    unit: Literal["L", "m3", "Wh", "kWh", "L/h", "m3/h", "W", "kW"]


class MeterValues(VendorModel):
    total: Quantity | None = None
    flow: Quantity | None = None
    voltage: Number | None = None
    current: Number | None = None
    power: Quantity | None = None
    valve: Literal["OPEN", "CLOSE", "ERR"] | None = None
    batteryV: Number | None = None


class MeterReport(VendorModel):
    meterNo: DeviceId
    type: Literal["WATER", "ELEC", "GAS"]
    ts: Integer
    data: MeterValues = MeterValues()
    event: _EventCode | None = None
    errCode: Integer | None = None


_VENDOR_KEYS = frozenset(MeterReport.model_fields)
_ELECTRIC_ONLY = ("voltage", "current", "power")


class MeterCodec:
    """The codec for one battery threshold (a route's `options`)."""

    name = name

    def __init__(self, *, battery_low_v: float = 3.3) -> None:
        self.battery_low_v = option_number("battery_low_v", battery_low_v)
        if not 0.2 < self.battery_low_v < 4.8:
            raise ConfigError("battery_low_v must be within (0.2, 4.8) V")

    def decode(self, topic: str, payload: bytes) -> list[Reading]:
        community, device_id = TOPIC.parse(topic)
        report = parse_payload(MeterReport, payload)
        check_device(report.meterNo, device_id, "meterNo")
        time_ns = epoch_s_to_ns(report.ts, "ts")
        meter_type = METER_TYPES[report.type]
        measured = canonical(Family.METER, self._measurements(report))
        place = location(community)
        readings: list[Reading] = []
        if report.event is not None:
            event = EVENTS[report.event]
            values: dict[str, Any] = {"meter_type": meter_type}
            values.update((k, measured[k]) for k in _EVENT_FIELDS.get(event, ()) if k in measured)
            if event is MeterEvent.LOW_BATTERY:
                values["battery_low"] = True
            elif event is MeterEvent.FAULT and report.errCode is not None:
                values["fault_code"] = measured["fault_code"]
            readings.append(_reading(device_id, Channel.EVENT, event.value, time_ns, place, values))
        telemetry = {k: v for k, v in measured.items() if k != "fault_code"}
        if len(telemetry) > 1:  # more than the meter type
            readings.append(
                _reading(device_id, Channel.TELEMETRY, TELEMETRY_KIND, time_ns, place, telemetry)
            )
        if not readings:
            raise RejectedInput("empty", "data has no values and there is no event")
        extras: dict[str, Any] = {}
        for part in (report, report.data, report.data.total, report.data.flow, report.data.power):
            if part is not None and part.model_extra:
                extras.update(part.model_extra)
        if extras:
            last = readings[-1]
            readings[-1] = last.with_values(add_extras(Family.METER, dict(last.values), extras))
        return readings

    def _measurements(self, report: MeterReport) -> dict[str, Any]:
        data = report.data
        values: dict[str, Any] = {"meter_type": METER_TYPES[report.type]}
        if data.total is not None:
            factor = _TOTAL_UNITS[report.type].get(data.total.unit)
            if factor is None:
                raise RejectedInput(
                    "bad_value", f"data.total.unit does not fit a {report.type} meter"
                )
            values[_TOTAL_FIELD[report.type]] = round(data.total.value * factor, _DIGITS)
        if report.type == "ELEC":
            if data.flow is not None:
                raise RejectedInput("bad_value", "data.flow does not apply to an ELEC meter")
        else:
            present = [key for key in _ELECTRIC_ONLY if getattr(data, key) is not None]
            if present:
                raise RejectedInput("bad_value", f"data.{present[0]} applies to ELEC meters only")
        if data.flow is not None:
            values["flow_m3h"] = _convert(data.flow, _FLOW_UNITS, "data.flow.unit")
        if data.power is not None:
            values["power_kw"] = _convert(data.power, _POWER_UNITS, "data.power.unit")
        values["voltage_v"] = data.voltage
        values["current_a"] = data.current
        if data.valve is not None:
            values["valve"] = VALVES[data.valve]
        if data.batteryV is not None:
            if not 0 <= data.batteryV <= 5:
                raise RejectedInput("out_of_range", "data.batteryV must be within 0..5 V")
            values["battery_low"] = data.batteryV < self.battery_low_v
        values["fault_code"] = report.errCode
        return values

    def encode(self, reading: Reading) -> tuple[str, bytes]:
        """The topic and payload this head-end would publish for `reading`.

        Canonical fields the format has no place for (`settlement_m3`, `battery_pct`, phases
        B and C) are left out; a kind it cannot report raises ValueError.
        """
        if reading.family is not Family.METER or reading.channel is Channel.STATUS:
            raise ValueError(f"{name} only sends meter telemetry and events")
        event: str | None = None
        if reading.channel is Channel.EVENT:
            event = _EVENT_CODES.get(reading.kind)
            if event is None:
                raise ValueError(f"{name} cannot report {reading.kind!r}")
        v = reading.values
        meter_type = _meter_type(v)
        data: dict[str, Any] = {}
        if meter_type == "ELEC":
            if v.get("energy_kwh") is not None:
                data["total"] = {"value": _number(float(v["energy_kwh"]) * 1000), "unit": "Wh"}
            if v.get("voltage_v") is not None:
                data["voltage"] = v["voltage_v"]
            if v.get("current_a") is not None:
                data["current"] = v["current_a"]
            if v.get("power_kw") is not None:
                data["power"] = {"value": _number(float(v["power_kw"]) * 1000), "unit": "W"}
        else:
            total = v.get(_TOTAL_FIELD[meter_type])
            if total is not None:  # gas in m³, water in litres, as such meters count
                litres = meter_type == "WATER"
                value = _number(float(total) * 1000) if litres else total
                data["total"] = {"value": value, "unit": "L" if litres else "m3"}
            if v.get("flow_m3h") is not None:
                data["flow"] = {"value": _number(float(v["flow_m3h"]) * 1000), "unit": "L/h"}
        if v.get("valve") is not None:
            data["valve"] = _VALVE_CODES[str(v["valve"])]
        if v.get("battery_low") is not None:
            offset = -0.2 if v["battery_low"] else 0.2
            data["batteryV"] = round(self.battery_low_v + offset, 3)
        body: dict[str, Any] = {"meterNo": reading.device_id, "type": meter_type}
        body["ts"] = reading.time_ns // 1_000_000_000
        if data:
            body["data"] = data
        if event is not None:
            body["event"] = event
        if v.get("fault_code") is not None:
            body["errCode"] = v["fault_code"]
        body.update(unknown_values(Family.METER, v, _VENDOR_KEYS))
        return TOPIC.build(reading.location.community, reading.device_id), orjson.dumps(body)


def _convert(quantity: Quantity, units: Mapping[str, float], field: str) -> float:
    factor = units.get(quantity.unit)
    if factor is None:
        raise RejectedInput("bad_value", f"{field} is not one of {', '.join(units)}")
    return round(quantity.value * factor, _DIGITS)


def _meter_type(values: Mapping[str, Any]) -> str:
    kind = values.get("meter_type")
    if kind is not None:
        if kind not in _TYPE_CODES:
            raise ValueError(f"{name} has no meter type for {kind!r}")
        return _TYPE_CODES[kind]
    if any(values.get(k) is not None for k in ("energy_kwh", "voltage_v", "power_kw")):
        return "ELEC"
    return "GAS" if values.get("gas_m3") is not None else "WATER"


def _number(value: float) -> float | int:
    """Whole numbers as JSON integers, as meter firmware prints them."""
    rounded = round(value, 3)
    return int(rounded) if rounded.is_integer() else rounded


def _reading(
    device_id: str,
    channel: Channel,
    kind: str,
    time_ns: int,
    place: Location,
    values: dict[str, Any],
) -> Reading:
    return Reading(device_id, Family.METER, channel, kind, time_ns, place, values)


_DEFAULT = MeterCodec()


def configure(*, battery_low_v: float = 3.3) -> MeterCodec:
    """A codec whose meters count as low on battery below `battery_low_v` volts."""
    return MeterCodec(battery_low_v=battery_low_v)


def decode(topic: str, payload: bytes) -> list[Reading]:
    return _DEFAULT.decode(topic, payload)


def encode(reading: Reading) -> tuple[str, bytes]:
    return _DEFAULT.encode(reading)
