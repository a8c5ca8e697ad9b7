"""A foreign 4G elder wristband (老人手环): the band buffers samples and uploads them in
batches, with an alarm and a GPS fix riding along.

Topic:   vendor/band/{community}/{imei}/up
Payload: {"imei": "865432101234567",
          "samples": [{"t": "2024-05-20 08:30:00", "hr": 72, "spo2": 97, "step": 1200,
                       "temp": 365, "wear": 1}, ...],
          "alarm": {"type": "SOS" | "FALL" | "LOWBAT" | … | null, "t": "2024-05-20 08:31:02"},
          "gps": {"lat": 31.2304, "lng": 121.4737}, "bat": 85}

Times are local (UTC+8). `temp` is tenths of °C. As such bands do, 0 in `hr`, `spo2` or `temp`
means "not measured" (no skin contact, sensor busy): the field is left out, not stored as a
flat line that would look like cardiac arrest. `gps` of exactly (0, 0) means no fix.
One telemetry reading per sample; the latest sample also gets the position and battery
level. An alarm becomes an event reading (with the position, for dispatch). Nothing at all
is `empty`; more than `MAX_SAMPLES` samples is `too_many`. Two samples at the same time
would overwrite each other in storage, so that is refused too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import orjson
from pydantic import Field, ValidationError

from adapters.base import check_size, rejection_from
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
    format_local_time,
    location,
    parse_local_time,
    unknown_values,
)
from devices.errors import RejectedInput
from devices.families import TELEMETRY_KIND, Channel, ElderEvent, Family
from devices.reading import Reading

name = "vendor_wearable"

TOPIC = TopicShape(("vendor", "band"), "up")
SUBSCRIPTION = TOPIC.subscription
MAX_SAMPLES = 120  # a band buffering one sample a minute uploads at least every two hours

ALARMS = {
    "SOS": ElderEvent.SOS,
    "FALL": ElderEvent.FALL,
    "LOWBAT": ElderEvent.LOW_BATTERY,
    "OFFWRIST": ElderEvent.WEAR_OFF,
    "ONWRIST": ElderEvent.WEAR_ON,
    "FENCE_OUT": ElderEvent.GEOFENCE_EXIT,
    "FENCE_IN": ElderEvent.GEOFENCE_ENTER,
    "NOMOVE": ElderEvent.INACTIVITY,
    "FAULT": ElderEvent.FAULT,
}
_ALARM_CODES = {kind.value: code for code, kind in ALARMS.items()}
_AlarmType = Literal[
    "SOS", "FALL", "LOWBAT", "OFFWRIST", "ONWRIST", "FENCE_OUT", "FENCE_IN", "NOMOVE", "FAULT"
]


class Sample(VendorModel):
    t: LocalTime
    hr: Number | None = None
    spo2: Number | None = None
    step: Integer | None = None
    temp: Number | None = None
    wear: Literal[0, 1] | None = None


class Alarm(VendorModel):
    type: _AlarmType | None = None
    t: LocalTime | None = None


class Gps(VendorModel):
    lat: Number
    lng: Number


class BandUpload(VendorModel):
    imei: DeviceId
    samples: Annotated[list[Sample], Field(default_factory=list, max_length=MAX_SAMPLES)]
    alarm: Alarm | None = None
    gps: Gps | None = None
    bat: Number | None = None


_SAMPLE_KEYS = frozenset(Sample.model_fields)
_ALARM_KEYS = frozenset(Alarm.model_fields)


def decode(topic: str, payload: bytes) -> list[Reading]:
    community, device_id = TOPIC.parse(topic)
    upload = _parse(payload)
    check_device(upload.imei, device_id, "imei")
    alarm = upload.alarm
    alarm_type = None if alarm is None else alarm.type
    if not upload.samples and alarm_type is None:
        raise RejectedInput("empty", "no samples and no alarm")
    shared = canonical(Family.ELDER, _shared(upload))  # position and battery level
    place = location(community)
    readings: list[Reading] = []
    times: set[int] = set()
    for i, sample in enumerate(upload.samples):
        time_ns = parse_local_time(sample.t, f"samples.{i}.t")
        if time_ns in times:
            raise RejectedInput("bad_value", f"samples.{i}.t repeats an earlier sample's time")
        times.add(time_ns)
        values = canonical(Family.ELDER, _sample_values(sample))
        values = add_extras(Family.ELDER, values, sample.model_extra)
        readings.append(
            Reading(
                device_id, Family.ELDER, Channel.TELEMETRY, TELEMETRY_KIND, time_ns, place, values
            )
        )
    if readings:
        latest = max(range(len(readings)), key=lambda i: readings[i].time_ns)
        top = add_extras(Family.ELDER, {**readings[latest].values, **shared}, upload.model_extra)
        if upload.gps is not None:
            top = add_extras(Family.ELDER, top, upload.gps.model_extra)
        readings[latest] = readings[latest].with_values(top)
    if alarm is not None and alarm_type is not None:
        if alarm.t is None:
            raise RejectedInput("missing_field", "alarm.t is required with alarm.type")
        time_ns = parse_local_time(alarm.t, "alarm.t")
        kind = ALARMS[alarm_type]
        values = add_extras(Family.ELDER, dict(shared), alarm.model_extra)
        if not readings:  # an alarm alone carries the upload's unknown fields
            values = add_extras(Family.ELDER, values, upload.model_extra)
            if upload.gps is not None:
                values = add_extras(Family.ELDER, values, upload.gps.model_extra)
        readings.append(
            Reading(device_id, Family.ELDER, Channel.EVENT, kind.value, time_ns, place, values)
        )
    return readings


def _parse(payload: bytes) -> BandUpload:
    check_size(payload)
    try:
        return BandUpload.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False, include_context=False)[0]
        if first["type"] == "too_long" and tuple(first["loc"]) == ("samples",):
            raise RejectedInput("too_many", f"more than {MAX_SAMPLES} samples") from None
        raise rejection_from(exc, BandUpload) from None


def _sample_values(sample: Sample) -> dict[str, Any]:
    def measured(x: float | None) -> float | None:
        return None if x is None or x == 0 else x

    temp = measured(sample.temp)
    return {
        "heart_rate_bpm": measured(sample.hr),
        "spo2_pct": measured(sample.spo2),
        "steps": sample.step,
        "body_temp_c": None if temp is None else round(temp / 10, 1),
        "worn": None if sample.wear is None else sample.wear == 1,
    }


def _shared(upload: BandUpload) -> dict[str, Any]:
    values: dict[str, Any] = {"battery_pct": upload.bat}
    gps = upload.gps
    if gps is not None and (gps.lat, gps.lng) != (0, 0):
        values["latitude"] = gps.lat
        values["longitude"] = gps.lng
    return values


def encode(reading: Reading) -> tuple[str, bytes]:
    """The topic and payload the band would upload for `reading` (a one-sample batch, or an
    alarm alone). Canonical fields the band has no place for (`activity`,
    `inactive_min`, `inside_geofence`) are left out; a kind it cannot raise is a ValueError.
    """
    if reading.family is not Family.ELDER or reading.channel is Channel.STATUS:
        raise ValueError(f"{name} only sends elder telemetry and alarms")
    v = reading.values
    when = format_local_time(reading.time_ns)
    body: dict[str, Any] = {"imei": reading.device_id}
    extras = unknown_values(Family.ELDER, v, ())  # they go into the sample or the alarm
    if reading.channel is Channel.TELEMETRY:
        sample: dict[str, Any] = {"t": when}
        if v.get("heart_rate_bpm") is not None:
            sample["hr"] = _number(v["heart_rate_bpm"])
        if v.get("spo2_pct") is not None:
            sample["spo2"] = _number(v["spo2_pct"])
        if v.get("steps") is not None:
            sample["step"] = v["steps"]
        if v.get("body_temp_c") is not None:
            sample["temp"] = round(float(v["body_temp_c"]) * 10)
        if v.get("worn") is not None:
            sample["wear"] = int(bool(v["worn"]))
        sample.update(_clear_of(extras, _SAMPLE_KEYS))
        body["samples"] = [sample]
    else:
        code = _ALARM_CODES.get(reading.kind)
        if code is None:
            raise ValueError(f"{name} cannot raise {reading.kind!r}")
        body["alarm"] = {"type": code, "t": when, **_clear_of(extras, _ALARM_KEYS)}
    if v.get("latitude") is not None and v.get("longitude") is not None:
        body["gps"] = {"lat": v["latitude"], "lng": v["longitude"]}
    if v.get("battery_pct") is not None:
        body["bat"] = _number(v["battery_pct"])
    return TOPIC.build(reading.location.community, reading.device_id), orjson.dumps(body)


def _clear_of(extras: Mapping[str, Any], vendor_keys: frozenset[str]) -> Mapping[str, Any]:
    clash = vendor_keys.intersection(extras)
    if clash:
        raise ValueError(f"values {sorted(clash)} would shadow vendor fields")
    return extras


def _number(value: Any) -> float | int:
    """Whole numbers as JSON integers, as the band's firmware prints them."""
    number = float(value)
    return int(number) if number.is_integer() else number
