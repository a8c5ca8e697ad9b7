"""The alert vocabulary shared by rules, engine, routing, escalation and delivery.

Flow: `rules` turns de-identified readings and liveness events into `Condition`s (a condition
at a place is active or has ended); the `engine` keeps one open `Alert` per (place, condition
key), counts repeats, upgrades severity, groups incidents and clears; `routing` picks members
by place and severity; `escalation` raises level when a deadline passes; `delivery` sends
`Notification`s through a persisted outbox. Nothing here carries raw personal data: a subject
is a pseudonym (`k1:…`), never a name or an ID number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from devices.location import Location
from devices.places import PlaceLevel, place_key


class Severity(IntEnum):
    """突发事件 grading: I (特别重大, red) is the highest, IV (一般, blue) the lowest."""

    I = 1  # noqa: E741  (the regulations' own name)
    II = 2
    III = 3
    IV = 4

    @property
    def colour(self) -> str:
        return ("red", "orange", "yellow", "blue")[self.value - 1]

    @property
    def label(self) -> str:
        return self.name


class AlertState(StrEnum):
    """发现—推送—处置—协调—监督—反馈 as states."""

    RAISED = "raised"
    NOTIFIED = "notified"
    ACKNOWLEDGED = "acknowledged"
    HANDLING = "handling"
    RESOLVED = "resolved"  # with feedback
    CLOSED = "closed"  # with a satisfaction rating 1–5
    CLEARED = "cleared"  # the condition ended by itself (rules that auto-clear)


OPEN_STATES = frozenset(
    {AlertState.RAISED, AlertState.NOTIFIED, AlertState.ACKNOWLEDGED, AlertState.HANDLING}
)


@dataclass(frozen=True, slots=True)
class Condition:
    """What a rule found. `active=False` says the condition has ended (for auto-clearing rules).

    `key` identifies the condition kind within a place (e.g. ``gas_lel`` or ``fall``); one open
    alert exists per (place_key, key).
    """

    rule_id: str
    key: str
    kind: str  # human-facing kind: gas_leak, fire, elder_fall, device_offline …
    severity: Severity
    location: Location  # already cut to `level`
    level: PlaceLevel
    at_ns: int
    active: bool = True
    device_id: str = ""
    subject_ref: str = ""  # pseudonymous subject reference, if any
    value: float | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)  # JSON-safe, no personal data
    auto_clear: bool = True  # False: stays open until resolved by a person
    incident_of: str = ""  # composite rules: the key of the incident this belongs to

    @property
    def place(self) -> str:
        return place_key(self.location, self.level)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A condition the alert store would not take (not retryable: a refused audit record, a
    value the store will not hold): its position in the hand-off and a reason safe to keep."""

    index: int
    reason: str


@dataclass(frozen=True, slots=True)
class Alert:
    id: int
    place: str
    key: str
    kind: str
    severity: Severity
    state: AlertState
    location: Location
    level: PlaceLevel
    first_ns: int
    last_ns: int
    count: int
    device_id: str = ""
    subject_ref: str = ""
    incident_id: int | None = None  # member of a grouped incident (its notifications inhibited)
    escalation_level: int = 0  # 0 = first responders; 1 = grid chief; 2 = duty desk; 3 = street
    ack_deadline_ns: int | None = None
    resolve_deadline_ns: int | None = None


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to one recipient on one channel; `idempotency_key` makes redelivery safe."""

    idempotency_key: str  # f"{alert_id}:{event_seq}:{member_id}:{channel}"
    alert_id: int
    member_id: str
    channel: str  # mqtt | webhook | websocket
    target: str  # topic or URL
    payload: Mapping[str, Any]  # only what the member needs to act, no personal data
