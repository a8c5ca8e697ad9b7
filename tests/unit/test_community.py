"""The simulated community: its size and shape at the seeds' scale, ids valid for each vendor
format, a roster for every role, and a fleet file the registry can import."""

from __future__ import annotations

import re
import secrets
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
import yaml

from devices.families import TELEMETRY_KIND, AccessEvent, Channel, Family
from devices.location import Location
from devices.reading import Reading
from devices.topics import is_valid_id
from simulators import formats
from simulators.community import (
    ADAPTER_MIX,
    NBIOT_PLATFORM,
    ROLES,
    Community,
    CommunityDevice,
    Equipment,
    build_community,
    chinese_number,
)
from simulators.people import PHONE_PATTERN, PLATE_PATTERN, is_valid_id_number

NOW_S = 1_750_000_000


@pytest.fixture(scope="module")
def big() -> Community:
    return build_community(3000, seed=7)


def test_same_seed_same_community_other_seed_another() -> None:
    a, b = build_community(300, seed=1), build_community(300, seed=1)
    assert a.fleet_yaml() == b.fleet_yaml()
    assert a.households == b.households  # residents' personal data included
    c = build_community(300, seed=2)
    assert c.fleet_yaml() != a.fleet_yaml()
    assert c.counts()["households"] == a.counts()["households"]


def test_3000_households_make_ten_grids_of_300(big: Community) -> None:
    counts = big.counts()
    assert counts["households"] == 3000
    assert counts["grids"] == 10
    assert all(g.households == 300 for g in big.grids)
    assert counts["buildings"] == 30 and counts["units"] == 120
    assert all(20 <= len(u.rooms) <= 30 for u in big.units)
    assert {g.name for g in big.grids} >= {"第一网格", "第十网格"}
    rooms = [h.room for h in big.households]
    assert all(re.fullmatch(r"\d{4}", r) for r in rooms)


def test_devices_per_household_and_gates(big: Community) -> None:
    per_household = Counter(d.household for d in big.devices if d.household)
    elder = {h.id for h in big.households if h.elder_alone}
    assert len(elder) == 240  # 8 %
    for h in big.households:
        kinds = sorted(d.equipment.value for d in big.household_devices(h.id))
        expected = ["electricity_meter", "gas_detector", "smoke_detector", "water_meter"]
        if h.id in elder:
            expected = sorted([*expected, "wearable"])
        assert kinds == expected
    assert sum(per_household.values()) == 4 * 3000 + 240
    eq = Counter(d.equipment for d in big.devices)
    assert eq[Equipment.UNIT_GATE] == 120
    assert 2 <= eq[Equipment.COMMUNITY_GATE] <= 4 and eq[Equipment.VEHICLE_BARRIER] == 2
    for unit in big.units:
        gate = big.unit_gate(unit.building, unit.code)
        assert gate is not None and gate.door.endswith(f"{unit.name}门")
    for d in big.devices:
        if d.equipment in (Equipment.COMMUNITY_GATE, Equipment.VEHICLE_BARRIER):
            assert d.location == Location(big.code)  # community level: no grid
        elif d.household:
            h = next(x for x in big.households if x.id == d.household)
            assert d.location == h.location(big.code)
    for d in big.devices:
        face = d.equipment in (Equipment.UNIT_GATE, Equipment.COMMUNITY_GATE)
        assert d.gate_approved is (True if face else None)
    wearables = big.devices_of(Equipment.WEARABLE)
    assert {d.household for d in wearables} == elder


def test_power_classes_and_consent(big: Community) -> None:
    for d in big.devices:
        battery = d.equipment in (
            Equipment.WATER_METER,
            Equipment.GAS_DETECTOR,
            Equipment.SMOKE_DETECTOR,
            Equipment.WEARABLE,
        )
        assert d.power == ("battery" if battery else "mains"), d
        assert d.installed is not None and date(2019, 1, 1) <= d.installed <= date(2025, 6, 30)
    consent = sum(h.face_consent for h in big.households) / len(big.households)
    assert 0.66 <= consent <= 0.74
    per_person = [c for h in big.households for c in h.resident_consent]
    assert len(per_person) == sum(len(h.residents) for h in big.households)
    assert 0.67 <= sum(per_person) / len(per_person) <= 0.73


def test_every_role_and_one_unit_head_per_unit(big: Community) -> None:
    roles = Counter(m.role for m in big.members)
    assert set(roles) == set(ROLES)
    unit_heads = Counter(
        (s["building"], s["unit"]) for m in big.members if m.role == "unit_head" for s in m.scope
    )
    assert unit_heads == Counter({(u.building, u.code): 1 for u in big.units})
    heads = Counter(
        s["building"] for m in big.members if m.role == "building_head" for s in m.scope
    )
    assert heads == Counter({b.code: 1 for b in big.buildings})
    chiefs = Counter(s["grid"] for m in big.members if m.role == "grid_chief" for s in m.scope)
    workers = Counter(s["grid"] for m in big.members if m.role == "grid_worker" for s in m.scope)
    assert chiefs == Counter({g.code: 1 for g in big.grids})
    assert set(workers) == {g.code for g in big.grids} and min(workers.values()) >= 1
    for role in ("duty_desk", "street_office", "property_duty"):
        assert all(m.scope == ({"community": big.code},) for m in big.members if m.role == role)
    for m in big.members:
        assert m.channels == ({"kind": "mqtt", "target": f"gridgate/alerts/member/{m.id}"},)
        assert is_valid_id(m.id) and m.name


