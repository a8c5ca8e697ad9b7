"""Personal identifiers as registry ids, codes and names (issue 9 item 3): refused at import
with FILE:LINE and the field, never echoed, nothing imported; redacted by ``registry show``."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from sqlalchemy import insert, update

from gateway.registry import FleetFileError, Registry, import_file
from gateway.registry._models import Device, MemberRow, Place  # an old database's rows
from gateway.registry.cli import main
from gateway.registry.identifiers import (
    REDACTED,
    id_problem,
    looks_like_person_name,
    place_name_problem,
    shown_field_name,
    shown_id,
    shown_key,
    text_problem,
)
from gateway.registry.records import AccessRole
from privacy.keys import KeyRing

PHONE = "13812345678"
ID_NUMBER = "11010519491231002X"  # valid birth date and check character (docs/fleet-file.md)
PERSON = "张三"
# What must never appear in a problem or on the terminal when planted in a file.
PLANTED = (PHONE, ID_NUMBER, PERSON, "110105-19491231-002X", "138 1234 5678", "京A12345")

# A good community: a 12-digit meter address, a 14-digit water meter, a 15-digit IMEI, Chinese
# place names, a member's own name, a resident.
BASE = """\
version: 1
community: {code: xf, name: 幸福小区, street: 城东街道}
grids:
  - code: g01
    name: 第一网格
    buildings:
      - code: b03
        name: 3号楼
        units:
          - code: u1
            name: 1单元
            rooms: ["0101", {code: "0102", name: 一层东户}]
households:
  - {id: h-b03-u1-0101, building: b03, unit: u1, room: "0101"}
devices:
  - {id: "123456789012", family: meter, adapter: dlt645, vendor: acme, building: b03, unit: u1, room: "0101", household: h-b03-u1-0101, power: mains}
  - {id: "12345678901234", family: meter, adapter: cjt188, vendor: acme, building: b03, unit: u1, room: "0101", power: battery}
  - {id: "860001100000001", family: safety, adapter: vendor_gas, vendor: anxin-gas, building: b03, unit: u1, room: "0101", power: mains}
members:
  - {id: m-uh-b03u1, name: 李建国, role: unit_head, scope: [{building: b03, unit: u1}], channels: ["mqtt:gridgate/alerts/member/m-uh-b03u1"]}
residents:
  - {id: r-b03-u1-0101-1, household: h-b03-u1-0101, id_number: "110108200809053747"}
