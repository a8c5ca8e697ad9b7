"""Alert engine: one open alert per (place, condition), upgrades, clearing, incidents, races.

A real SQLite registry built from a fleet file (two grids, buildings b03 and b05 in g01, b07
in g02, members of every role) and a real audit log; time is a fake clock, nothing sleeps.
The world and its builders live in tests/support/alert_world.py (test_alert_routing and
test_alert_escalation use them too).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError, OperationalError

from devices.location import Location
from devices.places import PlaceLevel
from gateway.alerts.delivery import Outbox
from gateway.alerts.engine import AlertChange, AlertEngine, ChangeKind
from gateway.alerts.escalation import Escalator
from gateway.alerts.model import OPEN_STATES, AlertState, Condition, Severity
from gateway.alerts.routing import Router, load_routing_policy
from gateway.alerts.store import AlertRow, AlertTx
from gateway.audit.store import AuditStore
from gateway.registry import Registry
from gateway.registry import store as registry_store
from tests.support.alert_world import (
    ENV,
    FIRE_B03,
    NAMES,
    ROOM_1201,
    T0,
    Clock,
    S,
    World,
    build_world,
    cond,
    make_registry,
    one,
    registry_url,
    smoke,
)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = build_world(tmp_path)
    yield w
    w.registry.close()
    w.audit.close()


def open_rows(registry: Registry) -> list[AlertRow]:
    with registry.reading() as s:
        return list(
            s.scalars(select(AlertRow).where(AlertRow.state.in_([x.value for x in OPEN_STATES])))
        )


# -- raising and deduplication ----------------------------------------------------------------


def test_a_new_condition_raises_an_alert_with_stored_deadlines(world: World) -> None:
    change = one(world.engine.handle([cond(subject_ref="")]))
    alert = change.alert
    assert change.kind is ChangeKind.RAISED and change.notify and change.event_seq == 1
    assert (alert.place, alert.key, alert.kind) == ("xf/g01/b03/u2/1201", "gas_lel", "gas_leak")
    assert alert.severity is Severity.I and alert.count == 1 and alert.escalation_level == 0
    assert alert.location == ROOM_1201 and alert.level is PlaceLevel.ROOM
    # Level I: acknowledge within 5 min, resolve within 2 h (the shipped routing file).
    assert alert.ack_deadline_ns == T0 + 300 * S
    assert alert.resolve_deadline_ns == T0 + 7200 * S
    # Queued in the outbox in the same transaction, so the alert is notified.
    assert alert.state is AlertState.NOTIFIED
    assert change.dispatch is not None and world.outbox.batches == [
        list(change.dispatch.notifications)
    ]
    assert world.outbox.conns[0] is not None
    steps = [(e.seq, e.step, e.actor) for e in world.store.events(alert.id)]
    assert steps == [(1, "raised", "alert-engine"), (2, "notified", "alert-engine")]


def test_repeats_count_and_do_not_notify_again(world: World) -> None:
    first = one(world.engine.handle([cond(at_ns=T0)]))
    queued = len(world.outbox.sent)
    for i in range(1, 4):
        world.clock.advance(10)
        change = one(world.engine.handle([cond(at_ns=T0 + i * 10 * S)]))
        assert change.kind is ChangeKind.REPEATED and not change.notify
        assert change.alert.id == first.alert.id and change.dispatch is None
    alert = world.store.alert(first.alert.id)
    assert alert is not None and alert.count == 4 and alert.last_ns == T0 + 30 * S
    assert alert.first_ns == T0
    assert len(world.outbox.sent) == queued  # nothing new sent
    # A repeat is not a step: no event, no audit record.
    assert [e.step for e in world.store.events(alert.id)] == ["raised", "notified"]
    assert len(open_rows(world.registry)) == 1
    # A late, out-of-order reading does not move last-seen back.
    world.engine.handle([cond(at_ns=T0 + 5 * S)])
    later = world.store.alert(alert.id)
    assert later is not None and later.last_ns == T0 + 30 * S and later.count == 5


def test_same_key_at_another_place_is_another_alert(world: World) -> None:
    a = one(world.engine.handle([cond()]))
    b = one(world.engine.handle([cond(location=Location("xf", "g01", "b03", "u2", "0101"))]))
    assert b.kind is ChangeKind.RAISED and a.alert.id != b.alert.id
    assert len(open_rows(world.registry)) == 2


def test_a_severity_upgrade_notifies_again_with_tighter_deadlines(world: World) -> None:
    raised = one(world.engine.handle([cond(severity=Severity.III)]))
    assert raised.alert.ack_deadline_ns == T0 + 3600 * S  # level III: 1 h
    world.clock.advance(60)
    change = one(world.engine.handle([cond(severity=Severity.I)]))
    assert change.kind is ChangeKind.UPGRADED and change.notify
    assert change.previous_severity is Severity.III and change.alert.severity is Severity.I
    assert change.alert.count == 2 and change.event_seq > raised.event_seq
    assert change.alert.ack_deadline_ns == T0 + 60 * S + 300 * S
    assert change.alert.resolve_deadline_ns == T0 + 60 * S + 7200 * S
    assert len(world.outbox.batches) == 2
    second = world.outbox.batches[1]
    assert {n.payload["step"] for n in second} == {"upgraded"}
    assert {n.payload["severity"] for n in second} == {"I"}
    assert all(f":{change.event_seq}:" in n.idempotency_key for n in second)
    # Level I reaches more people than level III did: the unit head is told now.
    assert "m-uh-b03u2" in {n.member_id for n in second}
    assert "m-uh-b03u2" not in {n.member_id for n in world.outbox.batches[0]}
    # A lower severity later is a repeat: an open alert keeps its highest severity.
    world.clock.advance(60)
    again = one(world.engine.handle([cond(severity=Severity.II)]))
    assert again.kind is ChangeKind.REPEATED and again.alert.severity is Severity.I
    steps = [e.step for e in world.store.events(raised.alert.id)]
    assert steps == ["raised", "notified", "upgraded", "notified"]
    upgraded = world.store.events(raised.alert.id)[2]
    assert upgraded.detail == {"from": "III", "to": "I", "count": 2}


# -- clearing ---------------------------------------------------------------------------------


def test_an_ended_condition_clears_its_alert(world: World) -> None:
    raised = one(world.engine.handle([cond()]))
    world.clock.advance(120)
    told = len(world.outbox.sent)
    change = one(world.engine.handle([cond(active=False, at_ns=T0 + 120 * S)]))
    # whoever was told of it is told it cleared (they can stand down)
    assert change.kind is ChangeKind.CLEARED and change.notify
    assert len(world.outbox.sent) == 2 * told
    assert {n.payload["step"] for n in world.outbox.sent[told:]} == {"cleared"}
    alert = change.alert
    assert alert.id == raised.alert.id and alert.state is AlertState.CLEARED
    assert alert.ack_deadline_ns is None and alert.resolve_deadline_ns is None
    assert open_rows(world.registry) == []
    # Ending again changes nothing.
    assert world.engine.handle([cond(active=False)]) == []
    detail = world.store.detail(alert.id)
    assert detail is not None and detail.ended_ns == world.clock.now and not detail.active


def test_a_flapping_condition_reopens_its_alert_without_notifying_again(world: World) -> None:
    """Back within `reopen_within_s` (30 min) of clearing: the same alert, counted. The people
    told are told of the first clearing and the first return only: five flaps are not ten
    messages each."""
    raised = one(world.engine.handle([cond()]))
    recipients = len(world.outbox.sent)
    for i in range(1, 6):  # five more crossings, 5 minutes apart
        world.clock.advance(150)
        cleared = one(world.engine.handle([cond(active=False, at_ns=T0 + i * 300 * S)]))
        assert cleared.kind is ChangeKind.CLEARED and cleared.notify is (i == 1)
        world.clock.advance(150)
        again = one(world.engine.handle([cond(at_ns=T0 + (i * 300 + 150) * S)]))
        assert again.kind is ChangeKind.REOPENED and again.notify is (i == 1)
        assert again.alert.id == raised.alert.id
        assert again.alert.state is AlertState.NOTIFIED
        # the time limit is the one it had (raised at T0, 300 s for level I), never pushed
        # forward by a flap; once passed, it is due at once and the escalator takes it
        assert again.alert.ack_deadline_ns == max(T0 + 300 * S, world.clock.now)
    assert len(world.outbox.sent) == 3 * recipients  # raised, cleared, reopened
    assert [n.payload["step"] for n in world.outbox.sent[::recipients]] == [
        "raised",
        "cleared",
        "reopened",
    ]
    assert world.store.alert(raised.alert.id).count == 6  # type: ignore[union-attr]
    steps = [e.step for e in world.store.events(raised.alert.id)]
    assert steps.count("reopened") == 5 and steps.count("cleared") == 5
    # nobody acknowledged it while it flapped: past its time limit, it escalates
    [up] = Escalator(world.store, world.router, clock_ns=world.clock).due()
    assert up.alert.id == raised.alert.id and up.to_level == 1


def test_a_condition_back_after_the_reopen_window_is_a_new_alert(world: World) -> None:
    first = one(world.engine.handle([cond()]))
    world.clock.advance(60)
    one(world.engine.handle([cond(active=False, at_ns=T0 + 60 * S)]))
    world.clock.advance(1801)
    new = one(world.engine.handle([cond(at_ns=T0 + 1900 * S)]))
    assert new.kind is ChangeKind.RAISED and new.notify and new.alert.id != first.alert.id


def test_a_reopened_alert_upgrades_and_notifies_when_more_severe(world: World) -> None:
    first = one(world.engine.handle([cond(severity=Severity.II)]))
    world.clock.advance(60)
    one(world.engine.handle([cond(active=False, at_ns=T0 + 60 * S)]))
    world.clock.advance(60)
    change = one(world.engine.handle([cond(severity=Severity.I, at_ns=T0 + 120 * S)]))
    assert change.kind is ChangeKind.UPGRADED and change.notify
    assert change.alert.id == first.alert.id and change.alert.severity is Severity.I


def test_ending_an_unknown_condition_does_nothing(world: World) -> None:
    assert world.engine.handle([cond(active=False)]) == []
    assert world.audit_records() == []


def test_endings_without_an_open_alert_take_no_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rules may report "all fine" for every normal reading: that must not serialise anything.

    With no busy timeout, asking for the write lock while another process holds it fails at
    once ("database is locked") instead of waiting: the check is an error, not a stopwatch
    (bench/alert_idle_endings.py measures the time)."""
    monkeypatch.setattr(registry_store, "SQLITE_BUSY_TIMEOUT_MS", 0)  # read at each connect
    world = build_world(tmp_path)
    try:
        _endings_take_no_write_lock(world)
    finally:
        world.registry.close()
        world.audit.close()


