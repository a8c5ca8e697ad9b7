"""Routing: from an alert's place, severity and kind to members by role; the policy file;
what a notification carries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devices.errors import ConfigError
from devices.location import Location
from devices.places import PlaceLevel, place_at, place_key
from gateway.alerts.delivery import check_payload
from gateway.alerts.model import Alert, AlertState, Severity
from gateway.alerts.routing import (
    DELIVERABLE_CHANNELS,
    Recipient,
    Router,
    Unreachable,
    default_policy_text,
    load_routing_policy,
    notifications_for,
    parse_routing_policy,
)
from gateway.registry import Registry, Role
from tests.support.alert_world import EMERGENCY_URL, ENV, NAMES, ROOM_1201, T0, S, make_registry

FIRST_RESPONDERS_B03_U2 = {"m-uh-b03u2", "m-bh-b03", "m-gw-g01", "m-prop-b03"}
EVERYONE_ELSE = {
    "m-uh-b03u1", "m-uh-b05u1", "m-uh-b05u2", "m-bh-b05", "m-gw-g02", "m-prop-b05", "m-prop-g02",
}  # fmt: skip


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    r = make_registry(tmp_path)
    yield r
    r.close()


@pytest.fixture
def router(registry: Registry) -> Router:
    return Router(load_routing_policy(), registry, environ=ENV)


def alert(
    *,
    kind: str = "gas_leak",
    severity: Severity = Severity.I,
    location: Location = ROOM_1201,
    level: PlaceLevel = PlaceLevel.UNIT,
    alert_id: int = 7,
    subject_ref: str = "",
    escalation_level: int = 0,
) -> Alert:
    loc = place_at(location, level)
    return Alert(
        id=alert_id,
        place=place_key(loc, level),
        key="gas_lel",
        kind=kind,
        severity=severity,
        state=AlertState.RAISED,
        location=loc,
        level=level,
        first_ns=T0,
        last_ns=T0 + 30 * S,
        count=3,
        device_id="gas-b03-u2-1201",
        subject_ref=subject_ref,
        escalation_level=escalation_level,
    )


def members(recipients: list[Recipient]) -> set[str]:
    return {r.member_id for r in recipients}


# -- the shipped policy ---------------------------------------------------------------------


def test_the_shipped_policy_has_the_documented_defaults() -> None:
    policy = load_routing_policy()
    minutes = {s: (d.ack_within_s // 60, d.resolve_within_s // 60) for s, d in
               policy.deadlines_by_severity.items()}  # fmt: skip
    assert minutes == {
        Severity.I: (5, 120),
        Severity.II: (15, 480),
        Severity.III: (60, 1440),
        Severity.IV: (1440, 7 * 1440),
    }
    assert policy.severities[Severity.I].roles == (
        Role.UNIT_HEAD, Role.BUILDING_HEAD, Role.GRID_WORKER, Role.PROPERTY_DUTY,
    )  # fmt: skip
    assert policy.severities[Severity.I].webhooks == ("emergency",)
    assert policy.severities[Severity.III].roles == (Role.GRID_WORKER, Role.PROPERTY_DUTY)
    assert policy.severities[Severity.IV].roles == (Role.PROPERTY_DUTY,)
    assert [lvl.roles for lvl in policy.levels] == [
        (Role.GRID_CHIEF,), (Role.DUTY_DESK,), (Role.STREET_OFFICE,),
    ]  # fmt: skip
    assert policy.first_responders(Severity.I, "low_battery").roles == (Role.PROPERTY_DUTY,)
    assert policy.first_responders(Severity.I, "low_battery").webhooks == ()
    assert policy.webhooks["emergency"].url_env == "GRIDGATE_EMERGENCY_WEBHOOK_URL"


def test_a_policy_file_on_disk_is_read(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(default_policy_text().replace("ack_within_s: 300", "ack_within_s: 120"))
    policy = load_routing_policy(path)
    assert policy.deadlines(Severity.I, "gas_leak").ack_within_s == 120
    assert policy.source == str(path)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_routing_policy(tmp_path / "missing.yaml")


# -- recipients -----------------------------------------------------------------------------


def test_level_i_gas_in_b03_u2_reaches_its_first_responders_and_nobody_else(
    router: Router,
) -> None:
    route = router.route(alert())
    got = members(list(route.recipients))
    assert got == FIRST_RESPONDERS_B03_U2 | {"webhook:emergency"}
    assert not got & EVERYONE_ELSE
    # Innermost first: unit head, building head, grid worker (both channels), property duty.
    assert [(r.member_id, r.channel) for r in route.recipients] == [
        ("m-uh-b03u2", "mqtt"),
        ("m-bh-b03", "mqtt"),
        ("m-prop-b03", "mqtt"),
        ("m-gw-g01", "mqtt"),
        ("m-gw-g01", "webhook"),
        ("webhook:emergency", "webhook"),
    ]
    [hook] = [r for r in route.recipients if r.member_id == "webhook:emergency"]
    assert hook.target == EMERGENCY_URL and hook.role is None
    assert EMERGENCY_URL not in repr(hook)  # targets may hold secrets: never in reprs
    assert route.unreachable == ()
    assert router.recipients(alert()) == list(route.recipients)


def test_the_same_alert_in_another_building_reaches_that_buildings_people(
    router: Router,
) -> None:
    got = members(router.recipients(alert(location=Location("xf", "g01", "b05", "u2"))))
    assert got == {"m-uh-b05u2", "m-bh-b05", "m-gw-g01", "m-prop-b05", "webhook:emergency"}


def test_a_building_fire_reaches_every_unit_head_of_that_building_only(router: Router) -> None:
    """The incident silences its unit alerts, so the unit heads hear of it here."""
    fire = alert(kind="building_fire", level=PlaceLevel.BUILDING)
    got = members(router.recipients(fire))
    assert got == {"m-uh-b03u1", "m-uh-b03u2", "m-bh-b03", "m-gw-g01", "m-prop-b03",
                   "webhook:emergency"}  # fmt: skip
    assert not got & {"m-uh-b05u1", "m-uh-b05u2", "m-bh-b05"}
    # a grid-level alert does not fan out to every building's people
    grid = members(router.recipients(alert(level=PlaceLevel.GRID)))
    assert not grid & {"m-uh-b03u1", "m-uh-b03u2", "m-bh-b03", "m-bh-b05"}


def test_a_level_iv_battery_alert_goes_to_property_duty_only(router: Router) -> None:
    got = router.recipients(alert(kind="battery", severity=Severity.IV))
    assert members(got) == {"m-prop-b03"}
    # The kind decides even when a rule graded it higher: no emergency webhook for batteries.
    assert members(router.recipients(alert(kind="low_battery", severity=Severity.I))) == {
        "m-prop-b03"
    }
    assert members(router.recipients(alert(kind="device_offline", severity=Severity.II))) == {
        "m-prop-b03"
    }


def test_level_iii_goes_to_the_grid_worker_and_property_duty(router: Router) -> None:
    assert members(router.recipients(alert(severity=Severity.III))) == {"m-gw-g01", "m-prop-b03"}


def test_escalation_levels_reach_up_the_chain_and_remind_first_responders(
    router: Router,
) -> None:
    level1 = router.route(alert(), level=1)
    assert level1.recipients[0].member_id == "m-gc-g01"  # the new level first
    assert members(list(level1.recipients)) == {"m-gc-g01"} | FIRST_RESPONDERS_B03_U2 | {
        "webhook:emergency"
    }
    assert "m-gc-g02" not in members(list(level1.recipients))  # the other grid's chief
    assert router.route(alert(), level=2).recipients[0].member_id == "m-desk"
    assert router.route(alert(), level=3).recipients[0].member_id == "m-street"


def test_without_reminders_only_the_escalation_level_is_told(registry: Registry) -> None:
    text = default_policy_text().replace(
        "remind_first_responders: true", "remind_first_responders: false"
    )
    router = Router(parse_routing_policy(text), registry, environ=ENV)
    assert members(router.recipients(alert(), level=2)) == {"m-desk"}


def test_the_unreachable_are_reported_not_dropped(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    router = Router(load_routing_policy(), registry, environ={})  # emergency URL unset
    # b05 u1's unit head has only an SMS number, which delivery cannot send on.
    route = router.route(alert(location=Location("xf", "g01", "b05", "u1")))
    assert Unreachable("m-uh-b05u1", Role.UNIT_HEAD, "unsupported_channel") in route.unreachable
    assert Unreachable("webhook:emergency", None, "webhook_unset") in route.unreachable
    assert members(list(route.recipients)) == {"m-bh-b05", "m-gw-g01", "m-prop-b05"}
    assert "m-uh-b05u1" in caplog.text and "13912345678" not in caplog.text
    # g02's b07 has no unit head nor building head: reported as roles nobody holds there.
    far = router.route(alert(location=Location("xf", "g02", "b07", "u1")))
    assert Unreachable("", Role.UNIT_HEAD, "no_member") in far.unreachable
    assert members(list(far.recipients)) == {"m-gw-g02", "m-prop-g02"}
    # With an SMS sender, the same member is reachable.
    sms = Router(load_routing_policy(), registry, environ=ENV,
                 channels=DELIVERABLE_CHANNELS | {"sms"})  # fmt: skip
    assert "m-uh-b05u1" in members(
        sms.recipients(alert(location=Location("xf", "g01", "b05", "u1")))
    )


def test_an_alert_that_reaches_nobody_is_logged_as_an_error(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    router = Router(load_routing_policy(), registry, environ=ENV, channels=())
    assert router.recipients(alert(kind="battery", severity=Severity.IV)) == []
    assert any(r.levelname == "ERROR" and "reaches nobody" in r.message for r in caplog.records)


# -- notifications --------------------------------------------------------------------------


def test_notifications_carry_what_a_member_needs_and_nothing_personal(router: Router) -> None:
    pseudonym = "k1:" + "c" * 26
    a = alert(level=PlaceLevel.ROOM, subject_ref=pseudonym)
    dispatch = router.plan(a, event_seq=4, step="raised")
    notes = dispatch.notifications
    assert [n.idempotency_key for n in notes] == [
        f"7:4:{r.member_id}:{r.channel}" for r in dispatch.route.recipients
    ]
    assert len({n.idempotency_key for n in notes}) == len(notes)
    payload = dict(notes[0].payload)
    assert payload == {
        "alert_id": 7,
        "event_seq": 4,
        "step": "raised",
        "kind": "gas_leak",
        "key": "gas_lel",
        "severity": "I",
        "colour": "red",
        "state": "raised",
        "place": "xf/g01/b03/u2/1201",
        "level": "room",
        "community": "xf",
        "grid": "g01",
        "building": "b03",
        "unit": "u2",
        "room": "1201",
        "place_names": ["幸福小区", "第一网格", "3号楼", "2单元", "1201"],
        "raised_at": "2025-06-15T15:06:40Z",
        "last_seen_at": "2025-06-15T15:07:10Z",
        "count": 3,
        "device_id": "gas-b03-u2-1201",
        "subject_ref": pseudonym,
        "incident_id": None,
        "escalation_level": 0,
    }
    text = repr([n.payload for n in notes])
    assert not any(name in text for name in NAMES)
    assert all(n.payload == payload for n in notes)
    # Delivery's own hygiene check accepts it.
    for n in notes:
        check_payload(n.payload)


def test_two_targets_on_one_channel_get_distinct_keys() -> None:
    recipients = [
        Recipient("m-1", Role.GRID_WORKER, "mqtt", "a/b"),
        Recipient("m-1", Role.GRID_WORKER, "mqtt", "c/d"),
        Recipient("m-1", Role.GRID_WORKER, "webhook", "https://x.example/h"),
    ]
    keys = [n.idempotency_key for n in notifications_for(alert(), recipients, 9, step="escalated")]
    assert keys == ["7:9:m-1:mqtt", "7:9:m-1:mqtt#2", "7:9:m-1:webhook"]


# -- bad policy files -----------------------------------------------------------------------


def _bad(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_routing_policy(text, "bad.yaml")
    return str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("version: 1", "version: 2", "version"),
        ("  IV:\n    roles: [property_duty]", "  IX:\n    roles: [property_duty]", "severities.IX"),
        ("roles: [grid_worker, property_duty]", "roles: [grid_wroker]", "severities.III.roles.0"),
        ("webhooks: [emergency]", "webhooks: [ambulance]", "unknown webhook 'ambulance'"),
        ("ack_within_s: 300 ", "ack_within_s: '300'", "severities.I.ack_within_s"),
        ("ack_within_s: 300 ", "ack_within_s: true", "severities.I.ack_within_s"),
        ("ack_within_s: 300 ", "ack_within_s: 0", "severities.I.ack_within_s"),
        ("resolve_within_s: 7200 ", "resolve_within_s: 60", "shorter than ack_within_s"),
        ("remind_first_responders: true", "remind_first_responder: true", "escalation.remind"),
        ("- roles: [grid_chief]", "- roles: []", "escalation.levels.0.roles"),
        ("{url_env: GRIDGATE_EMERGENCY_WEBHOOK_URL}", "{url: ftp://x}", "http:// or https://"),
        ("{url_env: GRIDGATE_EMERGENCY_WEBHOOK_URL}", "{}", "exactly one of url or url_env"),
        ("battery: {roles: [property_duty], webhooks: []}", "battery: {roles: [mayor]}", "kinds"),
        ("roles: [property_duty]\n    ack_within_s: 86400",
         "roles: [property_duty, property_duty]\n    ack_within_s: 86400", "listed twice"),
        ("version: 1", "version: 1\nversion: 1", "duplicate key"),
        ("version: 1", "version: 1\nsilences: []", "silences"),
    ],
)  # fmt: skip
def test_bad_policies_are_refused_with_where(old: str, new: str, message: str) -> None:
    text = default_policy_text()
    assert old in text, old
    assert message in _bad(text.replace(old, new, 1))


def test_a_missing_severity_and_non_yaml_are_refused() -> None:
    text = default_policy_text()
    start, end = text.index("  IV:\n"), text.index("\nkinds:")
    assert "missing IV" in _bad(text[:start] + text[end:])
    assert "not valid YAML" in _bad("severities: [")
    assert "must be a mapping" in _bad("- 1")