"""


@pytest.fixture
def keyring() -> KeyRing:
    return KeyRing([("k1", secrets.token_bytes(32))])


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def open_registry(tmp_path: Path) -> Registry:
    return Registry.open(f"sqlite:///{tmp_path / 'registry.sqlite3'}")


def line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


def nothing_in(registry: Registry) -> bool:
    c = registry.counts()
    return (c.places, c.households, c.devices, c.members, c.residents) == (0, 0, 0, 0, 0)


# -- the rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        PHONE,
        f"h-{PHONE}",
        f"+86-{PHONE}",
        f"{PHONE}x-room",  # glued to an x: strict find_identifier alone lets it pass
        ID_NUMBER,
        ID_NUMBER.lower(),
        "b-110105-19491231-002X",
        f"r{ID_NUMBER}",
        PERSON,
        "d/2",
    ],
)
def test_identifier_shaped_ids_are_refused(value: str) -> None:
    why = id_problem(value)
    assert why is not None and value not in why
    assert shown_id(value) == REDACTED


@pytest.mark.parametrize(
    "value",
    [
        "123456789012",  # DL/T 645 meter address
        "12345678901234",  # CJ/T 188 meter address
        "860001100000001",  # IMEI
        "em-123456789012",
        "h-xf-b03-u2-1201",
        "r-b03-u2-1201-1",
        "m-xf-0001",
        "ACS123400001",
        "1201",
        "g01",
    ],
)
def test_equipment_ids_and_codes_are_accepted(value: str) -> None:
    assert id_problem(value) is None and shown_id(value) == value


@pytest.mark.parametrize(
    "name",
    ["3号楼", "2单元", "第一网格", "幸福小区", "城东街道", "一层东户", "王家庄", "李家村",
     "金色家园", "北门人行通道", "黄金海岸小区", "A座", "Building 3", "1201室"],
)  # fmt: skip
def test_place_names_in_chinese_are_accepted(name: str) -> None:
    assert place_name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        (PERSON, "person's name"),
        ("张 三", "person's name"),
        ("王建国", "person's name"),
        ("欧阳娜娜", "person's name"),
        ("李家", "person's name"),
        (f"3号楼{PHONE}", "mobile phone"),
        ("3号楼 138 1234 5678", "mobile phone"),
        ("１３８１２３４５６７８室", "mobile phone"),  # full-width digits
        (f"{ID_NUMBER}的家", "ID number"),
        ("京A12345车位", "plate"),
    ],
)
def test_place_names_holding_a_person_are_refused(name: str, shape: str) -> None:
    why = place_name_problem(name)
    assert why is not None and shape in why and name not in why


def test_member_names_and_vendors_may_name_people_but_hold_no_identifier() -> None:
    assert text_problem("李建国") is None and text_problem("huaming-electric") is None
    assert text_problem(f"李建国{PHONE}") is not None
    assert text_problem(f"acme {ID_NUMBER}") is not None
    assert looks_like_person_name("李建国") and not looks_like_person_name("3号楼")


def test_shown_key_and_field_names() -> None:
    assert shown_key(f"xf/g01/{PHONE}/u1") == f"xf/g01/{REDACTED}/u1"
    assert shown_field_name("colour") == "'colour'"
    for data in (PERSON, PHONE, f"tel{PHONE}", "a b", 12, None):
        assert shown_field_name(data) is None


# -- import: refused with FILE:LINE and the field, never echoed, nothing imported -------------

# (what, old text, new text, the row's marker for its line, fragment of the problem)
YAML_CASES = [
    (
        "room named after a person",
        '{code: "0102", name: 一层东户}',
        f'{{code: "0102", name: {PERSON}}}',
        'rooms: ["0101"',
        "room xf/g01/b03/u1/0102: name looks like a person's name",
    ),
    (
        "household id holding a phone",
        "households:\n",
        f'households:\n  - {{id: "h-{PHONE}", building: b03, unit: u1, room: "0102"}}\n',
        f"h-{PHONE}",
        "household #1: bad id: looks like a mobile phone number",
    ),
    (
        "resident id equal to an ID number",
        "residents:\n",
        f'residents:\n  - {{id: {ID_NUMBER}, household: h-b03-u1-0101, id_number: "{ID_NUMBER}"}}\n',
        f"id: {ID_NUMBER}",
        "resident #1: bad id: looks like a resident ID number",
    ),
    (
        "device id that is a phone number",
        "devices:\n",
        f'devices:\n  - {{id: {PHONE}, family: safety, adapter: gridgate_json, vendor: acme, building: b03, unit: u1, room: "0101", power: battery}}\n',
        f"id: {PHONE}",
        "device #1: bad id: looks like a mobile phone number",
    ),
    (
        "hyphenated ID number in a building code",
        "      - code: b03\n",
        "      - code: b-110105-19491231-002X\n        name: 5号楼\n      - code: b03\n",
        "b-110105-19491231-002X",
        "building under xf/g01: bad code: looks like a resident ID number",
    ),
    (
        "phone with spaces in a unit name",
        "name: 1单元",
        "name: 1单元 138 1234 5678",
        "- code: u1",
        "unit xf/g01/b03/u1: name holds a mobile phone number",
    ),
    (
        "member name holding a phone",
        "name: 李建国",
        f"name: 李建国{PHONE}",
        "m-uh-b03u1",
        "member m-uh-b03u1: name holds a mobile phone number",
    ),
    (
        "device household reference holding a phone",
        "household: h-b03-u1-0101, power: mains",
        f'household: "{PHONE}", power: mains',
        "123456789012",
        "device 123456789012: bad household: looks like a mobile phone number",
    ),
    (
        "plate in the street",
        "street: 城东街道",
        "street: 京A12345",
        "community:",
        "community: street holds a vehicle plate",
    ),
    (
        "member scope code holding an ID number",
        "scope: [{building: b03, unit: u1}]",
        f"scope: [{{building: b03, unit: u1}}, {{building: b{ID_NUMBER}}}]",
        "m-uh-b03u1",
        "member m-uh-b03u1: bad building: looks like a resident ID number",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "marker", "fragment"),
    [case[1:] for case in YAML_CASES],
    ids=[case[0] for case in YAML_CASES],
)
def test_yaml_with_a_personal_identifier_is_refused_without_echo(
    tmp_path: Path, keyring: KeyRing, old: str, new: str, marker: str, fragment: str
) -> None:
    assert BASE.count(old) == 1
    text = BASE.replace(old, new)
    registry = open_registry(tmp_path)
    with pytest.raises(FleetFileError) as caught:
        import_file(registry, write(tmp_path, "fleet.yaml", text), keyring=keyring)
    problems = caught.value.problems
    line = line_of(text, marker)
    assert any(p.line == line and fragment in p.message for p in problems), (line, problems)
    shown = "\n".join(str(p) for p in problems) + str(caught.value)
    for value in PLANTED:
        assert value not in shown
    assert nothing_in(registry)


def test_every_problem_of_one_file_on_the_terminal_without_the_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = BASE.split("residents:")[0]
    for _, old, new, _, _ in YAML_CASES:
        if old in text and not new.startswith("residents"):
            text = text.replace(old, new, 1)
    path = write(tmp_path, "fleet.yaml", text)
    url = f"sqlite:///{tmp_path / 'registry.sqlite3'}"
    monkeypatch.setenv("GRIDGATE_REGISTRY_URL", url)
    assert main(["registry", "import", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    for _, _, _, marker, fragment in YAML_CASES:
        if "resident" not in fragment:
            assert f"{path}:{line_of(text, marker)}: {fragment}" in captured.err
    for value in PLANTED:
        assert value not in captured.err
    assert captured.err.splitlines()[-1].endswith("nothing imported")
    assert main(["registry", "show"]) == 0
    assert "devices           0" in capsys.readouterr().out


def csv_problems(tmp_path: Path, registry: Registry, name: str, text: str) -> list[str]:
    with pytest.raises(FleetFileError) as caught:
        import_file(registry, write(tmp_path, name, text))
    shown = [str(p) for p in caught.value.problems]
    for value in PLANTED:
        assert not any(value in s for s in shown), (value, shown)
    return shown


def test_csv_rows_with_personal_identifiers_are_refused_without_echo(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    import_file(
        registry,
        write(tmp_path, "fleet.yaml", BASE.split("residents:")[0]),
    )
    before = registry.counts()
    devices = (
        "device_id,family,adapter,vendor,community,grid,building,unit,room,household,power,installed\n"
        "sd-b03-0101,safety,gridgate_json,acme,xf,g01,b03,u1,0101,,battery,\n"
        f"{PHONE},safety,gridgate_json,acme,xf,g01,b03,u1,0101,,battery,\n"
        "sd-b03-0102,safety,gridgate_json,acme,xf,g01,b-110105-19491231-002X,,,,battery,\n"
        f"em-b03-0102,meter,dlt645,acme,xf,g01,b03,u1,0102,h-{PHONE},mains,\n"
        f"em-b03-0103,meter,dlt645,{PERSON} {PHONE},xf,g01,b03,u1,0101,,mains,\n"
    )
    assert csv_problems(tmp_path, registry, "devices.csv", devices) == [
        "line 3: row 3: bad device_id: looks like a mobile phone number; ids and codes must not"
        " hold personal data",
        "line 4: device sd-b03-0102: bad building: looks like a resident ID number; ids and codes"
        " must not hold personal data",
        "line 5: device em-b03-0102: bad household: looks like a mobile phone number; ids and"
        " codes must not hold personal data",
        "line 6: device em-b03-0103: vendor holds a mobile phone number; names must not hold"
        " personal data",
    ]
    members = (
        "member_id,name,role,community,grid,building,unit,channels\n"
        "m-ok,张伟,unit_head,xf,g01,b03,u1,mqtt:gridgate/alerts/member/m-ok\n"
        f"m-{PHONE},王芳,unit_head,xf,g01,b03,u1,mqtt:a/b\n"
        f"m-b,王芳 {ID_NUMBER},unit_head,xf,g01,b03,u1,mqtt:a/b\n"
    )
    problems = csv_problems(tmp_path, registry, "members.csv", members)
    assert [p.split(":")[0] for p in problems] == ["line 3", "line 4"]
    assert "row 3: bad member_id: looks like a mobile phone number" in problems[0]
    assert "member m-b: name holds a resident ID number" in problems[1]
    assert registry.counts() == before


def test_csv_resident_id_equal_to_an_id_number(tmp_path: Path, keyring: KeyRing) -> None:
    registry = open_registry(tmp_path)
    import_file(registry, write(tmp_path, "fleet.yaml", BASE), keyring=keyring)
    before = registry.counts()
    text = (
        "resident_id,household,id_number,face_consent\n"
        f"{ID_NUMBER},h-b03-u1-0101,{ID_NUMBER},true\n"
        f"r-2,{PHONE},{ID_NUMBER},true\n"
    )
    with pytest.raises(FleetFileError) as caught:
        import_file(registry, write(tmp_path, "residents.csv", text), keyring=keyring)
    shown = [str(p) for p in caught.value.problems]
    assert any(
        s.startswith("line 2: row 2: bad resident_id: looks like a resident ID number")
        for s in shown
    ), shown
    assert any(
        s.startswith("line 3: resident r-2: bad household: looks like a mobile") for s in shown
    )
    for value in PLANTED:
        assert not any(value in s for s in shown)
    assert registry.counts() == before


def test_keys_and_columns_that_look_like_data_are_not_named(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    text = BASE.split("households:")[0].replace(
        "name: 第一网格", f"name: 第一网格\n    {PHONE}: x\n    {PERSON}: y\n    colour: red"
    )
    with pytest.raises(FleetFileError) as caught:
        import_file(registry, write(tmp_path, "fleet.yaml", text))
    shown = "\n".join(str(p) for p in caught.value.problems)
    assert "unknown key 'colour'" in shown and "unknown key (not shown" in shown
    header = (
        "device_id,family,adapter,vendor,community,grid,building,unit,room,household,power,"
        f"installed,{PERSON},{PHONE},colour\n"
    )
    [problem] = csv_problems(tmp_path, registry, "devices.csv", header)
    assert problem == "line 1: unknown columns colour, 2 not shown (not plain field names)"
    assert PERSON not in shown and PHONE not in shown


# -- legitimate fleets still import ---------------------------------------------------------


def test_the_good_community_imports(tmp_path: Path, keyring: KeyRing) -> None:
    registry = open_registry(tmp_path)
    report = import_file(registry, write(tmp_path, "fleet.yaml", BASE), keyring=keyring)
    assert (report.devices.new, report.members.new, report.residents.new) == (3, 1, 1)
    room = registry.place_tree()[0].children[0].children[0].children[0].children[1]
    assert room.name == "一层东户"
    member = registry.member("m-uh-b03u1")
    assert member is not None and member.name == "李建国"


def test_the_simulators_community_imports(tmp_path: Path, keyring: KeyRing) -> None:
    from simulators.community import build_community

    community = build_community(300, seed=4)
    path = community.write_fleet(tmp_path / "community.yaml")
    registry = open_registry(tmp_path)
    report = import_file(registry, path, keyring=keyring)
    assert report.devices.new == len(community.devices)
    assert report.residents.new > 0
    lengths = {len(d.device_id) for d in community.devices if d.device_id.isdigit()}
    assert {12, 14, 15} <= lengths  # meter addresses and IMEIs


# -- show: a registry from before the checks -------------------------------------------------


def test_show_redacts_what_an_old_registry_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = open_registry(tmp_path)
    import_file(registry, write(tmp_path, "fleet.yaml", BASE.split("residents:")[0]))
    bad_building = "b-110105-19491231-002X"
    key = f"xf/g01/{bad_building}"
    with registry.writing() as s:  # what an importer without the checks let through
        s.execute(
            insert(Place),
            [{"id": key, "parent_id": "xf/g01", "community": "xf", "level": "building",
              "code": bad_building, "name": PERSON, "street": ""}],
        )  # fmt: skip
        s.execute(
            insert(Device),
            [{"id": PHONE, "family": "safety", "adapter": "gridgate_json",
              "vendor": f"acme {PHONE}", "place_id": key, "household_id": None,
              "power": "battery", "installed": None, "gate_approved": False}],
        )  # fmt: skip
        s.execute(update(Place).where(Place.id == "xf/g01").values(name=f"网格{PHONE}"))
        s.execute(
            update(MemberRow).where(MemberRow.id == "m-uh-b03u1").values(name=f"李{ID_NUMBER}")
        )
    registry.close()
    monkeypatch.setenv("GRIDGATE_REGISTRY_URL", f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    assert main(["registry", "show", PHONE]) == 0
    out = capsys.readouterr().out
    assert f"device      {REDACTED}" in out
    assert f"xf 幸福小区 / g01 {REDACTED} / {REDACTED} {REDACTED}" in out
    assert f"vendor {REDACTED}" in out
    for value in PLANTED:
        assert value not in out
    assert main(["registry", "show", "123456789012"]) == 0
    out = capsys.readouterr().out
    assert "device      123456789012" in out and "m-uh-b03u1" in out
    assert f"unit_head      单元长    {REDACTED}" in out
    assert ID_NUMBER not in out and PHONE not in out
    assert main(["registry", "show", f"x{PHONE}"]) == 1
    err = capsys.readouterr().err
    assert f"no device {REDACTED}" in err and PHONE not in err


def test_a_privacy_role_is_not_granted_to_a_personal_user_id(tmp_path: Path) -> None:
    class Audit:
        def append(self, *args: object, **kwargs: object) -> object:
            return None

    registry = Registry.open(f"sqlite:///{tmp_path / 'r.sqlite3'}", audit=Audit())  # type: ignore[arg-type]
    for user in (PHONE, PERSON, f"u-{ID_NUMBER}"):
        with pytest.raises(ValueError) as caught:
            registry.grant_role(user, AccessRole.APPROVER, actor="admin", at_ns=1)
        assert user not in str(caught.value)
    assert registry.grant_role("lead-1", AccessRole.APPROVER, actor="admin", at_ns=1)
