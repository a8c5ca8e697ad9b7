"""The simulator's generation side, without a broker: fleets, fake people, bad messages."""

from __future__ import annotations

import argparse
import base64
import re
from collections import Counter
from random import Random

import pytest

from adapters.base import MAX_PAYLOAD_BYTES
from adapters.gridgate_json import decode, encode
from devices.errors import RejectedInput
from devices.families import EVENT_KINDS, TELEMETRY_KIND, Channel, Family
from devices.models import FAMILY_DATA
from devices.reading import Reading
from devices.topics import is_valid_id, parse_topic
from devices.validation import check_time
from simulators import cli, malformed
from simulators.fleet import (
    ElderWearable,
    ElectricityMeter,
    SafetyDetector,
    SimDevice,
    VehicleBarrier,
    WaterMeter,
    family_counts,
    make_fleet,
)
from simulators.malformed import CASES, TIME_REASONS, UNSTORABLE, VALID, bad_message
from simulators.people import (
    PHONE_PATTERN,
    PLATE_PATTERN,
    fake_id_number,
    fake_name,
    fake_phone,
    fake_plate,
    id_check_digit,
    is_valid_id_number,
)
from simulators.publisher import SimReport, _Pacer
from simulators.traffic import Traffic

NOW_NS = 1_750_000_000_000_000_000  # 2025-06-15, a fixed clock keeps every run identical
NS_PER_S = 1_000_000_000


def _run(fleet: list[SimDevice], rounds: int, step_s: float = 30.0) -> list[Reading]:
    """Every device reports once per round, `step_s` apart, like a real reporting interval."""
    out: list[Reading] = []
    for i in range(rounds):
        now = NOW_NS + int(i * step_s * NS_PER_S)
        out.extend(d.next_reading(now) for d in fleet)
    return out


# -- people ------------------------------------------------------------------------------------


def test_check_digit_matches_domain_examples() -> None:
    assert id_check_digit("11010519491231002") == "X"
    assert id_check_digit("44052418800101001") == "4"
    assert is_valid_id_number("11010519491231002X")
    assert is_valid_id_number("440524188001010014")


@pytest.mark.parametrize(
    "bad",
    ["110105194912310021", "440524188001010015", "11010519491331002X", "1101051949123100", ""],
)
def test_invalid_id_numbers_are_recognised(bad: str) -> None:
    assert not is_valid_id_number(bad)


def test_fake_personal_data_follows_the_formats() -> None:
    rng = Random(7)
    for _ in range(500):
        male = rng.random() < 0.5
        id_number = fake_id_number(rng, male=male)
        assert is_valid_id_number(id_number)
        assert int(id_number[16]) % 2 == (1 if male else 0)  # odd sequence = male
        assert PHONE_PATTERN.fullmatch(fake_phone(rng))
        plate = fake_plate(rng)
        assert PLATE_PATTERN.fullmatch(plate), plate
        assert len(plate) in (7, 8)
        assert re.fullmatch(r"[\u4e00-\u9fff]{2,4}", fake_name(rng))
    assert len(fake_plate(rng, new_energy=True)) == 8
    assert len(fake_plate(rng, new_energy=False)) == 7


# -- fleet ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3, 4, 5, 9, 10, 99, 100, 1000, 3001])
def test_family_counts_add_up_and_cover_all_families(n: int) -> None:
    counts = family_counts(n)
    assert sum(counts.values()) == n
    if n >= 4:
        assert all(c >= 1 for c in counts.values())
    if n >= 100:
        assert counts[Family.METER] == pytest.approx(0.40 * n, abs=2)
        assert counts[Family.SAFETY] == pytest.approx(0.35 * n, abs=2)
        assert counts[Family.ELDER] == pytest.approx(0.10 * n, abs=2)
        assert counts[Family.ACCESS] == pytest.approx(0.15 * n, abs=2)


