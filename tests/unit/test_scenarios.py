"""Scenarios: each produces what its name says, at the named place only, and what the gateway
must store or reject is counted in advance."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from devices.families import Channel, Family
from devices.reading import Reading
from simulators import formats
from simulators.community import Community, Equipment, build_community
from simulators.scenarios import (
    GAS_LEVELS,
    SCENARIOS,
    ScenarioError,
    gas_leak_lel,
    inject,
    offline_span_s,
    resolve_place,
)
from simulators.schedule import NS, Schedule, Scheduled, SimClock
from tests.support.fake_gateway import REAL_START_NS, FakeGateway

SPEED = 600.0


@pytest.fixture(scope="module")
def community() -> Community:
    return build_community(200, seed=21)


def _clock(duration_s: float = 60, speed: float = SPEED) -> SimClock:
    return SimClock.plan(speed, duration_s, real_start_ns=REAL_START_NS)


def _run(
    community: Community, name: str, place: str, offset_s: int, *, duration_s: float = 60,
    speed: float = SPEED, **options: object,
) -> tuple[SimClock, list[Scheduled], list[Scheduled]]:  # fmt: skip
    """(clock, all messages, the scenario's messages)."""
    clock = _clock(duration_s, speed)
    injection = inject(community, name, place, clock.sim_start_s + offset_s, **options)
    msgs = list(Schedule(community, clock, seed=21, injections=[injection]))
    return clock, msgs, [m for m in msgs if m.scenario == name]


def _decode(m: Scheduled) -> list[Reading]:
    return formats.decode(m.adapter, m.topic, m.payload)


def _elder_place(community: Community) -> str:
    return next(h.place for h in community.households if h.elder_alone)


def test_places_resolve_to_buildings_units_households_and_devices(community: Community) -> None:
    assert {h.building for h in resolve_place(community, "b02").households} == {"b02"}
    unit = resolve_place(community, "b02/u3")
    assert {(h.building, h.unit) for h in unit.households} == {("b02", "u3")}
    home = community.households[5]
    assert resolve_place(community, home.place).households == (home,)
    meter = community.household_device(home.id, Equipment.ELECTRICITY_METER)
    assert meter is not None and resolve_place(community, meter.device_id).device == meter
    for bad in ("b99", "b02/u9", "b02/u3/9999", "a/b/c/d"):
        with pytest.raises(ScenarioError):
            resolve_place(community, bad)
    with pytest.raises(ScenarioError, match="unknown scenario"):
        inject(community, "meteor", "b01", 0)
    ordinary = next(h for h in community.households if not h.elder_alone)
    with pytest.raises(ScenarioError):
        inject(community, "elder-fall", ordinary.place, 0)  # no wristband there
    with pytest.raises(ScenarioError):
        inject(community, "gas-leak", meter.device_id, 0)  # a meter is no gas detector


def test_gas_leak_ramps_to_60_percent_lel_with_two_alarms(community: Community) -> None:
    home = community.households[30]
    detector = community.household_device(home.id, Equipment.GAS_DETECTOR)
    assert detector is not None
    clock, msgs, scen = _run(community, "gas-leak", home.place, 600)
    assert {m.device_id for m in scen} == {detector.device_id}
    telemetry: list[tuple[int, float]] = []
    alarms: list[tuple[int, float]] = []
    cleared = 0
    for m in scen:
        for r in _decode(m):
            if r.kind == "telemetry" and m.label == "telemetry":  # a vendor alarm carries one too
                telemetry.append((m.time_s, float(r.values["gas_lel_pct"])))
            elif r.kind == "gas_alarm":
                alarms.append((m.time_s, float(r.values["gas_lel_pct"])))
            elif r.kind == "alarm_cleared":
                cleared += 1
    start = clock.sim_start_s + 600
    assert telemetry[0] == (start, gas_leak_lel(0))
    assert [b - a for (a, _), (b, _) in itertools.pairwise(telemetry[:10])] == [60] * 9
    assert max(v for _, v in telemetry) == 60.0
    assert any(29.0 <= v <= 31.0 for _, v in telemetry)
    assert [v >= level for (_, v), level in zip(alarms, GAS_LEVELS, strict=True)] == [True, True]
    assert cleared == 1
    # nobody else's gas detector goes above a trace
    for m in msgs:
        if m.family is Family.SAFETY and m.device_id != detector.device_id:
            for r in _decode(m):
                assert float(r.values.get("gas_lel_pct", 0)) < 5


def test_smoke_spreads_through_several_units_of_one_building(community: Community) -> None:
    _, _, scen = _run(community, "smoke-spreading", "b02/u2", 300, duration_s=10)
    alarms = [m for m in scen if m.label == "smoke_alarm"]
    devices = {m.device_id for m in alarms}
    assert len(alarms) == len(devices) == 6
    places = {(d.location.building, d.location.unit) for d in map(community.device, devices) if d}
    assert {b for b, _ in places} == {"b02"} and len(places) == 3
    assert alarms[0].time_s < alarms[-1].time_s  # one after another
    first = community.device(alarms[0].device_id)
    assert first is not None and first.location.unit == "u2"
    assert {m.device_id for m in scen} == devices
    assert sum(m.label == "alarm_cleared" for m in scen) == 6


def test_elder_fall_and_sos_come_from_that_elders_wristband(community: Community) -> None:
    place = _elder_place(community)
    band = community.household_device(resolve_place(community, place).households[0].id,
                                      Equipment.WEARABLE)  # fmt: skip
    assert band is not None
    _, _, fall = _run(community, "elder-fall", place, 600)
    assert {m.device_id for m in fall} == {band.device_id}
    events = [m for m in fall if m.label == "fall"]
    assert len(events) == 1
    (event,) = _decode(events[0])
    assert event.channel is Channel.EVENT and event.kind == "fall"
    after = events[0].time_s + 180
    lying = [
        r for m in fall if m.label == "telemetry" for r in _decode(m) if r.time_ns > after * NS
    ]
    assert len(lying) >= 20 and all(r.values["heart_rate_bpm"] >= 95 for r in lying)
    _, _, sos = _run(community, "elder-sos", band.device_id, 600)
    assert [(m.device_id, m.label) for m in sos] == [(band.device_id, "sos")]


def test_elder_inactive_means_no_water_for_more_than_12_hours(community: Community) -> None:
    place = _elder_place(community)
    home = resolve_place(community, place).households[0]
    meter = community.household_device(home.id, Equipment.WATER_METER)
    assert meter is not None
    _, msgs, scen = _run(community, "elder-inactive", place, 3600, duration_s=45, speed=1200)
    values = [(m.time_s, float(_decode(m)[0].values["water_m3"])) for m in scen]
    assert {m.device_id for m in scen} == {meter.device_id}
    assert values[-1][0] - values[0][0] >= 12 * 3600
    assert len({v for _, v in values}) == 1  # not a drop drawn
    before = [m for m in msgs if m.device_id == meter.device_id and m.time_s < values[0][0]]
    assert before  # it reported normally until then


def test_water_leak_shows_flow_in_every_half_hour_of_the_night(community: Community) -> None:
    home = community.households[77]
    meter = community.household_device(home.id, Equipment.WATER_METER)
    assert meter is not None
    _, _, scen = _run(community, "water-leak", home.place, 0, duration_s=30, speed=1200, hours=9)
    points = [(m.time_s, float(_decode(m)[0].values["water_m3"])) for m in scen]
    assert {m.device_id for m in scen} == {meter.device_id}
    assert len(points) >= 35  # 9 simulated hours of 15-minute reports
    for (t0, v0), (t2, v2) in zip(points, points[2:], strict=False):
        assert t2 - t0 <= 1900 and v2 - v0 >= 0.01  # every half hour, day and night


def test_gate_forced_on_the_named_units_door(community: Community) -> None:
    gate = community.unit_gate("b02", "u1")
    assert gate is not None
    _, _, scen = _run(community, "gate-forced", "b02/u1", 120, duration_s=5)
    assert [(m.device_id, m.label) for m in scen] == [(gate.device_id, "door_forced")]
    (r,) = _decode(scen[0])
    assert r.kind == "door_forced" and r.values["granted"] is False


def test_device_offline_goes_silent_then_returns(community: Community) -> None:
    home = community.households[3]
    meter = community.household_device(home.id, Equipment.ELECTRICITY_METER)
    assert meter is not None and meter.power == "mains"
    span = 4 * 3600
    clock, msgs, scen = _run(
        community, "device-offline", meter.device_id, 1800, duration_s=40, span=span, announce=True
    )
    start = clock.sim_start_s + 1800
    mine = [m for m in msgs if m.device_id == meter.device_id]
    assert [m.label for m in scen] == ["status:offline", "status:online"]
    assert [m.time_s for m in scen] == [start, start + span]
    assert all(m.adapter == "gridgate_json" for m in scen)
    silent = [m for m in mine if start < m.time_s < start + span]
    assert silent == []
    assert any(m.time_s > start + span and m.label == "telemetry" for m in mine)
    assert any(m.time_s < start and m.label == "telemetry" for m in mine)
    # only that device falls silent
    others = Counter(m.device_id for m in msgs if start < m.time_s < start + span)
    meters = community.devices_of(Equipment.ELECTRICITY_METER)
    assert all(others[d.device_id] >= 14 for d in meters if d.device_id != meter.device_id)


def test_default_offline_span_outlasts_the_gateways_real_timeout() -> None:
    assert offline_span_s("mains", 600) / 600 > 600
    assert offline_span_s("mains", 1) == 1800
    assert offline_span_s("battery", 60) / 60 > 4 * 3600


def test_hostile_messages_get_their_expected_rejections(community: Community) -> None:
    _, msgs, scen = _run(community, "hostile", "b01/u1", 300, duration_s=5)
    gw = FakeGateway.of(community)
    expected: Counter[str] = Counter()
    stored: Counter[str] = Counter()
    for m in msgs:
        if m.reason is not None:
            expected[m.reason] += 1
        elif m.family is not None:
            stored[m.family.value] += m.points
            stored["device_status"] += m.status_points
        gw.receive(m.topic, m.payload, m.due_real_ns)
    assert gw.rejected == expected
    assert len(expected) >= 12 and expected["oversize"] == 3
    assert expected["unregistered"] >= 2 and expected["family_mismatch"] == 1
    for measurement, n in stored.items():
        assert gw.count(measurement) == n, measurement
    legal = [m for m in scen if m.reason is None]
    assert {m.label for m in legal} == {
        "hostile:registered_injection_door",
        "hostile:registered_injection_field",
    }
    doors = [r for r in gw.accepted if r.values.get("door", "").startswith('北门",zone=x')]
    assert len(doors) == 1  # stored under a registered gate, metacharacters and all


def test_every_scenario_is_deterministic(community: Community) -> None:
    place = _elder_place(community)
    clock = _clock(5)
    for name in SCENARIOS:
        where = "b01/u1" if name in ("smoke-spreading", "gate-forced", "hostile") else place
        options = {"announce": True} if name == "device-offline" else {}
        a = inject(community, name, where, clock.sim_start_s + 60, speed=SPEED, **options)
        b = inject(community, name, where, clock.sim_start_s + 60, speed=SPEED, **options)
        assert a.log() == b.log()
        ma = [m for m in Schedule(community, clock, injections=[a]) if m.scenario == name]
        mb = [m for m in Schedule(community, clock, injections=[b]) if m.scenario == name]
        assert ma == mb and ma, name


def test_scenario_messages_never_come_from_the_future(community: Community) -> None:
    clock = _clock(10, 3600)
    place = _elder_place(community)
    injections = [
        inject(community, "gas-leak", "b01/u1", clock.sim_start_s + 100),
        inject(community, "elder-fall", place, clock.sim_start_s + 200),
        inject(community, "hostile", "b02", clock.sim_start_s + 300),
    ]
    gw = FakeGateway.of(community)
    for m in Schedule(community, clock, injections=injections):
        gw.receive(m.topic, m.payload, m.due_real_ns)
        assert m.time_s * NS < m.due_real_ns
    assert "future_timestamp" in gw.rejected and gw.rejected["future_timestamp"] == 1
    assert "stale_timestamp" in gw.rejected and gw.rejected["stale_timestamp"] == 1


def test_alarm_storm_flaps_every_detector_of_the_place_for_its_span(community: Community) -> None:
    clock, _, scen = _run(community, "alarm-storm", "b01", 120, duration_s=10, span=360)
    detectors = {
        d.device_id
        for h in community.households
        if h.building == "b01"
        for eq in (Equipment.GAS_DETECTOR, Equipment.SMOKE_DETECTOR)
        if (d := community.household_device(h.id, eq)) is not None
    }
    assert {m.device_id for m in scen} == detectors
    start = clock.sim_start_s + 120
    for device in sorted(detectors)[:5]:
        phases = []
        for m in (m for m in scen if m.device_id == device and m.label == "telemetry"):
            [r] = [r for r in _decode(m) if r.kind == "telemetry"]
            high = float(r.values.get("gas_lel_pct", 0)) >= 50 or bool(r.values.get("smoke_alarm"))
            phases.append((m.time_s - start, high))
        assert all(start_off < 360 for start_off, _ in phases)  # the storm's span only
        # every minute: two in alarm, one normal, again and again
        assert [h for _, h in phases][:6] == [True, True, False, True, True, False]
    # nothing outside b01 flaps
    assert all(community.device(m.device_id).location.building == "b01" for m in scen)  # type: ignore[union-attr]
