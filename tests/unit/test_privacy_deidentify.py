from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Mapping
from random import Random
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters import gridgate_json, vendor_access, vendor_wearable
from devices.families import Channel, Family
from devices.info import DeviceInfo
from devices.location import Location
from devices.reading import Reading
from privacy import operators as ops
from privacy.deidentify import Deidentifier
from privacy.keys import KeyRing
from privacy.policy import default_policy_text, load_policy, parse_policy
from simulators import people

RING = KeyRing(
    [("k1", bytes.fromhex("8f2b6c1d0e4a9f3b7c5d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b"))]
)
POLICY = load_policy()
T = 1_716_165_015_000_000_000  # 2024-05-20 08:30:15 UTC+8
ID = "11010519491231002X"
PSEUDONYM = re.compile(r"k1:[a-z2-7]{26}")
REASONS = {
    "unknown",
    "dropped",
    "pseudonymised",
    "masked",
    "generalised",
    "not_derivable",
    "anonymous_face",
    "consent_error",
    "text_dropped",
    "text_scrubbed",
}


def gate(approved: bool) -> DeviceInfo:
    return DeviceInfo(
        "g-1", Family.ACCESS, "vendor_access", "acs", Location("c1"), gate_approved=approved
    )


def access(values: Mapping[str, Any], *, room: str = "", time_ns: int = T) -> Reading:
    loc = Location("c1", "g1", "b3", "u2", room)
    return Reading("g-1", Family.ACCESS, Channel.EVENT, "entry_granted", time_ns, loc, values)


def face_event(**extra: Any) -> Reading:
    values = {"method": "face", "granted": True, "door": "东门", "similarity": 0.93}
    return access(
        {**values, "person_name": "张三", "id_number": ID, "face_feature": "AAAA", **extra}
    )


IDENTITY = {"resident_ref", "age_band", "card_ref", "plate_masked"}


# -- allow-list ----------------------------------------------------------------------------


def test_non_personal_reading_is_returned_as_is_and_counts_nothing() -> None:
    d = Deidentifier(POLICY, RING)
    meter = Reading(
        "m-1",
        Family.METER,
        Channel.TELEMETRY,
        "telemetry",
        T,
        Location("c1", "g1", "b3", "u2", "302"),
        {"meter_type": "water", "water_m3": 12.5, "valve": "open"},
    )
    assert d.apply(meter) is meter
    assert d.counts == Counter()


def test_access_event_outputs_and_counts() -> None:
    d = Deidentifier(POLICY, RING)
    out = d.apply(
        access(
            {
                "method": "card",
                "direction": "in",
                "granted": True,
                "door": "3号楼1单元门",
                "person_name": "张三",
                "id_number": ID,
                "phone": "13800138000",
                "card_no": "9F3A21C0",
                "plate": "京A12345",
                "face_image": "aW1n",
                "resident_ref": "VENDOR-123",
                "idCardNo": "440524188001010014",
                "vendor:door": "张三家",
            }
        )
    )
    assert out.values == {
        "method": "card",
        "direction": "in",
        "granted": True,
        "door": "3号楼1单元门",
        "resident_ref": ops.pseudonymise(ID, "id_number", RING),
        "age_band": "70-79",
        "card_ref": ops.pseudonymise("9F3A21C0", "card_no", RING),
        "plate_masked": "京A***45",
    }
    # not_derivable: the plate is no resident's registered vehicle (masked only)
    assert d.counts == Counter(
        dropped=4, unknown=2, pseudonymised=2, generalised=1, masked=1, not_derivable=1
    )
    assert set(d.counts) <= REASONS


def test_unknown_and_vendor_prefixed_fields_are_dropped_in_every_family() -> None:
    d = Deidentifier(POLICY, RING)
    for family, kept in [
        (Family.METER, {"water_m3": 1.0}),
        (Family.SAFETY, {"co_ppm": 3.0}),
        (Family.ELDER, {"heart_rate_bpm": 70.0}),
    ]:
        r = Reading("d", family, Channel.TELEMETRY, "telemetry", T, Location("c"),
                    {**kept, "rssi": -80, "vendor:water_m3": 9, "ownerName": "张三"})  # fmt: skip
        assert d.apply(r).values == kept
    assert d.counts == Counter(unknown=9)