def test_fleet_is_deterministic_per_seed() -> None:
    a, b, c = make_fleet("c1", 60, 42), make_fleet("c1", 60, 42), make_fleet("c1", 60, 43)
    assert [(d.device_id, d.location) for d in a] == [(d.device_id, d.location) for d in b]
    assert _run(a, 5) == _run(b, 5)
    assert [d.location for d in a] != [d.location for d in c]
    assert _run(make_fleet("c1", 60, 42), 5) != _run(c, 5)


def test_fleet_has_every_family_with_topic_safe_ids_and_real_places() -> None:
    fleet = make_fleet("c1", 120, 1)
    assert {d.family for d in fleet} == set(Family)
    assert len({d.device_id for d in fleet}) == len(fleet)
    assert any(isinstance(d, VehicleBarrier) for d in fleet)
    assert any(isinstance(d, ElectricityMeter) for d in fleet)
    assert any(isinstance(d, WaterMeter) for d in fleet)
    for d in fleet:
        assert is_valid_id(d.device_id) and re.fullmatch(r"[msea]-\d{4}", d.device_id)
        loc = d.location
        assert loc.community == "c1"
        if isinstance(d, VehicleBarrier):
            continue  # at a community gate: no grid/building
        assert re.fullmatch(r"g\d{2}", loc.grid)
        assert re.fullmatch(r"\d+号楼", loc.building)
        assert re.fullmatch(r"\d单元", loc.unit)
        if d.family is not Family.ACCESS:
            assert re.fullmatch(r"\d{3,4}", loc.room)
        info = d.info()
        assert info.device_id == d.device_id and info.adapter == "gridgate_json"
        assert bool(info.household) == (d.family is Family.ELDER)


def test_small_fleets_still_have_every_family() -> None:
    assert {d.family for d in make_fleet("c1", 4, 0)} == set(Family)


def test_bad_community_id_is_refused() -> None:
    with pytest.raises(ValueError):
        make_fleet("c 1/x", 10, 0)


def test_every_reading_round_trips_through_gridgate_json_within_model_ranges() -> None:
    fleet = make_fleet("c1", 80, 3)
    readings = _run(fleet, 60)
    kinds: Counter[tuple[Family, str]] = Counter()
    for r in readings:
        topic, payload = encode(r)
        assert decode(topic, payload) == [r]
        parts = parse_topic(topic)
        assert (parts.family, parts.device_id) == (r.family, r.device_id)
        model = FAMILY_DATA[r.family]
        assert set(r.values) <= set(model.model_fields), "no fields outside the model"
        model.model_validate(r.values)  # raises when a value is outside the declared range
        assert r.time_ns % 1_000_000 == 0
        if r.channel is Channel.TELEMETRY:
            assert r.kind == TELEMETRY_KIND
        else:
            assert r.channel is Channel.EVENT
            assert r.kind in {k.value for k in EVENT_KINDS[r.family]}
        kinds[(r.family, r.kind)] += 1
    assert kinds[(Family.ACCESS, "entry_granted")] > 0
    assert kinds[(Family.SAFETY, "self_test")] > 0
    assert kinds[(Family.ACCESS, TELEMETRY_KIND)] == 0  # access devices report events
    assert sum(v for (f, k), v in kinds.items() if k == TELEMETRY_KIND) > len(readings) // 2


def test_readings_are_continuous_and_plausible() -> None:
    fleet = make_fleet("c1", 60, 5)
    by_device: dict[str, list[Reading]] = {}
    for r in _run(fleet, 120, step_s=60):
        by_device.setdefault(r.device_id, []).append(r)
    for d in fleet:
        values = [r.values for r in by_device[d.device_id]]
        for key in ("energy_kwh", "water_m3", "steps"):
            series = [v[key] for v in values if key in v]
            assert series == sorted(series), f"{d.device_id} {key} went down"
        battery = [v["battery_pct"] for v in values if "battery_pct" in v]
        assert battery == sorted(battery, reverse=True), f"{d.device_id} battery charged itself"
        if isinstance(d, ElectricityMeter):
            assert values[-1]["energy_kwh"] > values[0]["energy_kwh"]
            assert all(198 <= v["voltage_v"] <= 242 for v in values)
            assert all(0 < v["current_a"] < 60 and 0 < v["power_kw"] < 12 for v in values)
        if isinstance(d, ElderWearable):
            assert all(60 <= v["heart_rate_bpm"] <= 100 for v in values)
            assert all(95 <= v["spo2_pct"] <= 99 and v["worn"] is True for v in values)
        if isinstance(d, SafetyDetector):
            assert all(v.get("gas_lel_pct", 0) < 5 and v.get("co_ppm", 0) < 15 for v in values)
            assert all(5 <= v.get("temperature_c", 20) <= 38 for v in values)


