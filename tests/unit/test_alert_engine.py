"""Alert engine: one open alert per (place, condition), upgrades, clearing, incidents, races.

A real SQLite registry built from a fleet file (two grids, buildings b03 and b05 in g01, b07
in g02, members of every role) and a real audit log; time is a fake clock, nothing sleeps.
The fixtures here are shared with test_alert_routing and test_alert_escalation.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError

from devices.location import Location
from devices.places import PlaceLevel, place_at
from gateway.alerts.delivery import Outbox
from gateway.alerts.engine import AlertChange, AlertEngine, ChangeKind
from gateway.alerts.escalation import Escalator
from gateway.alerts.model import OPEN_STATES, AlertState, Condition, Notification, Severity
from gateway.alerts.routing import Router, load_routing_policy
from gateway.alerts.store import AlertRow, AlertStore, AlertTx
from gateway.audit.store import AuditStore
from gateway.registry import Registry, import_file
from gateway.registry import store as registry_store
from privacy.audit import AuditAction

S = 1_000_000_000
T0 = 1_750_000_000 * S
EMERGENCY_URL = "https://dispatch.example/emergency?token=s3cret"
ENV = {"GRIDGATE_EMERGENCY_WEBHOOK_URL": EMERGENCY_URL}

FLEET_YAML = """\
version: 1
community: {code: xf, name: 幸福小区, street: 城东街道}
grids:
  - code: g01
    name: 第一网格
    buildings:
      - code: b03
        name: 3号楼
        units:
          - {code: u1, name: 1单元, rooms: ["0101"]}
          - {code: u2, name: 2单元, rooms: ["0101", "1201"]}
      - code: b05
        name: 5号楼
        units:
          - {code: u1, name: 1单元, rooms: ["0101"]}
          - {code: u2, name: 2单元, rooms: ["1201"]}
  - code: g02
    name: 第二网格
    buildings:
      - code: b07
        name: 7号楼
        units:
          - {code: u1, name: 1单元, rooms: ["0101"]}
devices:
  - {id: gas-b03-u2-1201, family: safety, adapter: gridgate_json, vendor: acme, building: b03, unit: u2, room: "1201", power: mains}
  - {id: sd-b03-u1-0101, family: safety, adapter: gridgate_json, vendor: acme, building: b03, unit: u1, room: "0101", power: battery}
members:
  - {id: m-uh-b03u2, name: 李建国, role: unit_head, scope: [{building: b03, unit: u2}], channels: ["mqtt:gridgate/alerts/member/m-uh-b03u2"]}
  - {id: m-uh-b03u1, name: 王芳, role: unit_head, scope: [{building: b03, unit: u1}], channels: ["mqtt:gridgate/alerts/member/m-uh-b03u1"]}
  - {id: m-uh-b05u2, name: 赵敏, role: unit_head, scope: [{building: b05, unit: u2}], channels: ["mqtt:gridgate/alerts/member/m-uh-b05u2"]}
  - {id: m-uh-b05u1, name: 孙丽, role: unit_head, scope: [{building: b05, unit: u1}], channels: ["sms:13912345678"]}
  - {id: m-bh-b03, name: 张伟, role: building_head, scope: [{building: b03}], channels: ["mqtt:gridgate/alerts/member/m-bh-b03"]}
  - {id: m-bh-b05, name: 刘洋, role: building_head, scope: [{building: b05}], channels: ["mqtt:gridgate/alerts/member/m-bh-b05"]}
  - id: m-gw-g01
    name: 陈静
    role: grid_worker
    scope: [{grid: g01}]
    channels: ["mqtt:gridgate/alerts/member/m-gw-g01", "webhook:https://app.example/gw?token=t0k"]
  - {id: m-gw-g02, name: 杨帆, role: grid_worker, scope: [{grid: g02}], channels: ["mqtt:gridgate/alerts/member/m-gw-g02"]}
  - {id: m-gc-g01, name: 黄磊, role: grid_chief, scope: [{grid: g01}], channels: ["mqtt:gridgate/alerts/member/m-gc-g01"]}
  - {id: m-gc-g02, name: 吴昊, role: grid_chief, scope: [{grid: g02}], channels: ["mqtt:gridgate/alerts/member/m-gc-g02"]}
  - {id: m-desk, name: 值班台, role: duty_desk, scope: [{community: xf}], channels: ["mqtt:gridgate/alerts/desk/xf"]}
  - {id: m-street, name: 城东街道, role: street_office, scope: [{community: xf}], channels: ["webhook:https://street.example/alerts"]}
  - {id: m-prop-b03, name: 物业三, role: property_duty, scope: [{building: b03}], channels: ["mqtt:gridgate/alerts/property/b03"]}
  - {id: m-prop-b05, name: 物业五, role: property_duty, scope: [{building: b05}], channels: ["mqtt:gridgate/alerts/property/b05"]}
  - {id: m-prop-g02, name: 物业二, role: property_duty, scope: [{grid: g02}], channels: ["mqtt:gridgate/alerts/property/g02"]}
"""

ROOM_1201 = Location("xf", "g01", "b03", "u2", "1201")
NAMES = ("李建国", "王芳", "赵敏", "孙丽", "张伟", "刘洋", "陈静", "杨帆", "黄磊", "吴昊")


class Clock:
    """A fake nanosecond clock: tests move time instead of sleeping."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> int:
        self.now += int(seconds * S)
        return self.now