def test_status_channel_uses_the_status_table() -> None:
    d = Deidentifier(POLICY, RING)
    r = Reading("g-1", Family.ACCESS, Channel.STATUS, "heartbeat", T, Location("c"),
                {"uptime_s": 5.0, "firmware": "1.2", "method": "face"})  # fmt: skip
    assert d.apply(r).values == {"uptime_s": 5.0, "firmware": "1.2"}
    assert d.counts == Counter(unknown=1)
    clean = r.with_values({"uptime_s": 5.0})
    assert d.apply(clean) is clean


def test_free_text_allowed_as_is_keeps_the_fast_path() -> None:
    d = Deidentifier(POLICY, RING)
    status = Reading("g-1", Family.ACCESS, Channel.STATUS, "heartbeat", T, Location("c"),
                     {"uptime_s": 5.0, "firmware": "v2.3.1-rc1"})  # fmt: skip
    assert d.apply(status) is status
    gate_event = access({"method": "card", "granted": True, "door": "3号楼1单元门"})
    assert d.apply(gate_event) is gate_event
    fault = Reading("m-1", Family.METER, Channel.EVENT, "fault", T, Location("c", room="302"),
                    {"meter_type": "electricity", "fault_code": 2, "fault": "no_such_data"})  # fmt: skip
    assert d.apply(fault) is fault
    assert d.counts == Counter()


def test_free_text_refused_by_its_rule_is_dropped_or_scrubbed_and_counted() -> None:
    d = Deidentifier(POLICY, RING)
    status = Reading("g-1", Family.ACCESS, Channel.STATUS, "heartbeat", T, Location("c"),
                     {"uptime_s": 5.0, "firmware": "1.2-13812345678"})  # fmt: skip
    assert d.apply(status).values == {"uptime_s": 5.0}
    out = d.apply(access({"method": "card", "door": "张三家门"}))
    assert out.values == {"method": "card"}
    fault = Reading("m-1", Family.METER, Channel.EVENT, "fault", T, Location("c"),
                    {"fault_code": 2, "fault": "E3 call 138-1234-5678"})  # fmt: skip
    assert d.apply(fault).values == {"fault_code": 2, "fault": "E3 call <redacted>"}
    assert d.counts == Counter(text_dropped=2, text_scrubbed=1)


def test_free_text_that_is_not_a_string_is_dropped() -> None:
    d = Deidentifier(POLICY, RING)
    out = d.apply(access({"method": "card", "door": 13812345678}))
    assert out.values == {"method": "card"}
    fault = Reading("m-1", Family.METER, Channel.EVENT, "fault", T, Location("c"),
                    {"fault_code": 2, "fault": ["13812345678"]})  # fmt: skip
    assert d.apply(fault).values == {"fault_code": 2}  # not text: not even scrubbed
    assert d.counts == Counter(text_dropped=2)


def test_only_allowed_free_text_is_remembered() -> None:
    d = Deidentifier(POLICY, RING)
    d.apply(access({"door": "东门"}))
    d.apply(access({"door": "张三家门"}))
    d.apply(access({"door": "door 13812345678"}))
    remembered = {v for table in d._tables.values() for _, c in table.texts for v in c.allowed}
    assert remembered == {"东门"}


def test_elder_coordinates_dropped_geofence_and_health_kept() -> None:
    d = Deidentifier(POLICY, RING)
    r = Reading("w-1", Family.ELDER, Channel.EVENT, "fall", T, Location("c", room="302"),
                {"heart_rate_bpm": 120.0, "latitude": 31.23, "longitude": 121.47,
                 "inside_geofence": False})  # fmt: skip
    out = d.apply(r)
    assert out.values == {"heart_rate_bpm": 120.0, "inside_geofence": False}
    assert out.location.room == "302"
    assert d.counts == Counter(dropped=2)


