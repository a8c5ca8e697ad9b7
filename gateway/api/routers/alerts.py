"""Alerts and incidents: lists, one alert's whole timeline, and the people's actions (R5.4,
R5.7). Actions go through `Lifecycle`, which records and audits each step and stops
escalation where the lifecycle says; a member not responsible for the alert's place gets 404
(as for an alert that does not exist), a wrong state 409 with the actions it allows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Path, Query
from sqlalchemy import func, select

from gateway.alerts.lifecycle import (
    AlreadyOpen,
    InvalidTransition,
    LifecycleError,
    NotResponsible,
    UnknownAlert,
    allowed_actions,
)
from gateway.alerts.model import Alert, AlertState, Severity
from gateway.alerts.store import AlertEvent, AlertEventRow, AlertRow
from gateway.alerts.views import (
    AlertFilter,
    AlertTimeline,
    Delivery,
    acknowledgers,
    alert_timeline,
    find_alerts,
)
from gateway.api.accounts import Principal
from gateway.api.deps import Caller, Context, Member, Paging
from gateway.api.problems import Problem, not_found
from gateway.api.schemas import (
    AlertDetailPublic,
    AlertPublic,
    AlertsPublic,
    AlertSummaryPublic,
    CloseIn,
    CoordinateIn,
    DeliveryPublic,
    Instant,
    ResolveIn,
    StepPublic,
    at,
    ns_of,
)
from gateway.registry.queries import under

router = APIRouter(prefix="/alerts", tags=["alerts"])
# the lifecycle's step names → this API's action paths
ACTIONS = {"acknowledged": "acknowledge", "handling": "start-handling", "resolved": "resolve",
           "closed": "close", "reopened": "reopen", "coordinated": "coordinate"}  # fmt: skip


def actions_for(state: AlertState) -> list[str]:
    """What POST /alerts/{id}/… accepts for an alert in `state`."""
    return [ACTIONS[step] for step in allowed_actions(state)]


AlertId = Annotated[int, Path(ge=1, le=2**62)]


def alert_public(alert: Alert, acknowledged_by: str | None = None) -> AlertPublic:
    first, last = at(alert.first_ns), at(alert.last_ns)
    assert first is not None and last is not None
    return AlertPublic(
        id=alert.id,
        kind=alert.kind,
        key=alert.key,
        severity=alert.severity.name,
        colour=alert.severity.colour,
        state=alert.state.value,
        place=alert.place,
        level=alert.level.value,
        first_seen=first,
        last_seen=last,
        count=alert.count,
        device_id=alert.device_id,
        subject_ref=alert.subject_ref,
        incident_id=alert.incident_id,
        escalation_level=alert.escalation_level,
        ack_deadline=at(alert.ack_deadline_ns),
        resolve_deadline=at(alert.resolve_deadline_ns),
        allowed_actions=actions_for(alert.state),
        acknowledged_by=acknowledged_by,
    )


@router.get("", response_model=AlertsPublic)
def list_alerts(
    context: Context,
    caller: Caller,
    paging: Paging,
    state: Annotated[list[AlertState] | None, Query()] = None,
    severity: Annotated[list[Severity] | None, Query(description="1 (I) to 4 (IV)")] = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    place: Annotated[str | None, Query(max_length=324)] = None,
    since: Instant | None = None,
    until: Instant | None = None,
    open_only: bool = False,
    incidents: Annotated[
        bool, Query(description="only incidents (alerts grouping others)")
    ] = False,
    incident_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> AlertsPublic:
    """Newest first, within the caller's places."""
    if not caller.scopes:
        return AlertsPublic(data=[], count=0)
    if place and not caller.sees(place):
        raise not_found("no such place")
    where = AlertFilter(
        scopes=caller.scopes,
        places=(place,) if place else (),
        states=tuple(state or ()),
        open_only=open_only,
        severities=tuple(severity or ()),
        kind=kind or None,
        since_ns=ns_of(since) if since else None,
        until_ns=ns_of(until) if until else None,
        incident_id=incident_id,
        incidents_only=incidents,
    )
    page = find_alerts(context.registry, where, offset=paging.offset, limit=paging.limit)
    data = [alert_public(a, page.acknowledged_by.get(a.id)) for a in page.alerts]
    return AlertsPublic(data=data, count=page.total)


@router.get("/summary", response_model=AlertSummaryPublic)
def summary(context: Context, caller: Caller, since: Instant | None = None) -> AlertSummaryPublic:
    """Alerts raised in the caller's places since `since` (default: the last day), counted by
    severity and state, with the mean time from raise to acknowledgement."""
    since_ns = ns_of(since) if since else context.clock_ns() - 86_400 * 1_000_000_000
    where = [under(AlertRow.place, caller.scopes), AlertRow.first_ns >= since_ns]
    with context.registry.reading() as s:
        rows = s.execute(select(AlertRow.id, AlertRow.severity, AlertRow.state, AlertRow.first_ns)
                         .where(*where)).all()  # fmt: skip
        first_ack = dict(
            s.execute(
                select(AlertEventRow.alert_id, func.min(AlertEventRow.at_ns))
                .join(AlertRow, AlertRow.id == AlertEventRow.alert_id)
                .where(*where, AlertEventRow.step == "acknowledged")
                .group_by(AlertEventRow.alert_id)
            ).all()
        )
    by_severity = {name: 0 for name in ("I", "II", "III", "IV")}
    by_state = {state.value: 0 for state in AlertState}
    waits = []
    for alert_id, severity, state, first_ns in rows:
        by_severity[Severity(severity).name] += 1
        by_state[state] += 1
        if alert_id in first_ack:
            waits.append((first_ack[alert_id] - first_ns) / 1e9)
    when = at(since_ns)
    assert when is not None
    return AlertSummaryPublic(
        since=when,
        total=len(rows),
        by_severity=by_severity,
        by_state=by_state,
        open=sum(by_state[s] for s in ("raised", "notified", "acknowledged", "handling")),
        acknowledged=len(waits),
        mean_ack_s=round(sum(waits) / len(waits), 1) if waits else None,
    )


