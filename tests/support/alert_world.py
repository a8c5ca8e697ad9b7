"""An alert world for unit tests: a real SQLite registry built from a fleet file (two grids,
buildings b03 and b05 in g01, b07 in g02, members of every role), a real audit log, the shipped
routing policy and an engine whose outbox only records; time is a fake clock, nothing sleeps.
Used by test_alert_engine, test_alert_routing and test_alert_escalation."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text

from devices.location import Location
from devices.places import PlaceLevel, place_at
from gateway.alerts.engine import AlertChange, AlertEngine
from gateway.alerts.model import Condition, Notification, Severity
from gateway.alerts.routing import Router, load_routing_policy
from gateway.alerts.store import AlertStore
from gateway.audit.store import AuditStore
from gateway.registry import Registry, import_file
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
  - {id: m-uh-b05u1, name: 孙丽, role: unit_head, scope: [{building: b05, unit: u1}], channels: ["mqtt:sms-only"]}
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
    # b05 u1's unit head has only an SMS number, which delivery cannot send on: the importer
    # refuses such a channel now, but a registry from before may hold one, and the router
    # must report that member as unreachable.
    with registry.engine.begin() as conn:
        conn.execute(
            text("UPDATE member_channels SET kind = 'sms', target = :phone WHERE member_id = :m"),
            {"phone": "13912345678", "m": "m-uh-b05u1"},
        )
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
