"""Canonical field sets of the four device families (R1.1), versioned by `SCHEMA_VERSION`.

Each family's model names every field with its unit in the name (`gas_lel_pct`, `co_ppm`,
`energy_kwh`, `heart_rate_bpm` …), its plausible range (a value outside is rejected as absurd,
R8) and its personal-data class (`pii`), which the privacy policy and `docs/privacy.md` build on.
Models accept extra keys on purpose: a vendor's unknown field must reach the privacy layer,
which drops and counts it (allow-list), rather than make the whole reading fail.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from devices.families import AccessMethod, Family


class DataClass(StrEnum):
    """Personal-data class of a field (PIPL; see DOMAIN.md)."""

    NON_PERSONAL = "non_personal"
    DIRECT_IDENTIFIER = "direct_identifier"  # name, ID number, phone, card number, plate
    QUASI_IDENTIFIER = "quasi_identifier"  # room, pseudonymous references
    BIOMETRIC = "biometric"  # face image / feature vector (sensitive, Art. 28)
    HEALTH = "health"  # heart rate, SpO2 … (sensitive, Art. 28)
    WHEREABOUTS = "whereabouts"  # position, entry/exit trail (sensitive, Art. 28)


def _f(
    pii: DataClass = DataClass.NON_PERSONAL,
    *,
    unit: str = "",
    ge: float | None = None,
    le: float | None = None,
    max_length: int | None = None,
    doc: str = "",
) -> Any:
    extra: dict[str, Any] = {"pii": pii.value}
    if unit:
        extra["unit"] = unit
    return Field(
        default=None,
        ge=ge,
        le=le,
        max_length=max_length,
        description=doc or None,
        json_schema_extra=extra,
    )


_ID_TEXT = 64  # longest identifier-like text a device may send (names, card numbers …)


class FamilyData(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, str_strip_whitespace=True)


class AccessData(FamilyData):
    """Door/gate entry, vehicle barrier, door state and perimeter alarms."""

    method: AccessMethod | None = _f(doc="how the person or vehicle was identified")
    direction: Literal["in", "out"] | None = _f()
    granted: bool | None = _f(doc="whether the gate opened")
    door: str | None = _f(max_length=_ID_TEXT, doc="door, lane or perimeter zone name")
    held_open_s: float | None = _f(unit="s", ge=0, le=7 * 86400)
    similarity: float | None = _f(ge=0, le=1, doc="face-match score")
    person_name: str | None = _f(DataClass.DIRECT_IDENTIFIER, max_length=_ID_TEXT)
    id_number: str | None = _f(DataClass.DIRECT_IDENTIFIER, max_length=_ID_TEXT)
    phone: str | None = _f(DataClass.DIRECT_IDENTIFIER, max_length=_ID_TEXT)
    card_no: str | None = _f(DataClass.DIRECT_IDENTIFIER, max_length=_ID_TEXT)
    plate: str | None = _f(DataClass.DIRECT_IDENTIFIER, max_length=16)
    face_image: str | None = _f(DataClass.BIOMETRIC, doc="base64 image")
    face_feature: str | None = _f(DataClass.BIOMETRIC, doc="base64 feature vector")
    resident_ref: str | None = _f(DataClass.QUASI_IDENTIFIER, max_length=_ID_TEXT)
    employee_no: str | None = _f(
        DataClass.DIRECT_IDENTIFIER, max_length=_ID_TEXT, doc="a face terminal's person number"
    )
    event_major: int | None = _f(ge=0, le=65_535, doc="a terminal's own event code, kept as is")
    event_minor: int | None = _f(ge=0, le=65_535)


class SafetyData(FamilyData):
    """Smoke, combustible gas and CO detectors."""

    detector: Literal["smoke", "gas", "co", "heat", "combo"] | None = _f()
    smoke_density_db_m: float | None = _f(unit="dB/m", ge=0, le=100)
    smoke_alarm: bool | None = _f()
    gas_lel_pct: float | None = _f(unit="%LEL", ge=0, le=100)
    co_ppm: float | None = _f(unit="ppm", ge=0, le=10_000)
    temperature_c: float | None = _f(unit="°C", ge=-50, le=300)
    humidity_pct: float | None = _f(unit="%RH", ge=0, le=100)
    battery_pct: float | None = _f(unit="%", ge=0, le=100)
    tamper: bool | None = _f()
    self_test_ok: bool | None = _f()
    fault_code: int | None = _f(ge=0, le=65_535)


class MeterData(FamilyData):
    """Electricity, water and gas meters."""

    meter_type: Literal["electricity", "water", "gas", "heat"] | None = _f()
    energy_kwh: float | None = _f(unit="kWh", ge=0, le=1e9)
    voltage_v: float | None = _f(unit="V", ge=0, le=1000, doc="phase A")
    voltage_b_v: float | None = _f(unit="V", ge=0, le=1000)
    voltage_c_v: float | None = _f(unit="V", ge=0, le=1000)
    current_a: float | None = _f(unit="A", ge=-1000, le=1000, doc="phase A, signed")
    power_kw: float | None = _f(unit="kW", ge=-1000, le=1000, doc="signed")
    water_m3: float | None = _f(unit="m³", ge=0, le=1e9, doc="cumulative")
    settlement_m3: float | None = _f(unit="m³", ge=0, le=1e9)
    flow_m3h: float | None = _f(unit="m³/h", ge=-1000, le=1000)
    gas_m3: float | None = _f(unit="m³", ge=0, le=1e9)
    valve: Literal["open", "closed", "abnormal"] | None = _f()
    battery_low: bool | None = _f()
    battery_pct: float | None = _f(unit="%", ge=0, le=100)
    fault_code: int | None = _f(ge=0, le=65_535)
    fault: str | None = _f(max_length=_ID_TEXT, doc="fault name, e.g. no_such_data")


class ElderData(FamilyData):
    """Wearables and monitors for elders living alone (health data: sensitive)."""

    heart_rate_bpm: float | None = _f(DataClass.HEALTH, unit="bpm", ge=0, le=300)
    spo2_pct: float | None = _f(DataClass.HEALTH, unit="%", ge=0, le=100)
    body_temp_c: float | None = _f(DataClass.HEALTH, unit="°C", ge=20, le=46)
    steps: int | None = _f(DataClass.HEALTH, ge=0, le=1_000_000)
    activity: Literal["resting", "walking", "lying", "sleeping", "unknown"] | None = _f(
        DataClass.HEALTH
    )
    inactive_min: float | None = _f(DataClass.HEALTH, unit="min", ge=0, le=7 * 1440)
    worn: bool | None = _f()
    battery_pct: float | None = _f(unit="%", ge=0, le=100)
    latitude: float | None = _f(DataClass.WHEREABOUTS, unit="°", ge=-90, le=90)
    longitude: float | None = _f(DataClass.WHEREABOUTS, unit="°", ge=-180, le=180)
    inside_geofence: bool | None = _f(DataClass.WHEREABOUTS)


class StatusData(FamilyData):
    """Liveness messages on the `status` channel, for every family."""

    uptime_s: float | None = _f(unit="s", ge=0, le=1e10)
    rssi_dbm: float | None = _f(unit="dBm", ge=-200, le=50)
    firmware: str | None = _f(max_length=_ID_TEXT)
    battery_pct: float | None = _f(unit="%", ge=0, le=100)


FAMILY_DATA: dict[Family, type[FamilyData]] = {
    Family.ACCESS: AccessData,
    Family.SAFETY: SafetyData,
    Family.METER: MeterData,
    Family.ELDER: ElderData,
}


def field_classes(model: type[FamilyData]) -> dict[str, DataClass]:
    """Each canonical field's personal-data class, read from the model's metadata."""
    out: dict[str, DataClass] = {}
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra
        pii = extra.get("pii") if isinstance(extra, dict) else None
        out[name] = DataClass(str(pii)) if pii else DataClass.NON_PERSONAL
    return out
