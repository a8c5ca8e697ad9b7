"""The community's schedule: a clock that never runs ahead, cadences, continuous state, and
counts that predict what the gateway stores — checked against an emulated gateway that uses
the real adapters, registry rules, privacy and point encoder (no broker, no InfluxDB)."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable

import pytest

from adapters.base import RECEIVE_TIME
from devices.families import Family
from simulators import formats
from simulators.community import Community, Equipment, build_community
from simulators.schedule import (
    CLOCK_MARGIN_S,
    MAX_LAG_S,
    NS,
    Schedule,
    Scheduled,
    SimClock,
    local_hour,
)
from tests.support.fake_gateway import MAX_PAST_S, REAL_START_NS, FakeGateway


def run(
    community: Community,
    *,
    speed: float,
    duration_s: float,
    seed: int = 0,
    injections: Iterable[object] = (),
    verify: bool = False,
) -> tuple[Schedule, list[Scheduled]]:
    clock = SimClock.plan(speed, duration_s, real_start_ns=REAL_START_NS)
    schedule = Schedule(
        community,
        clock,
        seed=seed,
        formats=formats.Formats(verify=verify),
        injections=injections,  # type: ignore[arg-type]
    )
    return schedule, list(schedule)


@pytest.fixture(scope="module")
def small() -> Community:
    return build_community(240, seed=11)


@pytest.fixture(scope="module")
def ten_hours(small: Community) -> tuple[Schedule, list[Scheduled]]:
    return run(small, speed=600, duration_s=60, seed=11, verify=True)


# -- the clock ------------------------------------------------------------------------------


@pytest.mark.parametrize("speed", [0.5, 1, 60, 600, 3600])
@pytest.mark.parametrize("duration", [1.0, 60.0, 600.0])
def test_simulated_time_never_runs_ahead_of_the_real_clock(speed: float, duration: float) -> None:
    clock = SimClock.plan(speed, duration, real_start_ns=REAL_START_NS)
    assert clock.sim_end_s is not None
    for k in range(11):
        real_ns = REAL_START_NS + int(duration * NS * k / 10)
        assert clock.sim_s(real_ns) <= real_ns / NS - CLOCK_MARGIN_S + 1e-6
        assert real_ns / NS - clock.sim_s(real_ns) < MAX_PAST_S  # never too old either
    assert clock.sim_end_s - clock.sim_start_s == int(speed * duration)
    assert clock.real_ns(clock.sim_s(REAL_START_NS + 123 * NS)) == pytest.approx(
        REAL_START_NS + 123 * NS, abs=2
    )


def test_too_long_accelerated_runs_are_refused_and_unbounded_ones_stop_in_time() -> None:
    with pytest.raises(ValueError, match="at most"):
        SimClock.plan(600, 3 * 3600, real_start_ns=REAL_START_NS)
    clock = SimClock.plan(600, None, real_start_ns=REAL_START_NS)
    assert clock.sim_start_s == REAL_START_NS // NS - MAX_LAG_S
    assert clock.sim_end_s is not None
    end_real = clock.real_ns(clock.sim_end_s)
    assert clock.sim_end_s <= end_real / NS - CLOCK_MARGIN_S + 1
    assert SimClock.plan(1, None, real_start_ns=REAL_START_NS).sim_end_s is None
    with pytest.raises(ValueError):
        SimClock.plan(0, 10)


# -- the stream -----------------------------------------------------------------------------


def test_messages_come_in_due_order_and_never_from_the_future(
    ten_hours: tuple[Schedule, list[Scheduled]],
) -> None:
    schedule, msgs = ten_hours
    clock = schedule.clock
    assert len(msgs) > 10_000
    assert all(a.due_real_ns <= b.due_real_ns for a, b in itertools.pairwise(msgs))
    for m in msgs:
        assert clock.sim_start_s <= m.time_s < clock.sim_end_s  # type: ignore[operator]
        assert m.due_real_ns == clock.real_ns(m.time_s)
        for r in formats.decode(m.adapter, m.topic, m.payload):
            if r.time_ns != RECEIVE_TIME:
                assert r.time_ns <= m.time_s * NS  # a batch holds earlier samples
                assert r.time_ns + CLOCK_MARGIN_S * NS <= m.due_real_ns  # behind the real clock


def test_at_3600x_nothing_is_from_the_future_or_too_old() -> None:
    community = build_community(60, seed=2)
    _, msgs = run(community, speed=3600, duration_s=60)  # 60 simulated hours
    gw = FakeGateway.of(community)
    for m in msgs:
        gw.receive(m.topic, m.payload, m.due_real_ns)
    assert gw.rejected == Counter()
    assert {m.family for m in msgs} == set(Family)


def test_the_schedule_is_deterministic(small: Community) -> None:
    _, a = run(small, speed=600, duration_s=5, seed=4)
    _, b = run(small, speed=600, duration_s=5, seed=4)
    _, c = run(small, speed=600, duration_s=5, seed=5)
    assert a == b
    assert [m.payload for m in a] != [m.payload for m in c]


def test_every_message_decodes_into_its_family_and_the_counts_predict_storage(
    small: Community, ten_hours: tuple[Schedule, list[Scheduled]]
) -> None:
    _, msgs = ten_hours
    gw = FakeGateway.of(small)
    expected: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    for m in msgs:
        assert m.family is not None and m.reason is None
        readings = gw.receive(m.topic, m.payload, m.due_real_ns)
        assert readings, m.label
        assert {r.family for r in readings} == {m.family}
        assert {r.device_id for r in readings} == {m.device_id}
        expected[m.family.value] += m.points
        expected["device_status"] += m.status_points
        lines[m.family.value] += m.lines
        assert m.lines == len(readings)
    assert gw.rejected == Counter()
    for measurement, n in expected.items():
        assert gw.count(measurement) == n, measurement
    assert sum(lines.values()) == len(gw.accepted)
    # DL/T 645: one frame per field, all at the meter clock sent along, merged into one point
    dlt = [m for m in msgs if m.adapter == "dlt645" and m.label == "telemetry"]
    assert dlt and all(m.lines == 4 and m.points == 1 for m in dlt)
    # a batching wristband: five samples, five points
    band = [m for m in msgs if m.adapter == "vendor_wearable"]
    assert band and all(m.points == 5 for m in band)


def test_every_device_reports_with_its_location(
    small: Community, ten_hours: tuple[Schedule, list[Scheduled]]
) -> None:
    _, msgs = ten_hours
    seen = {m.device_id for m in msgs}
    assert seen == {d.device_id for d in small.devices}
    for m in msgs:
        if m.adapter == "gridgate_json":  # the only format that carries a place
            device = small.device(m.device_id)
            assert device is not None
            (r,) = formats.decode(m.adapter, m.topic, m.payload)
            assert r.location == device.location


def test_cadences_are_respected(
    small: Community, ten_hours: tuple[Schedule, list[Scheduled]]
) -> None:
    _, msgs = ten_hours
    telemetry: dict[str, list[int]] = defaultdict(list)
    beats: dict[str, list[int]] = defaultdict(list)
    for m in msgs:
        if m.label == "telemetry":
            telemetry[m.device_id].append(m.time_s)
        elif m.label == "status:heartbeat":
            beats[m.device_id].append(m.time_s)
    bounds = {
        Equipment.ELECTRICITY_METER: (880, 920),
        Equipment.WATER_METER: (880, 920),
        Equipment.GAS_DETECTOR: (1740, 1860),
        Equipment.SMOKE_DETECTOR: (1740, 1860),
    }
    for d in small.devices:
        times = telemetry[d.device_id]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        if d.equipment in bounds:
            lo, hi = bounds[d.equipment]
            assert gaps and all(lo <= g <= hi for g in gaps), (d.equipment, gaps)
        elif d.equipment is Equipment.WEARABLE:
            expected = 300 if d.adapter == "vendor_wearable" else 60  # five samples an upload
            assert gaps and all(g == expected for g in gaps)
        if d.equipment is Equipment.SMOKE_DETECTOR:  # status beats every 2 h
            hb = [b - a for a, b in itertools.pairwise(beats[d.device_id])]
            assert hb and all(7000 <= g <= 7200 for g in hb)


def test_one_message_per_device_and_second(ten_hours: tuple[Schedule, list[Scheduled]]) -> None:
    _, msgs = ten_hours
    keys = Counter((m.device_id, m.time_s) for m in msgs)
    assert max(keys.values()) == 1


def test_meters_only_count_up(ten_hours: tuple[Schedule, list[Scheduled]]) -> None:
    _, msgs = ten_hours
    last: dict[tuple[str, str], float] = {}
    steps = 0
    for m in msgs:
        for r in formats.decode(m.adapter, m.topic, m.payload):
            for key in ("energy_kwh", "water_m3", "steps"):
                value = r.values.get(key)
                if value is None or (key == "steps" and local_hour(m.time_s) == 0):
                    continue  # a band's step counter restarts at midnight
                previous = last.get((r.device_id, key))
                assert previous is None or value >= previous, (r.device_id, key)
                last[(r.device_id, key)] = float(value)
                steps += 1
    assert steps > 5000


def test_liveness_gaps_stay_under_the_gateway_timeouts_even_at_speed_one() -> None:
    community = build_community(40, seed=3)
    _, msgs = run(community, speed=1, duration_s=3600)
    last: dict[str, int] = {}
    worst: dict[str, int] = {}
    for m in msgs:
        worst[m.device_id] = max(
            worst.get(m.device_id, 0), m.due_real_ns - last.get(m.device_id, REAL_START_NS)
        )
        last[m.device_id] = m.due_real_ns
    for d in community.devices:
        if d.power == "mains":  # 600 s timeout: something at least every 40 %
            assert worst[d.device_id] <= 241 * NS, d
        else:
            assert worst.get(d.device_id, 0) <= 1900 * NS, d  # detectors every 30 min


def test_water_follows_the_day_and_elders_never_go_dry_for_12_hours() -> None:
    community = build_community(100, seed=8)
    clock = SimClock.plan(3600, 60, real_start_ns=REAL_START_NS)  # 60 simulated hours
    schedule = Schedule(community, clock, seed=8)
    meters = {d.device_id: d for d in community.devices_of(Equipment.WATER_METER)}
    elder = {d.device_id for d in meters.values() if any(
        h.elder_alone for h in community.households if h.id == d.household)}  # fmt: skip
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for m in schedule:
        if m.device_id in meters and m.label == "telemetry":
            (r,) = formats.decode(m.adapter, m.topic, m.payload)
            series[m.device_id].append((m.time_s, float(r.values["water_m3"])))
    by_hour: dict[int, float] = defaultdict(float)
    for points in series.values():
        for (_, a), (t, b) in itertools.pairwise(points):
            by_hour[local_hour(t - 1)] += b - a
    night = sum(by_hour[h] for h in (1, 2, 3, 4)) / 4
    peak = max(by_hour[h] for h in (7, 8, 19, 20))
    assert peak > 10 * night
    assert elder
    for device_id in elder:
        points = series[device_id]
        for i, (t0, v0) in enumerate(points):
            later = [v for t, v in points[i:] if t - t0 <= 12 * 3600]
            if points[-1][0] - t0 >= 12 * 3600:
                assert later[-1] - v0 >= 0.01, (device_id, t0)
    # an ordinary household leaves some half hours of the night without any use
    ordinary = [d for d in series if d not in elder]
    for device_id in ordinary:
        pts = series[device_id]
        dry = sum(1 for (_, a), (t, b) in itertools.pairwise(pts) if b == a and local_hour(t) < 5)
        assert dry > 0