def test_one_device_never_reports_twice_in_the_same_millisecond() -> None:
    device = make_fleet("c1", 4, 0)[0]
    stamps = [device.next_reading(NOW_NS).time_ns for _ in range(50)]
    assert stamps == sorted(set(stamps)) and stamps[0] == NOW_NS
    assert device.next_reading(NOW_NS + 10 * NS_PER_S).time_ns == NOW_NS + 10 * NS_PER_S


def test_access_events_carry_realistic_fake_personal_data() -> None:
    fleet = [d for d in make_fleet("c1", 200, 9) if d.family is Family.ACCESS]
    readings = _run(fleet, 40)
    seen: Counter[str] = Counter()
    for r in readings:
        v = r.values
        seen.update(
            k for k in ("person_name", "id_number", "phone", "plate", "face_feature") if k in v
        )
        assert v["direction"] in ("in", "out") and isinstance(v["granted"], bool)
        if "id_number" in v:
            assert is_valid_id_number(v["id_number"])
        if "phone" in v:
            assert PHONE_PATTERN.fullmatch(v["phone"])
        if "plate" in v:
            assert PLATE_PATTERN.fullmatch(v["plate"]) and r.kind.startswith("vehicle_")
        if "face_feature" in v:
            assert 64 <= len(base64.b64decode(v["face_feature"], validate=True)) <= 1024
        if r.kind == "entry_granted":
            assert v["method"] in ("face", "card", "qr") and "person_name" in v
    assert all(seen[k] > 0 for k in ("person_name", "id_number", "phone", "plate", "face_feature"))


# -- malformed --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_bad_message_gets_its_labelled_outcome(case: str) -> None:
    now_ms = NOW_NS // 1_000_000
    for seed in range(25):
        topic, payload, reason = bad_message(Random(seed), "c1", now_ms=now_ms, case=case)
        if reason in (VALID, UNSTORABLE) or reason in TIME_REASONS:
            [reading] = decode(topic, payload)
            if reason == UNSTORABLE:  # refused by the gateway's line-protocol encoder
                texts = [*reading.values.values(), reading.location.building]
                assert any(isinstance(t, str) and ("\n" in t or "\\" in t) for t in texts)
            if reason in TIME_REASONS:
                with pytest.raises(RejectedInput) as exc:
                    check_time(reading, NOW_NS, max_past_s=30 * 86_400, max_future_s=300)
                assert exc.value.reason == reason
            else:
                check_time(reading, NOW_NS, max_past_s=30 * 86_400, max_future_s=300)
            continue
        with pytest.raises(RejectedInput) as exc:
            decode(topic, payload)
        assert exc.value.reason == reason, (case, seed)


def test_hostile_but_valid_messages_keep_their_metacharacters() -> None:
    now_ms = NOW_NS // 1_000_000
    topic, payload, _ = bad_message(Random(1), "c1", now_ms=now_ms, case="injection_door")
    [r] = decode(topic, payload)
    assert r.values["door"] == malformed.HOSTILE_DOOR
    topic, payload, _ = bad_message(Random(1), "c1", now_ms=now_ms, case="injection_place")
    [r] = decode(topic, payload)
    assert r.location.building == malformed.HOSTILE_BUILDING


