"""Fleet-file import: YAML and CSV, strict validation with line numbers, all-or-nothing, upsert."""

from __future__ import annotations

import secrets
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import text

from adapters.registry import REGISTERED_ADAPTERS
from devices.families import Family
from devices.location import Location
from gateway.alerts.routing import load_routing_policy
from gateway.registry import FleetFileError, Registry, Role, import_file
from gateway.registry.coverage import MAX_WARNINGS, Audience
from gateway.registry.records import RegistryCounts
from privacy.keys import KeyRing
from simulators.community import build_community
from tests.support.registry_files import BAD_YAML, SMALL_YAML, open_registry, small_registry, write

DEVICES_CSV = """\
device_id,family,adapter,vendor,community,grid,building,unit,room,household,power,installed
sd-b01-0101,safety,gridgate_json,acme,xf,g01,b01,u1,0101,,battery,2024-05-01
em-b01-0101,meter,dlt645,acme,xf,,b01,u1,0101,h-b01-u1-0101,mains,
gate-b05,access,gridgate_json,acme,xf,g02,b05,,,,mains,2022-01-09
"""

MEMBERS_CSV = """\
member_id,name,role,community,grid,building,unit,channels
m-uh-b05u1,孙丽,unit_head,xf,g02,b05,u1,mqtt:gridgate/alerts/member/m-uh-b05u1;webhook:https://app.example/push/m-uh-b05u1
m-prop2,物业二,property_duty,xf,g01,b01,,mqtt:gridgate/alerts/property/b01
m-prop2,物业二,property_duty,xf,g02,b05,,webhook:http://127.0.0.1:9000/hook
"""


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return small_registry(tmp_path)


def totals(c: RegistryCounts) -> tuple[int, int, int, int]:
    return c.places, c.households, c.devices, c.members


# -- good files -----------------------------------------------------------------------------