def test_adapter_mix_follows_the_weights(big: Community) -> None:
    for equipment, mix in ADAPTER_MIX.items():
        devices = big.devices_of(equipment)
        if len(devices) < 1000:
            continue
        seen = Counter(d.adapter for d in devices)
        total = sum(w for _, w in mix)
        for adapter, weight in mix:
            assert abs(seen[adapter] / len(devices) - weight / total) < 0.04, (equipment, seen)
    pushed = {*NBIOT_PLATFORM.values(), "hikvision_isapi"}  # pushed devices only when asked for
    assert {d.adapter for d in big.devices} == set(formats.ADAPTER_NAMES) - pushed


def test_nbiot_devices_are_a_share_known_by_imei_and_leave_the_rest_as_it_was() -> None:
    plain = build_community(300, 9, "nb")
    mixed = build_community(300, 9, "nb", nbiot=0.4)
    assert len(plain.devices) == len(mixed.devices)
    moved = 0
    for before, after in zip(plain.devices, mixed.devices, strict=True):
        if after.adapter in NBIOT_PLATFORM.values():
            moved += 1
            assert NBIOT_PLATFORM[after.equipment] == after.adapter
            assert len(after.device_id) == 15 and after.device_id.startswith("86")  # an IMEI
        else:
            assert (before.device_id, before.adapter) == (after.device_id, after.adapter)
    candidates = sum(1 for d in plain.devices if d.equipment in NBIOT_PLATFORM)
    assert 0.3 < moved / candidates < 0.5


def _sample_reading(d: CommunityDevice) -> Reading:
    """A reading of the device's kind (what its format must be able to carry)."""
    values: dict[str, object]
    channel, kind = Channel.TELEMETRY, TELEMETRY_KIND
    if d.equipment is Equipment.ELECTRICITY_METER:
        values = {"meter_type": "electricity", "energy_kwh": 1234.56, "voltage_v": 220.1}
    elif d.equipment is Equipment.WATER_METER:
        values = {"meter_type": "water", "water_m3": 12.34, "valve": "open"}
    elif d.equipment is Equipment.GAS_DETECTOR:
        values = {"detector": "gas", "gas_lel_pct": 1.0}
    elif d.equipment is Equipment.SMOKE_DETECTOR:
        values = {"detector": "smoke", "smoke_alarm": False}
    elif d.equipment is Equipment.WEARABLE:
        values = {"heart_rate_bpm": 70.0, "spo2_pct": 97.0}
    else:
        channel, kind = Channel.EVENT, AccessEvent.ENTRY_GRANTED.value
        values = {"door": d.door, "method": "card", "granted": True}
    return Reading(d.device_id, d.family, channel, kind, NOW_S * 10**9, d.location, values)


def test_every_device_id_is_valid_for_its_format(big: Community) -> None:
    f = formats.Formats()
    for d in big.devices:
        assert is_valid_id(d.device_id)
        if d.equipment is Equipment.ELECTRICITY_METER:
            assert re.fullmatch(r"\d{12}", d.device_id)  # the DL/T 645 address
        if d.equipment is Equipment.WATER_METER:
            assert re.fullmatch(r"\d{14}", d.device_id)  # the CJ/T 188 address
        if d.adapter in ("dlt645", "cjt188"):
            assert d.concentrator == f"conc-{d.location.building}"
        enc = f.encode(d, _sample_reading(d))
        assert enc.adapter == d.adapter
        decoded = formats.decode(d.adapter, enc.topic, enc.payload)
        assert {r.device_id for r in decoded} == {d.device_id}
        assert {r.family for r in decoded} == {d.family}


def test_device_ids_differ_between_communities() -> None:
    a = {d.device_id for d in build_community(200, community="xf").devices}
    b = {d.device_id for d in build_community(200, community="hp").devices}
    assert not a & b


def test_residents_have_valid_fake_personal_data(big: Community) -> None:
    residents = [r for h in big.households for r in h.residents]
    assert 6000 < len(residents) < 10_000
    assert all(is_valid_id_number(r.id_number) for r in residents)
    assert all(PHONE_PATTERN.fullmatch(r.phone) for r in residents)
    assert all(PLATE_PATTERN.fullmatch(r.plate) for r in residents if r.plate)
    assert 0.3 < sum(1 for r in residents if r.plate) / len(big.households) < 0.6
    for h in big.households:
        if h.elder_alone:
            assert len(h.residents) == 1
            assert int(h.residents[0].id_number[6:10]) <= 1956  # 70 or older