def _visible(context: Context, caller: Principal, alert_id: int) -> Alert:
    alert = context.alerts.alert(alert_id)
    if alert is None or not caller.sees(alert.place):
        raise not_found("no such alert")
    return alert


def _step(e: AlertEvent) -> StepPublic:
    when = at(e.at_ns)
    assert when is not None
    return StepPublic(
        seq=e.seq,
        at=when,
        actor=e.actor,
        step=e.step,
        state=e.state.value,
        severity=e.severity.name,
        escalation_level=e.escalation_level,
        detail=dict(e.detail),
    )


def _delivery(d: Delivery) -> DeliveryPublic:
    return DeliveryPublic(
        member_id=d.member_id,
        channel=d.channel,
        for_seq=d.for_seq,
        state=d.state,
        attempts=d.attempts,
        sent_at=at(d.sent_ns),
    )


def alert_detail_public(timeline: AlertTimeline) -> AlertDetailPublic:
    """One alert as GET /alerts/{id} shows it (and `gridgate alerts show --json`)."""
    alert, detail = timeline.alert, timeline.detail
    return AlertDetailPublic(
        **alert_public(alert, timeline.acknowledged_by).model_dump(),
        place_names=list(timeline.place_names),
        feedback=detail.feedback,
        rating=detail.rating,
        ended=at(detail.ended_ns),
        timeline=[_step(e) for e in timeline.steps],
        deliveries=[_delivery(d) for d in timeline.deliveries],
        grouped=[alert_public(a) for a in timeline.grouped],
    )


@router.get("/{alert_id}", response_model=AlertDetailPublic)
def one_alert(context: Context, caller: Caller, alert_id: AlertId) -> AlertDetailPublic:
    """The alert, its grouped alerts (an incident), and its timeline: every step with who and
    when, and every notification with its delivery outcome."""
    _visible(context, caller, alert_id)
    found = alert_timeline(context.alerts, context.alert_service.outbox, alert_id)
    if found is None:
        raise not_found("no such alert")
    return alert_detail_public(found)


def _act(
    context: Context, caller: Principal, alert_id: int, action: Callable[[], Alert]
) -> AlertPublic:
    _visible(context, caller, alert_id)
    try:
        alert = action()
    except (UnknownAlert, NotResponsible) as exc:
        raise not_found("no such alert") from exc
    except InvalidTransition as exc:
        raise Problem(409, str(exc), state=exc.state.value,
                      allowed_actions=actions_for(exc.state)) from exc  # fmt: skip
    except AlreadyOpen as exc:
        raise Problem(409, str(exc)) from exc
    except LifecycleError as exc:
        raise Problem(422, str(exc)) from exc
    with context.registry.reading() as s:
        return alert_public(alert, acknowledgers(s, [alert.id]).get(alert.id))


@router.post("/{alert_id}/acknowledge", response_model=AlertPublic)
def acknowledge(context: Context, caller: Member, alert_id: AlertId) -> AlertPublic:
    """I have it: stops the escalation for not acknowledging (the resolve limit runs on)."""
    return _act(context, caller, alert_id,
                lambda: context.lifecycle.acknowledge(alert_id, caller.id))  # fmt: skip


@router.post("/{alert_id}/start-handling", response_model=AlertPublic)
def start_handling(context: Context, caller: Member, alert_id: AlertId) -> AlertPublic:
    return _act(context, caller, alert_id,
                lambda: context.lifecycle.start_handling(alert_id, caller.id))  # fmt: skip


@router.post("/{alert_id}/coordinate", response_model=AlertPublic)
def coordinate(
    context: Context, caller: Member, alert_id: AlertId, body: CoordinateIn
) -> AlertPublic:
    """Hand over to, or bring in, another member responsible for the place; they are
    notified. The member must be in the caller's sight too (else 404)."""
    return _act(
        context, caller, alert_id,
        lambda: context.lifecycle.coordinate(alert_id, caller.id, body.to_member, body.mode),
    )  # fmt: skip


@router.post("/{alert_id}/resolve", response_model=AlertPublic)
def resolve(context: Context, caller: Member, alert_id: AlertId, body: ResolveIn) -> AlertPublic:
    """With feedback (what was done); ID and phone numbers in it are replaced before storing."""
    return _act(context, caller, alert_id,
                lambda: context.lifecycle.resolve(alert_id, caller.id, body.feedback))  # fmt: skip


@router.post("/{alert_id}/close", response_model=AlertPublic)
def close(context: Context, caller: Member, alert_id: AlertId, body: CloseIn) -> AlertPublic:
    """With a satisfaction rating 1–5."""
    return _act(context, caller, alert_id,
                lambda: context.lifecycle.close(alert_id, caller.id, body.rating))  # fmt: skip


@router.post("/{alert_id}/reopen", response_model=AlertPublic)
def reopen(context: Context, caller: Member, alert_id: AlertId) -> AlertPublic:
    return _act(context, caller, alert_id,
                lambda: context.lifecycle.reopen(alert_id, caller.id))  # fmt: skip
