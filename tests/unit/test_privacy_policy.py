from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from adapters import vendor_access, vendor_gas, vendor_meter, vendor_wearable
from devices.errors import ConfigError
from devices.models import DataClass, field_classes
from privacy import fieldmap
from privacy.policy import (
    ALLOWED_OPERATORS,
    FAMILY_KEYS,
    MEASUREMENTS,
    MODELS,
    default_policy_text,
    free_text_fields,
    load_policy,
    parse_policy,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "privacy.md"
DEFAULT: dict[str, Any] = yaml.safe_load(default_policy_text())


# -- the shipped policy --------------------------------------------------------------------


def test_shipped_policy_classifies_every_model_field_as_the_model_does() -> None:
    policy = load_policy()
    assert policy.missing_fields() == {}
    for key, model in MODELS.items():
        fields = policy.families[key].fields
        assert set(fields) == set(model.model_fields), key
        for name, cls in field_classes(model).items():
            assert fields[name].data_class is cls, f"{key}.{name}"


def test_shipped_policy_defaults() -> None:
    policy = load_policy()
    access = policy.families["access"]
    assert access.location == "coarse" and access.time == "exact"
    assert access.outputs() == {
        "method": "method",
        "direction": "direction",
        "granted": "granted",
        "door": "door",
        "held_open_s": "held_open_s",
        "similarity": "similarity",
        "resident_ref": "id_number",
        "age_band": "id_number",
        "card_ref": "card_no",
        "plate_masked": "plate",
        "event_major": "event_major",
        "event_minor": "event_minor",
        "vehicle_ref": "plate",
    }
    assert [a.op for a in access.fields["employee_no"].actions] == ["resolve"]
    assert access.fields["employee_no"].actions[0].output == "resident_ref"
    for name in ("person_name", "phone", "face_image", "face_feature", "resident_ref"):
        assert [a.op for a in access.fields[name].actions] == ["drop"]
    elder = policy.families["elder"].fields
    assert [a.op for a in elder["latitude"].actions] == ["drop"]
    assert [a.op for a in elder["inside_geofence"].actions] == ["keep"]
    assert all(elder[f].kept_only for f in ("heart_rate_bpm", "spo2_pct", "body_temp_c"))
    for key in ("safety", "meter", "status"):  # measurements kept; free text under a rule
        for name, spec in policy.families[key].fields.items():
            assert [a.op for a in spec.actions] == ["keep"], (key, name)
            assert spec.kept_only == (name not in ("fault", "firmware")), (key, name)
    texts = {
        (key, name): spec.text
        for key, family in policy.families.items()
        for name, spec in family.fields.items()
        if spec.text is not None
    }
    assert set(texts) == {("access", "door"), ("meter", "fault"), ("status", "firmware")}
    assert {k: t.otherwise for k, t in texts.items()} == {
        ("access", "door"): "drop",
        ("meter", "fault"): "scrub",
        ("status", "firmware"): "drop",
    }
    assert {m: r.text for m, r in policy.retention.items()} == {
        "access": "30d",
        "elder": "90d",
        "safety": "1y",
        "meter": "3y",
        "device_status": "90d",
        "liveness": "1y",
    }
    assert policy.retention["meter"].influx == "1095d"
    assert policy.retention["access"].seconds == 30 * 86_400
    assert policy.coarse_time_s == 900 and policy.age_on is None


def test_no_shipped_action_breaks_the_class_rules() -> None:
    for family in load_policy().families.values():
        for spec in family.fields.values():
            for action in spec.actions:
                assert action.op in ALLOWED_OPERATORS[spec.data_class]
            if spec.data_class in (DataClass.DIRECT_IDENTIFIER, DataClass.BIOMETRIC):
                assert "keep" not in [a.op for a in spec.actions]


def test_load_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(default_policy_text(), encoding="utf-8")
    assert load_policy(path).source == str(path)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_policy(tmp_path / "missing.yaml")


def test_custom_policy_may_leave_fields_out_which_are_then_listed() -> None:
    doc = copy.deepcopy(DEFAULT)
    del doc["families"]["meter"]["fields"]["fault"]
    policy = parse_policy(yaml.safe_dump(doc, allow_unicode=True))
    assert policy.missing_fields() == {"meter": ["fault"]}


def test_fixed_age_date_and_generalisers() -> None:
    doc = copy.deepcopy(DEFAULT)
    doc["age_on"] = "2024-01-01"
    access = doc["families"]["access"]["fields"]
    access["id_number"]["actions"].append({"generalise": {"to": "gender", "as": "gender"}})
    access["phone"]["actions"] = [{"mask": {"as": "phone_masked"}}]
    elder = doc["families"]["elder"]["fields"]
    elder["latitude"]["actions"] = [{"generalise": {"to": "coarse_position", "as": "lat_1km"}}]
    policy = parse_policy(yaml.safe_dump(doc, allow_unicode=True))
    assert str(policy.age_on) == "2024-01-01"
    assert {"gender", "phone_masked"} <= set(policy.families["access"].outputs())


# -- strictness: every bad file is refused, naming where -----------------------------------

Edit = Callable[[dict[str, Any]], None]


def _fields(doc: dict[str, Any], family: str = "access") -> dict[str, Any]:
    fields: dict[str, Any] = doc["families"][family]["fields"]
    return fields


def _set(path: str, value: Any) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        *head, last = path.split(".")
        node = doc
        for part in head:
            node = node[part]
        node[last] = value

    return edit


def _delete(path: str) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        *head, last = path.split(".")
        node = doc
        for part in head:
            node = node[part]
        del node[last]

    return edit


F = "families.access.fields"
BAD: dict[str, tuple[Edit, str]] = {
    "unknown top key": (_set("extra", 1), "extra"),
    "wrong version": (_set("version", 2), "version"),
    "missing version": (_delete("version"), "version"),
    "coarse_time_s as text": (_set("coarse_time_s", "900"), "coarse_time_s"),
    "coarse_time_s zero": (_set("coarse_time_s", 0), "coarse_time_s"),
    "bad age_on": (_set("age_on", "birthday"), "age_on"),
    "unknown family": (_set("families.lift", {"fields": {}}), "families.lift"),
    "missing family": (_delete("families.status"), "families.status"),
    "unknown family key": (_set("families.meter.colour", "red"), "families.meter.colour"),
    "bad location": (_set("families.access.location", "fuzzy"), "families.access.location"),
    "bad time": (_set("families.access.time", "late"), "families.access.time"),
    "field not canonical": (
        _set(f"{F}.idCardNo", {"class": "direct_identifier", "actions": ["drop"]}),
        f"{F}.idCardNo",
    ),
    "field of another family": (
        _set(f"{F}.heart_rate_bpm", {"class": "health", "actions": ["keep"]}),
        f"{F}.heart_rate_bpm",
    ),
    "class disagrees with the model": (
        _set(f"{F}.phone.class", "non_personal"),
        f"{F}.phone.class",
    ),
    "unknown class": (_set(f"{F}.door.class", "public"), f"{F}.door.class"),
    "unknown field key": (_set(f"{F}.door.note", "x"), f"{F}.door.note"),
    "missing class": (_delete(f"{F}.door.class"), f"{F}.door.class"),
    "missing actions": (_delete(f"{F}.door.actions"), f"{F}.door.actions"),
    "empty actions": (_set(f"{F}.door.actions", []), f"{F}.door.actions"),
    "unknown operator": (_set(f"{F}.door.actions", ["hash"]), f"{F}.door.actions.0"),
    "unknown operator mapping": (
        _set(f"{F}.phone.actions", [{"encrypt": {"as": "x"}}]),
        f"{F}.phone.actions.0",
    ),
    "two operators in one mapping": (
        _set(f"{F}.phone.actions", [{"mask": {"as": "a"}, "drop": None}]),
        f"{F}.phone.actions.0",
    ),
    "operator without options": (
        _set(f"{F}.phone.actions", ["pseudonymise"]),
        f"{F}.phone.actions.0",
    ),
    "keep a direct identifier": (_set(f"{F}.id_number.actions", ["keep"]), "not allowed"),
    "keep a face": (_set(f"{F}.face_feature.actions", ["keep"]), f"{F}.face_feature.actions.0"),
    "pseudonymise a face": (
        _set(f"{F}.face_image.actions", [{"pseudonymise": {"as": "face_ref"}}]),
        "not allowed for biometric",
    ),
    "keep raw coordinates is fine but mask is not": (
        lambda d: _fields(d, "elder")["latitude"].update(actions=[{"mask": {"as": "lat"}}]),
        "families.elder.fields.latitude.actions.0",
    ),
    "pseudonymise health": (
        lambda d: _fields(d, "elder")["spo2_pct"].update(
            actions=[{"pseudonymise": {"as": "spo2_ref"}}]
        ),
        "not allowed for health",
    ),
    "no mask for this field": (
        _set(f"{F}.resident_ref.actions", [{"mask": {"as": "ref_masked"}}]),
        "not allowed for quasi_identifier",
    ),
    "age band from a phone": (
        _set(f"{F}.phone.actions", [{"generalise": {"to": "age_band", "as": "age"}}]),
        "age_band cannot be derived from phone",
    ),
    "unknown generaliser": (
        _set(f"{F}.phone.actions", [{"generalise": {"to": "zodiac", "as": "z"}}]),
        f"{F}.phone.actions.0.to",
    ),
    "coarse_time on a field": (
        _set(f"{F}.id_number.actions", [{"generalise": {"to": "coarse_time", "as": "t"}}]),
        "time: coarse",
    ),
    "generalise without to": (
        _set(f"{F}.id_number.actions", [{"generalise": {"as": "age"}}]),
        "generalise needs 'to",
    ),
    "mask with to": (
        _set(f"{F}.plate.actions", [{"mask": {"as": "p", "to": "age_band"}}]),
        "'to' is an option of generalise",
    ),
    "pseudonymise without as": (
        _set(f"{F}.card_no.actions", [{"pseudonymise": {}}]),
        "needs 'as",
    ),
    "pseudonymise with null options": (
        _set(f"{F}.card_no.actions", [{"pseudonymise": None}]),
        "needs 'as",
    ),
    "unknown option": (
        _set(f"{F}.card_no.actions", [{"pseudonymise": {"as": "c", "salt": "x"}}]),
        f"{F}.card_no.actions.0.salt",
    ),
    "options not a mapping": (
        _set(f"{F}.card_no.actions", [{"pseudonymise": "card_ref"}]),
        "must be a mapping",
    ),
    "keep with options": (
        _set(f"{F}.door.actions", [{"keep": {"as": "gate"}}]),
        "keep takes no options",
    ),
    "drop with another action": (
        _set(f"{F}.card_no.actions", ["drop", {"pseudonymise": {"as": "card_ref"}}]),
        "drop cannot be combined",
    ),
    "keep twice": (_set(f"{F}.door.actions", ["keep", "keep"]), "keep appears twice"),
    "output written twice": (
        _set(f"{F}.card_no.actions", [{"pseudonymise": {"as": "resident_ref"}}]),
        "also written by",
    ),
    "output shadows a kept field": (
        _set(f"{F}.card_no.actions", [{"pseudonymise": {"as": "door"}}]),
        "also written by",
    ),
    "output named like a raw identifier": (
        _set(f"{F}.phone.actions", [{"mask": {"as": "phone"}}]),
        "look like the raw phone",
    ),
    "reserved output": (
        _set(f"{F}.card_no.actions", [{"pseudonymise": {"as": "room"}}]),
        "storage uses itself",
    ),
    "malformed output": (
        _set(f"{F}.card_no.actions", [{"pseudonymise": {"as": "Card Ref"}}]),
        "must match",
    ),
    "output not a string": (
        _set(f"{F}.card_no.actions", [{"pseudonymise": {"as": 7}}]),
        f"{F}.card_no.actions.0.as",
    ),
    # free text: a kept string field needs a rule, and the rule is checked like the rest
    "free text kept without a rule": (_delete(f"{F}.door.text"), "door is free text"),
    "status free text kept without a rule": (
        _delete("families.status.fields.firmware.text"),
        "firmware is free text",
    ),
    "text rule without allow": (_delete(f"{F}.door.text.allow"), f"{F}.door.text.allow"),
    "unknown allow": (_set(f"{F}.door.text.allow", "regex"), f"{F}.door.text.allow"),
    "unknown text key": (_set(f"{F}.door.text.flags", "i"), f"{F}.door.text.flags"),
    "unknown otherwise": (_set(f"{F}.door.text.otherwise", "keep"), f"{F}.door.text.otherwise"),
    "pattern rule without a pattern": (_delete(f"{F}.door.text.pattern"), "needs 'pattern"),
    "pattern that does not compile": (
        _set(f"{F}.door.text.pattern", "door(["),
        "not a regular expression",
    ),
    "pattern not a string": (_set(f"{F}.door.text.pattern", 7), f"{F}.door.text.pattern"),
    "empty pattern": (_set(f"{F}.door.text.pattern", ""), f"{F}.door.text.pattern"),
    "pattern rule with values": (
        _set(f"{F}.door.text.values", ["north_gate"]),
        "'values' is an option of allow: enum",
    ),
    "enum rule without values": (
        _set(f"{F}.door.text", {"allow": "enum", "otherwise": "drop"}),
        "needs 'values",
    ),
    "enum rule with a pattern": (
        _set(f"{F}.door.text", {"allow": "enum", "values": ["a"], "pattern": "a"}),
        "'pattern' is an option of allow: pattern",
    ),
    "empty enum": (
        _set(f"{F}.door.text", {"allow": "enum", "values": []}),
        f"{F}.door.text.values",
    ),
    "enum value not a string": (
        _set(f"{F}.door.text", {"allow": "enum", "values": ["north_gate", 3]}),
        f"{F}.door.text.values.1",
    ),
    "enum value that is a phone": (
        _set(f"{F}.door.text", {"allow": "enum", "values": ["north_gate", "tel:13812345678"]}),
        f"{F}.door.text.values.1: looks like a personal identifier",
    ),
    "enum value that is a plate": (
        _set(f"{F}.door.text", {"allow": "enum", "values": ["京A12345"]}),
        f"{F}.door.text.values.0: looks like a personal identifier",
    ),
    "enum value listed twice": (
        _set(f"{F}.door.text", {"allow": "enum", "values": ["a", "a"]}),
        "listed twice",
    ),
    "text rule on a dropped field": (
        _set(f"{F}.door.actions", ["drop"]),
        f"{F}.door.text: a text rule says which values are kept",
    ),
    "text rule on a number": (
        _set(f"{F}.held_open_s.text", {"allow": "pattern", "pattern": "[0-9]+"}),
        f"{F}.held_open_s.text: held_open_s is not a text field",
    ),
    "missing retention": (_delete("retention.elder"), "retention.elder"),
    "unknown retention": (_set("retention.photos", "1d"), "retention.photos"),
    "malformed retention": (_set("retention.meter", "3 years"), "retention.meter"),
    "retention forever": (_set("retention.meter", "inf"), "retention.meter"),
    "retention too short": (_set("retention.liveness", "0d"), "at least 1h"),
    "health kept longer than meters": (_set("retention.elder", "5y"), "retention.elder"),
    "access kept as long as meters": (_set("retention.access", "3y"), "retention.access"),
}


def test_text_rules_compile_and_may_sit_on_closed_fields() -> None:
    doc = copy.deepcopy(DEFAULT)
    _fields(doc)["door"]["text"] = {
        "allow": "enum",
        "values": ["north_gate", "东门"],
        "otherwise": "scrub",
    }
    _fields(doc)["method"]["text"] = {"allow": "enum", "values": ["card", "face"]}
    policy = parse_policy(yaml.safe_dump(doc, allow_unicode=True))
    door = policy.families["access"].fields["door"].text
    assert door is not None and door.values == frozenset({"north_gate", "东门"})
    assert door.otherwise == "scrub" and door.pattern is None
    method = policy.families["access"].fields["method"].text
    assert method is not None and method.otherwise == "drop"  # the default
    assert not policy.families["access"].fields["method"].kept_only


def test_free_text_fields_are_the_plain_string_fields() -> None:
    assert {key: sorted(free_text_fields(model)) for key, model in MODELS.items()} == {
        "access": [
            "card_no",
            "door",
            "employee_no",
            "face_feature",
            "face_image",
            "id_number",
            "person_name",
            "phone",
            "plate",
            "resident_ref",
        ],
        "safety": [],
        "meter": ["fault"],
        "elder": [],
        "status": ["firmware"],
    }
    # Every one of them is either never kept (identifiers, faces) or kept under a text rule.
    policy = load_policy()
    for key, model in MODELS.items():
        for name in free_text_fields(model):
            spec = policy.families[key].fields[name]
            kept = "keep" in [a.op for a in spec.actions]
            assert not kept or spec.text is not None, (key, name)


@pytest.mark.parametrize("edit, where", BAD.values(), ids=BAD.keys())
def test_bad_policies_are_refused_naming_the_path(edit: Edit, where: str) -> None:
    doc = copy.deepcopy(DEFAULT)
    edit(doc)
    with pytest.raises(ConfigError) as info:
        parse_policy(yaml.safe_dump(doc, allow_unicode=True), source="bad.yaml")
    assert "bad.yaml" in str(info.value)
    assert where in str(info.value)


def test_every_problem_is_reported_at_once() -> None:
    doc = copy.deepcopy(DEFAULT)
    _fields(doc)["phone"]["actions"] = ["keep"]
    _fields(doc)["face_image"]["actions"] = ["keep"]
    doc["retention"]["elder"] = "5y"
    with pytest.raises(ConfigError) as info:
        parse_policy(yaml.safe_dump(doc, allow_unicode=True))
    message = str(info.value)
    assert f"{F}.phone" in message and f"{F}.face_image" in message and "retention.elder" in message


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "must be a mapping"),
        ("- 1\n- 2\n", "must be a mapping"),
        ("version: [1\n", "not valid YAML"),
        ("version: 1\nversion: 1\n", "duplicate key 'version'"),
        (
            default_policy_text().replace(
                "      granted:      {class: non_personal, actions: [keep]}\n",
                "      granted:      {class: non_personal, actions: [keep]}\n"
                "      granted:      {class: non_personal, actions: [drop]}\n",
            ),
            "duplicate key 'granted'",
        ),
    ],
)
def test_files_that_are_not_policies(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_policy(text)


# -- docs/privacy.md and the vendor mapping ------------------------------------------------


def test_privacy_doc_tables_are_generated_from_the_current_policy() -> None:
    text = DOC.read_text(encoding="utf-8")
    begin, end = text.index(fieldmap.BEGIN), text.index(fieldmap.END) + len(fieldmap.END)
    assert text[begin:end] == fieldmap.render_tables(load_policy()), (
        "docs/privacy.md is stale: run `python -m privacy.fieldmap docs/privacy.md`"
    )


def test_privacy_doc_names_every_canonical_field_of_every_family() -> None:
    text = DOC.read_text(encoding="utf-8")
    for key in FAMILY_KEYS:
        section = text.split(f"#### {key} (", 1)[1].split("####", 1)[0]
        for name in MODELS[key].model_fields:
            assert f"| `{name}` |" in section, f"{key}.{name} missing from docs/privacy.md"
    for adapter in fieldmap.ADAPTERS:
        assert f"#### {adapter}\n" in text
    for measurement in MEASUREMENTS:
        assert f"| `{measurement}` |" in text


def test_rewrite_refuses_a_doc_without_markers(tmp_path: Path) -> None:
    doc = tmp_path / "d.md"
    doc.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no"):
        fieldmap.rewrite(doc, load_policy())
    doc.write_text(f"head\n{fieldmap.BEGIN}\nold\n{fieldmap.END}\ntail\n", encoding="utf-8")
    assert fieldmap.rewrite(doc, load_policy())
    assert not fieldmap.rewrite(doc, load_policy())
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("head\n") and "| `id_number` |" in text


def test_vendor_mapping_targets_canonical_fields() -> None:
    for vf in fieldmap.VENDOR_FIELDS:
        assert vf.adapter in fieldmap.ADAPTERS
        fields = MODELS[vf.family].model_fields
        for target in vf.canonical:
            assert target in fieldmap.STRUCTURAL or target in fields, (
                vf.adapter,
                vf.vendor,
                target,
            )


def _model_paths(
    model: Any, prefix: str = "", nested: dict[str, tuple[Any, str]] | None = None
) -> set[str]:
    nested = nested or {}
    out: set[str] = set()
    for name in model.model_fields:
        if name in nested:
            inner, sep = nested[name]
            out |= {f"{prefix}{name}{sep}{p}" for p in _model_paths(inner)}
        else:
            out.add(f"{prefix}{name}")
    return out


@pytest.mark.parametrize(
    "adapter, paths",
    [
        (vendor_access.name, _model_paths(vendor_access.AcsEvent)),
        (vendor_gas.name, _model_paths(vendor_gas.GasReport)),
        (
            vendor_meter.name,
            _model_paths(
                vendor_meter.MeterReport, nested={"data": (vendor_meter.MeterValues, ".")}
            ),
        ),
        (
            vendor_wearable.name,
            _model_paths(
                vendor_wearable.BandUpload,
                nested={
                    "samples": (vendor_wearable.Sample, "[]."),
                    "alarm": (vendor_wearable.Alarm, "."),
                    "gps": (vendor_wearable.Gps, "."),
                },
            ),
        ),
    ],
)
def test_vendor_mapping_lists_exactly_the_fields_of_each_vendor_model(
    adapter: str, paths: set[str]
) -> None:
    mapped = {vf.vendor for vf in fieldmap.VENDOR_FIELDS if vf.adapter == adapter}
    assert mapped == paths


def test_vendor_access_personal_fields_land_where_the_mapping_says() -> None:
    body = {
        "deviceSn": "ACS1",
        "eventTime": "2024-05-20 08:30:15",
        "eventType": 1,
        "openMode": "FACE",
        "direction": "IN",
        "similarity": 92.5,
        "openDuration": 3,
        "doorName": "3号楼1单元门",
        "personName": "张三",
        "certNo": "11010519491231002X",
        "phone": "13800138000",
        "cardNo": "9F3A21C0",
        "plateNo": "京A12345",
        "faceImage": "aW1n",
        "faceFeature": "ZmVh",
    }
    (reading,) = vendor_access.decode("vendor/acs/c1/ACS1/event", orjson.dumps(body))
    for vf in fieldmap.VENDOR_FIELDS:
        if vf.adapter != vendor_access.name or vf.canonical[0] in fieldmap.STRUCTURAL:
            continue
        if vf.vendor not in body:
            continue
        (target,) = vf.canonical
        assert target in reading.values, vf.vendor
        if isinstance(body[vf.vendor], str) and vf.vendor not in ("openMode", "direction"):
            assert reading.values[target] == body[vf.vendor]


def test_mapping_module_cli(tmp_path: Path) -> None:
    doc = tmp_path / "d.md"
    doc.write_text(f"{fieldmap.BEGIN}\n{fieldmap.END}\n", encoding="utf-8")
    assert fieldmap.main([str(doc)]) == 0
    assert re.search(r"\| `certNo` \| `id_number` \| direct_identifier \|", doc.read_text("utf-8"))
    assert fieldmap.main([]) == 2
