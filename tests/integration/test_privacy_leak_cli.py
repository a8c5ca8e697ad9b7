"""No raw personal identifier in what the `gridgate` command prints (R3.2), run as a real
process: `gridgate registry import` refuses fleet files whose ids, codes and names hold a
person's name, phone, ID number or plate — printing every problem without the value, and
importing nothing — and `gridgate decode` shows a hostile message's readings without its
identifiers. Every planted value (tests.integration.leak_search) is searched for in the
command's stdout and stderr, and in the registry and audit databases it was pointed at.

No broker or InfluxDB is needed (so no `integration` mark): each command gets its own
registry, audit log and key file under the test's tmp_path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import orjson
import pytest

from gateway.registry import Registry
from gateway.registry.importer import import_file
from privacy.keys import KeyRing
from tests.support.leak_search import (
    FACE_BLOB,
    ID_A,
    ID_A_LOWER,
    ID_B_HYPHENATED,
    ID_C,
    NAMES,
    PHONE_HYPHENATED,
    PHONE_LEADING_DIGIT,
    PHONES,
    PLATES,
    assert_no_leaks,
    file_text,
    needles,
    planted,
    rows_text,
    sqlite_tables,
)
from tests.support.services import ROOT

TARGETS = needles(planted())
COMMUNITY = "cq1"


def gridgate(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    """`gridgate ARGS` (the console script of this virtualenv) against this test's own
    registry, audit log and key file; no other GRIDGATE_* variable leaks in."""
    key = tmp / "pseudonym.key"
    if not key.exists():
        KeyRing.generate_file(key)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDGATE_")} | {
        "GRIDGATE_REGISTRY_URL": f"sqlite:///{tmp / 'registry.sqlite3'}",
        "GRIDGATE_AUDIT_PATH": str(tmp / "audit.sqlite3"),
        "GRIDGATE_PSEUDONYM_KEY_FILE": str(key),
        "GRIDGATE_LOG_LEVEL": "DEBUG",
    }
    script = Path(sys.executable).with_name("gridgate")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]
    return subprocess.run(
        [*command, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


# -- registry import -----------------------------------------------------------------------------

BASE_FLEET = f"""\
version: 1
community: {{code: {COMMUNITY}, name: 幸福小区, street: 城东街道}}
grids:
  - code: g01
    name: 第一网格
    buildings:
      - code: b01
        name: 1号楼
        units:
          - code: u1
            name: 1单元
            rooms: [{{code: "0101", name: 一层东户}}]
households:
  - {{id: h-0101, building: b01, unit: u1, room: "0101", elder_alone: true}}
devices:
  - {{id: em-0101, family: meter, adapter: gridgate_json, vendor: acme, building: b01, unit: u1, room: "0101", power: mains}}
members:
  - {{id: m-0001, name: 李建国, role: unit_head, scope: [{{building: b01, unit: u1}}], channels: ["mqtt:gridgate/alerts/member/m-0001"]}}
residents:
  - {{id: r-0101-1, household: h-0101, id_number: "{ID_C}", face_consent: true}}
