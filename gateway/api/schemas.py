"""Request and response models (`XPublic`, `XsPublic(data, count)`, `XIn`). A response model
is the allow-list of what leaves the API: nothing personal is in any of them (a subject is a
pseudonym, feedback is scrubbed, members carry no contact details)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def at(ns: int | None) -> datetime | None:
    """A nanosecond epoch stamp as an aware UTC datetime."""
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


def ns_of(when: datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1e9)


# What a nanosecond stamp in a signed 64-bit integer (SQLite, InfluxDB) can hold, with room for
# the day a default range reaches back from its end.
EARLIEST = datetime(1678, 1, 1, tzinfo=UTC)
LATEST = datetime(2262, 1, 1, tzinfo=UTC)


def _storable(when: datetime) -> datetime:
    if not EARLIEST <= (when if when.tzinfo else when.replace(tzinfo=UTC)) <= LATEST:
        raise ValueError(f"a time between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} is needed")
    return when


Instant = Annotated[datetime, AfterValidator(_storable)]
"""A time a request filters by (naive means UTC) that `ns_of` turns into a storable stamp."""


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- auth ------------------------------------------------------------------------------------


class TokenPublic(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime


class MePublic(BaseModel):
    id: str
    kind: str
    roles: list[str]
    scopes: list[str]


# -- places and members ----------------------------------------------------------------------


class PlacePublic(BaseModel):
    key: str
    level: str
    code: str
    name: str
    children: list[PlacePublic] = []
    path: list[str] = []  # the top places of a list: names from the community down to this one


class PlacesPublic(BaseModel):
    data: list[PlacePublic]
    count: int


class MemberPublic(BaseModel):
    id: str
    name: str
    role: str
    role_label: str
    places: list[str]
    active: bool


class MembersPublic(BaseModel):
    data: list[MemberPublic]
    count: int


# -- devices ---------------------------------------------------------------------------------


class DevicePublic(BaseModel):
    id: str
    family: str
    vendor: str
    adapter: str
    place: str
    power: str
    online: bool | None
    last_seen: datetime | None


class DevicesPublic(BaseModel):
    data: list[DevicePublic]
    count: int


class LivenessPoint(BaseModel):
    at: datetime
    online: bool
    reason: str


class DeviceDetailPublic(DevicePublic):
    place_names: list[str]
    gate_approved: bool
    history: list[LivenessPoint]


class OnlineCount(BaseModel):
    key: str  # a family, or a building's place key
    name: str = ""
    total: int
    online: int
    offline: int
    never_seen: int
    online_rate: float | None


class StatusPublic(BaseModel):
    total: int
    online: int
    offline: int
    never_seen: int
    online_rate: float | None
    by_family: list[OnlineCount]
    by_building: list[OnlineCount]
    offline_that_matter: list[DevicePublic]


# -- readings --------------------------------------------------------------------------------


class Cell(BaseModel):
    time: datetime
    place: str  # the place key of the group ("" when not grouped)
    value: float | None  # None: no data, or suppressed
    suppressed: bool = False


class ReadingsPublic(BaseModel):
    measurement: str
    field: str
    fn: str
    window: str
    group_by: str | None
    person_related: bool
    k: int | None  # the smallest group a cell may describe (person-related only)
    suppressed: int  # cells withheld because they describe fewer than k persons
    data: list[Cell]
    count: int


# -- alerts ----------------------------------------------------------------------------------


class AlertPublic(BaseModel):
    id: int
    kind: str
    key: str
    severity: str
    colour: str
    state: str
    place: str
    level: str
    first_seen: datetime
    last_seen: datetime
    count: int
    device_id: str
    subject_ref: str
    incident_id: int | None
    escalation_level: int
    ack_deadline: datetime | None
    resolve_deadline: datetime | None
    allowed_actions: list[str]
    acknowledged_by: str | None = None  # in lists and one alert; not in live-feed messages


class AlertsPublic(BaseModel):
    data: list[AlertPublic]
    count: int


class AlertSummaryPublic(BaseModel):
    """Alerts raised since a time, counted (a screen's charts)."""

    since: datetime
    total: int
    by_severity: dict[str, int]
    by_state: dict[str, int]
    open: int
    acknowledged: int
    mean_ack_s: float | None  # raise to first acknowledgement, over those acknowledged


class StepPublic(BaseModel):
    seq: int
    at: datetime
    actor: str
    step: str
    state: str
    severity: str
    escalation_level: int
    detail: dict[str, object]


class DeliveryPublic(BaseModel):
    member_id: str
    channel: str
    for_seq: int | None
    state: str
    attempts: int
    sent_at: datetime | None


class AlertDetailPublic(AlertPublic):
    place_names: list[str]
    feedback: str | None
    rating: int | None
    ended: datetime | None
    timeline: list[StepPublic]
    deliveries: list[DeliveryPublic]
    grouped: list[AlertPublic]


class CoordinateIn(_In):
    to_member: str = Field(min_length=1, max_length=64)
    mode: Literal["handover", "add"] = "add"


class ResolveIn(_In):
    feedback: str = Field(min_length=1, max_length=2000)


class CloseIn(_In):
    rating: int = Field(ge=1, le=5)


# -- re-identification ------------------------------------------------------------------------


class ReidentIn(_In):
    pseudonym: str = Field(min_length=3, max_length=160)
    reason: str = Field(min_length=1, max_length=500)
    purpose: str = Field(min_length=1, max_length=500)
    place: str = Field(default="", max_length=324)
    emergency: bool = False


class DenyIn(_In):
    reason: str = Field(default="", max_length=500)


class ReviewIn(_In):
    upheld: bool
    note: str = Field(default="", max_length=500)


class ReidentPublic(BaseModel):
    id: str
    pseudonym: str
    requester: str
    place: str
    emergency_claimed: bool
    emergency: bool
    status: str
    needs_review: bool
    created: datetime
    decided_by: str | None
    expires: datetime | None
    resolutions: int


class ReidentsPublic(BaseModel):
    data: list[ReidentPublic]
    count: int


class IdentityPublic(BaseModel):
    """Registry ids only: the property firm's own records turn them into a person."""

    request_id: str
    resident_id: str
    household_id: str


# -- audit, dead letters, health -----------------------------------------------------------------


class AuditRecordPublic(BaseModel):
    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    details: dict[str, object]


class AuditRecordsPublic(BaseModel):
    data: list[AuditRecordPublic]
    count: int


class VerifyPublic(BaseModel):
    ok: bool
    checked: int
    first_bad_seq: int | None
    problem: str
    unbacked_alert_records: list[int]


class DeadLetterCount(BaseModel):
    hour: datetime
    reason: str
    count: int


class DeadLettersPublic(BaseModel):
    total: int
    by_reason: dict[str, int]
    data: list[DeadLetterCount]


class ProblemPublic(BaseModel):
    """RFC 9457 problem details: every error the API answers with."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None


class HealthPublic(BaseModel):
    status: str
    checks: dict[str, str] = {}


class KeyPublic(BaseModel):
    id: str
    name: str
    role: str
    scope: str
    created: datetime
    revoked: datetime | None