def _endings_take_no_write_lock(world: World) -> None:
    one(world.engine.handle([cond()]))
    locker = sqlite3.connect(world.tmp_path / "registry.sqlite3", isolation_level=None, timeout=0)
    locker.execute("BEGIN IMMEDIATE")  # another process is writing
    try:
        others = [cond(f"k{i}", active=False) for i in range(600)]
        assert world.engine.handle(others) == []  # would raise "database is locked"
        with pytest.raises(OperationalError, match="locked"):  # the lock is really held
            world.engine.handle([cond("k1")])
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    # The one with an open alert still clears, next to the idle ones.
    changes = world.engine.handle([*others[:3], cond(active=False)])
    assert [c.kind for c in changes] == [ChangeKind.CLEARED]


def test_manual_resolution_alerts_stay_open_when_the_condition_ends(world: World) -> None:
    fall = cond("fall", kind="elder_fall", auto_clear=False, subject_ref="k1:" + "a" * 26)
    raised = one(world.engine.handle([fall]))
    ended = Condition(**{**_fields(fall), "active": False})
    assert world.engine.handle([ended]) == []
    alert = world.store.alert(raised.alert.id)
    assert alert is not None and alert.state in OPEN_STATES
    detail = world.store.detail(alert.id)
    assert detail is not None and not detail.active
    assert [e.step for e in world.store.events(alert.id)][-1] == "condition_ended"
    # Recorded once, not on every report that it is still over.
    world.engine.handle([ended])
    assert [e.step for e in world.store.events(alert.id)].count("condition_ended") == 1
    # It comes back: the same alert, counted, and recorded as returned.
    change = one(world.engine.handle([fall]))
    assert change.kind is ChangeKind.REPEATED and change.alert.id == alert.id
    assert [e.step for e in world.store.events(alert.id)][-1] == "condition_returned"