def test_access_location_loses_its_room_others_keep_it() -> None:
    d = Deidentifier(POLICY, RING)
    r = access({"method": "card", "granted": True}, room="302")
    out = d.apply(r)
    assert out.location == Location("c1", "g1", "b3", "u2", "")
    assert out.values == r.values and out.time_ns == T
    no_room = access({"method": "card"})
    assert d.apply(no_room) is no_room


def _custom(edit: Any) -> Deidentifier:
    doc = yaml.safe_load(default_policy_text())
    edit(doc)
    return Deidentifier(parse_policy(yaml.safe_dump(doc, allow_unicode=True)), RING)


def test_coarse_time_and_other_generalisers() -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["families"]["meter"]["time"] = "coarse"
        doc["age_on"] = "2000-01-01"
        fields = doc["families"]["access"]["fields"]
        fields["id_number"]["actions"].append({"generalise": {"to": "gender", "as": "gender"}})
        fields["phone"]["actions"] = [{"mask": {"as": "phone_masked"}}]
        fields["person_name"]["actions"] = [{"mask": {"as": "name_masked"}}]
        elder = doc["families"]["elder"]["fields"]
        elder["latitude"]["actions"] = [{"generalise": {"to": "coarse_position", "as": "lat"}}]

    d = _custom(edit)
    meter = Reading("m", Family.METER, Channel.TELEMETRY, "telemetry", T + 123, Location("c"),
                    {"water_m3": 1.0})  # fmt: skip
    assert d.apply(meter).time_ns == T - T % (900 * 10**9)
    out = d.apply(access({"id_number": ID, "phone": "13800138000", "person_name": "欧阳娜娜"}))
    assert out.values["age_band"] == "50-59"  # on 2000-01-01
    assert out.values["gender"] == "female"
    assert out.values["phone_masked"] == "138****8000"
    assert out.values["name_masked"] == "欧阳**"
    elder = Reading("w", Family.ELDER, Channel.TELEMETRY, "telemetry", T, Location("c"),
                    {"latitude": 31.230416, "longitude": 121.47})  # fmt: skip
    assert d.apply(elder).values == {"lat": 31.23}


def test_invalid_id_number_is_pseudonymised_but_gives_no_age_band() -> None:
    d = Deidentifier(POLICY, RING)
    bad = "110105194912310021"
    out = d.apply(access({"method": "card", "id_number": bad}))
    assert out.values == {
        "method": "card",
        "resident_ref": ops.pseudonymise(bad, "id_number", RING),
    }
    assert d.counts == Counter(pseudonymised=1, not_derivable=1)


def test_identifiers_sent_as_numbers_or_odd_types() -> None:
    d = Deidentifier(POLICY, RING)
    out = d.apply(access({"card_no": 12345678, "id_number": ["11010519491231002X"], "plate": None}))
    assert out.values == {"card_ref": ops.pseudonymise("12345678", "card_no", RING)}
    assert d.counts["not_derivable"] == 2  # a list is no identifier: neither output is made


# -- consent for face recognition (R3.3) ---------------------------------------------------


@pytest.mark.parametrize(
    "approved, consent, identified",
    [(False, False, False), (False, True, False), (True, False, False), (True, True, True)],
)
def test_face_identity_needs_gate_approval_and_resident_consent(
    approved: bool, consent: bool, identified: bool
) -> None:
    asked: list[str] = []

    def face_consent(pseudonym: str) -> bool:
        asked.append(pseudonym)
        return consent

    d = Deidentifier(POLICY, RING, face_consent=face_consent)
    out = d.apply(face_event(card_no="9F3A21C0"), gate(approved))
    anonymous = {"method": "face", "granted": True, "door": "东门", "similarity": 0.93}
    if identified:
        assert out.values == {
            **anonymous,
            "resident_ref": ops.pseudonymise(ID, "id_number", RING),
            "age_band": "70-79",
            "card_ref": ops.pseudonymise("9F3A21C0", "card_no", RING),
        }
        assert "anonymous_face" not in d.counts
    else:
        assert out.values == anonymous
        assert d.counts["anonymous_face"] == 1
    assert out.kind == "entry_granted" and out.time_ns == T
    # the callback sees the pseudonym, never the ID number, and only for an approved gate
    assert asked == ([ops.pseudonymise(ID, "id_number", RING)] if approved else [])


