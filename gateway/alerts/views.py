"""What people read about alerts, for every front end (the HTTP API, `gridgate alerts`): a
filtered list with who acknowledged each alert, and one alert's timeline — every step with who
and when, every notification with its delivery outcome. One implementation, so a member's
phone, the screen and an operator's terminal show the same thing.

Read-only: actions go through `lifecycle.Lifecycle`. Nothing here is personal (see `store`):
steps hold ids, codes and counts; deliveries name members by id, never their contact targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, exists, func, select
from sqlalchemy.orm import Session, aliased

from gateway.alerts.delivery.outbox import Outbox, OutboxItem
from gateway.alerts.model import Alert, AlertState, Severity
from gateway.alerts.store import (
    OPEN_STATE_VALUES,
    AlertDetail,
    AlertEvent,
    AlertEventRow,
    AlertRow,
    AlertStore,
    to_alert,
)
from gateway.registry import Registry
from gateway.registry.queries import under


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """Which alerts a list shows. `scopes` are the places the reader may see (None: all of
    them); `places` narrow further (a place key each, with everything inside it)."""

    scopes: tuple[str, ...] | None = None
    places: tuple[str, ...] = ()
    states: tuple[AlertState, ...] = ()
    open_only: bool = False
    severities: tuple[Severity, ...] = ()
    kind: str | None = None
    since_ns: int | None = None  # seen at or after (last_seen)
    until_ns: int | None = None  # first seen before
    incident_id: int | None = None  # the alerts grouped into this incident
    incidents_only: bool = False  # only alerts that group others

    def conditions(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.scopes is not None:
            where.append(under(AlertRow.place, list(self.scopes)))
        if self.places:
            where.append(under(AlertRow.place, list(self.places)))
        if self.states:
            where.append(AlertRow.state.in_([s.value for s in self.states]))
        if self.open_only:
            where.append(AlertRow.state.in_(OPEN_STATE_VALUES))
        if self.severities:
            where.append(AlertRow.severity.in_([int(s) for s in self.severities]))
        if self.kind:
            where.append(AlertRow.kind == self.kind)
        if self.since_ns is not None:
            where.append(AlertRow.last_ns >= self.since_ns)
        if self.until_ns is not None:
            where.append(AlertRow.first_ns < self.until_ns)
        if self.incident_id is not None:
            where.append(AlertRow.incident_id == self.incident_id)
        if self.incidents_only:
            grouped = aliased(AlertRow)
            where.append(exists().where(grouped.incident_id == AlertRow.id))
        return where


@dataclass(frozen=True, slots=True)
class AlertPage:
    """One page of a list, newest first; `total` counts every alert the filter matches."""

    alerts: list[Alert]
    total: int
    acknowledged_by: dict[int, str] = field(default_factory=dict)  # alert id → member id


def find_alerts(
    registry: Registry, where: AlertFilter, *, offset: int = 0, limit: int = 100
) -> AlertPage:
    """The alerts `where` matches, newest first, with who acknowledged each."""
    conditions = where.conditions()
    with registry.reading() as s:
        total = s.scalar(select(func.count()).select_from(AlertRow).where(*conditions))
        rows = s.scalars(
            select(AlertRow)
            .where(*conditions)
            .order_by(AlertRow.id.desc())
            .offset(offset)
            .limit(limit)
        ).all()
        alerts = [to_alert(r) for r in rows]
        ackers = acknowledgers(s, [a.id for a in alerts])
    return AlertPage(alerts, total or 0, ackers)


def acknowledgers(s: Session, ids: Sequence[int]) -> dict[int, str]:
    """alert id → who acknowledged it (the latest acknowledgement: a reopened alert may have
    been acknowledged again)."""
    if not ids:
        return {}
    rows = s.execute(
        select(AlertEventRow.alert_id, AlertEventRow.actor)
        .where(AlertEventRow.alert_id.in_(list(ids)), AlertEventRow.step == "acknowledged")
        .order_by(AlertEventRow.seq)
    )
    return {alert_id: actor for alert_id, actor in rows}


@dataclass(frozen=True, slots=True)
class Delivery:
    """One notification of an alert and its outcome; the target (a topic, a webhook URL that
    may embed a secret) is left out."""

    member_id: str
    channel: str
    for_seq: int | None  # the step it announced
    state: str  # pending | sent | dead
    attempts: int
    sent_ns: int | None
    last_error: str  # a short reason of our own (HTTP 503, timeout), never a response body


def delivery_of(item: OutboxItem) -> Delivery:
    # the idempotency key is "{alert_id}:{event_seq}:{member_id}:{channel}"
    seq = item.idempotency_key.split(":")[1] if item.idempotency_key.count(":") >= 3 else ""
    return Delivery(
        member_id=item.member_id,
        channel=item.channel,
        for_seq=int(seq) if seq.isdigit() else None,
        state=str(item.state),
        attempts=item.attempts,
        sent_ns=item.sent_ns,
        last_error=item.last_error,
    )


@dataclass(frozen=True, slots=True)
class AlertTimeline:
    """One alert with everything that happened to it."""

    detail: AlertDetail
    steps: list[AlertEvent]
    deliveries: list[Delivery]
    grouped: list[Alert]  # the alerts an incident groups (empty for a plain alert)
    place_names: tuple[str, ...]  # display names from the community down ("" where unknown)

    @property
    def alert(self) -> Alert:
        return self.detail.alert

    @property
    def acknowledged_by(self) -> str | None:
        ackers = [e.actor for e in self.steps if e.step == "acknowledged"]
        return ackers[-1] if ackers else None


def alert_timeline(store: AlertStore, outbox: Outbox, alert_id: int) -> AlertTimeline | None:
    """The alert `alert_id` and its history, or None if there is no such alert."""
    detail = store.detail(alert_id)
    if detail is None:
        return None
    return AlertTimeline(
        detail=detail,
        steps=store.events(alert_id),
        deliveries=[delivery_of(d) for d in outbox.items(alert_id=alert_id)],
        grouped=store.members_of(alert_id),
        place_names=store.registry.place_names(detail.alert.place),
    )


__all__ = [
    "AlertFilter",
    "AlertPage",
    "AlertTimeline",
    "Delivery",
    "acknowledgers",
    "alert_timeline",
    "delivery_of",
    "find_alerts",
]
