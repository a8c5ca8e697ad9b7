"""Escalation (逐级上报) by stored deadlines with a fake clock, and the alert lifecycle:
raised → notified → acknowledged → handling → resolved → closed, each step recorded and audited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devices.location import Location
from devices.places import PlaceLevel
from gateway.alerts.engine import AlertChange
from gateway.alerts.escalation import Escalation, Escalator
from gateway.alerts.lifecycle import (
    AlreadyOpen,
    InvalidTransition,
    Lifecycle,
    LifecycleError,
    NotResponsible,
    UnknownAlert,
    scrub_feedback,
)
from gateway.alerts.model import AlertState, Severity
from gateway.alerts.routing import Recipient
from gateway.registry import Role
from tests.support.alert_world import (
    FIRE_B03,
    ROOM_1201,
    T0,
    S,
    World,
    build_world,
    cond,
    one,
    smoke,
)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = build_world(tmp_path)
    yield w
    w.registry.close()
    w.audit.close()


def escalator(w: World) -> Escalator:
    return Escalator(w.store, w.router, clock_ns=w.clock, outbox=w.outbox)


def lifecycle(w: World) -> Lifecycle:
    return Lifecycle(w.store, clock_ns=w.clock)


def raise_gas(w: World) -> AlertChange:
    return one(w.engine.handle([cond()]))


def first_member(e: Escalation) -> str:
    assert e.dispatch is not None
    return e.dispatch.route.recipients[0].member_id


# -- escalation -------------------------------------------------------------------------------


def test_an_unacknowledged_level_i_alert_climbs_the_chain(world: World) -> None:
    alert_id = raise_gas(world).alert.id
    esc = escalator(world)
    world.clock.advance(299)
    assert esc.due() == []
    world.clock.advance(1)  # the 5-minute acknowledgement limit
    [e1] = esc.due()
    assert (e1.reason, e1.from_level, e1.to_level, e1.step) == ("ack_overdue", 0, 1, "escalated")
    assert first_member(e1) == "m-gc-g01"  # 网格长 of this grid, not g02's
    assert e1.dispatch is not None
    recipients = {r.member_id for r in e1.dispatch.route.recipients}
    assert "m-gc-g02" not in recipients and "m-uh-b03u2" in recipients  # reminded
    assert e1.alert.escalation_level == 1
    assert e1.alert.ack_deadline_ns == world.clock.now + 300 * S
    assert {n.payload["step"] for n in e1.dispatch.notifications} == {"escalated"}
    assert all(f"{alert_id}:{e1.event_seq}:" in n.idempotency_key
               for n in e1.dispatch.notifications)  # fmt: skip
    assert world.outbox.batches[-1] == list(e1.dispatch.notifications)
    assert esc.due() == []  # not twice for one deadline

    world.clock.advance(300)
    [e2] = esc.due()
    assert (e2.to_level, first_member(e2)) == (2, "m-desk")  # 社区值班台
    world.clock.advance(300)
    [e3] = esc.due()
    assert (e3.to_level, first_member(e3)) == (3, "m-street")  # 街道
    world.clock.advance(300)
    [top] = esc.due()
    assert top.exhausted and top.dispatch is None and top.step == "exhausted"
    assert top.alert.ack_deadline_ns is None and top.alert.escalation_level == 3
    world.clock.advance(3600)
    assert esc.due() == []

    steps = [e.step for e in world.store.events(alert_id)]
    assert steps == [
        "raised", "notified",
        "escalated", "notified", "escalated", "notified", "escalated", "notified",
        "exhausted",
    ]  # fmt: skip
    escalated = [e for e in world.store.events(alert_id) if e.step == "escalated"]
    assert [(e.actor, e.detail["to"], e.detail["roles"]) for e in escalated] == [
        ("alert-escalator", 1, ["grid_chief"]),
        ("alert-escalator", 2, ["duty_desk"]),
        ("alert-escalator", 3, ["street_office"]),
    ]
    assert [e.at_ns for e in escalated] == [T0 + 300 * S, T0 + 600 * S, T0 + 900 * S]
    audited = [r.details["step"] for r in world.audit_records(f"alert:{alert_id}")]
    assert audited == steps
    assert world.audit.verify().ok


def test_acknowledging_stops_the_chain_but_not_the_resolve_limit(world: World) -> None:
    alert_id = raise_gas(world).alert.id
    esc = escalator(world)
    world.clock.advance(300)
    [e1] = esc.due()
    assert e1.to_level == 1
    world.clock.advance(60)
    acked = lifecycle(world).acknowledge(alert_id, "m-gc-g01")  # the grid chief takes it
    assert acked.state is AlertState.ACKNOWLEDGED and acked.ack_deadline_ns is None
    world.clock.advance(3000)
    assert esc.due() == []
    # Still not resolved 2 h after the raise (限时办理): up one more level.
    world.clock.now = T0 + 7200 * S
    [e2] = esc.due()
    assert (e2.reason, e2.from_level, e2.to_level) == ("resolve_overdue", 1, 2)
    assert first_member(e2) == "m-desk"
    assert e2.alert.resolve_deadline_ns == T0 + 2 * 7200 * S
    lifecycle(world).resolve(alert_id, "m-gc-g01", "阀门已关闭，已通风")
    world.clock.advance(10 * 7200)
    assert esc.due() == []
    assert esc.next_deadline() is None


def test_a_restart_continues_from_the_stored_deadlines(world: World) -> None:
    alert_id = raise_gas(world).alert.id
    world.clock.advance(300)
    [e1] = escalator(world).due()
    assert e1.to_level == 1
    restarted = world.restart()  # new registry, audit, router, engine: no timers carried over
    try:
        esc = escalator(restarted)
        assert esc.next_deadline() == T0 + 600 * S
        restarted.clock.advance(299)
        assert esc.due() == []
        restarted.clock.advance(1)
        [e2] = esc.due()
        assert (e2.alert.id, e2.from_level, e2.to_level) == (alert_id, 1, 2)
        assert first_member(e2) == "m-desk"
        assert restarted.audit.verify().ok
    finally:
        restarted.registry.close()
        restarted.audit.close()


def test_escalation_follows_each_severitys_limits(world: World) -> None:
    low = one(world.engine.handle([cond("battery", kind="battery", severity=Severity.IV)]))
    esc = escalator(world)
    world.clock.advance(3600)
    assert esc.due() == []  # level IV: 24 h to acknowledge
    world.clock.now = T0 + 86_400 * S
    [e] = esc.due()
    assert e.alert.id == low.alert.id and first_member(e) == "m-gc-g01"


def test_grouped_members_escalate_through_their_incident(world: World) -> None:
    changes = world.engine.handle([FIRE_B03, smoke(ROOM_1201, "sd-1201")])
    incident_id = changes[0].alert.id
    world.clock.advance(900)  # past level II's (the smoke's) and level I's ack limits
    escalated = escalator(world).due()
    assert [e.alert.id for e in escalated] == [incident_id]
    # Acknowledging the incident acknowledges its members too.
    lifecycle(world).acknowledge(incident_id, "m-bh-b03")
    members = world.store.members_of(incident_id)
    assert [m.state for m in members] == [AlertState.ACKNOWLEDGED]
    member_events = world.store.events(members[0].id)
    assert member_events[-1].step == "acknowledged"
    assert member_events[-1].actor == "m-bh-b03"
    assert member_events[-1].detail == {"via_incident": incident_id}


def test_two_escalators_due_at_once_escalate_once(world: World) -> None:
    """Two processes sharing one database: a deadline escalates one level, once."""
    raise_gas(world)
    world.clock.advance(300)
    other = build_world(world.tmp_path, world.clock, imported=True)
    try:
        first = escalator(world).due()
        second = escalator(other).due()
        assert len(first) == 1 and second == []
        assert [e.step for e in world.store.events(first[0].alert.id)].count("escalated") == 1
    finally:
        other.registry.close()
        other.audit.close()


# -- lifecycle --------------------------------------------------------------------------------


def test_the_whole_lifecycle_records_who_and_when(world: World) -> None:
    life = lifecycle(world)
    alert_id = raise_gas(world).alert.id
    assert world.store.alert(alert_id).state is AlertState.NOTIFIED  # type: ignore[union-attr]
    world.clock.advance(60)
    assert life.acknowledge(alert_id, "m-uh-b03u2").state is AlertState.ACKNOWLEDGED
    world.clock.advance(60)
    assert life.start_handling(alert_id, "m-uh-b03u2").state is AlertState.HANDLING
    world.clock.advance(600)
    resolved = life.resolve(alert_id, "m-uh-b03u2", "关闭燃气阀，住户电话 13812345678 已通知")
    assert resolved.state is AlertState.RESOLVED
    assert resolved.ack_deadline_ns is None and resolved.resolve_deadline_ns is None
    world.clock.advance(3600)
    closed = life.close(alert_id, "m-desk", 5)  # the duty desk collects the rating
    assert closed.state is AlertState.CLOSED

    detail = world.store.detail(alert_id)
    assert detail is not None and detail.rating == 5
    assert detail.feedback == "关闭燃气阀，住户电话 <redacted> 已通知"
    events = world.store.events(alert_id)
    assert [(e.step, e.actor, (e.at_ns - T0) // S) for e in events] == [
        ("raised", "alert-engine", 0),
        ("notified", "alert-engine", 0),
        ("acknowledged", "m-uh-b03u2", 60),
        ("handling", "m-uh-b03u2", 120),
        ("resolved", "m-uh-b03u2", 720),
        ("closed", "m-desk", 4320),
    ]
    assert [e.state for e in events][-4:] == [
        AlertState.ACKNOWLEDGED, AlertState.HANDLING, AlertState.RESOLVED, AlertState.CLOSED,
    ]  # fmt: skip
    records = world.audit_records(f"alert:{alert_id}")
    assert [(r.actor, r.details["step"]) for r in records] == [(e.actor, e.step) for e in events]
    assert records[4].details["feedback_chars"] == len(detail.feedback)
    assert "阀" not in repr(records[4].details)  # the feedback itself stays out of the log
    assert records[5].details["rating"] == 5
    assert world.audit.verify().ok
    # The place is free again: the same condition is a new alert.
    again = one(world.engine.handle([cond()]))
    assert again.alert.id != alert_id


def test_invalid_transitions_are_refused_and_change_nothing(world: World) -> None:
    life = lifecycle(world)
    alert_id = raise_gas(world).alert.id
    before = world.store.events(alert_id)
    with pytest.raises(InvalidTransition, match="is notified: it cannot be handling; it can be"):
        life.start_handling(alert_id, "m-uh-b03u2")
    with pytest.raises(InvalidTransition, match="cannot be resolved"):
        life.resolve(alert_id, "m-uh-b03u2", "done")
    with pytest.raises(InvalidTransition, match="cannot be closed"):
        life.close(alert_id, "m-uh-b03u2", 4)
    life.acknowledge(alert_id, "m-uh-b03u2")
    with pytest.raises(InvalidTransition, match="is acknowledged: it cannot be acknowledged"):
        life.acknowledge(alert_id, "m-bh-b03")
    with pytest.raises(LifecycleError, match="needs feedback"):
        life.resolve(alert_id, "m-uh-b03u2", "   ")
    life.resolve(alert_id, "m-uh-b03u2", "fixed")
    for rating in (0, 6, True, 4.5):
        with pytest.raises(LifecycleError, match="rating is 1 to 5"):
            life.close(alert_id, "m-uh-b03u2", rating)  # type: ignore[arg-type]
    life.close(alert_id, "m-uh-b03u2", 3)
    with pytest.raises(
        InvalidTransition, match="is closed: it cannot be acknowledged; it can be reopened"
    ):
        life.acknowledge(alert_id, "m-uh-b03u2")
    assert len(world.store.events(alert_id)) == len(before) + 3


def test_a_closed_alert_reopens_into_handling_with_a_fresh_resolve_limit(world: World) -> None:
    life = Lifecycle(world.store, clock_ns=world.clock, router=world.router, outbox=world.outbox)
    alert_id = raise_gas(world).alert.id
    life.acknowledge(alert_id, "m-uh-b03u2")
    life.resolve(alert_id, "m-uh-b03u2", "fixed")
    life.close(alert_id, "m-uh-b03u2", 2)
    now = world.clock.advance(3600)
    reopened = life.reopen(alert_id, "m-bh-b03")
    assert reopened.state is AlertState.HANDLING
    limit = world.router.policy.deadlines(reopened.severity, reopened.kind).resolve_within_s
    assert reopened.resolve_deadline_ns == now + limit * 1_000_000_000
    assert [e.step for e in world.store.events(alert_id)][-1] == "reopened"
    with pytest.raises(InvalidTransition, match="is handling: it cannot be reopened"):
        life.reopen(alert_id, "m-bh-b03")


def test_reopening_is_refused_while_the_same_condition_is_open_again(world: World) -> None:
    life = lifecycle(world)
    alert_id = raise_gas(world).alert.id
    life.acknowledge(alert_id, "m-uh-b03u2")
    life.resolve(alert_id, "m-uh-b03u2", "fixed")
    newer = raise_gas(world).alert.id  # the gas is back: a new alert
    assert newer != alert_id
    with pytest.raises(AlreadyOpen, match="another alert for the same condition"):
        life.reopen(alert_id, "m-uh-b03u2")
    assert world.store.alert(alert_id).state is AlertState.RESOLVED  # type: ignore[union-attr]


def test_coordinating_notifies_the_other_member_and_keeps_the_state(world: World) -> None:
    life = Lifecycle(world.store, clock_ns=world.clock, router=world.router, outbox=world.outbox)
    alert_id = raise_gas(world).alert.id
    with pytest.raises(InvalidTransition, match="cannot be coordinated"):
        life.coordinate(alert_id, "m-uh-b03u2", "m-bh-b03", "add")  # acknowledge first
    life.acknowledge(alert_id, "m-uh-b03u2")
    sent_before = len(world.outbox.sent)
    after = life.coordinate(alert_id, "m-uh-b03u2", "m-bh-b03", "handover")
    assert after.state is AlertState.ACKNOWLEDGED
    new = world.outbox.sent[sent_before:]
    assert {n.member_id for n in new} == {"m-bh-b03"}
    assert {n.payload["step"] for n in new} == {"coordinated"}
    step = world.store.events(alert_id)[-1]
    assert (step.step, step.actor, dict(step.detail)) == (
        "coordinated",
        "m-uh-b03u2",
        {"to": "m-bh-b03", "mode": "handover"},
    )
    # someone not responsible for the place cannot be brought in, nor can one's self
    with pytest.raises(NotResponsible):
        life.coordinate(alert_id, "m-uh-b03u2", "m-bh-b05", "add")
    with pytest.raises(LifecycleError, match="another member"):
        life.coordinate(alert_id, "m-uh-b03u2", "m-uh-b03u2", "add")
    with pytest.raises(LifecycleError, match="handover or add"):
        life.coordinate(alert_id, "m-uh-b03u2", "m-bh-b03", "delegate")


def test_a_cleared_alert_cannot_be_acknowledged(world: World) -> None:
    alert_id = raise_gas(world).alert.id
    world.engine.handle([cond(active=False)])
    with pytest.raises(InvalidTransition, match="is cleared"):
        lifecycle(world).acknowledge(alert_id, "m-uh-b03u2")


def test_only_members_responsible_for_the_place_may_act(world: World) -> None:
    life = lifecycle(world)
    alert_id = raise_gas(world).alert.id
    for outsider in ("m-uh-b03u1", "m-bh-b05", "m-gc-g02", "m-prop-b05", "nobody"):
        with pytest.raises(NotResponsible):
            life.acknowledge(alert_id, outsider)
    with pytest.raises(UnknownAlert):
        life.acknowledge(999, "m-uh-b03u2")
    # Anyone up the chain for this place may: the street office for the community.
    assert life.acknowledge(alert_id, "m-street").state is AlertState.ACKNOWLEDGED


def test_notified_and_failed_deliveries_are_recorded(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    try:
        # Without an outbox the caller reports the push itself.
        from gateway.alerts.engine import AlertEngine

        engine = AlertEngine(w.registry, w.audit, clock_ns=w.clock)
        change = one(engine.handle([cond(level=PlaceLevel.UNIT)]))
        assert change.alert.state is AlertState.RAISED and change.dispatch is None
        life = lifecycle(w)
        recipients = [Recipient("m-uh-b03u2", Role.UNIT_HEAD, "mqtt", "gridgate/alerts/x")]
        with pytest.raises(ValueError):
            life.notified(change.alert.id, [])
        notified = life.notified(change.alert.id, recipients, event_seq=change.event_seq)
        assert notified.state is AlertState.NOTIFIED
        life.delivery_failed(change.alert.id, "m-street", "webhook", "HTTP 503")
        events = w.store.events(change.alert.id)
        assert [(e.step, e.actor) for e in events] == [
            ("raised", "alert-engine"),
            ("notified", "alert-delivery"),
            ("delivery_failed", "alert-delivery"),
        ]
        assert events[1].detail == {"members": ["m-uh-b03u2"], "channels": ["mqtt"], "for_seq": 1}
        assert events[2].detail == {
            "member": "m-street",
            "channel": "webhook",
            "reason": "HTTP 503",
        }
        assert events[2].state is AlertState.NOTIFIED
        assert w.audit.verify().ok
    finally:
        w.registry.close()
        w.audit.close()


def test_feedback_is_scrubbed_of_id_and_phone_numbers() -> None:
    assert scrub_feedback(" 联系 +86 138-1234-5678，证件 11010519491231002X 已核实 ") == (
        "联系 <redacted>，证件 <redacted> 已核实"
    )
    assert scrub_feedback("device gas-13812345678x ok") == "device gas-13812345678x ok"
    assert len(scrub_feedback("很" * 5000)) == 2000


def test_acting_on_a_building_alert_needs_a_member_of_that_building(world: World) -> None:
    alert_id = one(world.engine.handle([FIRE_B03])).alert.id
    life = lifecycle(world)
    with pytest.raises(NotResponsible):
        life.acknowledge(alert_id, "m-uh-b03u2")  # a unit head is not over the whole building
    assert life.acknowledge(alert_id, "m-bh-b03").state is AlertState.ACKNOWLEDGED
    assert Location("xf", "g01", "b03") == world.store.alert(alert_id).location  # type: ignore[union-attr]
