"""Device families, message channels and the event kinds each family can report."""

from __future__ import annotations

from enum import StrEnum


class Family(StrEnum):
    ACCESS = "access"
    SAFETY = "safety"
    METER = "meter"
    ELDER = "elder"


class Channel(StrEnum):
    """The last topic level: periodic values, discrete events, or liveness."""

    TELEMETRY = "telemetry"
    EVENT = "event"
    STATUS = "status"


class AccessEvent(StrEnum):
    ENTRY_GRANTED = "entry_granted"
    ENTRY_DENIED = "entry_denied"
    EXIT = "exit"
    VEHICLE_ENTRY = "vehicle_entry"
    VEHICLE_EXIT = "vehicle_exit"
    DOOR_FORCED = "door_forced"
    DOOR_HELD_OPEN = "door_held_open"
    PERIMETER_BREACH = "perimeter_breach"
    TAMPER = "tamper"
    FAULT = "fault"
    UNKNOWN_EVENT = "unknown_event"  # a terminal's code not mapped here: kept with the code


class AccessMethod(StrEnum):
    FACE = "face"
    CARD = "card"
    QR = "qr"
    PASSWORD = "password"
    PLATE = "plate"
    REMOTE = "remote"
    NONE = "none"


class SafetyEvent(StrEnum):
    SMOKE_ALARM = "smoke_alarm"
    GAS_ALARM = "gas_alarm"
    CO_ALARM = "co_alarm"
    HEAT_ALARM = "heat_alarm"
    ALARM_CLEARED = "alarm_cleared"
    TAMPER = "tamper"
    SELF_TEST = "self_test"
    FAULT = "fault"
    LOW_BATTERY = "low_battery"


class MeterEvent(StrEnum):
    VALVE_OPENED = "valve_opened"
    VALVE_CLOSED = "valve_closed"
    REVERSE_FLOW = "reverse_flow"
    TAMPER = "tamper"
    FAULT = "fault"
    LOW_BATTERY = "low_battery"


class ElderEvent(StrEnum):
    FALL = "fall"
    SOS = "sos"
    WEAR_ON = "wear_on"
    WEAR_OFF = "wear_off"
    GEOFENCE_EXIT = "geofence_exit"
    GEOFENCE_ENTER = "geofence_enter"
    INACTIVITY = "inactivity"
    LOW_BATTERY = "low_battery"
    FAULT = "fault"


class StatusKind(StrEnum):
    """Liveness: a device announces itself online, beats, or its last-will says offline."""

    ONLINE = "online"
    OFFLINE = "offline"
    HEARTBEAT = "heartbeat"


TELEMETRY_KIND = "telemetry"

EVENT_KINDS: dict[Family, type[StrEnum]] = {
    Family.ACCESS: AccessEvent,
    Family.SAFETY: SafetyEvent,
    Family.METER: MeterEvent,
    Family.ELDER: ElderEvent,
}
