"""Fleet files for the registry's unit tests, and registries built from them."""

from __future__ import annotations

from pathlib import Path

from gateway.registry import Registry, import_file

# A small community: two grids; b03 has two units; a community gate, a building gate, a grid
# gate; members of every role. Line numbers matter to the tests (test_registry_import,
# test_registry_residents): append, don't insert.
SMALL_YAML = """\
version: 1
community: {code: xf, name: 幸福小区, street: 城东街道}
grids:
  - code: g01
    name: 第一网格
    buildings:
      - code: b01
        name: 1号楼
        units:
          - {code: u1, name: 1单元, rooms: ["0101", "0102"]}
      - code: b03
        name: 3号楼
        units:
          - {code: u1, name: 1单元, rooms: ["0101"]}
          - code: u2
            name: 2单元
            rooms: [0101, "1201"]
  - code: g02
    name: 第二网格
    buildings:
      - code: b05
        name: 5号楼
        units:
          - {code: u1, name: 1单元, rooms: ["0101"]}
households:
  - {id: h-b03-u2-1201, building: b03, unit: u2, room: "1201", elder_alone: true, face_consent: false}
  - {id: h-b03-u2-0101, building: b03, unit: u2, room: "0101", face_consent: true, face_consent_at: 2024-03-01}
  - {id: h-b01-u1-0101, grid: g01, building: b01, unit: u1, room: "0101"}
  - {id: h-b05-u1-0101, building: b05, unit: u1, room: "0101", elder_alone: true}
devices:
  - {id: em-123456789012, family: meter, adapter: dlt645, vendor: acme, grid: g01, building: b03, unit: u2, room: "1201", household: h-b03-u2-1201, power: mains, installed: 2024-03-01}
  - {id: sd-1201, family: safety, adapter: gridgate_json, vendor: acme, building: b03, unit: u2, room: "1201", power: battery}
  - {id: el-1201, family: elder, adapter: gridgate_json, vendor: care, building: b03, unit: u2, room: "1201", household: h-b03-u2-1201, power: battery}
  - {id: gate-main, family: access, adapter: gridgate_json, vendor: acme, community: xf, power: mains, gate_approved: true}
  - {id: gate-b03, family: access, adapter: gridgate_json, vendor: acme, building: b03, power: mains}
  - {id: gate-g02, family: access, adapter: gridgate_json, vendor: acme, grid: g02, power: mains}
  - {id: wm-b05, family: meter, adapter: cjt188, vendor: aqua, building: b05, unit: u1, room: "0101", household: h-b05-u1-0101, power: battery, installed: 2023/11/5}
members:
  - {id: m-uh-b03u2, name: 李建国, role: unit_head, scope: [{building: b03, unit: u2}], channels: [{kind: mqtt, target: gridgate/alerts/member/m-uh-b03u2}]}
  - {id: m-uh-b03u1, name: 王芳, role: unit_head, scope: [{building: b03, unit: u1}], channels: ["mqtt:gridgate/alerts/member/m-uh-b03u1"]}
  - {id: m-uh-b01u1, name: 赵敏, role: unit_head, scope: [{building: b01, unit: u1}], channels: ["webhook:https://app.example/push/user-771"]}
  - {id: m-bh-b03, name: 张伟, role: building_head, scope: [{building: b03}], channels: ["mqtt:gridgate/alerts/member/m-bh-b03"]}
  - {id: m-bh-b01, name: 刘洋, role: building_head, scope: [{building: b01}], channels: ["mqtt:gridgate/alerts/member/m-bh-b01"]}
  - id: m-gw-g01
    name: 陈静
    role: grid_worker
    scope: [{grid: g01}]
    channels:
      - {kind: mqtt, target: gridgate/alerts/member/m-gw-g01}
      - {kind: webhook, target: "http://127.0.0.1:9000/hook?token=s3cret"}
  - {id: m-gw-g02, name: 杨帆, role: grid_worker, scope: [{grid: g02}], channels: ["mqtt:gridgate/alerts/member/m-gw-g02"]}
  - {id: m-gc, name: 黄磊, role: grid_chief, scope: [{grid: g01}, {grid: g02}], channels: ["mqtt:gridgate/alerts/member/m-gc"]}
  - {id: m-desk, name: 值班台, role: duty_desk, scope: [{community: xf}], channels: ["mqtt:gridgate/alerts/desk/xf"]}
  - {id: m-street, name: 城东街道, role: street_office, scope: [{community: xf}], channels: ["webhook:https://street.example/alerts"]}
  - {id: m-prop, name: 物业值班, role: property_duty, scope: [{community: xf}], channels: ["mqtt:gridgate/alerts/property/xf"]}
  - {id: m-old, name: 周强, role: unit_head, active: false, scope: [{building: b03, unit: u2}]}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def open_registry(tmp_path: Path) -> Registry:
    return Registry.open(f"sqlite:///{tmp_path / 'registry.sqlite3'}")


def small_registry(tmp_path: Path) -> Registry:
    """A registry holding SMALL_YAML."""
    registry = open_registry(tmp_path)
    import_file(registry, write(tmp_path, "small.yaml", SMALL_YAML), now_ns=1_000)
    return registry


# A problem on nearly every row; test_registry_import lists them with their lines.
BAD_YAML = (
    SMALL_YAML.split("households:")[0]
    + """\