def test_without_a_registry_entry_a_face_event_is_anonymous() -> None:
    d = Deidentifier(POLICY, RING, face_consent=lambda p: True)
    assert IDENTITY.isdisjoint(d.apply(face_event(), None).values)
    assert d.counts["anonymous_face"] == 1


def test_default_callback_denies() -> None:
    d = Deidentifier(POLICY, RING)
    assert IDENTITY.isdisjoint(d.apply(face_event(), gate(True)).values)


def test_withdrawn_consent_applies_to_the_next_reading() -> None:
    consenting = {ops.pseudonymise(ID, "id_number", RING)}
    d = Deidentifier(POLICY, RING, face_consent=consenting.__contains__)
    assert "resident_ref" in d.apply(face_event(), gate(True)).values
    consenting.clear()
    assert IDENTITY.isdisjoint(d.apply(face_event(), gate(True)).values)
    consenting.add(ops.pseudonymise(ID, "id_number", RING))
    assert "resident_ref" in d.apply(face_event(), gate(True)).values


def test_consent_is_per_resident() -> None:
    other = people.fake_id_number(Random(1))
    consenting = {ops.pseudonymise(ID, "id_number", RING)}
    d = Deidentifier(POLICY, RING, face_consent=consenting.__contains__)
    assert "resident_ref" in d.apply(face_event(), gate(True)).values
    assert IDENTITY.isdisjoint(d.apply(face_event(id_number=other), gate(True)).values)


def test_face_event_without_id_number_cannot_be_consented() -> None:
    d = Deidentifier(POLICY, RING, face_consent=lambda p: True)
    r = access({"method": "face", "card_no": "9F3A21C0", "granted": True})
    assert d.apply(r, gate(True)).values == {"method": "face", "granted": True}
    assert d.counts["anonymous_face"] == 1


def test_a_failing_consent_check_fails_closed() -> None:
    def broken(pseudonym: str) -> bool:
        raise RuntimeError("registry down")

    d = Deidentifier(POLICY, RING, face_consent=broken)
    assert IDENTITY.isdisjoint(d.apply(face_event(), gate(True)).values)
    assert d.counts["consent_error"] == 1 and d.counts["anonymous_face"] == 1


def test_card_and_plate_events_need_no_face_consent() -> None:
    d = Deidentifier(POLICY, RING)
    r = access({"method": "card", "card_no": "9F3A21C0", "id_number": ID})
    assert {"card_ref", "resident_ref"} <= set(d.apply(r, gate(False)).values)
    assert "anonymous_face" not in d.counts


def test_face_event_without_identity_fields_is_not_counted() -> None:
    d = Deidentifier(POLICY, RING, face_consent=lambda p: pytest.fail("not asked"))
    r = access({"method": "face", "granted": False, "face_image": "aW1n"})
    assert d.apply(r, gate(True)).values == {"method": "face", "granted": False}
    assert d.counts == Counter(dropped=1)


def test_counter_can_be_shared_with_the_gateway_metrics() -> None:
    shared: Counter[str] = Counter()
    d = Deidentifier(POLICY, RING, counts=shared)
    d.apply(access({"phone": "13800138000"}))
    assert shared == Counter(dropped=1)


# -- nothing raw survives (R3.2) -----------------------------------------------------------


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def _raw_values(r: people.Resident, broken_id: str) -> list[str]:
    return [v for v in (r.name, r.id_number, broken_id, r.phone, r.card_no, r.plate,
                        r.face_feature) if v]  # fmt: skip


def _assert_nothing_raw(out: Reading, raws: list[str]) -> None:
    texts = [str(v) for v in out.values.values()] + list(out.values)
    texts += [out.device_id, out.kind, *vars_of(out.location)]
    for raw in raws:
        for text in texts:
            assert raw not in text, "a raw value survived"
            if len(_digits(raw)) >= 5:
                assert _digits(raw) not in _digits(text), "the digits of a raw value survived"