@dataclass
class FakeOutbox:
    """Records what the engine queued; `refuse` makes it reject like a PayloadRejected."""

    batches: list[list[Notification]] = field(default_factory=list)
    conns: list[Connection | None] = field(default_factory=list)
    refuse: bool = False

    def enqueue(
        self,
        notifications: Iterable[Notification],
        *,
        conn: Connection | None = None,
        now_ns: int | None = None,
    ) -> int:
        batch = list(notifications)
        if self.refuse:
            raise ValueError("raw ID or mobile number at 'device_id'")
        self.batches.append(batch)
        self.conns.append(conn)
        return len(batch)

    @property
    def sent(self) -> list[Notification]:
        return [n for batch in self.batches for n in batch]


def registry_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.sqlite3'}"


def make_registry(tmp_path: Path) -> Registry:
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET_YAML, encoding="utf-8")
    registry = Registry.open(registry_url(tmp_path))
    import_file(registry, path, now_ns=T0)
    return registry


@dataclass
class World:
    """Everything an alert test needs, rebuilt by `restart` as a new process would."""

    tmp_path: Path
    clock: Clock
    registry: Registry
    audit: AuditStore
    outbox: FakeOutbox
    router: Router
    engine: AlertEngine

    @property
    def store(self) -> AlertStore:
        return self.engine.store

    def restart(self) -> World:
        self.registry.close()
        self.audit.close()
        return build_world(self.tmp_path, self.clock, imported=True)

    def audit_records(self, subject: str | None = None) -> list[Any]:
        return [
            r
            for r in self.audit.records()
            if r.action is AuditAction.ALERT_ACTION and (subject is None or r.subject == subject)
        ]


def build_world(tmp_path: Path, clock: Clock | None = None, *, imported: bool = False) -> World:
    clock = clock or Clock()
    registry = Registry.open(registry_url(tmp_path)) if imported else make_registry(tmp_path)
    audit = AuditStore(tmp_path / "audit.sqlite3", clock_ns=clock)
    outbox = FakeOutbox()
    router = Router(load_routing_policy(), registry, environ=ENV)
    engine = AlertEngine(registry, audit, clock_ns=clock, router=router, outbox=outbox)
    return World(tmp_path, clock, registry, audit, outbox, router, engine)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = build_world(tmp_path)
    yield w
    w.registry.close()
    w.audit.close()


def cond(
    key: str = "gas_lel",
    *,
    kind: str = "gas_leak",
    severity: Severity = Severity.I,
    location: Location = ROOM_1201,
    level: PlaceLevel = PlaceLevel.ROOM,
    at_ns: int = T0,
    active: bool = True,
    device_id: str = "gas-b03-u2-1201",
    auto_clear: bool = True,
    incident_of: str = "",
    subject_ref: str = "",
) -> Condition:
    return Condition(
        rule_id=f"rule-{key}",
        key=key,
        kind=kind,
        severity=severity,
        location=place_at(location, level),
        level=level,
        at_ns=at_ns,
        active=active,
        device_id=device_id,
        subject_ref=subject_ref,
        auto_clear=auto_clear,
        incident_of=incident_of,
    )


def one(changes: list[AlertChange]) -> AlertChange:
    assert len(changes) == 1, changes
    return changes[0]


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
    change = one(world.engine.handle([cond(active=False, at_ns=T0 + 120 * S)]))
    assert change.kind is ChangeKind.CLEARED and not change.notify
    alert = change.alert
    assert alert.id == raised.alert.id and alert.state is AlertState.CLEARED
    assert alert.ack_deadline_ns is None and alert.resolve_deadline_ns is None
    assert open_rows(world.registry) == []
    # Ending again changes nothing.
    assert world.engine.handle([cond(active=False)]) == []
    detail = world.store.detail(alert.id)
    assert detail is not None and detail.ended_ns == world.clock.now and not detail.active


def test_a_flapping_condition_reopens_its_alert_without_notifying_again(world: World) -> None:
    """Back within `reopen_within_s` (30 min) of clearing: the same alert, counted, silent."""
    raised = one(world.engine.handle([cond()]))
    sent = len(world.outbox.sent)
    for i in range(1, 6):  # five more crossings, 5 minutes apart
        world.clock.advance(150)
        one(world.engine.handle([cond(active=False, at_ns=T0 + i * 300 * S)]))
        world.clock.advance(150)
        again = one(world.engine.handle([cond(at_ns=T0 + (i * 300 + 150) * S)]))
        assert again.alert.id == raised.alert.id and not again.notify
        assert again.alert.state is AlertState.NOTIFIED
        # the time limit is the one it had (raised at T0, 300 s for level I), never pushed
        # forward by a flap; once passed, it is due at once and the escalator takes it
        assert again.alert.ack_deadline_ns == max(T0 + 300 * S, world.clock.now)
    assert len(world.outbox.sent) == sent
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


def smoke(location: Location, device: str, **kw: Any) -> Condition:
    return cond(
        "smoke",
        kind="smoke",
        severity=kw.pop("severity", Severity.II),
        location=location,
        device_id=device,
        incident_of="fire_incident",
        **kw,
    )


FIRE_B03 = cond(
    "fire_incident",
    kind="fire",
    location=Location("xf", "g01", "b03"),
    level=PlaceLevel.BUILDING,
    device_id="",
)


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
    assert steps == ["raised", "notified", "cleared"]
    assert [r.details["seq"] for r in records] == [1, 2, 3]
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