def test_yaml_import_reports_counts_and_stores_full_locations(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    report = import_file(registry, write(tmp_path, "small.yaml", SMALL_YAML))
    assert (report.places.new, report.households.new) == (16, 4)
    assert (report.devices.new, report.members.new) == (7, 12)
    assert totals(registry.counts()) == (16, 4, 7, 12)
    assert "places 16 (16 new, 0 updated)" in report.summary()

    meter = registry.device("em-123456789012")
    assert meter is not None
    assert meter.family is Family.METER and meter.adapter == "dlt645" and meter.vendor == "acme"
    assert meter.location == Location("xf", "g01", "b03", "u2", "1201")
    assert meter.household == "h-b03-u2-1201"
    assert (meter.power, meter.installed) == ("mains", date(2024, 3, 1))
    # The grid is found from the building code; unquoted 0101 keeps its leading zero.
    gate = registry.device("gate-b03")
    assert gate is not None and gate.location == Location("xf", "g01", "b03")
    assert registry.device("gate-main") == registry.device("gate-main")
    main_gate = registry.device("gate-main")
    assert main_gate is not None and main_gate.location == Location("xf")
    water = registry.device("wm-b05")
    assert water is not None and water.installed == date(2023, 11, 5)
    assert water.location == Location("xf", "g02", "b05", "u1", "0101")
    assert registry.household("h-b03-u2-0101") is not None
    assert [
        n.key for n in registry.place_tree()[0].children[0].children[1].children[1].children
    ] == [
        "xf/g01/b03/u2/0101",
        "xf/g01/b03/u2/1201",
    ]
    assert registry.gate_approved("gate-main") and not registry.gate_approved("gate-b03")
    assert registry.device("nope") is None


def test_csv_devices_and_members_after_the_community_yaml(
    registry: Registry, tmp_path: Path
) -> None:
    report = import_file(registry, write(tmp_path, "devices.csv", DEVICES_CSV))
    assert report.kind == "devices_csv" and (report.devices.new, report.devices.total) == (3, 3)
    em = registry.device("em-b01-0101")
    assert em is not None and em.location == Location("xf", "g01", "b01", "u1", "0101")
    assert em.household == "h-b01-u1-0101" and em.installed is None
    gate = registry.device("gate-b05")
    assert gate is not None and gate.location == Location("xf", "g02", "b05")

    report = import_file(registry, write(tmp_path, "members.csv", MEMBERS_CSV))
    assert report.kind == "members_csv" and report.members.new == 2
    prop2 = registry.member("m-prop2")
    assert prop2 is not None and prop2.role is Role.PROPERTY_DUTY
    assert prop2.scopes == (Location("xf", "g01", "b01"), Location("xf", "g02", "b05"))
    assert [c.kind.value for c in prop2.channels] == ["mqtt", "webhook"]
    uh = registry.member("m-uh-b05u1")
    assert uh is not None and [c.target for c in uh.channels][1].endswith("/push/m-uh-b05u1")
    assert totals(registry.counts()) == (16, 4, 10, 14)


def test_gbk_csv_from_excel_is_read(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "members.csv"
    path.write_bytes(MEMBERS_CSV.encode("gbk"))
    report = import_file(registry, path)
    assert report.members.new == 2 and any("GB18030" in n.message for n in report.notices)
    member = registry.member("m-uh-b05u1")
    assert member is not None and member.name == "孙丽"


def test_reimport_is_idempotent_and_updates_what_changed(
    registry: Registry, tmp_path: Path
) -> None:
    registry.set_liveness([("em-123456789012", True, 5_000)])
    before = (
        registry.all_devices(),
        registry.members(),
        registry.households(),
        registry.place_tree(),
    )
    report = import_file(registry, tmp_path / "small.yaml", now_ns=2_000)
    for tally in (report.places, report.households, report.devices, report.members):
        assert (tally.new, tally.updated) == (0, 0)
    assert (
        registry.all_devices(),
        registry.members(),
        registry.households(),
        registry.place_tree(),
    ) == before

    changed = (
        SMALL_YAML.replace("name: 3号楼", "name: 三号楼")
        .replace("vendor: aqua", "vendor: aqua2")
        .replace('["mqtt:gridgate/alerts/member/m-uh-b03u1"]', '["mqtt:gridgate/alerts/uh/b03u1"]')
    )
    report = import_file(registry, write(tmp_path, "small.yaml", changed))
    assert (report.places.updated, report.devices.updated, report.members.updated) == (1, 1, 1)
    water = registry.device("wm-b05")
    assert water is not None and water.vendor == "aqua2"
    member = registry.member("m-uh-b03u1")
    assert member is not None and member.channels[0].target == "gridgate/alerts/uh/b03u1"
    # Liveness is the gateway's, not the file's: a re-import leaves it alone.
    live = registry.liveness("em-123456789012")
    assert live is not None and (live.online, live.last_seen_ns) == (True, 5_000)


def test_member_scopes_in_other_communities_survive_a_community_import(
    registry: Registry, tmp_path: Path
) -> None:
    other = SMALL_YAML.split("households:")[0].replace(
        "code: xf, name: 幸福小区", "code: hp, name: 和平小区"
    )
    other += 'members:\n  - {id: m-street, name: 城东街道, role: street_office, scope: [{community: hp}], channels: ["webhook:https://street.example/alerts"]}\n'
    import_file(registry, write(tmp_path, "hp.yaml", other))
    street = registry.member("m-street")
    assert street is not None and street.scopes == (Location("hp"), Location("xf"))
    import_file(registry, tmp_path / "small.yaml")
    street = registry.member("m-street")
    assert street is not None and street.scopes == (Location("hp"), Location("xf"))


def test_dry_run_checks_and_counts_but_writes_nothing(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    report = import_file(registry, write(tmp_path, "small.yaml", SMALL_YAML), dry_run=True)
    assert report.dry_run and report.devices.new == 7
    assert totals(registry.counts()) == (0, 0, 0, 0)


# -- bad files: every problem, nothing written ----------------------------------------------

# (line, a fragment of the reason) for every problem in BAD_YAML.
BAD_YAML_PROBLEMS = [
    (27, "unknown unit u9"),
    (28, "household #3: bad id: use 1-64 of A-Z"),  # the refused value is never echoed
    (30, "device d-1: unknown family (expected one of"),
    (31, "device #2: bad id: use 1-64 of A-Z"),
    (32, "unknown building b09"),
    (33, "duplicate device id d-3 (first at line 32)"),
    (34, "household h-nowhere not found"),
    (35, "bad date in installed"),
    (35, "unknown building b04"),  # a row refused for one reason still has its references checked
    (
        35,
        "device d-5: unknown adapter (did you mean gridgate_json? adapters: gridgate_json, dlt645,",
    ),
    (36, "an elder device needs the household it serves"),
    (37, "placed at xf/g01/b01/u1/0102 but household h-ok is in xf/g01/b03/u1/0101"),
    (38, "unknown key 'colour'"),
    (38, "unknown power (expected one of mains, battery)"),
    (38, "device d-8: unknown adapter (adapters: gridgate_json, dlt645, cjt188, vendor_access,"),
    (40, "unknown role (expected one of"),
    (40, "channel 1: mqtt target must be a topic to publish to"),
    (41, "a unit_head is responsible for a unit, not a building"),
    (42, "channel 1: unknown channel kind (expected mqtt, webhook, wecom or dingtalk)"),
    (42, "channel 2: webhook target is not an http(s) URL"),
    # sms and app channels import but nothing sends on them: refused, naming what delivers
    (
        42,
        "channel 3: sms channels cannot be delivered: gridgate sends alerts on mqtt, webhook, wecom or dingtalk",
    ),
    (45, "key 'name' appears twice"),
    (43, "channel 1: sms channels cannot be delivered"),
]


def test_bad_yaml_changes_nothing_and_lists_every_bad_row_with_its_line(
    registry: Registry, tmp_path: Path
) -> None:
    before = totals(registry.counts())
    with pytest.raises(FleetFileError) as caught:
        import_file(registry, write(tmp_path, "bad.yaml", BAD_YAML))
    problems = caught.value.problems
    for line, fragment in BAD_YAML_PROBLEMS:
        assert any(p.line == line and fragment in p.message for p in problems), (
            line,
            fragment,
            problems,
        )
    assert len(problems) == len(BAD_YAML_PROBLEMS), problems
    assert totals(registry.counts()) == before
    assert registry.household("h-ok") is None and registry.member("m-3") is None
    # Problems never echo contact targets, nor refused values.
    for value in ("13912345678", "s3cret", "h bad", "d/2", "metre", "solar", "janitor", "fax",
                  "gridgate_jsn", "not-a-phone"):  # fmt: skip
        assert not any(value in p.message for p in problems), value


BAD_DEVICES_CSV = (
    "device_id,family,adapter,vendor,community,grid,building,unit,room,household,power,installed\n"
    "ok-1,safety,gridgate_json,acme,xf,g01,b03,u2,1201,,battery,\n"  # 2
    "bad-1,smoke,gridgate_json,acme,xf,g01,b03,u2,1201,,battery,\n"  # 3
    'bad-0,safety,gridgate_json,"acme\n(quoted line break)",xf,g01,b03,u2,1201,,battery,\n'  # 4-5
    "bad 2,safety,gridgate_json,acme,xf,g01,b03,u2,1201,,battery,\n"  # 6
    "\n"  # 7: blank lines are skipped
    "bad-3,safety,gridgate_json,acme,xf,g03,b03,u2,1201,,battery,\n"  # 8
    "bad-4,meter,dlt645,acme,xf,g01,b03,u2,1201,h-none,mains,2024-01-01\n"  # 9
    "bad-5,meter,dlt645,acme,xf,g01,b03,u2,1201,,mains,01/02/2024\n"  # 10
    "bad-6,meter,dlt645,acme,xf,g01,b03,u2,1201,,,2024-01-01\n"  # 11
    "bad-7,meter,dlt645,acme,xf,g01,b03,u2\n"  # 12
    "ok-1,safety,gridgate_json,acme,xf,g01,b03,u2,1201,,battery,\n"  # 13
    "bad-8,safety,gridgate_json,acme,xf,g01,,u2,1201,,battery,\n"  # 14
    "bad-9,safety,gridgate_json,acme,,,,,,,battery,\n"  # 15
)


def test_bad_csv_lists_every_bad_row_by_physical_line(registry: Registry, tmp_path: Path) -> None:
    before = totals(registry.counts())
    with pytest.raises(FleetFileError) as caught:
        import_file(registry, write(tmp_path, "devices.csv", BAD_DEVICES_CSV))
    found = {(p.line, p.message.split(":")[0]) for p in caught.value.problems}
    assert found == {
        (3, "device bad-1"),
        (4, "device bad-0"),
        (6, "row 6"),
        (8, "device bad-3"),
        (9, "device bad-4"),
        (10, "device bad-5"),
        (11, "device bad-6"),
        (12, "expected 12 fields, found 8"),
        (13, "duplicate device id ok-1 (first at line 2)"),
        (14, "device bad-8"),
        (15, "device bad-9"),
    }
    messages = "\n".join(str(p) for p in caught.value.problems)
    for fragment in (
        "unknown family (expected one of",
        "vendor contains control characters",
        "unknown grid g03",
        "household h-none not found",
        "bad date",
        "missing power",
        "unit u2 given without its building",
        "missing community",
    ):
        assert fragment in messages
    assert totals(registry.counts()) == before


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "device_id,family,adapter,vendor,community,grid,building,unit,room,household,installed\n",
            "missing column power",
        ),
        (
            "device_id,family,adapter,vendor,community,grid,building,unit,room,household,power,installed,colour\n",
            "unknown column colour",
        ),
        ("serial,type\nx,y\n", "unrecognised CSV header"),
        ("", "empty file"),
    ],
)
def test_csv_header_problems(registry: Registry, tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(FleetFileError) as caught:
        import_file(registry, write(tmp_path, "x.csv", text))
    [problem] = caught.value.problems
    assert problem.line == 1 and expected in problem.message


def test_bad_members_csv(registry: Registry, tmp_path: Path) -> None:
    text = (
        "member_id,name,role,community,grid,building,unit,channels\n"
        "m-a,甲,unit_head,xf,g01,b03,u2,mqtt:x/y\n"
        "m-a,乙,unit_head,xf,g01,b03,u1,mqtt:x/y\n"  # 3: name differs from line 2
        "m-b,丙,chief,xf,g01,,,mqtt:x/y\n"  # 4
        "m-c,丁,grid_worker,xf,g01,,,telegram:abc\n"  # 5
        "m-d,戊,grid_worker,xf,g01,,,\n"  # 6: active without channels
        "m-e,己,building_head,xf,g01,b07,,mqtt:x/y\n"  # 7
    )
    with pytest.raises(FleetFileError) as caught:
        import_file(registry, write(tmp_path, "members.csv", text))
    assert [p.line for p in caught.value.problems] == [3, 4, 5, 6, 7]
    assert registry.member("m-a") is None


def test_yaml_syntax_error_reports_its_line(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(FleetFileError) as caught:
        import_file(registry, write(tmp_path, "x.yaml", "community: {code: xf\ngrids: [\n"))
    [problem] = caught.value.problems
    assert problem.line >= 2 and "not valid YAML" in problem.message


# -- what can never work is refused like any bad row ---------------------------------------


def test_an_adapter_name_nobody_registered_is_refused_with_the_closest_name(
    registry: Registry, tmp_path: Path
) -> None:
    before = totals(registry.counts())
    typo = SMALL_YAML.replace("adapter: cjt188", "adapter: cjt-188").replace(
        "id: sd-1201, family: safety, adapter: gridgate_json",
        "id: sd-1201, family: safety, adapter: Gridgate_JSON",
    )
    with pytest.raises(FleetFileError) as caught:
        import_file(registry, write(tmp_path, "typo.yaml", typo))
    listed = ", ".join(REGISTERED_ADAPTERS)
    assert [(p.line, p.message) for p in caught.value.problems] == [
        (32, f"device sd-1201: unknown adapter (did you mean gridgate_json? adapters: {listed})"),
        (37, f"device wm-b05: unknown adapter (did you mean cjt188? adapters: {listed})"),
    ]
    assert totals(registry.counts()) == before  # nothing imported
    csv = DEVICES_CSV.replace("sd-b01-0101,safety,gridgate_json", "sd-b01-0101,safety,zigbee")
    with pytest.raises(FleetFileError) as caught:
        import_file(registry, write(tmp_path, "devices.csv", csv))
    [problem] = caught.value.problems
    assert (problem.line, problem.message) == (
        2,
        f"device sd-b01-0101: unknown adapter (adapters: {listed})",  # nothing close to suggest
    )
    assert "zigbee" not in problem.message


@pytest.mark.parametrize(
    ("channel", "reason"),
    [
        (
            '"sms:13912345678"',
            "sms channels cannot be delivered: gridgate sends alerts on mqtt, webhook, wecom or dingtalk channels only",
        ),
        (
            "{kind: app, target: user-771}",
            "app channels cannot be delivered: gridgate sends alerts on mqtt, webhook, wecom or dingtalk channels only",
        ),
        ('"pager:12345"', "unknown channel kind (expected mqtt, webhook, wecom or dingtalk)"),
        (
            '"webhook:https://hooks.example:99999/x?token=s3cret"',
            "webhook target is not an http(s) URL",
        ),
        ('"webhook:mailto:duty@example.com"', "webhook target is not an http(s) URL"),
        (
            '"mqtt:gridgate/alerts/#"',
            "mqtt target must be a topic to publish to: no wildcards, no leading $",
        ),
    ],
)
def test_a_channel_nothing_delivers_on_is_refused_naming_what_does(
    registry: Registry, tmp_path: Path, channel: str, reason: str
) -> None:
    text = SMALL_YAML.replace(
        'channels: ["mqtt:gridgate/alerts/member/m-uh-b03u1"]', f"channels: [{channel}]"
    )
    assert text != SMALL_YAML
    with pytest.raises(FleetFileError) as caught:
        import_file(registry, write(tmp_path, "channels.yaml", text), dry_run=True)
    [problem] = caught.value.problems
    assert (problem.line, problem.message) == (40, f"member m-uh-b03u1: channel 1: {reason}")
    for target in ("13912345678", "user-771", "s3cret", "duty@example.com"):
        assert target not in problem.message  # contact targets are never echoed


def test_a_members_csv_with_an_sms_channel_is_refused(registry: Registry, tmp_path: Path) -> None:
    text = MEMBERS_CSV.replace(
        ";webhook:https://app.example/push/m-uh-b05u1", ";sms:+8613800000000"
    )
    with pytest.raises(FleetFileError) as caught:
        import_file(registry, write(tmp_path, "members.csv", text))
    [problem] = caught.value.problems
    assert problem.line == 2 and "channel 2: sms channels cannot be delivered" in problem.message
    assert registry.member("m-prop2") is None  # the good rows are not imported either


# -- places where an alert would reach nobody -----------------------------------------------

AUDIENCES = load_routing_policy().audiences()  # the shipped policy: who is told first of what
WITHOUT_MEMBERS = SMALL_YAML.split("members:")[0]
PROPERTY_DUTY_ROW = '  - {id: m-prop, name: 物业值班, role: property_duty, scope: [{community: xf}], channels: ["mqtt:gridgate/alerts/property/xf"]}\n'


def test_the_shipped_policy_gives_who_is_told_first_of_what() -> None:
    assert [
        Audience(
            "severity I, II",
            (Role.UNIT_HEAD, Role.BUILDING_HEAD, Role.GRID_WORKER, Role.PROPERTY_DUTY),
        ),
        Audience("severity III", (Role.GRID_WORKER, Role.PROPERTY_DUTY)),
        Audience("severity IV, battery, low_battery, device_offline", (Role.PROPERTY_DUTY,)),
        Audience("delivery_failed, alert_refused", (Role.DUTY_DESK,)),
    ] == AUDIENCES


def test_a_community_with_devices_and_no_members_is_one_warning(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    path = write(tmp_path, "small.yaml", WITHOUT_MEMBERS)
    nobody = (
        "xf 幸福小区 (7 device(s) in 5 places): nobody is responsible there (no active member"
        " with an mqtt, webhook, wecom or dingtalk channel), so no alert there reaches a member"
    )
    dry = import_file(registry, path, dry_run=True, audiences=AUDIENCES)
    assert dry.warnings == [nobody]  # said before anything is written …
    assert import_file(registry, path).warnings == [nobody]  # … and without a policy too
    assert registry.device("sd-1201") is not None  # a warning, not a refusal


def test_the_full_small_community_has_nobody_missing(registry: Registry, tmp_path: Path) -> None:
    report = import_file(registry, tmp_path / "small.yaml", audiences=AUDIENCES)
    assert report.warnings == []


def test_a_role_nobody_holds_is_said_once_for_the_whole_community(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    text = SMALL_YAML.replace(PROPERTY_DUTY_ROW, "")
    assert text != SMALL_YAML
    report = import_file(registry, write(tmp_path, "small.yaml", text), audiences=AUDIENCES)
    assert report.warnings == [
        # the community gate: no unit, building or grid below it to fall back on
        "xf 幸福小区 (1 device(s) at the community itself): no unit_head, building_head,"
        " grid_worker or property_duty for severity I, II alerts; no grid_worker or"
        " property_duty for severity III alerts",
        "xf 幸福小区 (7 device(s) in 5 places): no property_duty for severity IV, battery,"
        " low_battery, device_offline alerts",
    ]


def test_a_grid_with_devices_and_nobody_responsible_is_named(tmp_path: Path) -> None:
    """Grid g02 (building b05's water meter, the grid's gate) had only its grid worker and the
    chief; both are taken out, and so are the community-wide staff."""
    registry = open_registry(tmp_path)
    kept = [
        line
        for line in SMALL_YAML.splitlines(keepends=True)
        if not any(m in line for m in ("m-gw-g02", "m-gc,", "m-desk", "m-street", "m-prop"))
    ]
    report = import_file(
        registry, write(tmp_path, "small.yaml", "".join(kept)), audiences=AUDIENCES
    )
    assert report.warnings == [
        # the community gate: nobody at the community level is left
        "xf 幸福小区 (1 device(s) at the community itself): nobody is responsible there (no"
        " active member with an mqtt, webhook, wecom or dingtalk channel), so no alert there reaches a member",
        # g01 still has unit heads, building heads, a grid worker: only what is missing
        # everywhere is said, once, for the community
        "xf 幸福小区 (7 device(s) in 5 places): no property_duty for severity IV, battery,"
        " low_battery, device_offline alerts; no duty_desk for delivery_failed, alert_refused"
        " alerts",
        "xf/g02 第二网格 (2 device(s) in 2 places): nobody is responsible there (no active"
        " member with an mqtt, webhook, wecom or dingtalk channel), so no alert there reaches a member",
    ]
    for name in ("李建国", "王芳", "gridgate/alerts", "s3cret"):  # places only, no people
        assert not any(name in w for w in report.warnings), name


def test_a_building_with_devices_and_nobody_responsible_is_named(tmp_path: Path) -> None:
    """Nobody is responsible for b03 (no heads, no grid worker, no community staff); b01 next
    door has its building head, so the warning is about b03, not the grid."""
    text = WITHOUT_MEMBERS.replace(
        "devices:\n",
        "devices:\n  - {id: sd-b01, family: safety, adapter: gridgate_json, vendor: acme,"
        ' building: b01, unit: u1, room: "0101", power: battery}\n',
    )
    text += (
        "members:\n"
        '  - {id: m-bh-b01, name: 刘洋, role: building_head, scope: [{building: b01}], channels: ["mqtt:a/b01"]}\n'
        '  - {id: m-gw-g02, name: 杨帆, role: grid_worker, scope: [{grid: g02}], channels: ["mqtt:a/g02"]}\n'
        "  - {id: m-old, name: 周强, role: building_head, active: false, scope: [{building: b03}]}\n"
    )
    report = import_file(
        open_registry(tmp_path), write(tmp_path, "b.yaml", text), audiences=AUDIENCES
    )
    assert (
        "xf/g01/b03 3号楼 (4 device(s) in 2 places): nobody is responsible there (no active"
        " member with an mqtt, webhook, wecom or dingtalk channel), so no alert there reaches a member"
    ) in report.warnings
    assert not any(
        w.startswith(("xf/g01 ", "xf/g01/b01")) and "nobody" in w for w in report.warnings
    )


def test_a_member_only_on_a_channel_nothing_sends_on_counts_as_nobody(
    registry: Registry, tmp_path: Path
) -> None:
    """A registry from before sms was refused may hold such a channel: the property duty,
    reachable only by sms, covers nothing; a devices CSV import says so."""
    with registry.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE member_channels SET kind = 'sms', target = '13912345678' WHERE member_id = 'm-prop'"
            )
        )
    report = import_file(registry, write(tmp_path, "devices.csv", DEVICES_CSV), audiences=AUDIENCES)
    assert report.warnings[-1] == (
        "xf 幸福小区 (10 device(s) in 7 places): no property_duty for severity IV, battery,"
        " low_battery, device_offline alerts"
    )
    assert "13912345678" not in "\n".join(report.warnings)


def test_warnings_are_capped(tmp_path: Path) -> None:
    """Every unit but the first of each building lacks a unit head: one line per such unit
    (the building has one unit covered, so they are not grouped), capped."""
    units = community_yaml(grids=2, buildings=5, units=4, floors=1, per_floor=1)
    heads_of_first_units = [
        line for line in units.splitlines(keepends=True)
        if "role: unit_head" not in line or "unit: u1}" in line
    ]  # fmt: skip
    registry = open_registry(tmp_path)
    only_unit_heads = [Audience("severity I", (Role.UNIT_HEAD,))]
    report = import_file(
        registry,
        write(tmp_path, "c.yaml", "".join(heads_of_first_units)),
        audiences=only_unit_heads,
    )
    # 10 buildings × 3 units without a head, and the two grids' own gates: 32 places
    assert len(report.warnings) == MAX_WARNINGS + 1
    assert report.warnings[-1] == f"… and {32 - MAX_WARNINGS} more place(s)"
    assert report.warnings[0] == (
        "xf/g01 第1网格 (1 device(s) at the grid itself): no unit_head for severity I alerts"
    )
    assert (
        "xf/g01/b01/u2 2单元 (" in report.warnings[1]
        and "no unit_head for severity I" in report.warnings[1]
    )


def test_the_simulated_community_imports_without_errors_or_warnings(tmp_path: Path) -> None:
    """What `gridgate demo` imports: members of every role everywhere, mqtt channels."""
    community = build_community(600, seed=3)
    path = community.write_fleet(tmp_path / "fleet.yaml")
    registry = open_registry(tmp_path)
    keyring = KeyRing([("k1", secrets.token_bytes(32))])
    report = import_file(registry, path, keyring=keyring, audiences=AUDIENCES)
    assert report.warnings == [] and report.devices.new == len(community.devices)


def test_a_larger_simulated_community_imports_over_a_smaller_one_and_back(tmp_path: Path) -> None:
    """`gridgate demo --households 300` and then `make demo` (3000) on one registry: the
    same resident is the same person at any size, so no ID number turns up under two
    resident ids (the import refuses that: one person, one resident)."""
    registry = open_registry(tmp_path)
    keyring = KeyRing([("k1", secrets.token_bytes(32))])
    small, large = build_community(120, seed=5), build_community(600, seed=5)
    for community in (small, large, small):
        path = community.write_fleet(tmp_path / f"fleet-{len(community.households)}.yaml")
        report = import_file(registry, path, keyring=keyring)
        assert report.households.total == len(community.households)
    people = {
        h.resident_id(i): r.id_number for h in large.households for i, r in enumerate(h.residents)
    }
    both = [
        (people[h.resident_id(i)], r.id_number)
        for h in small.households
        for i, r in enumerate(h.residents)
        if h.resident_id(i) in people
    ]
    assert both and sum(a == b for a, b in both) >= len(both) * 0.8  # elders' differ by age


# -- consent carried by the file (R3.3) -----------------------------------------------------


def test_file_cannot_regrant_consent_the_resident_withdrew(
    registry: Registry, tmp_path: Path
) -> None:
    assert registry.face_consent("h-b03-u2-0101")
    registry.set_face_consent("h-b03-u2-0101", False, at_ns=1_800_000_000_000_000_000)
    report = import_file(registry, tmp_path / "small.yaml")  # still says true, dated 2024-03-01
    assert not registry.face_consent("h-b03-u2-0101")
    assert any("kept withdrawn" in n.message for n in report.notices)
    later = SMALL_YAML.replace(
        "face_consent_at: 2024-03-01", "face_consent_at: 2027-06-01T09:00:00+08:00"
    )
    import_file(registry, write(tmp_path, "small.yaml", later))
    assert registry.face_consent("h-b03-u2-0101")
    # A withdrawal in the file applies whatever its date.
    import_file(
        registry,
        write(
            tmp_path, "small.yaml", SMALL_YAML.replace("face_consent: true", "face_consent: false")
        ),
    )
    assert not registry.face_consent("h-b03-u2-0101")


# -- a community of the seeds' size (R7: ≈ 3000 households) ---------------------------------


def community_yaml(
    grids: int = 10, buildings: int = 5, units: int = 3, floors: int = 10, per_floor: int = 2
) -> str:
    """A generated community: grids × buildings × units × floors × per_floor households, with
    electricity and water meters, gas and smoke alarms per household, an elder watch for one
    household in ten, two unit doors per unit, gates, and about 400 members."""
    lines = ["community: {code: xf, name: 幸福小区, street: 城东街道}", "grids:"]
    households, devices, members = ["households:"], ["devices:"], ["members:"]

    def member(mid: str, role: str, scope: str) -> None:
        members.append(
            f'  - {{id: {mid}, name: 员工{mid}, role: {role}, scope: [{scope}], channels: ["mqtt:gridgate/alerts/member/{mid}", "webhook:https://desk.example/m/{mid}"]}}'
        )

    for g in range(1, grids + 1):
        gc = f"g{g:02d}"
        lines += [f"  - code: {gc}", f"    name: 第{g}网格", "    buildings:"]
        member(f"m-gc-{gc}", "grid_chief", f"{{grid: {gc}}}")
        for w in range(3):
            member(f"m-gw-{gc}-{w}", "grid_worker", f"{{grid: {gc}}}")
        devices.append(
            f"  - {{id: gate-{gc}, family: access, adapter: gridgate_json, vendor: acme, grid: {gc}, power: mains, gate_approved: true}}"
        )
        for b in range(1, buildings + 1):
            bn = (g - 1) * buildings + b
            bc = f"b{bn:02d}"
            lines += [f"      - code: {bc}", f"        name: {bn}号楼", "        units:"]
            member(f"m-bh-{bc}", "building_head", f"{{building: {bc}}}")
            for u in range(1, units + 1):
                uc = f"u{u}"
                rooms = [
                    f"{f:02d}{r:02d}" for f in range(1, floors + 1) for r in range(1, per_floor + 1)
                ]
                lines.append(
                    f"          - {{code: {uc}, name: {u}单元, rooms: [{', '.join(rooms)}]}}"
                )
                for k in range(2):
                    member(f"m-uh-{bc}{uc}-{k}", "unit_head", f"{{building: {bc}, unit: {uc}}}")
                    devices.append(
                        f"  - {{id: door-{bc}{uc}-{k}, family: access, adapter: gridgate_json, vendor: acme, building: {bc}, unit: {uc}, power: mains}}"
                    )
                for i, room in enumerate(rooms):
                    hid = f"h-{bc}-{uc}-{room}"
                    place = f'building: {bc}, unit: {uc}, room: "{room}"'
                    elder = i % 10 == 0
                    households.append(
                        f"  - {{id: {hid}, {place}, elder_alone: {str(elder).lower()}, face_consent: {str(i % 3 == 0).lower()}}}"
                    )
                    for prefix, family, adapter, power in (
                        ("em", "meter", "dlt645", "mains"),
                        ("wm", "meter", "cjt188", "battery"),
                        ("gas", "safety", "gridgate_json", "mains"),
                        ("smk", "safety", "gridgate_json", "battery"),
                    ):
                        devices.append(
                            f"  - {{id: {prefix}-{bc}{uc}{room}, family: {family}, adapter: {adapter}, vendor: acme, {place}, household: {hid}, power: {power}, installed: 2024-03-01}}"
                        )
                    if elder:
                        devices.append(
                            f"  - {{id: eld-{bc}{uc}{room}, family: elder, adapter: gridgate_json, vendor: care, {place}, household: {hid}, power: battery}}"
                        )
    for k in range(3):
        member(f"m-desk-{k}", "duty_desk", "{community: xf}")
        member(f"m-prop-{k}", "property_duty", "{community: xf}")
    member("m-street", "street_office", "{community: xf}")
    return "\n".join(lines + households + devices + members) + "\n"


def test_a_3000_household_community_imports_with_the_right_counts(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    path = write(tmp_path, "community.yaml", community_yaml())
    report = import_file(registry, path)
    # 1 community + 10 grids + 50 buildings + 150 units + 3000 rooms
    assert totals(registry.counts()) == (3211, 3000, 12610, 397)
    assert (report.places.new, report.households.new, report.devices.new) == (3211, 3000, 12610)
    assert len(registry.all_devices()) == 12610
    people = registry.members_for(Location("xf", "g03", "b12", "u2", "0301"))
    assert [m.role for m in people] == [
        Role.UNIT_HEAD, Role.UNIT_HEAD, Role.BUILDING_HEAD, Role.GRID_CHIEF,
        *[Role.GRID_WORKER] * 3, *[Role.DUTY_DESK] * 3, Role.STREET_OFFICE, *[Role.PROPERTY_DUTY] * 3,
    ]  # fmt: skip


def test_the_examples_in_the_docs_import(tmp_path: Path) -> None:
    """docs/fleet-file.md's YAML, devices CSV and members CSV examples, in that order."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "fleet-file.md").read_text(
        encoding="utf-8"
    )
    blocks = [b.split("\n", 1) for b in doc.split("```")[1::2]]
    [yaml_text] = [body for lang, body in blocks if lang == "yaml"]
    csvs = [
        body
        for lang, body in blocks
        if lang == "" and body.split(",")[0] in ("device_id", "member_id", "resident_id")
    ]
    registry = open_registry(tmp_path)
    keyring = KeyRing([("k1", secrets.token_bytes(32))])
    doc = import_file(registry, write(tmp_path, "doc.yaml", yaml_text), keyring=keyring)
    devices = import_file(registry, write(tmp_path, "devices.csv", csvs[0]))
    members = import_file(registry, write(tmp_path, "members.csv", csvs[1]))
    residents = import_file(registry, write(tmp_path, "residents.csv", csvs[2]), keyring=keyring)
    assert (devices.devices.new, devices.devices.updated, members.members.new) == (2, 0, 2)
    assert (doc.residents.new, residents.residents.new) == (1, 1)
    assert [r.face_consent for r in registry.residents("h-b03-u2-1201")] == [True, False]
    gate = registry.device("gate-b03")
    assert gate is not None and gate.location == Location("xf", "g01", "b03")
    assert [m.id for m in registry.members_for(Location("xf", "g01", "b03", "u2", "1201"))] == [
        "m-0001",
        "m001",
        "m002",
        "m-0002",
    ]
