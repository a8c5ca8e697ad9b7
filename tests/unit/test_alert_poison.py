"""One alert that cannot be recorded never holds the others hostage, and the audit log holds
what happened and nothing else (issue 9, findings 1, 2 and 4)."""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from devices.errors import StorageError
from devices.families import Family
from devices.liveness import LivenessEvent
from devices.location import Location
from devices.places import PlaceLevel, place_at
from gateway.alerts.model import Condition, Refusal, Severity
from gateway.alerts.service import ALERT_REFUSED, DELIVERY_FAILED, AlertConfig, AlertService
from gateway.alerts.store import ROLLED_BACK, AlertRow, unbacked_alert_records
from gateway.audit import cli as audit_cli
from gateway.audit.store import AuditStore
from gateway.registry import Registry, import_file
from privacy.audit import AuditAction
from privacy.keys import KeyRing
from privacy.operators import PSEUDONYM_PATTERN, IdentifierKind, pseudonymise

S = 1_000_000_000
T0 = 1_750_000_000 * S
PHONE = "13812345678"
KEYS = KeyRing([("k1", secrets.token_bytes(32))])

FLEET = """\
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
          - {code: u2, name: 2单元, rooms: ["1201"]}
households:
  - {id: h-1201, building: b03, unit: u2, room: "1201", elder_alone: true}
devices:
  - {id: gas-u1, family: safety, adapter: gridgate_json, vendor: acme, building: b03, unit: u1, room: "0101", power: mains}
  - {id: band-1201, family: elder, adapter: gridgate_json, vendor: acme, building: b03, unit: u2, room: "1201", power: battery, household: h-1201}
members:
  - {id: m-uh-u1, name: 李建国, role: unit_head, scope: [{building: b03, unit: u1}], channels: ["mqtt:gridgate/alerts/member/m-uh-u1"]}
  - {id: m-uh-u2, name: 王芳, role: unit_head, scope: [{building: b03, unit: u2}], channels: ["mqtt:gridgate/alerts/member/m-uh-u2"]}
  - {id: m-prop, name: 物业, role: property_duty, scope: [{building: b03}], channels: ["mqtt:gridgate/alerts/property/b03"]}
  - {id: m-desk, name: 值班台, role: duty_desk, scope: [{community: xf}], channels: ["mqtt:gridgate/alerts/desk/xf"]}
"""
U1 = Location("xf", "g01", "b03", "u1", "0101")
U2 = Location("xf", "g01", "b03", "u2", "1201")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def household_ref(household: str) -> str:
    return pseudonymise(household, IdentifierKind.HOUSEHOLD_REF, KEYS)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[AlertService]:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET, encoding="utf-8")
    registry = Registry.open(f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    import_file(registry, fleet, now_ns=T0)
    audit = AuditStore(tmp_path / "audit.sqlite3")
    svc = AlertService(registry, audit, AlertConfig(clock_ns=Clock()), household_ref=household_ref)
    svc.refresh_households(registry.all_devices())
    yield svc
    registry.close()
    audit.close()


def cond(
    key: str, where: Location, *, device_id: str, severity: Severity = Severity.I, kind: str = ""
) -> Condition:
    return Condition(
        rule_id=f"rule-{key}",
        key=key,
        kind=kind or key,
        severity=severity,
        location=place_at(where, PlaceLevel.UNIT),
        level=PlaceLevel.UNIT,
        at_ns=T0,
        device_id=device_id,
    )


def open_alerts(svc: AlertService) -> dict[str, AlertRow]:
    with svc.registry.reading() as s:
        return {r.kind: r for r in s.scalars(select(AlertRow))}


def audit_text(svc: AlertService) -> str:
    assert isinstance(svc.audit, AuditStore)
    return "\n".join(f"{r.subject} {dict(r.details)}" for r in svc.audit.records())


# -- finding 1: the poison ---------------------------------------------------------------------


async def test_one_unrecordable_alert_is_refused_and_the_others_are_recorded(
    service: AlertService,
) -> None:
    # A device id shaped like a phone (a registry from before ids were checked): its "raised"
    # audit record is refused — before this fix that rolled back and retried the whole batch.
    conditions = [
        cond("gas_lel", U1, device_id="gas-u1", kind="gas_leak"),
        cond("sos", U2, device_id=PHONE, kind="elder_sos"),
        cond("fall", U2, device_id="band-1201", kind="elder_fall"),
    ]
    refused = await service.accept(conditions)

    assert [r.index for r in refused] == [1]
    assert "device_id" in refused[0].reason and PHONE not in refused[0].reason
    alerts = open_alerts(service)
    assert set(alerts) == {"gas_leak", "elder_fall", ALERT_REFUSED}
    # the duty desk hears of it, as severe as what was refused, without its device or unit
    desk = alerts[ALERT_REFUSED]
    assert (desk.severity, desk.level, desk.unit, desk.device_id) == (1, "community", "", "")
    assert desk.state == "notified"
    assert PHONE not in audit_text(service)
    assert unbacked_alert_records(service.registry, service.audit.records()) == []  # type: ignore[attr-defined]


async def test_the_alert_store_being_down_is_retryable(
    service: AlertService, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*_a: object, **_k: object) -> object:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(service.engine, "handle", down)
    with pytest.raises(StorageError) as err:
        await service.accept([cond("gas_lel", U1, device_id="gas-u1")])
    assert err.value.retryable


async def test_a_bug_that_refuses_everything_refuses_each_condition_once(
    service: AlertService, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def broken(conditions: list[Condition]) -> object:
        calls.append(len(conditions))
        raise KeyError("a bug")

    monkeypatch.setattr(service.engine, "handle", broken)
    conditions = [cond(f"k{i}", U1, device_id="gas-u1") for i in range(8)]
    refused = await service.accept(conditions)
    assert refused == [Refusal(i, "KeyError") for i in range(8)]
    # by halves: 1 + 2 + 4 + 8 attempts for the batch, then one per duty-desk report (1)
    assert calls == [8, 4, 2, 1, 1, 2, 1, 1, 4, 2, 1, 1, 2, 1, 1, 1]


# -- finding 2: phantom audit records ----------------------------------------------------------


async def test_a_refused_batch_leaves_no_audit_record_of_alerts_that_never_were(
    service: AlertService,
) -> None:
    before = service.audit.count()  # type: ignore[attr-defined]
    await service.accept(
        [cond("gas_lel", U1, device_id="gas-u1"), cond("sos", U2, device_id=PHONE)]
    )
    records = list(service.audit.records())  # type: ignore[attr-defined]
    alert_ids = {r.subject for r in records[before:] if r.subject.startswith("alert:")}
    assert alert_ids == {f"alert:{a.id}" for a in open_alerts(service).values()}
    assert unbacked_alert_records(service.registry, records) == []


async def test_a_commit_that_fails_after_the_audit_is_recorded_as_rolled_back(
    service: AlertService, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_commit = Session.commit
    failures = [1]

    def flaky_commit(self: Session) -> None:
        if failures[0]:
            failures[0] -= 1
            raise OperationalError("COMMIT", {}, Exception("disk I/O error"))
        real_commit(self)

    monkeypatch.setattr(Session, "commit", flaky_commit)
    with pytest.raises(StorageError):
        await service.accept([cond("gas_lel", U1, device_id="gas-u1")])
    records = list(service.audit.records())  # type: ignore[attr-defined]
    [rollback] = [r for r in records if r.details.get("step") == ROLLED_BACK]
    described = [r.seq for r in records if r.subject.startswith("alert:")]
    assert described and rollback.details["audit_seqs"] == described
    assert open_alerts(service) == {}
    assert unbacked_alert_records(service.registry, records) == []
    # and the retry records the alert for real, with fresh records that are backed
    await service.accept([cond("gas_lel", U1, device_id="gas-u1")])
    assert set(open_alerts(service)) == {"gas_lel"}
    assert unbacked_alert_records(service.registry, service.audit.records()) == []  # type: ignore[attr-defined]


def test_verify_names_alert_records_that_describe_no_alert_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry_url = f"sqlite:///{tmp_path / 'registry.sqlite3'}"
    Registry.open(registry_url).close()
    with AuditStore(tmp_path / "audit.sqlite3") as audit:
        audit.append("alert-engine", AuditAction.ALERT_ACTION, "alert:7",
                     {"step": "raised", "seq": 1})  # fmt: skip
    args = argparse.Namespace(audit_command="verify", anchor=None)
    assert audit_cli.run(args, tmp_path / "audit.sqlite3") == 0  # the chain alone is intact
    assert audit_cli.run(args, tmp_path / "audit.sqlite3", registry_url) == 1
    assert "1 alert records describe no alert step: #1" in capsys.readouterr().out


# -- finding 4: alerts that never reached anyone -----------------------------------------------


async def test_an_elder_devices_offline_alert_reaches_its_members(service: AlertService) -> None:
    [band] = [d for d in service.registry.all_devices() if d.device_id == "band-1201"]
    event = LivenessEvent("band-1201", Family.ELDER, U2, False, T0, "no_heartbeat")
    conditions = service.rules.on_liveness(event, band)
    assert conditions, "the offline rule applies to elder devices"
    assert await service.accept(conditions) == []
    [alert] = [a for a in open_alerts(service).values() if a.device_id == "band-1201"]
    assert alert.state == "notified"  # not delivery_refused: the outbox took it
    assert PSEUDONYM_PATTERN.fullmatch(alert.subject_ref)
    assert alert.subject_ref == household_ref("h-1201") and "h-1201" not in alert.subject_ref
    assert service.deliveries_refused == 0


async def test_an_outbox_refusal_is_counted_and_raised_to_the_duty_desk(
    service: AlertService,
) -> None:
    bad = Condition(
        rule_id="rule-sos", key="sos", kind="elder_sos", severity=Severity.I,
        location=place_at(U2, PlaceLevel.UNIT), level=PlaceLevel.UNIT, at_ns=T0,
        device_id="band-1201", subject_ref="h-1201",  # a registry id is not a pseudonym
    )  # fmt: skip
    assert await service.accept([bad]) == []  # the alert is recorded …
    alerts = open_alerts(service)
    assert alerts["elder_sos"].state == "raised"  # … but nobody was told
    assert service.deliveries_refused == 1
    desk = alerts[DELIVERY_FAILED]
    assert (desk.severity, desk.level, desk.state) == (1, "community", "notified")