def test_an_acknowledged_alert_is_left_to_its_handler_when_the_condition_ends(
    world: World,
) -> None:
    from gateway.alerts.lifecycle import Lifecycle

    raised = one(world.engine.handle([cond()]))
    Lifecycle(world.store, clock_ns=world.clock).acknowledge(raised.alert.id, "m-uh-b03u2")
    assert world.engine.handle([cond(active=False)]) == []
    alert = world.store.alert(raised.alert.id)
    assert alert is not None and alert.state is AlertState.ACKNOWLEDGED


def _fields(c: Condition) -> dict[str, Any]:
    return {name: getattr(c, name) for name in c.__slots__}


# -- restarts and races -----------------------------------------------------------------------


def test_alert_state_survives_a_restart(world: World) -> None:
    raised = one(world.engine.handle([cond()]))
    world2 = world.restart()
    try:
        change = one(world2.engine.handle([cond(at_ns=T0 + S)]))
        assert change.kind is ChangeKind.REPEATED and change.alert.id == raised.alert.id
        assert change.alert.count == 2
        assert change.alert.ack_deadline_ns == raised.alert.ack_deadline_ns
        assert [e.step for e in world2.store.events(raised.alert.id)] == ["raised", "notified"]
    finally:
        world2.registry.close()
        world2.audit.close()