def test_missing_adapters_fall_back_to_gridgate_json() -> None:
    full = build_community(300, seed=3, adapters=frozenset(formats.ADAPTER_NAMES))
    only_json = build_community(300, seed=3, adapters=frozenset({"gridgate_json"}))
    assert {d.adapter for d in only_json.devices} == {"gridgate_json"}
    assert [d.device_id for d in only_json.devices] == [d.device_id for d in full.devices]
    moved = Counter(d.adapter for d in full.devices if d.adapter != "gridgate_json")
    assert only_json.fallbacks == dict(moved)
    assert full.fallbacks == {}


def test_fleet_yaml_parses_and_every_place_exists(big: Community) -> None:
    text = big.fleet_yaml()
    data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert data == big.fleet_dict()
    assert data["community"] == {"code": "xf", "name": "幸福小区", "street": "城东街道"}
    places = {("", "", "", "")}
    for g in data["grids"]:
        places.add((g["code"], "", "", ""))
        for b in g["buildings"]:
            places.add((g["code"], b["code"], "", ""))
            for u in b["units"]:
                places.add((g["code"], b["code"], u["code"], ""))
                places.update((g["code"], b["code"], u["code"], room) for room in u["rooms"])
    households = {}
    for h in data["households"]:
        assert (h["grid"], h["building"], h["unit"], h["room"]) in places
        households[h["id"]] = (h["grid"], h["building"], h["unit"], h["room"])
    for d in data["devices"]:
        place = tuple(d.get(k, "") for k in ("grid", "building", "unit", "room"))
        assert place in places, d
        if d["family"] == "elder":
            assert households[d["household"]] == place
    for m in data["members"]:
        for s in m["scope"]:
            assert tuple(s.get(k, "") for k in ("grid", "building", "unit", "room")) in places
    # Every resident is listed, elders living alone included, with a valid ID number.
    residents = data["residents"]
    assert len(residents) == sum(len(h.residents) for h in big.households)
    assert len({r["id"] for r in residents}) == len(residents)
    assert {r["household"] for r in residents} == set(households)
    assert all(is_valid_id_number(r["id_number"]) for r in residents)
    elder = {h.id for h in big.households if h.elder_alone}
    alone = [r for r in residents if r["household"] in elder]
    assert len(alone) == len(elder) and all(r["id"].endswith("-1") for r in alone)
    assert residents[0] == {
        "id": big.households[0].resident_id(0),
        "household": big.households[0].id,
        "id_number": big.households[0].residents[0].id_number,
        "face_consent": big.households[0].resident_consent[0],
    }


def test_fleet_file_imports_into_the_registry(tmp_path: Path) -> None:
    from gateway.registry import importer, store
    from privacy import keys, operators

    community = build_community(400, seed=5)
    path = community.write_fleet(tmp_path / "fleet-xf.yaml")
    registry = store.Registry.open(f"sqlite:///{tmp_path / 'registry.db'}")
    keyring = keys.KeyRing([("k1", secrets.token_bytes(32))])
    try:
        report = importer.import_file(registry, path, keyring=keyring)
        assert report.devices.total == len(community.devices)
        for d in community.devices:
            assert registry.device(d.device_id) == d.info()
        counts = registry.counts()
        assert counts.members == len(community.members)
        assert counts.households == 400 and counts.elder_alone == 32
        people = [(h, i) for h in community.households for i in range(len(h.residents))]
        assert counts.residents == len(people)
        assert counts.residents_face_consent == sum(h.resident_consent[i] for h, i in people)
        h, i = people[-1]
        pseudonym = operators.pseudonymise(h.residents[i].id_number, "id_number", keyring)
        assert registry.face_consent_by_pseudonym(pseudonym) == h.resident_consent[i]
        resident = registry.resident_for_pseudonym(pseudonym)
        assert resident is not None and (resident.id, resident.household) == (
            h.resident_id(i),
            h.id,
        )
    finally:
        registry.close()


def test_small_communities_and_bad_arguments() -> None:
    tiny = build_community(7, seed=1)
    assert tiny.counts()["households"] == 7 and len(tiny.grids) == 1
    assert {m.role for m in tiny.members} == set(ROLES)
    with pytest.raises(ValueError):
        build_community(0)
    with pytest.raises(ValueError):
        build_community(10, community="x f")


def test_chinese_numbers() -> None:
    assert [chinese_number(n) for n in (1, 9, 10, 11, 20, 21, 99)] == [
        "一", "九", "十", "十一", "二十", "二十一", "九十九",
    ]  # fmt: skip


def test_devices_are_registry_entries(big: Community) -> None:
    for d in big.devices[:50]:
        info = d.info()
        assert (info.device_id, info.family, info.adapter, info.power) == (
            d.device_id,
            d.family,
            d.adapter,
            d.power,
        )
    assert all(d.family is Family.ELDER for d in big.devices_of(Equipment.WEARABLE))