def test_bad_messages_cover_every_case_and_carry_personal_data() -> None:
    rng = Random(11)
    reasons: Counter[str] = Counter()
    with_id_number = 0
    for _ in range(600):
        _, payload, reason = bad_message(rng, "c1", now_ms=NOW_NS // 1_000_000)
        reasons[reason] += 1
        text = payload.decode("utf-8", "replace")
        if reason != VALID and any(is_valid_id_number(m) for m in re.findall(r"\d{17}[\dX]", text)):
            with_id_number += 1
        if reason == "oversize":
            assert len(payload) > MAX_PAYLOAD_BYTES
    assert set(reasons) == {CASES[c](Random(0), "c1", 0)[2] for c in CASES}
    assert with_id_number > 20  # rejected input with PII inside: the gateway must not leak it


# -- traffic and report ------------------------------------------------------------------------


def test_traffic_mixes_an_exact_share_of_bad_messages() -> None:
    fleet = make_fleet("c1", 30, 2)
    traffic = Traffic(fleet, seed=2, bad_ratio=0.1)
    msgs = [traffic.next_message(NOW_NS + i * 1_000_000) for i in range(1000)]
    bad = [m for m in msgs if m.family is None]
    assert len(bad) == 100 and all(m.bad_reason for m in bad)
    good = [m for m in msgs if m.family is not None]
    assert Counter(m.topic.split("/")[4] for m in good[:30]) == Counter(d.device_id for d in fleet)
    again = Traffic(make_fleet("c1", 30, 2), seed=2, bad_ratio=0.1)
    assert [again.next_message(NOW_NS + i * 1_000_000) for i in range(1000)] == msgs


def test_pacer_keeps_an_absolute_schedule_with_bounded_catch_up() -> None:
    pacer = _Pacer(100.0, now=0.0)
    assert [pacer.reserve(0.0) for _ in range(3)] == pytest.approx([0.0, 0.01, 0.02])
    # After a 10 s stall it may catch up only a short burst, not 1000 messages at once.
    assert pacer.reserve(10.0) < 0
    sent_now = 1 + sum(1 for _ in range(100) if pacer.reserve(10.0) <= 0)
    assert sent_now <= 7


def test_report_expected_valid_counts_good_and_hostile_but_valid() -> None:
    report = SimReport(
        sent_by_family={"meter": 5, "access": 2},
        bad_by_reason={VALID: 3, "not_json": 4},
        total=14,
        published_ok=13,
        elapsed_s=2.0,
    )
    assert report.expected_valid == 10 and report.unacked == 1 and report.rate == 7.0
    assert report.to_dict()["expected_valid"] == 10


# -- cli ----------------------------------------------------------------------------------------


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDGATE_MQTT_HOST", "127.0.0.2")
    monkeypatch.setenv("GRIDGATE_MQTT_PORT", "28830")
    args = _args("--devices", "7", "--count", "3")
    assert (args.host, args.port, args.devices, args.count) == ("127.0.0.2", 28830, 7, 3)


@pytest.mark.parametrize(
    "argv", [["--devices", "0"], ["--bad-ratio", "2"], ["--community", "a/b"], ["--rate", "-1"]]
)
def test_cli_refuses_impossible_arguments(argv: list[str]) -> None:
    assert cli.run(_args(*argv)) == 2


def test_cli_reports_an_unreachable_broker(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(_args("--port", "1", "--count", "1")) == 2  # nothing listens on port 1
    assert "cannot reach MQTT broker" in capsys.readouterr().err


def test_cli_duration_zero_means_until_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    class FakePublisher:
        def __init__(self, *a: object, **kw: object) -> None:
            pass

        def connect(self) -> None:
            pass

        def close(self) -> None:
            pass

        def request_stop(self) -> None:
            pass

        def run(self, source: Traffic, **kw: object) -> SimReport:
            seen.update(kw)
            return SimReport()

    monkeypatch.setattr(cli, "Publisher", FakePublisher)
    assert cli.run(_args("--duration", "0", "--quiet")) == 0
    assert seen["duration_s"] is None and seen["count"] is None
    assert cli.run(_args("--quiet")) == 0
    assert seen["duration_s"] == cli.DEFAULT_DURATION_S