def test_two_engines_on_one_database_open_exactly_one_alert(tmp_path: Path) -> None:
    """Two gateway processes (two Registry objects on one SQLite file) race on each key."""
    make_registry(tmp_path).close()
    clock = Clock()
    audit = AuditStore(tmp_path / "audit.sqlite3", clock_ns=clock)
    registries = [Registry.open(registry_url(tmp_path)) for _ in range(2)]
    engines = [AlertEngine(r, audit, clock_ns=clock) for r in registries]
    keys = [f"k{i}" for i in range(8)]
    results: list[list[AlertChange]] = [[], []]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run(i: int) -> None:
        try:
            for key in keys:
                barrier.wait()
                results[i].extend(engines[i].handle([cond(key)]))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    rows = open_rows(registries[0])
    assert sorted(r.key for r in rows) == keys  # one open alert per key
    assert all(r.count == 2 for r in rows)
    kinds = [c.kind for c in results[0] + results[1]]
    assert kinds.count(ChangeKind.RAISED) == len(keys)
    assert kinds.count(ChangeKind.REPEATED) == len(keys)
    for r in registries:
        r.close()
    assert audit.verify().ok
    audit.close()


def test_the_database_refuses_a_second_open_alert(world: World) -> None:
    """The guarantee is the unique index, not the engine's care: a raw INSERT fails too."""
    raised = one(world.engine.handle([cond()]))
    row = {
        "place": raised.alert.place,
        "key": "gas_lel",
        "kind": "gas_leak",
        "severity": 1,
        "state": "raised",
        "community": "xf",
        "level": "room",
        "first_ns": T0,
        "last_ns": T0,
        "raised_ns": T0,
        "updated_ns": T0,
    }
    with pytest.raises(IntegrityError), world.registry.writing() as s:
        s.execute(insert(AlertRow), [row])
    # Closed alerts are history: any number of them may share the place and key.
    with world.registry.writing() as s:
        s.execute(insert(AlertRow), [{**row, "state": "closed"}, {**row, "state": "cleared"}])


