"""Re-identification with graded approval (R3.5) and its audit trail (R3.6)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from devices.location import Location
from gateway.audit.store import AuditStore
from gateway.registry import Registry, import_file
from gateway.registry.importer import rekey_file
from gateway.registry.records import AccessRole, RequestStatus, Resident
from gateway.registry.reident import (
    EMERGENCY_ACTOR,
    InvalidRequest,
    NoSuchResident,
    NotPermitted,
    ReidentService,
    RequestNotFound,
    approver_count,
)
from privacy.audit import AuditAction
from privacy.keys import KeyRing
from privacy.operators import pseudonymise
from tests.support.registry_files import FLEET, NUMBERS, OTHER, write

S = 1_000_000_000
ROOM = Location("xf", "g01", "b03", "u2", "1201")
ELSEWHERE = Location("xf", "g02", "b05", "u1", "0101")


class Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000 * S

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * S)


class Alerts:
    """The alert engine as re-identification sees it: active critical alerts by place."""

    def __init__(self) -> None:
        self.critical: set[Location] = set()
        self.broken = False
        self.asked: list[Location] = []

    def __call__(self, place: Location) -> bool:
        self.asked.append(place)
        if self.broken:
            raise RuntimeError("alert engine unavailable")
        return place in self.critical


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.secret = secrets.token_bytes(32)
        self.keyring = KeyRing([("k1", self.secret)])
        self.audit = AuditStore(tmp_path / "audit.sqlite3")
        self.registry = Registry.open(
            f"sqlite:///{tmp_path / 'registry.sqlite3'}", audit=self.audit
        )
        self.path = write(tmp_path, "fleet.yaml", FLEET)
        import_file(self.registry, self.path, keyring=self.keyring, now_ns=1_000)
        for user in ("lead-1", "lead-2"):
            self.registry.grant_role(user, AccessRole.APPROVER, actor="admin", at_ns=1)
        self.clock = Clock()
        self.alerts = Alerts()
        self.service = ReidentService(
            self.registry, self.audit, clock_ns=self.clock, emergency=self.alerts, grant_ttl_s=600
        )
        self.first_seq = self.audit.count() + 1

    def pseudonym(self, rid: str = "r-1201-1", keyring: KeyRing | None = None) -> str:
        return pseudonymise(NUMBERS[rid], "id_number", keyring or self.keyring)

    def trail(self) -> list[tuple[AuditAction, str]]:
        return [(r.action, r.actor) for r in self.audit.records(self.first_seq)]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def ask(world: World, **overrides: object) -> str:
    args: dict[str, object] = {
        "requester": "worker-7",
        "pseudonym": world.pseudonym(),
        "reason": "door forced at unit 2; the card used belongs to this pseudonym",
        "purpose": "contact the card holder",
        "place": ROOM,
    }
    args.update(overrides)
    return world.service.request(**args).id  # type: ignore[arg-type]


def test_without_a_grant_nothing_resolves(world: World) -> None:
    rid = ask(world)
    request = world.service.get(rid)
    assert request is not None and request.status is RequestStatus.PENDING
    assert not request.live(world.clock()) and request.expires_ns is None
    with pytest.raises(NotPermitted, match="pending, not granted"):
        world.service.resolve(rid, "worker-7")
    assert [r.id for r in world.service.pending()] == [rid]
    assert world.trail() == [
        (AuditAction.REIDENT_REQUEST, "worker-7"),
        (AuditAction.REIDENT_RESOLVE, "worker-7"),  # the refused attempt is on record
    ]
    last = world.audit.last(1)[0]
    assert last.details["refused"] == "the request is pending, not granted"


def test_a_second_person_with_the_approver_role_must_approve(world: World) -> None:
    rid = ask(world, requester="lead-1")  # an approver asking for themselves
    with pytest.raises(NotPermitted, match="second person"):
        world.service.approve(rid, "lead-1")
    with pytest.raises(NotPermitted, match="approver role"):
        world.service.approve(rid, "worker-8")
    granted = world.service.approve(rid, "lead-2")
    assert granted.status is RequestStatus.GRANTED and granted.decided_by == "lead-2"
    assert granted.expires_ns == world.clock() + 600 * S and not granted.needs_review
    with pytest.raises(NotPermitted, match="only the requester"):
        world.service.resolve(rid, "lead-2")
    assert world.service.resolve(rid, "lead-1") == Resident(
        "r-1201-1", "h-b03-u2-1201", True, 1_000
    )
    with pytest.raises(NotPermitted, match="granted, not pending"):
        world.service.approve(rid, "lead-2")
    assert world.trail() == [
        (AuditAction.REIDENT_REQUEST, "lead-1"),
        (AuditAction.REIDENT_APPROVE, "lead-1"),  # refused: self-approval
        (AuditAction.REIDENT_APPROVE, "worker-8"),  # refused: no role
        (AuditAction.REIDENT_APPROVE, "lead-2"),
        (AuditAction.REIDENT_RESOLVE, "lead-2"),  # refused: not the requester
        (AuditAction.REIDENT_RESOLVE, "lead-1"),
        (AuditAction.REIDENT_APPROVE, "lead-2"),  # refused: already granted
    ]
    resolved = world.audit.last(2)[0]
    assert resolved.subject == rid and resolved.details["outcome"] == "resolved"
    assert resolved.details["resident"] == "r-1201-1"
    assert resolved.details["pseudonym"] == world.pseudonym()
    assert world.service.get(rid).resolutions == 1  # type: ignore[union-attr]


def test_a_revoked_approver_cannot_approve(world: World) -> None:
    world.registry.revoke_role("lead-2", AccessRole.APPROVER, actor="admin")
    rid = ask(world)
    with pytest.raises(NotPermitted, match="approver role"):
        world.service.approve(rid, "lead-2")
    assert approver_count(world.registry) == 1


def test_denied_requests_never_resolve(world: World) -> None:
    rid = ask(world)
    with pytest.raises(NotPermitted):
        world.service.deny(rid, "worker-8")
    denied = world.service.deny(rid, "lead-1", reason="not necessary: the door was repaired")
    assert denied.status is RequestStatus.DENIED
    with pytest.raises(NotPermitted, match="denied"):
        world.service.approve(rid, "lead-2")
    with pytest.raises(NotPermitted, match="denied"):
        world.service.resolve(rid, "worker-7")
    actions = [a for a, _ in world.trail()]
    assert AuditAction.REIDENT_DENY in actions
    deny = next(r for r in world.audit.records() if r.action is AuditAction.REIDENT_DENY
                and "refused" not in r.details)  # fmt: skip
    assert deny.details["reason"] == "not necessary: the door was repaired"


def test_emergency_with_a_critical_alert_is_granted_at_once_and_reviewed(world: World) -> None:
    world.alerts.critical.add(ROOM)
    rid = ask(world, emergency=True, reason="SOS from the wearable, nobody answers")
    request = world.service.get(rid)
    assert request is not None and request.status is RequestStatus.GRANTED
    assert request.emergency and request.needs_review and request.decided_by == EMERGENCY_ACTOR
    assert world.alerts.asked == [ROOM]
    assert world.service.resolve(rid, "worker-7").id == "r-1201-1"
    assert [r.id for r in world.service.awaiting_review()] == [rid]
    with pytest.raises(NotPermitted, match="approver role"):
        world.service.review(rid, "worker-8")
    reviewed = world.service.review(rid, "lead-1", note="justified: fall confirmed")
    assert not reviewed.needs_review and reviewed.reviewed_by == "lead-1" and reviewed.review_upheld
    assert world.service.awaiting_review() == []
    with pytest.raises(NotPermitted, match="not awaiting review"):
        world.service.review(rid, "lead-2")
    assert world.trail() == [
        (AuditAction.REIDENT_REQUEST, "worker-7"),
        (AuditAction.REIDENT_APPROVE, EMERGENCY_ACTOR),
        (AuditAction.REIDENT_RESOLVE, "worker-7"),
        (AuditAction.REIDENT_REVIEW, "worker-8"),  # refused
        (AuditAction.REIDENT_REVIEW, "lead-1"),
        (AuditAction.REIDENT_REVIEW, "lead-2"),  # refused
    ]
    first = world.audit.records(world.first_seq).__next__()
    assert first.details["emergency"] is True and first.details["needs_review"] is True


def test_a_review_that_does_not_uphold_revokes_the_grant(world: World) -> None:
    world.alerts.critical.add(ROOM)
    rid = ask(world, emergency=True, requester="lead-1")
    with pytest.raises(NotPermitted, match="own emergency grant"):
        world.service.review(rid, "lead-1")
    world.service.review(rid, "lead-2", upheld=False, note="no emergency behind this")
    with pytest.raises(NotPermitted, match="expired or was revoked"):
        world.service.resolve(rid, "lead-1")


@pytest.mark.parametrize("case", ["no alert there", "no place", "engine down"])
def test_an_unconfirmed_emergency_is_an_ordinary_request(world: World, case: str) -> None:
    world.alerts.critical.add(ELSEWHERE)
    place: Location | None = ROOM
    if case == "no place":
        place = None
    elif case == "engine down":
        world.alerts.broken = True
    rid = ask(world, emergency=True, place=place)
    request = world.service.get(rid)
    assert request is not None and request.status is RequestStatus.PENDING
    assert request.emergency_claimed and not request.emergency and not request.needs_review
    with pytest.raises(NotPermitted):
        world.service.resolve(rid, "worker-7")
    record = world.audit.records(world.first_seq).__next__()
    assert record.details["emergency_claimed"] is True and record.details["emergency"] is False
    assert record.details["emergency_refused"] in {
        "no active critical alert at the place", "no place given", "alert check failed",
    }  # fmt: skip


def test_grants_expire(world: World) -> None:
    rid = ask(world)
    world.clock.advance(60)
    world.service.approve(rid, "lead-1")
    world.clock.advance(599)
    assert world.service.resolve(rid, "worker-7").id == "r-1201-1"
    world.clock.advance(1)
    with pytest.raises(NotPermitted, match="expired"):
        world.service.resolve(rid, "worker-7")
    assert not world.service.get(rid).live(world.clock())  # type: ignore[union-attr]
    # Emergency grants expire too.
    world.alerts.critical.add(ROOM)
    emergency = ask(world, emergency=True)
    world.clock.advance(600)
    with pytest.raises(NotPermitted, match="expired"):
        world.service.resolve(emergency, "worker-7")
    # A request left pending for more than a day cannot be approved any more.
    stale = ask(world)
    world.clock.advance(86_401)
    with pytest.raises(NotPermitted, match="too old"):
        world.service.approve(stale, "lead-1")


def test_old_pseudonyms_resolve_after_a_key_rotation(world: World) -> None:
    old = world.pseudonym("r-0101-1")
    rotated = KeyRing([("k2", secrets.token_bytes(32)), ("k1", world.secret)])
    rekey_file(world.registry, world.path, rotated)
    new = world.pseudonym("r-0101-1", rotated)
    assert new.startswith("k2:") and old.startswith("k1:") and new != old
    for pseudonym in (old, new):
        rid = ask(world, pseudonym=pseudonym)
        with pytest.raises(NotPermitted):
            world.service.resolve(rid, "worker-7")
        world.service.approve(rid, "lead-1")
        assert world.service.resolve(rid, "worker-7").id == "r-0101-1"


def test_an_unknown_pseudonym_resolves_to_nobody_on_the_record(world: World) -> None:
    rid = ask(world, pseudonym=pseudonymise(OTHER, "id_number", world.keyring))
    world.service.approve(rid, "lead-1")
    with pytest.raises(NoSuchResident):
        world.service.resolve(rid, "worker-7")
    assert world.audit.last(1)[0].details["outcome"] == "no_match"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("reason", "", "reason is required"),
        ("reason", "   ", "reason is required"),
        ("purpose", "", "purpose is required"),
        ("reason", "card of 11010519491231002X used", "must not contain ID or phone"),
        ("purpose", "call 13912345678", "must not contain ID or phone"),
        ("pseudonym", "11010519491231002X", "not a raw identifier"),
        ("pseudonym", "", "pseudonym is needed"),
        ("requester", "", "user id"),
        ("reason", "two\nlines", "one line"),
    ],
)
def test_requests_need_a_reason_and_purpose_and_no_raw_identifiers(
    world: World, field: str, value: str, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        ask(world, **{field: value})
    assert world.trail() == []  # nothing was filed, nothing to audit


def test_unknown_requests(world: World) -> None:
    for call in (world.service.approve, world.service.deny, world.service.resolve):
        with pytest.raises(RequestNotFound, match="rq-nope"):
            call("rq-nope", "lead-1")
    assert world.service.get("rq-nope") is None


def test_every_step_is_audited_without_raw_identifiers(world: World, tmp_path: Path) -> None:
    world.alerts.critical.add(ROOM)
    a = ask(world)
    world.service.approve(a, "lead-1")
    world.service.resolve(a, "worker-7")
    b = ask(world, emergency=True)
    world.service.resolve(b, "worker-7")
    world.service.review(b, "lead-2")
    c = ask(world, requester="worker-9")
    world.service.deny(c, "lead-2")
    assert [a for a, _ in world.trail()] == [
        AuditAction.REIDENT_REQUEST, AuditAction.REIDENT_APPROVE, AuditAction.REIDENT_RESOLVE,
        AuditAction.REIDENT_REQUEST, AuditAction.REIDENT_APPROVE, AuditAction.REIDENT_RESOLVE,
        AuditAction.REIDENT_REVIEW, AuditAction.REIDENT_REQUEST, AuditAction.REIDENT_DENY,
    ]  # fmt: skip
    records = list(world.audit.records(world.first_seq))
    assert {r.subject for r in records} == {a, b, c}
    assert all(r.details["pseudonym"] == world.pseudonym() for r in records)
    request = records[0].details
    assert request["reason"].startswith("door forced") and request["purpose"]
    assert request["place"] == "xf/g01/b03/u2/1201"
    assert world.audit.verify().ok
    world.audit.close()
    data = (tmp_path / "audit.sqlite3").read_bytes()
    data += b"".join(f.read_bytes() for f in tmp_path.glob("audit.sqlite3-*"))
    assert not any(n.encode() in data for n in NUMBERS.values())


def test_requests_survive_a_restart(world: World) -> None:
    rid = ask(world, place=Location("xf", "", "b03"))
    again = ReidentService(
        world.registry, world.audit, clock_ns=world.clock, emergency=world.alerts
    )
    request = again.get(rid)
    assert request is not None and request.place == Location("xf", "", "b03")
    again.approve(rid, "lead-2")
    assert world.service.resolve(rid, "worker-7").household == "h-b03-u2-1201"
    assert [r.id for r in world.service.requests_by("worker-7")] == [rid]