households:
  - {id: h-ok, building: b03, unit: u1, room: "0101"}
  - {id: h-bad, building: b03, unit: u9, room: "0101"}
  - {id: "h bad", building: b03, unit: u1, room: "0101"}
devices:
  - {id: d-1, family: metre, adapter: dlt645, vendor: acme, building: b03, unit: u1, room: "0101", power: mains}
  - {id: d/2, family: meter, adapter: dlt645, vendor: acme, building: b03, unit: u1, room: "0101", power: mains}
  - {id: d-3, family: meter, adapter: dlt645, vendor: acme, building: b09, power: mains}
  - {id: d-3, family: meter, adapter: dlt645, vendor: acme, building: b03, power: mains}
  - {id: d-4, family: elder, adapter: gridgate_json, vendor: acme, building: b03, unit: u1, room: "0101", household: h-nowhere, power: battery}
  - {id: d-5, family: meter, adapter: gridgate_jsn, vendor: acme, building: b04, power: mains, installed: 2024-02-30}
  - {id: d-6, family: elder, adapter: gridgate_json, vendor: acme, building: b03, power: battery}
  - {id: d-7, family: meter, adapter: cjt188, vendor: acme, building: b01, unit: u1, room: "0102", household: h-ok, power: mains}
  - {id: d-8, family: meter, adapter: x, vendor: acme, building: b03, power: solar, colour: red}
members:
  - {id: m-1, name: 甲, role: janitor, scope: [{building: b03}], channels: ["mqtt:a/+"]}
  - {id: m-2, name: 乙, role: unit_head, scope: [{building: b03}], channels: ["mqtt:a/b"]}
  - {id: m-3, name: 丙, role: grid_worker, scope: [{grid: g01}], channels: ["fax:123", "webhook:ftp://x", "sms:13912345678"]}
  - id: m-4
    name: 丁
    name: 戊
    role: duty_desk
    scope: [{community: xf}]
    channels: ["sms:not-a-phone-13912345678"]
"""
)

# SMALL_YAML's households with residents. Valid check digits (GB 11643); invented people.
NUMBERS = {
    "r-1201-1": "420106194807140494",  # the elder living alone in 1201
    "r-0101-1": "110108200809053747",
    "r-0101-2": "110105198007100899",
    "r-b05-1": "440305197207070930",
}
OTHER = "610113197301315798"  # not in the file

RESIDENTS = f"""\
residents:
  - {{id: r-1201-1, household: h-b03-u2-1201, id_number: "{NUMBERS["r-1201-1"]}", face_consent: true}}
  - {{id: r-0101-1, household: h-b03-u2-0101, id_number: "{NUMBERS["r-0101-1"]}", face_consent: true, face_consent_at: 2024-03-01}}
  - {{id: r-0101-2, household: h-b03-u2-0101, id_number: "{NUMBERS["r-0101-2"]}", face_consent: false}}
  - {{id: r-b05-1, household: h-b05-u1-0101, id_number: "{NUMBERS["r-b05-1"]}"}}
"""
FLEET = SMALL_YAML + RESIDENTS