def test_losing_an_insert_race_counts_a_repeat(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on PostgreSQL, where both transactions may look before either inserts."""
    raised = one(world.engine.handle([cond()]))
    real = AlertTx.find_open
    blind = {"left": 1}

    def find_open_once_blind(self: AlertTx, place: str, key: str) -> AlertRow | None:
        if blind["left"]:
            blind["left"] -= 1
            return None  # the other process's row is not visible yet
        return real(self, place, key)

    monkeypatch.setattr(AlertTx, "find_open", find_open_once_blind)
    change = one(world.engine.handle([cond(at_ns=T0 + S)]))
    assert change.kind is ChangeKind.REPEATED and change.alert.id == raised.alert.id
    assert change.alert.count == 2 and len(open_rows(world.registry)) == 1


# -- incidents --------------------------------------------------------------------------------


def test_an_incident_groups_its_members_and_inhibits_their_notifications(world: World) -> None:
    changes = world.engine.handle(
        [
            smoke(ROOM_1201, "sd-1201"),
            smoke(Location("xf", "g01", "b03", "u1", "0101"), "sd-b03-u1-0101"),
            FIRE_B03,
        ]
    )
    by_kind = {c.kind: [x for x in changes if x.kind is c.kind] for c in changes}
    [incident] = by_kind[ChangeKind.RAISED]
    assert incident.alert.key == "fire_incident" and incident.alert.place == "xf/g01/b03"
    grouped = by_kind[ChangeKind.GROUPED]
    assert len(grouped) == 2 and all(not c.notify for c in grouped)
    assert {c.alert.incident_id for c in grouped} == {incident.alert.id}
    # Only the incident was sent.
    assert {n.alert_id for n in world.outbox.sent} == {incident.alert.id}
    assert world.store.members_of(incident.alert.id) == [c.alert for c in grouped]
    # A member's upgrade while the incident is open stays inhibited.
    world.clock.advance(30)
    up = one(world.engine.handle([smoke(ROOM_1201, "sd-1201", severity=Severity.I)]))
    assert up.kind is ChangeKind.GROUPED and up.previous_severity is Severity.II
    assert {n.alert_id for n in world.outbox.sent} == {incident.alert.id}
    # A detector in another building is not part of b03's fire.
    other = one(world.engine.handle([smoke(Location("xf", "g01", "b05", "u1", "0101"), "x")]))
    assert other.kind is ChangeKind.RAISED and other.alert.incident_id is None


def test_an_incident_raised_later_takes_in_members_already_open(world: World) -> None:
    early = one(world.engine.handle([smoke(ROOM_1201, "sd-1201")]))
    assert early.kind is ChangeKind.RAISED  # no incident yet: notified on its own
    changes = world.engine.handle([FIRE_B03])
    assert [c.kind for c in changes] == [ChangeKind.RAISED, ChangeKind.GROUPED]
    assert changes[1].alert.id == early.alert.id
    assert changes[1].alert.incident_id == changes[0].alert.id
    assert [e.step for e in world.store.events(early.alert.id)][-1] == "grouped"


def test_members_are_notified_on_their_own_once_the_incident_is_over(world: World) -> None:
    world.engine.handle([FIRE_B03])
    world.engine.handle([Condition(**{**_fields(FIRE_B03), "active": False})])
    change = one(world.engine.handle([smoke(ROOM_1201, "sd-1201")]))
    assert change.kind is ChangeKind.RAISED and change.alert.incident_id is None


# -- delivery hand-off and audit ----------------------------------------------------------------


def test_an_outbox_refusal_keeps_the_alert_and_records_it(world: World) -> None:
    world.outbox.refuse = True
    change = one(world.engine.handle([cond()]))
    assert change.kind is ChangeKind.RAISED
    alert = world.store.alert(change.alert.id)
    assert alert is not None and alert.state is AlertState.RAISED  # not notified
    assert [e.step for e in world.store.events(alert.id)] == ["raised", "delivery_refused"]


def test_an_alert_nobody_can_be_told_about_is_recorded_as_unrouted(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    try:
        # g02's b07 has no unit head or building head, and its level-IV route is property
        # duty only; with no channels usable at all, nobody is reached.
        router = Router(load_routing_policy(), w.registry, environ=ENV, channels={"websocket"})
        engine = AlertEngine(w.registry, w.audit, clock_ns=w.clock, router=router)
        change = one(engine.handle([cond(severity=Severity.IV, kind="battery")]))
        assert change.dispatch is not None and change.dispatch.notifications == ()
        events = w.store.events(change.alert.id)
        assert [e.step for e in events] == ["raised", "unrouted"]
        assert events[1].detail["unreachable"] == ["m-prop-b03:unsupported_channel"]
    finally:
        w.registry.close()
        w.audit.close()


def test_every_step_is_audited_without_personal_data_and_the_chain_verifies(
    world: World,
) -> None:
    pseudonym = "k1:" + "b" * 26
    raised = one(world.engine.handle([cond(subject_ref=pseudonym)]))
    world.engine.handle([cond(severity=Severity.I, at_ns=T0 + S)])  # repeat: not audited
    world.engine.handle([cond(active=False)])
    subject = f"alert:{raised.alert.id}"
    records = world.audit_records(subject)
    steps = [r.details["step"] for r in records]
    assert steps == [e.step for e in world.store.events(raised.alert.id)]
    assert steps == ["raised", "notified", "cleared", "notified"]
    assert [r.details["seq"] for r in records] == [1, 2, 3, 4]
    assert {r.actor for r in records} == {"alert-engine"}
    for r in records:
        text = repr(r.details) + r.subject
        assert pseudonym not in text and "/1201" not in text  # no subject, no room
        assert not any(name in text for name in NAMES)
        assert r.details["place"] == "xf/g01/b03/u2"
    assert records[0].details["device_id"] == "gas-b03-u2-1201"
    assert world.audit.verify().ok


def test_a_step_whose_audit_record_fails_is_rolled_back(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_a: Any, **_k: Any) -> Any:
        raise OSError("audit disk full")

    monkeypatch.setattr(world.audit, "append_many", broken)
    with pytest.raises(OSError):
        world.engine.handle([cond()])
    assert open_rows(world.registry) == []


def test_with_the_real_outbox_an_alert_and_its_deliveries_commit_together(
    tmp_path: Path,
) -> None:
    w = build_world(tmp_path)
    try:
        outbox = Outbox(w.registry.engine, clock_ns=w.clock)
        engine = AlertEngine(w.registry, w.audit, clock_ns=w.clock, router=w.router, outbox=outbox)
        change = one(engine.handle([cond()]))
        assert change.dispatch is not None
        keys = {n.idempotency_key for n in change.dispatch.notifications}
        assert len(keys) >= 5
        assert {i.idempotency_key for i in outbox.items()} == keys

        def broken(*_a: Any, **_k: Any) -> Any:
            raise OSError("audit disk full")

        w.audit.append_many = broken  # type: ignore[method-assign]
        with pytest.raises(OSError):
            engine.handle([cond("co_ppm", kind="co")])
        assert [r.key for r in open_rows(w.registry)] == ["gas_lel"]
        assert {i.idempotency_key for i in outbox.items()} == keys  # nothing queued for it
    finally:
        w.registry.close()
        w.audit.close()