def vars_of(loc: Location) -> list[str]:
    return [loc.community, loc.grid, loc.building, loc.unit, loc.room]


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    method=st.sampled_from(["face", "card", "plate", "qr"]),
    approved=st.booleans(),
    consent=st.booleans(),
)
def test_no_raw_personal_value_survives(
    seed: int, method: str, approved: bool, consent: bool
) -> None:
    rng = Random(seed)
    r = people.fake_resident(rng, car_share=0.7)
    broken_id = r.id_number[:17] + ("0" if r.id_number[17] != "0" else "1")
    raws = _raw_values(r, broken_id)
    values: dict[str, Any] = {
        "method": method,
        "granted": True,
        "door": "东门",
        "person_name": r.name,
        "id_number": rng.choice([r.id_number, broken_id, r.id_number.lower()]),
        "phone": rng.choice([r.phone, f"+86 {r.phone}", r.phone[:7]]),
        "card_no": r.card_no,
        "plate": r.plate or "京A12345",
        "face_image": r.face_feature,
        "face_feature": r.face_feature,
        "resident_ref": r.id_number,
        # vendor extras and collisions, as adapters pass them on
        "certNo": r.id_number,
        "vendor:id_number": r.id_number,
        "mobile": r.phone,
        "ownerName": r.name,
        "extra": {"idCard": r.id_number},
    }
    d = Deidentifier(POLICY, RING, face_consent=lambda p: consent)
    out = d.apply(access(values, room="1203"), gate(approved))
    _assert_nothing_raw(out, raws)
    assert set(d.counts) <= REASONS
    assert d.counts["unknown"] == 5


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_real_adapter_payloads_come_out_clean(seed: int) -> None:
    """The vendor terminal's JSON, through the real adapter, then the de-identifier."""
    rng = Random(seed)
    r = people.fake_resident(rng, car_share=1.0)
    body = {
        "deviceSn": "ACS1",
        "eventTime": "2024-05-20 08:30:15",
        "eventType": 1,
        "openMode": "FACE",
        "doorName": "3号楼1单元门",
        "personName": r.name,
        "certNo": r.id_number,
        "phone": r.phone,
        "cardNo": r.card_no,
        "plateNo": r.plate,
        "faceFeature": r.face_feature,
        "ownerMobile": r.phone,
        "method": r.name,  # a vendor key posing as a canonical field → vendor:method
    }
    (reading,) = vendor_access.decode("vendor/acs/c1/ACS1/event", orjson.dumps(body))
    assert reading.values["vendor:method"] == r.name
    d = Deidentifier(POLICY, RING, face_consent=lambda p: True)
    out = d.apply(reading, gate(True))
    _assert_nothing_raw(out, _raw_values(r, r.id_number))
    assert PSEUDONYM.fullmatch(out.values["resident_ref"])

    topic, payload = gridgate_json.encode(
        reading.with_values({k: v for k, v in reading.values.items() if ":" not in k})
    )
    (again,) = gridgate_json.decode(topic, payload)
    _assert_nothing_raw(d.apply(again, gate(False)), _raw_values(r, r.id_number))


def test_wearable_gps_and_extras_are_dropped() -> None:
    body = {"imei": "865432101234567", "samples": [{"t": "2024-05-20 08:30:00", "hr": 72, "sn": "X"}],
            "gps": {"lat": 31.2304, "lng": 121.4737, "addr": "上海市黄浦区某路1号"}, "bat": 85}  # fmt: skip
    (reading,) = vendor_wearable.decode("vendor/band/c1/865432101234567/up", orjson.dumps(body))
    out = Deidentifier(POLICY, RING).apply(reading)
    assert out.values == {"heart_rate_bpm": 72.0, "battery_pct": 85.0}


def test_policy_object_is_not_changed_by_use() -> None:
    before = copy.deepcopy(POLICY)
    d = Deidentifier(POLICY, RING)
    d.apply(face_event())
    assert before == POLICY
