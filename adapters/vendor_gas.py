"""A foreign NB-IoT household gas detector (可燃气体探测器 with a CO cell), in the style of
Chinese NB-IoT platforms: one JSON report per interval or alarm.

Topic:   vendor/gasdet/{community}/{imei}/data
Payload: {"imei": "868480051234567", "time": "2024-05-20 08:30:15"  (UTC+8),
          "status": 0, "gas": 2500, "co": 12.5, "temp": 235, "batV": 3.45,
          "faultCode": 17, "rssi": -85, ...}

Units differ from the canonical model:
- `gas` is combustible gas in ppm by volume; canonical is %LEL of the gas the detector is
  calibrated for: %LEL = ppm / LEL × 100, LEL = 50 000 ppm for methane (the default) and
  21 000 ppm for LPG/propane — set per route with ``configure(lel_ppm=…)``. Above the LEL the
  reading saturates at 100 %LEL, as a %LEL sensor does: a leak that strong must not be
  rejected as absurd. Only a concentration above 100 % by volume is.
- `co` is mg/m³; ppm = mg/m³ × 24.45 / 28.01 (25 °C, 1 atm).
- `temp` is tenths of °C; `batV` is the battery voltage, 3.0 V = 0 % to 3.6 V = 100 %
  (clamped; both ends configurable).

`status`: 0 normal, 1 gas alarm, 2 CO alarm, 3 fault (`faultCode`), 4 tamper (removed from
the wall), 5 low battery, 6 self-test passed, 7 alarm cleared. A message gives the event
reading (if status ≠ 0) and a telemetry reading with the measurements (if any): 1–2 readings.
Unknown fields (`rssi` …) pass through on the telemetry reading (the event's if there are
no measurements) for privacy to drop and count.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import Field

from adapters.vendor_common import (
    DeviceId,
    Integer,
    LocalTime,
    Number,
    TopicShape,
    VendorModel,
    add_extras,
    canonical,
    check_device,
    clamp,
    format_local_time,
    location,
    option_number,
    parse_local_time,
    parse_payload,
    unknown_values,
)
from devices.errors import ConfigError, RejectedInput
from devices.families import TELEMETRY_KIND, Channel, Family, SafetyEvent
from devices.location import Location
from devices.reading import Reading

name = "vendor_gas"

TOPIC = TopicShape(("vendor", "gasdet"), "data")
SUBSCRIPTION = TOPIC.subscription

METHANE_LEL_PPM = 50_000.0
LPG_LEL_PPM = 21_000.0
CO_PPM_PER_MG_M3 = 24.45 / 28.01  # molar volume at 25 °C / molar mass of CO
_MAX_PPM = 1_000_000.0  # 100 % by volume

STATUS: dict[int, SafetyEvent | None] = {
    0: None,
    1: SafetyEvent.GAS_ALARM,
    2: SafetyEvent.CO_ALARM,
    3: SafetyEvent.FAULT,
    4: SafetyEvent.TAMPER,
    5: SafetyEvent.LOW_BATTERY,
    6: SafetyEvent.SELF_TEST,
    7: SafetyEvent.ALARM_CLEARED,
}
_STATUS_CODES = {kind.value: code for code, kind in STATUS.items() if kind is not None}
# Which measurements explain each event, copied onto the event reading for the alert rules.
_EVENT_FIELDS: dict[SafetyEvent, tuple[str, ...]] = {
    SafetyEvent.GAS_ALARM: ("gas_lel_pct",),
    SafetyEvent.CO_ALARM: ("co_ppm",),
    SafetyEvent.LOW_BATTERY: ("battery_pct",),
}
_MEASUREMENTS = ("gas_lel_pct", "co_ppm", "temperature_c", "battery_pct")


class GasReport(VendorModel):
    imei: DeviceId
    time: LocalTime
    status: Integer = 0
    gas: Annotated[Number, Field(ge=0, le=_MAX_PPM)] | None = None
    co: Annotated[Number, Field(ge=0)] | None = None
    temp: Number | None = None
    batV: Annotated[Number, Field(ge=0, le=5)] | None = None
    faultCode: Integer | None = None


_VENDOR_KEYS = frozenset(GasReport.model_fields)


class GasCodec:
    """The codec for one calibration gas and battery curve (a route's `options`)."""

    name = name

    def __init__(
        self,
        *,
        lel_ppm: float = METHANE_LEL_PPM,
        battery_empty_v: float = 3.0,
        battery_full_v: float = 3.6,
    ) -> None:
        self.lel_ppm = option_number("lel_ppm", lel_ppm)
        self.battery_empty_v = option_number("battery_empty_v", battery_empty_v)
        self.battery_full_v = option_number("battery_full_v", battery_full_v)
        if not 0 < self.lel_ppm <= _MAX_PPM:
            raise ConfigError("lel_ppm must be within (0, 1000000]")
        if not 0 <= self.battery_empty_v < self.battery_full_v <= 5:
            raise ConfigError("need 0 <= battery_empty_v < battery_full_v <= 5")

    def decode(self, topic: str, payload: bytes) -> list[Reading]:
        community, device_id = TOPIC.parse(topic)
        report = parse_payload(GasReport, payload)
        check_device(report.imei, device_id, "imei")
        time_ns = parse_local_time(report.time, "time")
        if report.status not in STATUS:
            raise RejectedInput("bad_kind", "status is not a known status code (0-7)")
        event = STATUS[report.status]
        span = self.battery_full_v - self.battery_empty_v
        measured = canonical(
            Family.SAFETY,
            {
                "gas_lel_pct": None
                if report.gas is None
                else min(100.0, round(report.gas / self.lel_ppm * 100, 4)),
                "co_ppm": None if report.co is None else round(report.co * CO_PPM_PER_MG_M3, 2),
                "temperature_c": None if report.temp is None else round(report.temp / 10, 1),
                "battery_pct": None
                if report.batV is None
                else round(clamp((report.batV - self.battery_empty_v) / span * 100, 0, 100), 1),
                "fault_code": report.faultCode,
            },
        )
        place = location(community)
        readings: list[Reading] = []
        if event is not None:
            values: dict[str, Any] = {"detector": "gas"}
            values.update((k, measured[k]) for k in _EVENT_FIELDS.get(event, ()) if k in measured)
            if event is SafetyEvent.FAULT and "fault_code" in measured:
                values["fault_code"] = measured["fault_code"]
            elif event is SafetyEvent.TAMPER:
                values["tamper"] = True
            elif event is SafetyEvent.SELF_TEST:
                values["self_test_ok"] = True
            readings.append(_reading(device_id, Channel.EVENT, event.value, time_ns, place, values))
        telemetry = {k: measured[k] for k in _MEASUREMENTS if k in measured}
        if telemetry:
            values = {"detector": "gas", **telemetry}
            readings.append(
                _reading(device_id, Channel.TELEMETRY, TELEMETRY_KIND, time_ns, place, values)
            )
        if not readings:
            raise RejectedInput("empty", "status is normal and there are no measurements")
        extras = report.model_extra
        if extras:
            last = readings[-1]
            readings[-1] = last.with_values(add_extras(Family.SAFETY, dict(last.values), extras))
        return readings

    def encode(self, reading: Reading) -> tuple[str, bytes]:
        """The topic and payload this detector would publish for `reading`.

        Canonical fields a gas detector does not measure (smoke, humidity) are left out; a
        kind it cannot report (smoke alarm, heat alarm) raises ValueError.
        """
        if reading.family is not Family.SAFETY or reading.channel is Channel.STATUS:
            raise ValueError(f"{name} only sends safety telemetry and events")
        if reading.channel is Channel.TELEMETRY:
            status = 0
        elif reading.kind in _STATUS_CODES:
            status = _STATUS_CODES[reading.kind]
        else:
            raise ValueError(f"{name} cannot report {reading.kind!r}")
        v = reading.values
        body: dict[str, Any] = {
            "imei": reading.device_id,
            "time": format_local_time(reading.time_ns),
            "status": status,
        }
        if v.get("gas_lel_pct") is not None:
            body["gas"] = _number(float(v["gas_lel_pct"]) * self.lel_ppm / 100, 2)
        if v.get("co_ppm") is not None:
            body["co"] = _number(float(v["co_ppm"]) / CO_PPM_PER_MG_M3, 4)
        if v.get("temperature_c") is not None:
            body["temp"] = round(float(v["temperature_c"]) * 10)
        if v.get("battery_pct") is not None:
            span = self.battery_full_v - self.battery_empty_v
            body["batV"] = round(self.battery_empty_v + float(v["battery_pct"]) / 100 * span, 4)
        if v.get("fault_code") is not None:
            body["faultCode"] = v["fault_code"]
        body.update(unknown_values(Family.SAFETY, v, _VENDOR_KEYS))
        return TOPIC.build(reading.location.community, reading.device_id), orjson.dumps(body)


def _reading(
    device_id: str,
    channel: Channel,
    kind: str,
    time_ns: int,
    place: Location,
    values: dict[str, Any],
) -> Reading:
    return Reading(device_id, Family.SAFETY, channel, kind, time_ns, place, values)


def _number(value: float, digits: int) -> float | int:
    """Whole numbers as JSON integers, as the device firmware prints them."""
    rounded = round(value, digits)
    return int(rounded) if rounded.is_integer() else rounded


_DEFAULT = GasCodec()


def configure(
    *, lel_ppm: float = METHANE_LEL_PPM, battery_empty_v: float = 3.0, battery_full_v: float = 3.6
) -> GasCodec:
    """A codec for another calibration gas (LPG: ``lel_ppm=21000``) or battery curve."""
    return GasCodec(lel_ppm=lel_ppm, battery_empty_v=battery_empty_v, battery_full_v=battery_full_v)


def decode(topic: str, payload: bytes) -> list[Reading]:
    return _DEFAULT.decode(topic, payload)


def encode(reading: Reading) -> tuple[str, bytes]:
    return _DEFAULT.encode(reading)
