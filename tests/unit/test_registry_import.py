"""Fleet-file import: YAML and CSV, strict validation with line numbers, all-or-nothing, upsert."""

from __future__ import annotations

import secrets
from datetime import date
from pathlib import Path

import pytest

from devices.families import Family
from devices.location import Location
from gateway.registry import FleetFileError, Registry, Role, import_file
from gateway.registry.records import RegistryCounts
from privacy.keys import KeyRing
from tests.support.registry_files import BAD_YAML, SMALL_YAML, open_registry, small_registry, write

DEVICES_CSV = """\
device_id,family,adapter,vendor,community,grid,building,unit,room,household,power,installed
sd-b01-0101,safety,gridgate_json,acme,xf,g01,b01,u1,0101,,battery,2024-05-01
em-b01-0101,meter,dlt645,acme,xf,,b01,u1,0101,h-b01-u1-0101,mains,
gate-b05,access,gridgate_json,acme,xf,g02,b05,,,,mains,2022-01-09
"""

MEMBERS_CSV = """\
member_id,name,role,community,grid,building,unit,channels
m-uh-b05u1,孙丽,unit_head,xf,g02,b05,u1,mqtt:gridgate/alerts/member/m-uh-b05u1;sms:+8613800000000
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
    assert uh is not None and [c.target for c in uh.channels][1] == "+8613800000000"
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
        .replace('["sms:13912345678"]', '["sms:13912345679"]')
    )
    report = import_file(registry, write(tmp_path, "small.yaml", changed))
    assert (report.places.updated, report.devices.updated, report.members.updated) == (1, 1, 1)
    water = registry.device("wm-b05")
    assert water is not None and water.vendor == "aqua2"
    member = registry.member("m-uh-b03u1")
    assert member is not None and member.channels[0].target == "13912345679"
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
    (36, "an elder device needs the household it serves"),
    (37, "placed at xf/g01/b01/u1/0102 but household h-ok is in xf/g01/b03/u1/0101"),
    (38, "unknown key 'colour'"),
    (38, "unknown power (expected one of mains, battery)"),
    (40, "unknown role (expected one of"),
    (40, "channel 1: mqtt target must be a topic to publish to"),
    (41, "a unit_head is responsible for a unit, not a building"),
    (42, "channel 1: unknown channel kind (expected"),
    (42, "channel 2: webhook target is not an http(s) URL"),
    (45, "key 'name' appears twice"),
    (43, "channel 1: sms target is not a phone number"),
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
    for value in ("13912345678", "s3cret", "h bad", "d/2", "metre", "solar", "janitor", "fax"):
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
            f'  - {{id: {mid}, name: 员工{mid}, role: {role}, scope: [{scope}], channels: ["mqtt:gridgate/alerts/member/{mid}", "sms:139{len(members):08d}"]}}'
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
