"""Alert rules: each shipped rule fires exactly when it should (severity, place, duration), clears
once with hysteresis, stays open where a person must resolve it; bad rules files are refused;
state stays bounded."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from devices.errors import ConfigError
from devices.families import Channel, Family
from devices.info import DeviceInfo
from devices.liveness import LivenessEvent
from devices.location import Location
from devices.places import PlaceLevel
from devices.reading import Reading
from gateway.alerts import rules as rules_module
from gateway.alerts.model import Condition, Severity
from gateway.alerts.rules import (
    EventRule,
    RuleEngine,
    RuleSet,
    ThresholdRule,
    load_rules,
    parse_rules,
)

NS = 1_000_000_000
# 2024-05-20 00:00 China Standard Time (UTC+8): the night window starts here.
MIDNIGHT_CST = int(datetime(2024, 5, 19, 16, 0, tzinfo=UTC).timestamp()) * NS
T0 = MIDNIGHT_CST + 10 * 3600 * NS  # 10:00 local, well away from the night
FLAT = Location("xf", "g01", "b03", "u2", "1201")
FLAT2 = Location("xf", "g01", "b03", "u2", "0502")
OTHER_UNIT = Location("xf", "g01", "b03", "u3", "0801")
OTHER_BUILDING = Location("xf", "g01", "b04", "u1", "0101")
UNIT_GATE = Location("xf", "g01", "b03", "u2")  # access readings are coarse: no room
COMMUNITY_GATE = Location("xf")
UNIT = "xf/g01/b03/u2"
BUILDING = "xf/g01/b03"
RULES = load_rules()


def at(seconds: float, base: int = T0) -> int:
    return base + round(seconds * NS)


def reading(
    device_id: str,
    family: Family,
    t: int,
    values: dict[str, Any],
    *,
    kind: str = "telemetry",
    location: Location = FLAT,
) -> Reading:
    channel = Channel.TELEMETRY if kind == "telemetry" else Channel.EVENT
    return Reading(device_id, family, channel, kind, t, location, values)


def device(device_id: str, family: Family, household: str = "h-1201") -> DeviceInfo:
    return DeviceInfo(device_id, family, "gridgate_json", "acme", FLAT, household, "battery")


def feed(engine: RuleEngine, readings: Iterable[Reading]) -> list[Condition]:
    out: list[Condition] = []
    for r in readings:
        out += engine.on_reading(r, device(r.device_id, r.family))
    return out


def keyed(conditions: Iterable[Condition], key: str) -> list[Condition]:
    return [c for c in conditions if c.key == key]


def safety(
    engine: RuleEngine, t: int, device_id: str = "gas-1", location: Location = FLAT, **values: Any
) -> list[Condition]:
    return engine.on_reading(reading(device_id, Family.SAFETY, t, values, location=location), None)


def elder(engine: RuleEngine, t: int, device_id: str = "band-1", **values: Any) -> list[Condition]:
    r = reading(device_id, Family.ELDER, t, values)
    return engine.on_reading(r, device(device_id, Family.ELDER))


# -- the shipped file ----------------------------------------------------------------------


def test_shipped_rules_load_with_the_domain_defaults() -> None:
    by_id = {r.id: r for r in RULES.rules}
    assert len(by_id) == len(RULES.rules)
    keys = [r.condition_key for r in RULES.rules]
    assert len(set(keys)) == len(keys)
    assert {
        "gas_lel", "co", "smoke", "heat", "heart_rate", "spo2", "vital_signs", "fall", "sos",
        "elder_no_water", "door_forced", "perimeter_breach", "door_held_open", "tamper",
        "low_battery", "fault", "offline", "night_leak", "daily_use", "overload", "fire_incident",
    } == set(keys)  # fmt: skip
    gas = by_id["gas_lel"]
    assert isinstance(gas, ThresholdRule)
    assert [(lvl.value, lvl.severity, lvl.min_duration_s) for lvl in gas.levels] == [
        (50, Severity.I, 10),
        (25, Severity.II, 10),
    ]
    assert gas.hysteresis == 5
    fall = by_id["fall"]
    assert isinstance(fall, EventRule) and fall.kinds == {"fall": Severity.I}
    assert fall.auto_clear is False
    assert RULES.get("door_forced") is not None and RULES.get("nope") is None


def test_rules_package_is_pure_logic() -> None:
    modules = sorted(Path(rules_module.__file__).parent.glob("*.py"))
    assert len(modules) > 5  # the package's modules, not only its __init__
    for module in modules:
        roots: set[str] = set()
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                roots.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                roots.add(node.module.split(".")[0])
        banned = {"asyncio", "time", "datetime", "paho", "httpx", "sqlalchemy", "aiomqtt"}
        assert not roots & banned, module.name


# -- thresholds ------------------------------------------------------------------------------


def test_gas_level_one_fires_after_its_minimum_duration_at_unit_level() -> None:
    e = RuleEngine(RULES)
    assert safety(e, at(0), gas_lel_pct=30.0) == []
    assert safety(e, at(9.9), gas_lel_pct=31.0) == []  # not before 10 s
    [c] = safety(e, at(10), gas_lel_pct=32.0)
    assert (c.rule_id, c.key, c.kind, c.severity, c.active) == (
        "gas_lel",
        "gas_lel",
        "gas_leak",
        Severity.II,
        True,
    )
    assert (c.level, c.place, c.location.room) == (PlaceLevel.UNIT, UNIT, "")
    assert (c.device_id, c.value, c.auto_clear, c.at_ns) == ("gas-1", 32.0, True, at(10))
    assert c.detail["at_or_above"] == 25
    orjson.dumps(dict(c.detail))  # JSON-safe


def test_gas_below_the_first_level_does_nothing_and_keeps_no_state() -> None:
    e = RuleEngine(RULES)
    assert safety(e, at(0), gas_lel_pct=24.9) == []
    assert safety(e, at(60), gas_lel_pct=24.9) == []
    assert e.state_size() == 0


def test_a_dip_below_the_set_point_restarts_the_minimum_duration() -> None:
    e = RuleEngine(RULES)
    assert safety(e, at(0), gas_lel_pct=26.0) == []
    assert safety(e, at(5), gas_lel_pct=24.0) == []  # below the set point: the run is broken
    assert safety(e, at(8), gas_lel_pct=26.0) == []
    assert safety(e, at(15), gas_lel_pct=26.0) == []  # 7 s into the new run
    assert [c.severity for c in safety(e, at(18), gas_lel_pct=26.0)] == [Severity.II]


def test_gas_level_two_upgrades_after_its_own_duration_and_steps_back_down() -> None:
    e = RuleEngine(RULES)
    safety(e, at(0), gas_lel_pct=30.0)
    # level 2 is pending for its own 10 s
    assert [c.severity for c in safety(e, at(10), gas_lel_pct=55.0)] == [Severity.II]
    assert [c.severity for c in safety(e, at(20), gas_lel_pct=56.0)] == [Severity.I]
    assert [c.severity for c in safety(e, at(30), gas_lel_pct=46.0)] == [Severity.I]  # > 50 − 5
    assert [c.severity for c in safety(e, at(40), gas_lel_pct=44.0)] == [Severity.II]
    [clear] = safety(e, at(50), gas_lel_pct=19.0)
    assert (clear.active, clear.key, clear.place) == (False, "gas_lel", UNIT)
    assert clear.severity is Severity.II  # what it was when it ended
    assert e.state_size() == 0


def test_hysteresis_stops_flapping_at_the_set_point() -> None:
    e = RuleEngine(RULES)
    safety(e, at(0), gas_lel_pct=26.0)
    assert len(safety(e, at(10), gas_lel_pct=26.0)) == 1
    out: list[Condition] = []
    for i, value in enumerate([24.0, 26.0, 24.0, 25.0, 21.0, 20.0, 26.0, 20.5]):
        out += safety(e, at(11 + i), gas_lel_pct=value)
    assert all(c.active and c.severity is Severity.II for c in out) and len(out) == 8
    [clear] = safety(e, at(30), gas_lel_pct=19.9)
    assert not clear.active
    assert safety(e, at(31), gas_lel_pct=10.0) == []  # cleared once
    assert safety(e, at(32), gas_lel_pct=24.0) == []  # back in the band: not a new alarm


def test_repeated_readings_repeat_the_active_condition_without_clears() -> None:
    e = RuleEngine(RULES)
    out: list[Condition] = []
    for s in range(0, 61):
        out += safety(e, at(s), gas_lel_pct=30.0)
    assert len(out) == 51 and all(c.active for c in out)


def test_tick_ends_a_minimum_duration_without_a_new_reading() -> None:
    e = RuleEngine(RULES)
    safety(e, at(0), gas_lel_pct=30.0)
    assert e.tick(at(9)) == []
    [c] = e.tick(at(10))
    assert (c.key, c.severity, c.at_ns) == ("gas_lel", Severity.II, at(10))
    assert e.tick(at(11)) == []  # fired once; readings repeat it, ticks do not


def test_an_older_reading_changes_nothing() -> None:
    e = RuleEngine(RULES)
    safety(e, at(0), gas_lel_pct=30.0)
    safety(e, at(10), gas_lel_pct=30.0)
    assert safety(e, at(5), gas_lel_pct=0.0) == []  # late redelivery
    assert [c.active for c in safety(e, at(20), gas_lel_pct=30.0)] == [True]


def test_two_flats_of_a_unit_share_the_place_and_clear_only_when_both_are_clear() -> None:
    e = RuleEngine(RULES)
    safety(e, at(0), "gas-a", FLAT, gas_lel_pct=30.0)
    safety(e, at(0), "gas-b", FLAT2, gas_lel_pct=60.0)
    [a] = safety(e, at(10), "gas-a", FLAT, gas_lel_pct=30.0)
    [b] = safety(e, at(10), "gas-b", FLAT2, gas_lel_pct=60.0)
    assert a.place == b.place == UNIT
    assert a.severity is Severity.II and a.detail["devices"] == 1
    assert b.severity is Severity.I and b.detail["devices"] == 2
    [a2] = safety(e, at(11), "gas-a", FLAT, gas_lel_pct=30.0)
    assert a2.severity is Severity.I  # the place is as bad as its worst flat
    assert safety(e, at(20), "gas-b", FLAT2, gas_lel_pct=0.0) == []  # gas-a still leaking
    [still] = safety(e, at(21), "gas-a", FLAT, gas_lel_pct=30.0)
    assert still.active and still.severity is Severity.II
    [clear] = safety(e, at(30), "gas-a", FLAT, gas_lel_pct=0.0)
    assert not clear.active and clear.place == UNIT


def test_temperature_of_sixty_degrees_is_orange() -> None:
    e = RuleEngine(RULES)
    assert safety(e, at(0), "smoke-1", temperature_c=59.9) == []
    assert safety(e, at(0.5), "smoke-1", temperature_c=61.0) == []
    [c] = safety(e, at(10.5), "smoke-1", temperature_c=62.0)
    assert (c.key, c.kind, c.severity) == ("heat", "high_temperature", Severity.II)


@pytest.mark.parametrize(
    ("bpm", "severity"),
    [
        (35.0, Severity.I),
        (45.0, Severity.III),
        (130.0, Severity.III),
        (150.0, Severity.III),
        (155.0, Severity.I),
    ],
)
def test_heart_rate_bands_after_sixty_seconds(bpm: float, severity: Severity) -> None:
    e = RuleEngine(RULES)
    assert keyed(elder(e, at(0), heart_rate_bpm=bpm), "heart_rate") == []
    assert keyed(elder(e, at(59), heart_rate_bpm=bpm), "heart_rate") == []
    [c] = keyed(elder(e, at(60), heart_rate_bpm=bpm), "heart_rate")
    assert (c.severity, c.subject_ref, c.place) == (severity, "", UNIT)  # no household id


@pytest.mark.parametrize("bpm", [50.0, 72.0, 100.0, 120.0])
def test_heart_rate_in_range_is_fine(bpm: float) -> None:
    e = RuleEngine(RULES)
    assert elder(e, at(0), heart_rate_bpm=bpm) == []
    assert elder(e, at(120), heart_rate_bpm=bpm) == []


def test_heart_rate_clears_with_hysteresis() -> None:
    e = RuleEngine(RULES)
    elder(e, at(0), heart_rate_bpm=125.0)
    assert len(elder(e, at(60), heart_rate_bpm=125.0)) == 1
    assert [c.active for c in elder(e, at(120), heart_rate_bpm=119.0)] == [True]  # > 120 − 3
    [clear] = elder(e, at(180), heart_rate_bpm=116.0)
    assert (clear.key, clear.active) == ("heart_rate", False)


@pytest.mark.parametrize(("spo2", "severity"), [(86.0, Severity.I), (90.0, Severity.III)])
def test_spo2_bands(spo2: float, severity: Severity) -> None:
    e = RuleEngine(RULES)
    assert elder(e, at(0), spo2_pct=spo2) == []
    [c] = elder(e, at(60), spo2_pct=spo2)
    assert (c.key, c.kind, c.severity) == ("spo2", "low_spo2", severity)
    assert elder(e, at(61), spo2_pct=92.5)[0].active  # within 1 % of the set point
    assert not elder(e, at(62), spo2_pct=93.5)[0].active


def test_overload_after_five_minutes_above_ten_kilowatts() -> None:
    e = RuleEngine(RULES)

    def meter(t: int, kw: float) -> list[Condition]:
        return e.on_reading(reading("em-1", Family.METER, t, {"power_kw": kw}), None)

    assert meter(at(0), 11.0) == []
    assert meter(at(299), 11.0) == []
    [c] = meter(at(300), 11.0)
    assert (c.key, c.kind, c.severity, c.place) == (
        "overload",
        "electrical_overload",
        Severity.III,
        UNIT,
    )
    assert meter(at(400), 9.5)[0].active  # hysteresis 1 kW
    assert not meter(at(500), 8.9)[0].active


# -- CO, time at level -----------------------------------------------------------------------


def co_run(
    e: RuleEngine, ppm: float, minutes: int, start: int = T0, step_s: int = 30
) -> list[tuple[int, Condition]]:
    """(seconds since start, condition) for readings every `step_s` up to `minutes`."""
    out = []
    for s in range(0, minutes * 60 + 1, step_s):
        for c in safety(e, at(s, start), "co-1", co_ppm=ppm):
            out.append((s, c))
    return out


@pytest.mark.parametrize(
    ("ppm", "minutes", "severity"),
    [
        (300.0, 3, Severity.I),
        (100.0, 10, Severity.II),
        (50.0, 60, Severity.III),
        (350.0, 3, Severity.I),
    ],
)
def test_co_alarms_after_its_time_at_level(ppm: float, minutes: int, severity: Severity) -> None:
    e = RuleEngine(RULES)
    out = co_run(e, ppm, minutes + 1)
    first_s, first = out[0]
    assert first_s == minutes * 60  # not a reading earlier
    assert (first.key, first.kind, first.severity, first.place) == (
        "co",
        "co_poisoning",
        severity,
        UNIT,
    )


def test_co_below_the_lowest_level_never_alarms() -> None:
    e = RuleEngine(RULES)
    assert co_run(e, 30.0, 120) == []
    assert co_run(e, 49.0, 120, start=at(7300)) == []


def test_co_escalates_and_holds_until_it_falls_below_the_lowest_level() -> None:
    e = RuleEngine(RULES)
    out = co_run(e, 60.0, 60)
    assert [c.severity for _, c in out] == [Severity.III]
    later = at(3600 + 30)
    for s in range(0, 10 * 60, 30):
        assert [c.severity for c in safety(e, at(s, later), "co-1", co_ppm=120.0)] == [Severity.III]
    assert [c.severity for c in safety(e, at(600, later), "co-1", co_ppm=120.0)] == [Severity.II]
    assert [c.severity for c in safety(e, at(660, later), "co-1", co_ppm=60.0)] == [Severity.II]
    # 47 ≥ 50 − 5: held
    assert [c.severity for c in safety(e, at(720, later), "co-1", co_ppm=47.0)] == [Severity.II]
    [clear] = safety(e, at(780, later), "co-1", co_ppm=44.0)
    assert (clear.key, clear.active) == ("co", False)
    assert e.state_size() == 0


def test_co_interrupted_run_starts_again() -> None:
    e = RuleEngine(RULES)
    safety(e, at(0), "co-1", co_ppm=320.0)
    safety(e, at(120), "co-1", co_ppm=20.0)
    assert safety(e, at(150), "co-1", co_ppm=320.0) == []
    assert safety(e, at(300), "co-1", co_ppm=320.0) == []  # 150 s into the new run
    assert [c.severity for c in safety(e, at(330), "co-1", co_ppm=320.0)] == [Severity.I]


def test_co_time_at_level_runs_out_on_tick() -> None:
    e = RuleEngine(RULES)
    safety(e, at(0), "co-1", co_ppm=310.0)
    assert e.tick(at(179)) == []
    [c] = e.tick(at(180))
    assert (c.key, c.severity) == ("co", Severity.I)
    assert e.tick(at(240)) == []


# -- events ----------------------------------------------------------------------------------


def test_fall_and_sos_are_red_and_stay_open() -> None:
    e = RuleEngine(RULES)
    for kind in ("fall", "sos"):
        r = reading("band-1", Family.ELDER, at(0), {"heart_rate_bpm": 108.0}, kind=kind)
        [c] = e.on_reading(r, device("band-1", Family.ELDER, "h-xf-b03-u2-1201"))
        assert (c.key, c.severity, c.auto_clear, c.active) == (kind, Severity.I, False, True)
        assert (c.place, c.subject_ref, c.device_id) == (UNIT, "", "band-1")
    out = feed(
        e,
        [
            reading("band-1", Family.ELDER, at(s), {"heart_rate_bpm": 80.0, "spo2_pct": 97.0})
            for s in range(60, 3600, 60)
        ],
    )
    assert out == []  # normal readings afterwards never clear a fall


def test_smoke_alarm_event_and_flag_are_red_fire_and_never_auto_clear() -> None:
    e = RuleEngine(RULES)
    [c] = e.on_reading(
        reading("smoke-1", Family.SAFETY, at(0), {"smoke_alarm": True, "smoke_density_db_m": 0.4}),
        None,
    )
    assert (c.key, c.kind, c.severity, c.auto_clear) == ("smoke", "fire", Severity.I, False)
    [ev] = e.on_reading(
        reading(
            "smoke-1",
            Family.SAFETY,
            at(1),
            {"detector": "smoke", "smoke_alarm": True},
            kind="smoke_alarm",
        ),
        None,
    )
    assert ev.detail["event"] == "smoke_alarm"
    assert (
        e.on_reading(reading("smoke-1", Family.SAFETY, at(900), {"smoke_alarm": False}), None) == []
    )
    assert (
        e.on_reading(
            reading(
                "smoke-1", Family.SAFETY, at(901), {"smoke_alarm": False}, kind="alarm_cleared"
            ),
            None,
        )
        == []
    )


def test_gate_events_at_building_level_and_community_gate_at_community() -> None:
    e = RuleEngine(RULES)
    forced = reading(
        "gate-1",
        Family.ACCESS,
        at(0),
        {"door": "2单元门", "method": "none", "granted": False},
        kind="door_forced",
        location=UNIT_GATE,
    )
    [c] = e.on_reading(forced, None)
    assert (c.key, c.severity, c.level, c.place) == (
        "door_forced",
        Severity.II,
        PlaceLevel.BUILDING,
        BUILDING,
    )
    assert c.detail["door"] == "2单元门" and c.location.unit == ""
    breach = reading(
        "fence-1",
        Family.ACCESS,
        at(1),
        {"door": "东围墙"},
        kind="perimeter_breach",
        location=COMMUNITY_GATE,
    )
    [p] = e.on_reading(breach, None)
    assert (p.key, p.severity, p.level, p.place) == (
        "perimeter_breach",
        Severity.II,
        PlaceLevel.COMMUNITY,
        "xf",
    )


def test_door_held_open_only_past_two_minutes() -> None:
    e = RuleEngine(RULES)

    def held(values: dict[str, Any]) -> list[Condition]:
        return e.on_reading(
            reading(
                "gate-1", Family.ACCESS, at(0), values, kind="door_held_open", location=UNIT_GATE
            ),
            None,
        )

    assert held({"held_open_s": 60.0}) == []
    assert held({"held_open_s": 120.0}) == []
    [c] = held({"held_open_s": 121.0})
    assert (c.key, c.severity, c.value, c.auto_clear) == (
        "door_held_open",
        Severity.III,
        121.0,
        False,
    )
    assert [c.severity for c in held({})] == [Severity.III]  # the device's own timer decided


def test_access_subject_is_the_pseudonymous_resident_ref() -> None:
    e = RuleEngine(RULES)
    r = reading(
        "gate-1",
        Family.ACCESS,
        at(0),
        {"resident_ref": "k1:" + "a" * 26},
        kind="door_forced",
        location=UNIT_GATE,
    )
    assert e.on_reading(r, None)[0].subject_ref == "k1:" + "a" * 26


@pytest.mark.parametrize(
    ("family", "kind", "values", "key", "severity"),
    [
        (Family.SAFETY, "telemetry", {"tamper": True}, "tamper", Severity.III),
        (Family.METER, "tamper", {}, "tamper", Severity.III),
        (Family.ACCESS, "tamper", {}, "tamper", Severity.III),
        (Family.ELDER, "low_battery", {"battery_pct": 8.0}, "low_battery", Severity.IV),
        (
            Family.METER,
            "telemetry",
            {"battery_low": True, "water_m3": 5.0},
            "low_battery",
            Severity.IV,
        ),
        (Family.SAFETY, "fault", {"fault_code": 3}, "fault", Severity.IV),
        (Family.ACCESS, "fault", {}, "fault", Severity.IV),
    ],
)
def test_device_events(
    family: Family, kind: str, values: dict[str, Any], key: str, severity: Severity
) -> None:
    e = RuleEngine(RULES)
    [c] = keyed(e.on_reading(reading("d-1", family, at(0), values, kind=kind), None), key)
    assert (c.severity, c.auto_clear, c.active) == (severity, False, True)


def test_ordinary_events_and_false_flags_raise_nothing() -> None:
    e = RuleEngine(RULES)
    normal = [
        reading(
            "gate-1",
            Family.ACCESS,
            at(0),
            {"granted": True},
            kind="entry_granted",
            location=UNIT_GATE,
        ),
        reading("smoke-1", Family.SAFETY, at(0), {"self_test_ok": True}, kind="self_test"),
        reading("band-1", Family.ELDER, at(0), {"worn": True}, kind="wear_on"),
        reading("wm-1", Family.METER, at(0), {"battery_low": False, "water_m3": 10.0}),
        reading(
            "smoke-1",
            Family.SAFETY,
            at(1),
            {"tamper": False, "smoke_alarm": False, "temperature_c": 22.0},
        ),
    ]
    assert feed(e, normal) == []


# -- liveness --------------------------------------------------------------------------------


def live(
    device_id: str, family: Family, online: bool, t: int, location: Location = FLAT
) -> LivenessEvent:
    return LivenessEvent(
        device_id, family, location, online, t, "status_online" if online else "silent"
    )


@pytest.mark.parametrize(
    ("family", "severity"),
    [
        (Family.SAFETY, Severity.III),
        (Family.ELDER, Severity.III),
        (Family.METER, Severity.IV),
        (Family.ACCESS, Severity.IV),
    ],
)
def test_device_offline_by_family_and_back(family: Family, severity: Severity) -> None:
    e = RuleEngine(RULES)
    [c] = e.on_liveness(live("d-1", family, False, at(0)), device("d-1", family))
    assert (c.key, c.kind, c.severity, c.place, c.active) == (
        "offline",
        "device_offline",
        severity,
        UNIT,
        True,
    )
    assert c.detail["reason"] == "silent"
    [clear] = e.on_liveness(live("d-1", family, True, at(60)), None)
    assert (clear.key, clear.active, clear.place) == ("offline", False, UNIT)
    assert e.state_size() == 0


def test_offline_place_clears_only_when_its_last_device_is_back() -> None:
    e = RuleEngine(RULES)
    e.on_liveness(live("smoke-1", Family.SAFETY, False, at(0)), None)
    [c] = e.on_liveness(live("em-1", Family.METER, False, at(1), FLAT2), None)
    assert c.severity is Severity.III and c.detail["devices"] == 2  # the worst of the place
    assert e.on_liveness(live("smoke-1", Family.SAFETY, True, at(2)), None) == []
    assert e.on_liveness(live("never-offline", Family.METER, True, at(3)), None) == []
    [clear] = e.on_liveness(live("em-1", Family.METER, True, at(4), FLAT2), None)
    assert not clear.active


# -- water: elder alone, night leak, daily use -------------------------------------------------


def water(
    e: RuleEngine, device_id: str, t: int, total: float, location: Location = FLAT
) -> list[Condition]:
    return e.on_reading(
        reading(
            device_id,
            Family.METER,
            t,
            {"meter_type": "water", "water_m3": total},
            location=location,
        ),
        None,
    )


ELDER_REF = "k1:" + "a" * 26  # the household's pseudonym (AlertService makes real ones)


def households(device_id: str) -> tuple[str, bool] | None:
    return {"wm-elder": (ELDER_REF, True), "wm-family": ("k1:" + "b" * 26, False)}.get(device_id)


def test_elder_alone_without_water_for_twelve_hours_is_orange() -> None:
    e = RuleEngine(RULES, households=households)
    out = []
    for q in range(0, 12 * 4 + 1):  # every 15 minutes; 0.004 m³ in all: less than 0.01
        out += [
            (q, c) for c in water(e, "wm-elder", at(q * 900), 100.0 + (0.004 if q > 20 else 0.0))
        ]
    [(q, c)] = [(q, c) for q, c in out if c.key == "elder_no_water"]
    assert q == 48  # exactly 12 h, not a reading earlier
    assert (c.severity, c.kind, c.place, c.subject_ref, c.device_id) == (
        Severity.II,
        "elder_inactive",
        UNIT,
        ELDER_REF,  # the household's pseudonym, never its registry id
        "wm-elder",
    )
    assert c.value is not None and c.value < 0.01
    # repeated while it lasts, cleared once water runs again
    assert [
        c.active for c in keyed(water(e, "wm-elder", at(49 * 900), 100.004), "elder_no_water")
    ] == [True]
    [clear] = keyed(water(e, "wm-elder", at(50 * 900), 100.02), "elder_no_water")
    assert not clear.active
    assert keyed(water(e, "wm-elder", at(51 * 900), 100.02), "elder_no_water") == []


def test_elder_who_used_water_raises_nothing() -> None:
    e = RuleEngine(RULES, households=households)
    out = []
    for q in range(0, 13 * 4):
        out += water(e, "wm-elder", at(q * 900), 100.0 + (0.02 if q >= 24 else 0.0))  # used at 6 h
    assert keyed(out, "elder_no_water") == []
    out = []
    for q in range(13 * 4, 19 * 4):  # 12 h after that use: dry again
        out += water(e, "wm-elder", at(q * 900), 100.02)
    assert keyed(out, "elder_no_water") != []


def test_elder_water_is_judged_on_readings_never_on_a_guess_between_them() -> None:
    e = RuleEngine(RULES, households=households)
    for q in range(0, 12):  # hourly, then the last reading 1 h before the 12 h are up
        water(e, "wm-elder", at(q * 3600), 50.0)
        water(e, "wm-family", at(q * 3600), 50.0)
        water(e, "wm-unknown", at(q * 3600), 50.0)
    # the clock passing 12 h says nothing about the hour the meter has not reported yet
    assert keyed(e.tick(at(12 * 3600 + 60)), "elder_no_water") == []
    # that hour had water: nothing was raised, so nothing has to be cleared
    assert keyed(water(e, "wm-elder", at(12 * 3600 + 120), 50.02), "elder_no_water") == []
    # a second meter whose reading shows the 12 h dry raises it, for the elder alone only
    e = RuleEngine(RULES, households=households)
    out = []
    for q in range(0, 13):
        out += water(e, "wm-elder", at(q * 3600), 50.0)
        out += water(e, "wm-family", at(q * 3600), 50.0)
        out += water(e, "wm-unknown", at(q * 3600), 50.0)
    [c] = keyed(out, "elder_no_water")
    assert c.device_id == "wm-elder" and c.at_ns == at(12 * 3600)


def test_elder_water_needs_the_household_lookup() -> None:
    e = RuleEngine(RULES)
    out = [c for q in range(0, 14) for c in water(e, "wm-elder", at(q * 3600), 50.0)]
    assert keyed(out, "elder_no_water") == []


def night_readings(
    e: RuleEngine, device_id: str, night: int, use: dict[int, float], *, until_h: float = 6.0
) -> list[Condition]:
    """Readings every 15 min from 23:00 to `until_h` local; `use` maps a quarter index (0 =
    00:00–00:15) to m³ used in it."""
    out: list[Condition] = []
    total = 200.0
    for q in range(-4, int(until_h * 4) + 1):
        total += use.get(q - 1, 0.0)  # the reading at the end of quarter q-1
        out += water(e, device_id, night + q * 900 * NS + 7 * NS, round(total, 3))
    return out


def test_night_leak_when_water_flows_in_every_half_hour() -> None:
    e = RuleEngine(RULES)
    leak = dict.fromkeys(range(-4, 24), 0.015)  # 0.06 m³/h, a running toilet
    out = night_readings(e, "wm-1", MIDNIGHT_CST, leak)
    [c] = keyed(out, "night_leak")
    assert (c.severity, c.kind, c.place, c.active) == (Severity.III, "water_leak", UNIT, True)
    assert c.at_ns == MIDNIGHT_CST + 5 * 3600 * NS  # decided when the night ends
    assert c.detail["slots_with_flow"] == c.detail["slots"] == 10
    # the next night is dry: the leak was fixed
    out = night_readings(e, "wm-1", MIDNIGHT_CST + 86_400 * NS, {9: 0.01})
    [clear] = keyed(out, "night_leak")
    assert not clear.active


def test_normal_night_is_no_leak() -> None:
    e = RuleEngine(RULES)
    toilet = {2: 0.006, 9: 0.006, 13: 0.012, 18: 0.006}  # a few flushes
    assert keyed(night_readings(e, "wm-1", MIDNIGHT_CST, toilet), "night_leak") == []
    almost = dict.fromkeys(range(-4, 24), 0.015)
    del almost[8], almost[9]  # one half hour (02:00–02:30) without flow
    assert keyed(night_readings(e, "wm-2", MIDNIGHT_CST, almost), "night_leak") == []


def test_night_leak_is_decided_on_tick_when_the_meter_says_nothing_more() -> None:
    e = RuleEngine(RULES)
    leak = dict.fromkeys(range(-4, 24), 0.015)
    assert keyed(night_readings(e, "wm-1", MIDNIGHT_CST, leak, until_h=4.9), "night_leak") == []
    end = MIDNIGHT_CST + 5 * 3600 * NS
    # a reading spanning 05:00 may still credit the last slot: wait the longest gap (1.5 h)
    assert e.tick(end) == []
    assert e.tick(end + 5400 * NS - 1) == []
    [c] = keyed(e.tick(end + 5400 * NS), "night_leak")
    assert c.active and c.device_id == "wm-1" and c.at_ns == end
    assert keyed(e.tick(end + 3 * 3600 * NS), "night_leak") == []


@pytest.mark.parametrize(
    ("period_s", "jitter_s"), [(900, 0), (1800, 0), (1800, 170), (3600, 0), (3600, 600)]
)
def test_night_leak_seen_by_meters_reporting_less_often(period_s: int, jitter_s: int) -> None:
    e = RuleEngine(RULES)
    flow = 0.06 / 3600  # m³/s
    t, out = MIDNIGHT_CST - 2 * 3600 * NS + 123 * NS, []
    k = 0
    while t < MIDNIGHT_CST + 6 * 3600 * NS:
        total = 300.0 + flow * (t - MIDNIGHT_CST) / NS
        out += water(e, "wm-1", t, round(total, 2))
        k += 1
        t += (period_s + (jitter_s if k % 2 else -jitter_s)) * NS
    assert [c.active for c in keyed(out, "night_leak")] == [True]


@pytest.mark.parametrize("period_s", [900, 1800])
def test_hourly_use_at_night_is_no_leak(period_s: int) -> None:
    e = RuleEngine(RULES)
    t, total, out = MIDNIGHT_CST - 2 * 3600 * NS + 300 * NS, 300.0, []
    while t < MIDNIGHT_CST + 6 * 3600 * NS:
        minute = (t - MIDNIGHT_CST) // NS // 60 % 60
        if minute < period_s // 60:  # one flush an hour, just after the hour
            total += 0.006 * period_s / 3600
        out += water(e, "wm-1", t, round(total, 3))
        t += period_s * NS
    assert keyed(out, "night_leak") == []


def test_more_than_two_cubic_metres_a_day() -> None:
    e = RuleEngine(RULES)
    total, out = 300.0, []
    for q in range(0, 96):  # one local day, 00:00–23:45, 0.025 m³ a quarter = 2.4 m³
        total += 0.025
        out += [(q, c) for c in water(e, "wm-1", MIDNIGHT_CST + q * 900 * NS + NS, round(total, 3))]
    hits = [(q, c) for q, c in out if c.key == "daily_use"]
    assert hits[0][0] == 81  # 81 quarters × 0.025 = 2.025 m³ since the day's first reading
    q, c = hits[0]
    assert (c.severity, c.kind, c.place, c.auto_clear) == (
        Severity.III,
        "high_water_use",
        UNIT,
        False,
    )
    assert all(c.active for _, c in hits)
    # a new day: no clear (a person calls the family), and ordinary use raises nothing
    nxt = MIDNIGHT_CST + 86_400 * NS
    assert keyed(water(e, "wm-1", nxt + 60 * NS, round(total + 0.01, 3)), "daily_use") == []
    assert keyed(water(e, "wm-1", nxt + 3600 * NS, round(total + 0.3, 3)), "daily_use") == []


# -- composites ------------------------------------------------------------------------------


def smoke(e: RuleEngine, device_id: str, location: Location, t: int) -> list[Condition]:
    return e.on_reading(
        reading(
            device_id,
            Family.SAFETY,
            t,
            {"smoke_alarm": True, "detector": "smoke"},
            location=location,
        ),
        None,
    )


def test_smoke_in_two_units_of_a_building_is_one_fire_incident() -> None:
    e = RuleEngine(RULES)
    [first] = smoke(e, "smoke-u2", FLAT, at(0))
    assert first.incident_of == ""
    out = smoke(e, "smoke-u3", OTHER_UNIT, at(90))
    incident, *members = out
    assert (incident.key, incident.kind, incident.severity) == (
        "fire_incident",
        "building_fire",
        Severity.I,
    )
    assert (incident.level, incident.place, incident.auto_clear) == (
        PlaceLevel.BUILDING,
        BUILDING,
        False,
    )
    assert incident.detail["units"] == ["u2", "u3"]
    assert {(m.key, m.device_id, m.incident_of) for m in members} == {
        ("smoke", "smoke-u2", "fire_incident"),  # the first unit's alarm joins the incident
        ("smoke", "smoke-u3", "fire_incident"),
    }
    assert all(m.detail["incident_place"] == BUILDING for m in members)
    # later alarms in the building carry the tag too
    later = smoke(e, "smoke-u2", FLAT, at(150))
    assert [c.key for c in later] == ["fire_incident", "smoke"]
    assert later[1].incident_of == "fire_incident"


def test_two_detectors_in_one_unit_are_no_building_fire() -> None:
    e = RuleEngine(RULES)
    out = smoke(e, "smoke-a", FLAT, at(0)) + smoke(e, "smoke-b", FLAT2, at(60))
    assert keyed(out, "fire_incident") == [] and all(c.incident_of == "" for c in out)


def test_units_of_different_buildings_or_far_apart_in_time_are_no_incident() -> None:
    e = RuleEngine(RULES)
    out = smoke(e, "smoke-a", FLAT, at(0)) + smoke(e, "smoke-b", OTHER_BUILDING, at(60))
    assert keyed(out, "fire_incident") == []
    e = RuleEngine(RULES)
    out = smoke(e, "smoke-a", FLAT, at(0)) + smoke(e, "smoke-b", OTHER_UNIT, at(601))
    assert keyed(out, "fire_incident") == []
    assert e.tick(at(1300)) == [] and e.state_size() == 0  # the window passed: state forgotten


def test_heat_counts_towards_a_building_fire() -> None:
    e = RuleEngine(RULES)
    smoke(e, "smoke-a", FLAT, at(0))
    safety(e, at(10), "heat-b", OTHER_UNIT, temperature_c=70.0)
    out = safety(e, at(20), "heat-b", OTHER_UNIT, temperature_c=72.0)
    assert out[0].key == "fire_incident"
    assert {c.key: c.incident_of for c in out[1:]} == {
        "smoke": "fire_incident",
        "heat": "fire_incident",
    }


def test_low_spo2_with_abnormal_heart_rate_is_critical_at_once() -> None:
    e = RuleEngine(RULES)
    [c] = keyed(elder(e, at(0), spo2_pct=90.0, heart_rate_bpm=125.0), "vital_signs")
    assert (c.severity, c.kind, c.place, c.subject_ref, c.auto_clear) == (
        Severity.I,
        "vital_signs_critical",
        UNIT,
        "",
        True,
    )
    [again] = keyed(elder(e, at(60), spo2_pct=91.0, heart_rate_bpm=45.0), "vital_signs")
    assert again.active
    [clear] = keyed(elder(e, at(120), spo2_pct=95.0, heart_rate_bpm=72.0), "vital_signs")
    assert not clear.active


def test_vital_signs_need_both_within_the_window() -> None:
    e = RuleEngine(RULES)
    assert keyed(elder(e, at(0), spo2_pct=90.0, heart_rate_bpm=100.0), "vital_signs") == []
    assert (
        keyed(elder(e, at(0), "band-2", spo2_pct=95.0, heart_rate_bpm=130.0), "vital_signs") == []
    )
    # separate readings: low SpO2, then a slow heart within 120 s
    assert keyed(elder(e, at(0), "band-3", spo2_pct=90.0), "vital_signs") == []
    assert [
        c.active for c in keyed(elder(e, at(100), "band-3", heart_rate_bpm=45.0), "vital_signs")
    ] == [True]
    # too far apart
    assert keyed(elder(e, at(0), "band-4", spo2_pct=90.0), "vital_signs") == []
    assert keyed(elder(e, at(200), "band-4", heart_rate_bpm=45.0), "vital_signs") == []


# -- bad rules files -------------------------------------------------------------------------

GOOD_GAS = "{id: gas, type: threshold, family: safety, field: gas_lel_pct, levels: [{at_or_above: 25, severity: II}]}"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("version: 2\nrules: [" + GOOD_GAS + "]", r"version"),
        ("rules: [" + GOOD_GAS + "]", r"version: Field required"),
        ("version: 1\nrules: []", r"rules: List should have at least 1 item"),
        (
            "version: 1\nrules: [{id: gas, type: threshold, family: safety, field: gas_lel_pct, levels: [{at_or_above: 25, severity: V}]}]",
            r"rules\[0\] \(gas\)\.levels\[0\]\.severity",
        ),
        (
            "version: 1\nrules: [{id: gas, type: threshold, family: safety, field: gas_lel_pct, levels: [{at_or_above: 25, below: 5, severity: I}]}]",
            r"exactly one of",
        ),
        (
            "version: 1\nrules: [{id: gas, type: threshold, family: safety, field: gas_pct, levels: [{at_or_above: 25, severity: I}]}]",
            r"'gas_pct' is not a field of family safety",
        ),
        (
            "version: 1\nrules: [{id: gas, type: threshold, family: safety, field: detector, levels: [{at_or_above: 25, severity: I}]}]",
            r"not a number field",
        ),
        (
            "version: 1\nrules: [{id: gas, type: threshold, family: safety, field: gas_lel_pct, colour: red, levels: [{at_or_above: 25, severity: I}]}]",
            r"colour: Extra inputs are not permitted",
        ),
        (
            "version: 1\nrules: [{id: gas, type: threshold, family: safety, field: gas_lel_pct, levels: [{at_or_above: '25', severity: I}]}]",
            r"valid number",
        ),
        (
            "version: 1\nrules: [{id: gas, type: threshold, family: safety, field: gas_lel_pct, levels: [{at_or_above: 25, severity: I, min_duration_s: -1}]}]",
            r"min_duration_s",
        ),
        ("version: 1\nrules: [{id: x, type: thresh}]", r"does not match any of the expected tags"),
        ("version: 1\nrules: [{id: x, type: absence, check: nobody, severity: I}]", r"'nobody'"),
        (
            "version: 1\nrules: [{id: f, type: event, family: elder, kinds: {fal: I}}]",
            r"'fal' is not an event of elder",
        ),
        (
            "version: 1\nrules: [{id: f, type: event, family: elder, kinds: {}}]",
            r"needs kinds or flags",
        ),
        (
            "version: 1\nrules: [{id: f, type: event, family: elder, kinds: {fall: I}, auto_clear: true}]",
            r"auto_clear",
        ),
        (
            "version: 1\nrules: [{id: f, type: event, family: meter, flags: {water_m3: IV}}]",
            r"not a true/false field",
        ),
        ("version: 1\nrules: [" + GOOD_GAS + ", " + GOOD_GAS + "]", r"'gas' is used twice"),
        (
            "version: 1\nrules: ["
            + GOOD_GAS
            + ", {id: gas2, key: gas, type: event, family: elder, kinds: {fall: I}}]",
            r"also the key of rule 'gas'",
        ),
        (
            "version: 1\nrules: [{id: b, type: composite, check: building_fire, members: [nope]}]",
            r"no rule 'nope'",
        ),
        (
            "version: 1\nrules: ["
            + GOOD_GAS
            + ", {id: b, type: composite, check: building_fire, members: [gas], level: unit}]",
            r"level: building",
        ),
        (
            "version: 1\nrules: [{id: n, type: anomaly, check: night_flow, start: '00:00', end: '05:10', severity: III}]",
            r"30-min slots",
        ),
        (
            "version: 1\nrules: [{id: n, type: anomaly, check: night_flow, start: '25:00', severity: III}]",
            r"start",
        ),
        (
            "version: 1\nrules: [{id: o, type: absence, check: offline, severity: {plumbing: III}}]",
            r"severity",
        ),
        ("version: 1\nrules: [{id: Gas, type: event, family: elder, kinds: {fall: I}}]", r"id"),
        ("version: 1\nrules:\n  - id: a\n    id: b\n", r"duplicate key 'id'"),
        ("version: [1\n", r"not valid YAML"),
        ("- just a list\n", r"must be a mapping"),
    ],
)
def test_bad_rules_files_are_refused_naming_the_path(
    tmp_path: Path, body: str, message: str
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as info:
        load_rules(path)
    assert str(path) in str(info.value)


def test_missing_rules_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_rules(tmp_path / "absent.yaml")


def test_a_custom_rules_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("version: 1\nrules: [" + GOOD_GAS + "]\n", encoding="utf-8")
    ruleset = load_rules(path)
    assert ruleset.source == str(path) and [r.id for r in ruleset.rules] == ["gas"]
    e = RuleEngine(ruleset)
    assert [c.severity for c in safety(e, at(0), gas_lel_pct=30.0)] == [Severity.II]  # no minimum


def test_severity_colours_are_accepted() -> None:
    ruleset = parse_rules(
        "version: 1\nrules: [{id: f, type: event, family: elder, kinds: {fall: red, sos: orange}}]"
    )
    rule = ruleset.rules[0]
    assert isinstance(rule, EventRule) and rule.kinds == {"fall": Severity.I, "sos": Severity.II}


# -- bounded state ---------------------------------------------------------------------------


def test_state_stays_bounded_for_ten_thousand_devices() -> None:
    e = RuleEngine(RULES, households=lambda d: ("h-" + d, d.endswith("7")))
    n = 10_000

    def loc(i: int) -> Location:
        return Location("xf", "g01", f"b{i // 100:03d}", f"u{i % 4 + 1}", f"{i % 25:04d}")

    # every detector alarms and clears; every band goes off and back; every meter reports
    for i in range(n):
        safety(e, at(0), f"gas-{i}", loc(i), gas_lel_pct=30.0)
    assert e.state_size() == n
    for i in range(n):
        safety(e, at(20), f"gas-{i}", loc(i), gas_lel_pct=40.0)
    for i in range(n):
        safety(e, at(40), f"gas-{i}", loc(i), gas_lel_pct=0.0)
        e.on_liveness(live(f"band-{i}", Family.ELDER, False, at(41), loc(i)), None)
    for i in range(n):
        e.on_liveness(live(f"band-{i}", Family.ELDER, True, at(42), loc(i)), None)
        elder(e, at(43), f"band-{i}", heart_rate_bpm=72.0, spo2_pct=97.0)
    assert e.state_size() == 0
    for q in range(4):
        for i in range(n):
            water(e, f"wm-{i}", at(100 + q * 900), 100.0 + q * 0.01, loc(i))
    meters = e.state_size()
    # night and daily state per meter, the elders' baselines, the night being watched
    assert meters <= 2 * n + n // 10 + 2
    e.tick(at(3 * 86_400))  # days later, every meter silent: all forgotten
    assert e.state_size() == 0


def test_stores_have_a_hard_cap() -> None:
    e = RuleEngine(RULES, max_states=100)
    for i in range(1000):
        safety(e, at(0), f"gas-{i}", gas_lel_pct=30.0)
    assert e.state_size() <= 100


def test_ruleset_is_reusable_across_engines() -> None:
    ruleset = RuleSet("test", RULES.rules)
    a, b = RuleEngine(ruleset), RuleEngine(ruleset)
    safety(a, at(0), gas_lel_pct=30.0)
    assert safety(b, at(10), gas_lel_pct=30.0) == []  # engines share no state


# -- the simulator's trouble through the shipped rules -------------------------------------


def test_simulated_scenarios_raise_exactly_their_alerts() -> None:
    from dataclasses import replace

    from adapters.registry import default_registry
    from simulators.community import build_community
    from simulators.scenarios import inject
    from simulators.schedule import Schedule, SimClock

    community = build_community(100, seed=2, community="xf")
    clock = SimClock.plan(100.0, 90.0, real_start_ns=1_780_000_000 * NS)  # 2.5 sim hours
    start, homes = clock.sim_start_s, community.households
    building = homes[0].building
    elder_home = next(h for h in homes if h.elder_alone)
    injections = [
        inject(community, "gas-leak", homes[3].place, start + 600),
        inject(community, "elder-fall", elder_home.place, start + 1200),
        inject(community, "gate-forced", f"{building}/u2", start + 1800),
        inject(community, "smoke-spreading", building, start + 2400),
    ]
    registry = default_registry("xf")
    infos = {d.device_id: d.info() for d in community.devices}
    e = RuleEngine(RULES)
    out: list[Condition] = []
    newest = 0
    for message in Schedule(community, clock, seed=2, injections=injections):
        assert message.family is not None
        for r in registry.decode(message.topic, message.payload):
            r = replace(r, time_ns=r.time_ns or message.time_s * NS)  # DL/T 645: no clock
            info = infos[r.device_id]
            out += e.on_reading(r.with_location(info.location), info)
            newest = max(newest, r.time_ns)
        out += e.tick(newest)
    assert {c.key for c in out} == {"gas_lel", "fall", "door_forced", "smoke", "fire_incident"}
    gas = keyed(out, "gas_lel")
    assert [c.severity for c in gas if c.active][:1] == [Severity.II]
    assert Severity.I in {c.severity for c in gas}
    assert [c.active for c in gas][-1] is False and sum(not c.active for c in gas) == 1
    assert {c.location.unit for c in gas} == {homes[3].unit}
    assert {c.place for c in keyed(out, "fire_incident")} == {f"xf/{homes[0].grid}/{building}"}
    assert {c.incident_of for c in keyed(out, "smoke")} == {"", "fire_incident"}
    assert keyed(out, "fall")[0].subject_ref == ""  # the device id leads to the flat