"""

# What is planted → (how: a change to the valid base file, the problem the importer must name).
FLEET_CASES: dict[str, tuple[Callable[[str], str], str]] = {
    "room named after a person": (
        lambda f: f.replace("name: 一层东户", f"name: {NAMES[0]}"),
        "room cq1/g01/b01/u1/0101: name looks like a person's name",
    ),
    "unit named after a person": (
        lambda f: f.replace("name: 1单元", f"name: {NAMES[2]}"),
        "unit cq1/g01/b01/u1: name looks like a person's name",
    ),
    "household id holding a phone": (
        lambda f: f.replace("h-0101", f"h-{PHONES[0]}"),
        "household #1: bad id: looks like a mobile phone number",
    ),
    "household id holding a hyphenated phone": (
        lambda f: f.replace("h-0101", f"h-{PHONE_HYPHENATED}"),
        "household #1: bad id: looks like a mobile phone number",
    ),
    "resident id equal to an ID number": (
        lambda f: f.replace("id: r-0101-1", f'id: "{ID_A}"'),
        "resident #1: bad id: looks like a resident ID number",
    ),
    "device id that is a phone number": (
        lambda f: f.replace("em-0101", PHONES[1]),
        "device #1: bad id: looks like a mobile phone number",
    ),
    "building code holding a hyphenated ID number": (
        lambda f: f.replace("b01", f"b-{ID_B_HYPHENATED}"),
        "building under cq1/g01: bad code: looks like a resident ID number",
    ),
    "member name holding a phone": (
        lambda f: f.replace("李建国", f"李建国{PHONES[3]}"),
        "member m-0001: name holds a mobile phone number",
    ),
    "street holding a plate": (
        lambda f: f.replace("城东街道", f"城东街道{PLATES[0]}"),
        "community: street holds a vehicle plate",
    ),
    "vendor holding an ID number": (
        lambda f: f.replace("vendor: acme", f"vendor: acme-{ID_A_LOWER}"),
        "device em-0101: vendor holds a resident ID number",
    ),
}


def every_plant(fleet: str) -> str:
    for plant, _ in FLEET_CASES.values():
        fleet = plant(fleet)
    return fleet


def assert_nothing_imported(registry: Path) -> None:
    tables = sqlite_tables(registry)
    assert tables, "the registry was never created"
    assert {t: len(rows) for t, rows in tables.items() if rows} == {}, "something was imported"


def test_the_base_fleet_file_imports(tmp_path: Path) -> None:
    """The cases below differ from this file only by what they plant."""
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(BASE_FLEET, encoding="utf-8")
    done = gridgate(["registry", "import", str(fleet)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "devices 1 (1 new" in done.stdout, done.stdout


@pytest.mark.parametrize(
    ("plant", "problem"),
    [*FLEET_CASES.values(), (every_plant, "problem(s)")],
    ids=[*FLEET_CASES, "all of them"],
)
def test_registry_import_refuses_identifiers_without_echoing_them(
    plant: Callable[[str], str], problem: str, tmp_path: Path
) -> None:
    text = plant(BASE_FLEET)
    assert text != BASE_FLEET
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(text, encoding="utf-8")
    done = gridgate(["registry", "import", str(fleet)], tmp_path)
    registry = tmp_path / "registry.sqlite3"
    sinks = {
        "registry import stdout": done.stdout,
        "registry import stderr": done.stderr,
        "registry rows": rows_text(sqlite_tables(registry)),
        "registry file": file_text(registry),
    }
    audit = tmp_path / "audit.sqlite3"
    if audit.exists():
        sinks["audit rows"] = rows_text(sqlite_tables(audit))
        sinks["audit file"] = file_text(audit)
    assert_no_leaks(sinks, TARGETS)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert problem in done.stderr and "problem(s); nothing imported" in done.stderr
    assert_nothing_imported(registry)


def test_registry_import_of_a_devices_csv_refuses_a_phone_shaped_id(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(BASE_FLEET, encoding="utf-8")
    registry_path = tmp_path / "registry.sqlite3"
    with Registry.open(f"sqlite:///{registry_path}") as registry:
        import_file(registry, fleet, keyring=KeyRing.generate_file(tmp_path / "pseudonym.key"))
    before = sqlite_tables(registry_path)
    csv = tmp_path / "devices.csv"
    csv.write_text(
        "device_id,family,adapter,vendor,community,grid,building,unit,room,household,power,installed\n"
        f"em-ok-1,meter,gridgate_json,acme,{COMMUNITY},g01,b01,u1,0101,,mains,\n"
        f"{PHONES[2]},meter,gridgate_json,acme,{COMMUNITY},g01,b01,u1,0101,,mains,\n"
        f"em-{PHONE_LEADING_DIGIT}x{ID_A},meter,gridgate_json,acme,{COMMUNITY},g01,b01,u1,0101,,mains,\n",
        encoding="utf-8",
    )
    done = gridgate(["registry", "import", str(csv)], tmp_path)
    assert_no_leaks(
        {
            "registry import stdout": done.stdout,
            "registry import stderr": done.stderr,
            "registry rows": rows_text(sqlite_tables(registry_path)),
        },
        TARGETS,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.count("bad device_id") == 2, done.stderr
    assert sqlite_tables(registry_path)["devices"] == before["devices"]  # nothing imported


# -- decode ----------------------------------------------------------------------------------


def _gj(device: str, family: str, channel: str, kind: str, data: Mapping[str, object],
        loc: Mapping[str, object] | None = None) -> tuple[str, str, str]:  # fmt: skip
    body: dict[str, object] = {"v": 1, "device_id": device, "ts": int(time.time() * 1000) - 5000,
                               "kind": kind, "data": data}  # fmt: skip
    if loc is not None:
        body["loc"] = loc
    topic = f"gridgate/v1/{COMMUNITY}/{family}/{device}/{channel}"
    return "gridgate_json", topic, orjson.dumps(body).decode()


def _acs(device: str, door: str) -> tuple[str, str, str]:
    body = {
        "deviceSn": device,
        "eventTime": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() + 8 * 3600 - 5)),
        "eventType": 1, "openMode": "FACE", "doorName": door, "personName": NAMES[3],
        "certNo": ID_A, "phone": PHONES[3], "plateNo": PLATES[0], "faceImage": FACE_BLOB,
        PHONES[0]: NAMES[1],
    }  # fmt: skip
    return "vendor_access", f"vendor/acs/{COMMUNITY}/{device}/event", orjson.dumps(body).decode()


HOSTILE_LOC = {"grid": "g01", "building": NAMES[0], "unit": PHONES[0], "room": ID_A}
PERSONAL_KEYS = {"owner_name": NAMES[1], ID_C: "x", PHONES[3]: 1, "紧急联系人": PHONE_HYPHENATED}

# (adapter, topic, payload), and whether it decodes (exit 0) or is rejected (exit 1).
DECODE_CASES: dict[str, tuple[tuple[str, str, str], int]] = {
    "phone-shaped device id, identifiers in loc, personal keys": (_gj(
        PHONES[1], "meter", "telemetry", "telemetry",
        {"meter_type": "electricity", "energy_kwh": 1.0, **PERSONAL_KEYS}, HOSTILE_LOC), 0),
    "a meter's fault text": (_gj(
        "em-0101", "meter", "event", "fault", {"fault": f"{NAMES[2]} {PHONES[2]} {ID_B_HYPHENATED}"},
        HOSTILE_LOC), 0),
    "firmware text": (_gj(
        f"id-{PHONES[0]}", "safety", "status", "heartbeat", {"firmware": f"v1.2-{PHONES[1]}"}), 0),
    "door text and personal fields": (_gj(
        "gate-1", "access", "event", "entry_granted",
        {"door": f"{NAMES[3]}家{PLATES[1]}", "method": "face", "person_name": NAMES[3],
         "id_number": ID_A_LOWER, "phone": PHONES[2], "plate": PLATES[2], "face_image": FACE_BLOB},
        {"building": f"{ID_B_HYPHENATED}"}), 0),
    "the foreign vendor's doorName": (_acs("acs-1", f"北门{NAMES[1]}{PHONES[0]}"), 0),
    "the foreign vendor with a phone-shaped deviceSn": (_acs(PHONES[2], "北门"), 0),
    "a loc key that is an ID number": (_gj(
        "em-0101", "meter", "telemetry", "telemetry", {"energy_kwh": 1.0},
        {"grid": "g01", ID_A: NAMES[0]}), 1),
    "a loc key that is a phone": (_gj(
        "em-0101", "meter", "telemetry", "telemetry", {"energy_kwh": 1.0},
        {f"{PHONE_LEADING_DIGIT}": "x"}), 1),
    "a place name holding a newline and a phone": (_gj(
        "em-0101", "meter", "telemetry", "telemetry", {"energy_kwh": 1.0},
        {"building": f"{NAMES[0]}\n{PHONES[1]}"}), 1),
    "an identifier as the whole payload": (
        ("gridgate_json", f"gridgate/v1/{COMMUNITY}/meter/{ID_B_HYPHENATED}/telemetry", ID_A), 1),
}  # fmt: skip


@pytest.mark.parametrize("case", list(DECODE_CASES.values()), ids=list(DECODE_CASES))
def test_decode_prints_no_identifiers(case: tuple[tuple[str, str, str], int], tmp_path: Path) -> None:  # fmt: skip
    (adapter, topic, payload), status = case
    done = gridgate(
        ["decode", "--adapter", adapter, "--topic", topic, "--payload", payload], tmp_path
    )
    assert_no_leaks({"decode stdout": done.stdout, "decode stderr": done.stderr}, TARGETS)
    assert done.returncode == status, (done.stdout, done.stderr)
    if status == 0:
        assert '"values"' in done.stdout  # it did print the decoded readings
    else:
        assert done.stderr.startswith("rejected: ") or "\nrejected: " in done.stderr
