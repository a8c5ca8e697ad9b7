"""When each device of a community reports, and what: a simulated clock and a time-ordered
stream of encoded messages.

The clock runs `speed` simulated seconds per real second and starts far enough in the past
that no reading is ever from the future: simulated time reaches the real clock only at the
end of the run (minus a margin). It never starts more than 29 days back, because the gateway
refuses readings older than 30 days.

Devices keep continuous state (meters only count up, batteries drain, vital signs wander) and
follow the day: water is drawn in the morning and evening and hardly at night, gates are
busiest at rush hour, elders sleep. Each device reports on its own cadence with jitter —
meters every 15 sim-min, detectors every 30 with status heartbeats, wristbands every minute,
gates when people pass (Poisson, by time of day). A device never reports twice in one second:
InfluxDB would merge two points of one series and time, and the counts would no longer match.

Liveness is judged by the gateway on the REAL clock (600 s for mains, 4 h for battery
devices), so a device whose cadence could leave a longer real-time gap also sends status
heartbeats (in ``gridgate_json`` if its own format has no status channel).

One pass only: iterating a `Schedule` consumes it.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from random import Random
from typing import Any, ClassVar, NamedTuple

from devices.families import (
    TELEMETRY_KIND,
    AccessEvent,
    AccessMethod,
    Channel,
    Family,
    SafetyEvent,
    StatusKind,
)
from devices.reading import Reading
from simulators.community import Community, CommunityDevice, Equipment, Household
from simulators.formats import STATUS_FORMAT, Formats
from simulators.people import Resident, fake_face_feature, fake_plate
from simulators.scenarios import (
    ALARM_INTERVAL_S,
    FALLEN,
    FLAP_LEL,
    FLAP_SMOKE_DB_M,
    FLAPPING,
    GAS_LEAK,
    GAS_LEVELS,
    LEAK,
    LEAK_FLOW_M3H,
    LIVENESS_TIMEOUT_S,
    NO_WATER,
    SILENT,
    SMOKE,
    Extra,
    Injection,
    Override,
    Raw,
    flapping_high,
    gas_leak_lel,
    smoke_density,
)

NS = 1_000_000_000
DAY_S = 86_400
CST_OFFSET_S = 8 * 3600  # devices and people live in China Standard Time
MAX_LAG_S = 29 * DAY_S  # the gateway refuses readings older than 30 days
CLOCK_MARGIN_S = 5  # simulated time stays this far behind the real clock
HEARTBEAT_SHARE = 0.4  # beat at least every 40 % of the gateway's offline timeout
DEFAULT_DURATION_S = 60.0

TELEMETRY, HEARTBEAT, EVENT, EXTRA = range(4)
RAW = -1
_FAST = (GAS_LEAK, SMOKE, FALLEN, FLAPPING)  # alarm modes that report every minute


def local_hour(t: int) -> int:
    return ((t + CST_OFFSET_S) // 3600) % 24


def _weights(raw: Sequence[float]) -> tuple[float, ...]:
    total = sum(raw)
    return tuple(w / total for w in raw)


# Share of a day's water use per local hour: a toilet at night, peaks at 7 and 19.
WATER_BY_HOUR = _weights(
    (0.3, 0.2, 0.2, 0.2, 0.2, 0.6, 5, 9, 7, 4, 3, 4, 5, 3, 2, 2, 3, 5, 8, 10, 9, 8, 5, 2)
)
# Household electrical load (kW) per local hour, for a three-person flat.
POWER_BY_HOUR = (0.25, 0.2, 0.2, 0.2, 0.2, 0.25, 0.6, 0.9, 0.7, 0.5, 0.5, 0.7, 0.8, 0.6, 0.5,
                 0.5, 0.6, 0.9, 1.4, 1.6, 1.5, 1.3, 0.9, 0.5)  # fmt: skip
# Share of a day's passages per local hour at gates.
ACCESS_BY_HOUR = _weights(
    (0.4, 0.2, 0.1, 0.1, 0.2, 0.8, 3, 8, 8, 5, 4, 5, 5, 4, 4, 4, 5, 8, 10, 8, 6, 5, 3, 1.5)
)


@dataclass(slots=True, frozen=True)
class SimClock:
    """Simulated epoch seconds ↔ real epoch nanoseconds; simulated time never runs ahead."""

    speed: float
    real_start_ns: int
    sim_start_s: int
    sim_end_s: int | None  # None: run until stopped

    @classmethod
    def plan(
        cls,
        speed: float,
        duration_s: float | None,
        *,
        real_start_ns: int | None = None,
        history_s: float | None = None,
    ) -> SimClock:
        """A clock for a run of `duration_s` real seconds (None: until stopped, or until
        simulated time would catch up with the real clock when `speed` > 1, starting
        `history_s` back — default the 29 days the gateway accepts)."""
        if not speed > 0:
            raise ValueError("speed must be > 0")
        now_ns = time.time_ns() if real_start_ns is None else real_start_ns
        if duration_s is None:
            if history_s is not None and not CLOCK_MARGIN_S < history_s <= MAX_LAG_S:
                raise ValueError(
                    f"history must be more than {CLOCK_MARGIN_S} s and at most 29 days"
                )
            back = MAX_LAG_S if history_s is None else int(history_s)
            lag = back if speed > 1 else CLOCK_MARGIN_S
            start = now_ns // NS - lag
            if speed > 1:
                real_s = (lag - CLOCK_MARGIN_S) / (speed - 1)
                return cls(speed, now_ns, start, start + math.floor(speed * real_s))
            return cls(speed, now_ns, start, None)
        if duration_s <= 0:
            raise ValueError("duration must be > 0 (None: until stopped)")
        lag = math.ceil(max(0.0, (speed - 1) * duration_s)) + CLOCK_MARGIN_S
        if lag > MAX_LAG_S:
            longest = (MAX_LAG_S - CLOCK_MARGIN_S) / (speed - 1)
            raise ValueError(
                f"speed {speed:g} for {duration_s:g} s would start the simulated clock"
                f" {lag / DAY_S:.1f} days back, and the gateway refuses readings older than 30"
                f" days: at this speed run at most {math.floor(longest)} s"
            )
        start = now_ns // NS - lag
        return cls(speed, now_ns, start, start + math.floor(speed * duration_s))

    def real_ns(self, sim_s: float) -> int:
        return self.real_start_ns + int((sim_s - self.sim_start_s) * NS / self.speed)

    def sim_s(self, real_ns: int) -> float:
        return self.sim_start_s + (real_ns - self.real_start_ns) * self.speed / NS

    @property
    def span_s(self) -> int | None:
        return None if self.sim_end_s is None else self.sim_end_s - self.sim_start_s


class Scheduled(NamedTuple):
    """One message, due at `due_real_ns` (never before its readings' time)."""

    due_real_ns: int
    topic: str
    payload: bytes
    family: Family | None  # None: a hostile message that must be rejected
    label: str  # telemetry, an event kind, status:<kind>, hostile:<case>
    adapter: str = ""
    points: int = 0  # InfluxDB points it becomes in the family measurement
    status_points: int = 0  # … in device_status
    lines: int = 0  # readings the gateway decodes
    reason: str | None = None  # the rejection a hostile message must get
    scenario: str = ""
    device_id: str = ""
    time_s: int = 0  # simulated time of its newest reading


class _Out(NamedTuple):
    when: int
    readings: list[Reading]
    label: str
    scenario: str = ""


@dataclass(slots=True, frozen=True)
class _Deferred:
    readings: list[Reading]
    label: str
    scenario: str


def _poisson(rng: Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:  # normal approximation; never reached at 15-minute intervals
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


# -- device models ---------------------------------------------------------------------------


class _Sim:
    """A device's behaviour: state, cadence, and the readings it makes."""

    period_s: ClassVar[int] = 0  # telemetry cadence; 0: none (gates)
    jitter_s: ClassVar[int] = 0
    nominal_heartbeat_s: ClassVar[int | None] = None  # status beats in the gateway's format

    def __init__(self, device: CommunityDevice, rng: Random, start: int) -> None:
        self.d = device
        self.rng = rng
        self.last_s = start - 1  # last second this device used: one reading per second
        self.tele_due = 0
        self.overrides: list[Override] = []
        self.boot_s = start - rng.randrange(DAY_S, 90 * DAY_S)
        self.rssi = rng.uniform(-95.0, -60.0)

    # cadence
    def max_gap_s(self) -> int | None:
        return self.period_s + self.jitter_s if self.period_s else None

    def heartbeat_period(self, speed: float) -> int | None:
        budget = HEARTBEAT_SHARE * LIVENESS_TIMEOUT_S.get(self.d.power, 600.0) * speed
        periods: list[float] = []
        if self.nominal_heartbeat_s and self.d.adapter == STATUS_FORMAT:
            periods.append(self.nominal_heartbeat_s)
        gap = self.max_gap_s()
        if gap is None or gap > budget:
            periods.append(budget)
        return max(10, math.floor(min(periods))) if periods else None

    def first_telemetry(self, start: int, speed: float) -> int:
        budget = HEARTBEAT_SHARE * LIVENESS_TIMEOUT_S.get(self.d.power, 600.0) * speed
        return start + self.rng.randrange(max(1, int(min(self.period_s, budget))))

    def next_telemetry(self, t: int) -> int:
        fast = self.override(t, _FAST)
        if fast is not None:
            nxt = min(t + ALARM_INTERVAL_S, fast.end_s)
        else:
            nxt = t + self.period_s + self.rng.randint(-self.jitter_s, self.jitter_s)
        for ov in self.overrides:  # wake up when an alarm mode begins
            if ov.effect in _FAST and t < ov.start_s < nxt:
                nxt = ov.start_s
        return max(nxt, t + 1)

    def first_event(self, start: int) -> int | None:
        return None

    # overrides
    def override(self, t: int, effects: Sequence[str]) -> Override | None:
        for ov in self.overrides:
            if ov.effect in effects and ov.start_s <= t < ov.end_s:
                return ov
        return None

    def silent(self, t: int) -> bool:
        return self.override(t, (SILENT,)) is not None

    # readings
    def reading(self, t: int, channel: Channel, kind: str, values: Mapping[str, Any]) -> Reading:
        d = self.d
        return Reading(d.device_id, d.family, channel, kind, t * NS, d.location, values)

    def telemetry(self, t: int) -> list[_Out]:
        return []

    def event(self, t: int) -> tuple[list[_Out], int | None]:
        return [], None

    def heartbeat(self, t: int) -> Reading:
        self.rssi = min(-40.0, max(-110.0, self.rssi + self.rng.gauss(0, 1.0)))
        values: dict[str, Any] = {"rssi_dbm": float(round(self.rssi)), "firmware": "2.3.1"}
        if self.d.power == "mains":
            values["uptime_s"] = float(t - self.boot_s)
        else:
            values["battery_pct"] = self.battery_pct()
        return self.reading(t, Channel.STATUS, StatusKind.HEARTBEAT.value, values)

    def battery_pct(self) -> float:
        return 100.0


class _ElectricityMeter(_Sim):
    period_s = 900
    jitter_s = 20

    def __init__(self, device: CommunityDevice, rng: Random, start: int, people: int) -> None:
        super().__init__(device, rng, start)
        self.scale = 0.6 if people <= 1 else 0.45 + 0.2 * people
        self.energy = rng.uniform(500.0, 20_000.0)
        self.power = self._target(start)
        self.voltage = rng.gauss(221.0, 2.0)
        self.last_t = start

    def _target(self, t: int) -> float:
        load = POWER_BY_HOUR[local_hour(t)] * self.scale * math.exp(self.rng.gauss(0, 0.35))
        return min(9.0, max(0.03, load))

    def telemetry(self, t: int) -> list[_Out]:
        self.energy += self.power * (t - self.last_t) / 3600
        self.last_t = t
        self.power = self._target(t)
        self.voltage = min(234.0, max(208.0, self.voltage + self.rng.gauss(0, 0.8)))
        values = {
            "meter_type": "electricity",
            "energy_kwh": round(self.energy, 2),
            "voltage_v": round(self.voltage, 1),
            "current_a": round(self.power * 1000 / (self.voltage * 0.95), 3),
            "power_kw": round(self.power, 4),
        }
        return [_Out(t, [self.reading(t, Channel.TELEMETRY, TELEMETRY_KIND, values)], "telemetry")]


class _WaterMeter(_Sim):
    """Cumulative m³ of one household: tap events by hour, an elder's daily minimum, and the
    leak / no-use overrides of scenarios."""

    period_s = 900
    jitter_s = 20
    MEAN_DRAW_M3 = 0.012
    ELDER_MIN_GAP_S = 3 * 3600  # an elder at home draws water at least every 3 h by day

    def __init__(self, device: CommunityDevice, rng: Random, start: int, home: Household) -> None:
        super().__init__(device, rng, start)
        people = len(home.residents)
        self.elder = home.elder_alone
        self.daily = (0.12 if self.elder else 0.12 + 0.11 * people) * math.exp(rng.gauss(0, 0.2))
        self.total = rng.uniform(50.0, 2000.0)
        self.settlement = max(0.0, self.total - rng.uniform(0.5, 8.0))
        self.decimals = 2 if device.adapter == "cjt188" else 3  # CJ/T 188 counts hundredths
        self.battery = rng.uniform(55.0, 100.0)
        self.last_t = start
        self.last_use = start - rng.randrange(2 * 3600)
        self.month = time.gmtime(start + CST_OFFSET_S).tm_mon

    def battery_pct(self) -> float:
        return round(self.battery, 1)

    def _draws(self, t0: int, t1: int) -> float:
        volume, t = 0.0, t0
        while t < t1:
            seg_end = min(t1, (t // 3600 + 1) * 3600)
            expected = self.daily * WATER_BY_HOUR[local_hour(t)] * (seg_end - t) / 3600
            for _ in range(_poisson(self.rng, expected / self.MEAN_DRAW_M3)):
                volume += self.rng.uniform(0.004, 0.02)
            t = seg_end
        return volume

    def telemetry(self, t: int) -> list[_Out]:
        t0, self.last_t = self.last_t, t
        month = time.gmtime(t + CST_OFFSET_S).tm_mon
        if month != self.month:  # settlement day: the 1st of the month
            self.month, self.settlement = month, self.total
        scenario = ""
        if self.override(t, (NO_WATER,)) is not None:
            used = 0.0
            scenario = "elder-inactive"
        else:
            used = self._draws(t0, t)
            hour = local_hour(t)
            if self.elder and 6 <= hour < 22 and t - self.last_use > self.ELDER_MIN_GAP_S:
                used += 0.02  # cooking, washing: an elder at home never goes a whole day dry
            if used > 0:
                self.last_use = t
        if self.override(t, (LEAK,)) is not None:
            used += LEAK_FLOW_M3H * (t - t0) / 3600
            scenario = "water-leak"
        self.total += used
        self.battery = max(5.0, self.battery - 0.0005)
        values: dict[str, Any] = {
            "meter_type": "water",
            "water_m3": round(self.total, self.decimals),
            "settlement_m3": round(self.settlement, self.decimals),
            "flow_m3h": round(used * 3600 / max(1, t - t0), 3),
            "valve": "open",
            "battery_low": self.battery < 20.0,
            "battery_pct": round(self.battery, 1),
        }
        reading = self.reading(t, Channel.TELEMETRY, TELEMETRY_KIND, values)
        return [_Out(t, [reading], "telemetry", scenario)]


class _Detector(_Sim):
    """Shared by smoke and gas detectors: room climate, battery, a daily self-test."""

    period_s = 1800
    jitter_s = 60
    nominal_heartbeat_s = 2 * 3600
    detector: ClassVar[str] = ""

    def __init__(self, device: CommunityDevice, rng: Random, start: int) -> None:
        super().__init__(device, rng, start)
        self.base_temp = rng.uniform(19.0, 26.0)
        self.humidity = rng.uniform(38.0, 65.0)
        self.battery = rng.uniform(40.0, 100.0)
        self.alarmed = False
        self.cause = ""  # the scenario behind the current alarm: its all-clear belongs to it

    def battery_pct(self) -> float:
        return round(self.battery, 1)

    def climate(self, t: int) -> tuple[float, float]:
        phase = 2 * math.pi * (((t + CST_OFFSET_S) % DAY_S) / DAY_S - 0.25)
        temp = self.base_temp - 1.5 * math.cos(phase) + self.rng.gauss(0, 0.1)
        self.humidity = min(90.0, max(20.0, self.humidity + self.rng.gauss(0, 0.4)))
        self.battery = max(1.0, self.battery - 0.0003)
        return round(temp, 1), round(self.humidity, 1)

    def first_event(self, start: int) -> int | None:
        return self._next_self_test(start)

    def _next_self_test(self, after: int) -> int:
        day0 = (after + CST_OFFSET_S) // DAY_S * DAY_S - CST_OFFSET_S
        at = day0 + 10 * 3600 + self.rng.randrange(6 * 3600)
        return at if at > after else at + DAY_S

    def event(self, t: int) -> tuple[list[_Out], int | None]:
        values = {"detector": self.detector, "self_test_ok": True}
        out = _Out(t, [self.reading(t, Channel.EVENT, SafetyEvent.SELF_TEST.value, values)],
                   SafetyEvent.SELF_TEST.value)  # fmt: skip
        return [out], self._next_self_test(t + 3600)

    def _event(self, t: int, kind: SafetyEvent, values: dict[str, Any], scenario: str) -> _Out:
        reading = self.reading(t, Channel.EVENT, kind.value, values)
        return _Out(t, [reading], kind.value, scenario)


class _GasDetector(_Detector):
    detector = "gas"

    def __init__(self, device: CommunityDevice, rng: Random, start: int) -> None:
        super().__init__(device, rng, start)
        self.level = 0  # alarm levels passed: 0, 1 (25 %LEL), 2 (50 %LEL)

    def telemetry(self, t: int) -> list[_Out]:
        temp, humidity = self.climate(t)
        leak = self.override(t, (GAS_LEAK,))
        flap = self.override(t, (FLAPPING,))
        scenario = self.cause if self.level else ""
        if leak is not None:
            lel = gas_leak_lel(t - leak.start_s)
            scenario = "gas-leak"
        elif flap is not None:
            lel = FLAP_LEL if flapping_high(t - flap.start_s) else 0.0
            scenario = "alarm-storm"
        else:
            lel = round(abs(self.rng.gauss(0, 0.3)), 1)
        values = {
            "detector": "gas",
            "gas_lel_pct": lel,
            "temperature_c": temp,
            "humidity_pct": humidity,
            "battery_pct": round(self.battery, 1),
        }
        outs = [_Out(t, [self.reading(t, Channel.TELEMETRY, TELEMETRY_KIND, values)],
                     "telemetry", scenario)]  # fmt: skip
        level = sum(lel >= x for x in GAS_LEVELS)
        if level > self.level:  # the alarm follows the measurement a second later
            values = {"detector": "gas", "gas_lel_pct": lel}
            outs.append(self._event(t + 1, SafetyEvent.GAS_ALARM, values, scenario))
            self.level, self.cause = level, scenario
        elif self.level and lel < 10.0:
            outs.append(
                self._event(t + 1, SafetyEvent.ALARM_CLEARED, {"detector": "gas"}, scenario)
            )
            self.level = 0
        return outs


class _SmokeDetector(_Detector):
    detector = "smoke"

    def telemetry(self, t: int) -> list[_Out]:
        temp, humidity = self.climate(t)
        fire = self.override(t, (SMOKE,))
        flap = self.override(t, (FLAPPING,))
        scenario = self.cause if self.alarmed else ""
        if fire is not None:
            scenario = "smoke-spreading"
            density = smoke_density(t - fire.start_s)
            temp = round(temp + min(30.0, (t - fire.start_s) / 30), 1)
        elif flap is not None and flapping_high(t - flap.start_s):
            density, fire, scenario = FLAP_SMOKE_DB_M, flap, "alarm-storm"
        else:
            density = round(abs(self.rng.gauss(0, 0.01)), 3)
            scenario = "alarm-storm" if flap is not None else scenario
        values = {
            "detector": "smoke",
            "smoke_density_db_m": density,
            "smoke_alarm": fire is not None,
            "temperature_c": temp,
            "humidity_pct": humidity,
            "battery_pct": round(self.battery, 1),
            "tamper": False,
        }
        outs = [_Out(t, [self.reading(t, Channel.TELEMETRY, TELEMETRY_KIND, values)],
                     "telemetry", scenario)]  # fmt: skip
        if fire is not None and not self.alarmed:
            alarm = {"detector": "smoke", "smoke_alarm": True, "smoke_density_db_m": density}
            outs.append(self._event(t + 1, SafetyEvent.SMOKE_ALARM, alarm, scenario))
            self.alarmed, self.cause = True, scenario
        elif fire is None and self.alarmed:
            cleared = {"detector": "smoke", "smoke_alarm": False}
            outs.append(self._event(t + 1, SafetyEvent.ALARM_CLEARED, cleared, scenario))
            self.alarmed = False
        return outs


class _Wearable(_Sim):
    """A wristband sampling every minute; the vendor band uploads five samples at a time."""

    period_s = 60
    jitter_s = 0
    BATCH = 5

    def __init__(self, device: CommunityDevice, rng: Random, start: int) -> None:
        super().__init__(device, rng, start)
        self.hr = rng.uniform(64.0, 80.0)
        self.spo2 = rng.uniform(95.5, 98.0)
        self.temp = rng.uniform(36.2, 36.7)
        self.steps = rng.randrange(0, 2000)
        self.inactive = 0.0
        self.battery = rng.uniform(50.0, 100.0)
        self.day = (start + CST_OFFSET_S) // DAY_S
        self.batch = self.BATCH if device.adapter == "vendor_wearable" else 1
        self.buffer: list[Reading] = []

    def max_gap_s(self) -> int | None:
        return self.period_s * self.batch + 1

    def battery_pct(self) -> float:
        return round(self.battery, 1)

    def _walk(
        self, value: float, target: float, step: float, lo: float, hi: float, pull: float = 0.2
    ) -> float:
        return min(hi, max(lo, value + pull * (target - value) + self.rng.gauss(0, step)))

    def telemetry(self, t: int) -> list[_Out]:
        day = (t + CST_OFFSET_S) // DAY_S
        if day != self.day:  # the band's step counter restarts at midnight
            self.day, self.steps = day, 0
        hour = local_hour(t)
        fallen = self.override(t, (FALLEN,))
        walking = False
        if fallen is not None:
            activity, hr_target = "lying", 108.0
        elif hour >= 22 or hour < 6:
            activity, hr_target = "sleeping", 58.0
        else:
            walking = self.rng.random() < 0.25
            activity, hr_target = ("walking", 88.0) if walking else ("resting", 72.0)
        pull = 0.6 if fallen is not None else 0.2  # a fall sets the heart racing at once
        self.hr = self._walk(self.hr, hr_target, 1.5, 55.0, 115.0, pull)
        self.spo2 = self._walk(self.spo2, 97.0, 0.3, 94.0, 99.0)
        self.temp = self._walk(self.temp, 36.5, 0.03, 36.0, 37.2)
        if walking:
            self.steps += self.rng.randint(20, 90)
            self.inactive = 0.0
        else:
            self.inactive = min(self.inactive + 1.0, 7 * 1440.0)
        self.battery -= 0.012
        if hour == 21 and self.battery < 50.0:
            self.battery = 100.0  # on the charger while watching the evening news
        self.battery = max(1.0, self.battery)
        values = {
            "heart_rate_bpm": float(round(self.hr)),
            "spo2_pct": float(round(self.spo2)),
            "body_temp_c": round(self.temp, 1),
            "steps": self.steps,
            "activity": activity,
            "inactive_min": self.inactive,
            "worn": True,
            "battery_pct": round(self.battery, 1),
            "inside_geofence": True,
        }
        if self.silent(t):
            self.buffer.clear()
            return []
        self.buffer.append(self.reading(t, Channel.TELEMETRY, TELEMETRY_KIND, values))
        if len(self.buffer) < self.batch:
            return []
        batch, self.buffer = self.buffer, []
        return [_Out(t, batch, "telemetry", "elder-fall" if fallen is not None else "")]


ISAPI_FORMAT = "hikvision_isapi"


class _Gate(_Sim):
    """A face/card/QR terminal: every passage is an event carrying the person's data, as real
    terminals send it (the gateway's privacy layer removes it)."""

    nominal_heartbeat_s = 300

    def __init__(
        self,
        device: CommunityDevice,
        rng: Random,
        start: int,
        people: Sequence[Resident],
        daily: float,
    ) -> None:
        super().__init__(device, rng, start)
        self.people = people
        self.daily = max(daily, 1.0)
        self.peak = max(ACCESS_BY_HOUR)
        # a face terminal enrolled with the registry's resident ids (Hikvision's employeeNo)
        self.resident_ids: Mapping[Resident, str] | None = None

    def first_event(self, start: int) -> int | None:
        return self._next(start)

    def _next(self, t: int) -> int:
        """Poisson by time of day (thinning: candidates at the peak rate, kept at the hour's)."""
        rate = self.daily * self.peak / 3600
        x = float(t)
        while True:
            x += self.rng.expovariate(rate)
            if self.rng.random() * self.peak < ACCESS_BY_HOUR[local_hour(int(x))]:
                return max(int(x), t + 1)

    def event(self, t: int) -> tuple[list[_Out], int | None]:
        kind, values = self.passage()
        return [_Out(t, [self.reading(t, Channel.EVENT, kind, values)], kind)], self._next(t)

    def passage(self) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        method = rng.choices((AccessMethod.FACE, AccessMethod.CARD, AccessMethod.QR), (6, 3, 1))[0]
        values: dict[str, Any] = {
            "door": self.d.door,
            "method": method.value,
            "direction": "in" if rng.random() < 0.75 else "out",
        }
        if method is AccessMethod.FACE and rng.random() < 0.03:  # a stranger's face
            values |= {
                "granted": False,
                "similarity": round(rng.uniform(0.2, 0.6), 3),
                "face_feature": fake_face_feature(rng),
            }
            return AccessEvent.ENTRY_DENIED.value, values
        who = rng.choice(self.people)
        values |= {"granted": True, "person_name": who.name}
        if self.resident_ids is not None:
            values["employee_no"] = self.resident_ids[who]
        if method is AccessMethod.FACE:
            values |= {
                "similarity": round(rng.uniform(0.86, 0.995), 3),
                "id_number": who.id_number,
                "phone": who.phone,
                "face_feature": who.face_feature,
            }
        elif method is AccessMethod.CARD:
            values |= {"card_no": who.card_no, "id_number": who.id_number}
        else:
            values["phone"] = who.phone
        return AccessEvent.ENTRY_GRANTED.value, values


class _Barrier(_Gate):
    """A car park barrier: plate recognition, the owner's name and phone for residents' cars."""

    def passage(self) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        entering = rng.random() < 0.5
        kind = AccessEvent.VEHICLE_ENTRY if entering else AccessEvent.VEHICLE_EXIT
        values: dict[str, Any] = {
            "door": self.d.door,
            "method": AccessMethod.PLATE.value,
            "direction": "in" if entering else "out",
            "granted": True,
        }
        if self.people and rng.random() < 0.85:
            owner = rng.choice(self.people)
            values |= {"plate": owner.plate, "person_name": owner.name, "phone": owner.phone}
        else:  # a visitor's car: only the plate is known
            values["plate"] = fake_plate(rng)
        return kind.value, values


# -- the schedule -----------------------------------------------------------------------------


class Schedule:
    """Every message of a community's devices (and injected scenarios), in due order."""

    def __init__(
        self,
        community: Community,
        clock: SimClock,
        *,
        seed: int = 0,
        formats: Formats | None = None,
        injections: Iterable[Injection] = (),
    ) -> None:
        self.community = community
        self.clock = clock
        self.formats = formats or Formats()
        self.end_s = clock.sim_end_s
        self.now_s = clock.sim_start_s  # how far the schedule has got
        self._heap: list[tuple[int, int, int, int]] = []
        self._seq = 0
        self._pending: dict[int, Extra | Raw | _Deferred] = {}
        self._hb: dict[int, int] = {}
        self.devices: list[_Sim] = []
        self._index: dict[str, int] = {}
        self.injections: list[Injection] = []
        start = clock.sim_start_s
        homes = {h.id: h for h in community.households}
        unit_people: dict[tuple[str, str], list[Resident]] = {}
        for h in community.households:
            unit_people.setdefault((h.building, h.unit), []).extend(h.residents)
        everyone = [r for h in community.households for r in h.residents]
        drivers = [r for r in everyone if r.plate]
        gates = max(1, len(community.devices_of(Equipment.COMMUNITY_GATE)))
        barriers = max(1, len(community.devices_of(Equipment.VEHICLE_BARRIER)))
        enrolled = {r: h.resident_id(i) for h in community.households
                    for i, r in enumerate(h.residents)}  # fmt: skip
        for i, d in enumerate(community.devices):
            rng = Random(f"gridgate-schedule:{seed}:{community.code}:{d.device_id}")
            sim = self._model(d, rng, start, homes, unit_people, everyone, drivers, gates, barriers)
            if isinstance(sim, _Gate) and d.adapter == ISAPI_FORMAT:
                sim.resident_ids = enrolled
            self.devices.append(sim)
            self._index[d.device_id] = i
            if sim.period_s:
                sim.tele_due = sim.first_telemetry(start, clock.speed)
                self._push(sim.tele_due, i, TELEMETRY)
            hb = sim.heartbeat_period(clock.speed)
            if hb is not None:
                self._hb[i] = hb
                self._push(start + rng.randrange(hb), i, HEARTBEAT)
            first = sim.first_event(start)
            if first is not None:
                self._push(first, i, EVENT)
        for injection in injections:
            self.inject(injection)

    @staticmethod
    def _model(
        d: CommunityDevice,
        rng: Random,
        start: int,
        homes: Mapping[str, Household],
        unit_people: Mapping[tuple[str, str], list[Resident]],
        everyone: list[Resident],
        drivers: list[Resident],
        gates: int,
        barriers: int,
    ) -> _Sim:
        eq = d.equipment
        if eq is Equipment.ELECTRICITY_METER:
            return _ElectricityMeter(d, rng, start, len(homes[d.household].residents))
        if eq is Equipment.WATER_METER:
            return _WaterMeter(d, rng, start, homes[d.household])
        if eq is Equipment.GAS_DETECTOR:
            return _GasDetector(d, rng, start)
        if eq is Equipment.SMOKE_DETECTOR:
            return _SmokeDetector(d, rng, start)
        if eq is Equipment.WEARABLE:
            return _Wearable(d, rng, start)
        if eq is Equipment.UNIT_GATE:
            people = unit_people.get((d.location.building, d.location.unit)) or everyone
            return _Gate(d, rng, start, people, daily=1.6 * len(people) * 1.1)
        if eq is Equipment.COMMUNITY_GATE:
            return _Gate(d, rng, start, everyone, daily=1.2 * len(everyone) / gates)
        return _Barrier(d, rng, start, drivers, daily=2.2 * len(drivers) * 1.2 / barriers)

    def _push(
        self, t: int, idx: int, stream: int, item: Extra | Raw | _Deferred | None = None
    ) -> None:
        self._seq += 1
        if item is not None:
            self._pending[self._seq] = item
        heapq.heappush(self._heap, (t, self._seq, idx, stream))

    def inject(self, injection: Injection) -> None:
        """Apply a scenario (before or during iteration, for times not yet reached)."""
        self.injections.append(injection)
        for ov in injection.overrides:
            i = self._index[ov.device_id]
            sim = self.devices[i]
            sim.overrides.append(ov)
            sim.overrides.sort(key=lambda o: o.start_s)
            if ov.effect in _FAST and sim.period_s and ov.start_s < sim.tele_due:
                sim.tele_due = max(ov.start_s, self.now_s)  # the old entry becomes stale
                self._push(sim.tele_due, i, TELEMETRY)
        for extra in injection.extras:
            self._push(extra.at_s, self._index[extra.device_id], EXTRA, extra)
        for raw in injection.raw:
            self._push(raw.at_s, RAW, EXTRA, raw)

    def device_model(self, device_id: str) -> _Sim:
        return self.devices[self._index[device_id]]

    def __iter__(self) -> Iterator[Scheduled]:
        heap, pending, formats, clock = self._heap, self._pending, self.formats, self.clock
        end = self.end_s
        while heap:
            t, seq, idx, stream = heap[0]
            if end is not None and t >= end:
                return
            heapq.heappop(heap)
            self.now_s = t
            if idx == RAW:
                raw = pending.pop(seq)
                assert isinstance(raw, Raw)
                due = clock.real_ns(t)
                topic, payload = raw.make(due // 1_000_000)
                yield Scheduled(due, topic, payload, None, f"hostile:{raw.case}", reason=raw.reason,
                                scenario="hostile", time_s=t)  # fmt: skip
                continue
            sim = self.devices[idx]
            if stream == TELEMETRY and t != sim.tele_due:
                continue  # superseded by an earlier wake-up
            if t <= sim.last_s:  # this device already used this second: the next one
                item = pending.pop(seq, None)
                self._push(sim.last_s + 1, idx, stream, item)
                if stream == TELEMETRY:
                    sim.tele_due = sim.last_s + 1
                continue
            sim.last_s = t
            outs: list[_Out]
            if stream == TELEMETRY:
                outs = sim.telemetry(t)
                if sim.silent(t):
                    outs = []
                sim.tele_due = sim.next_telemetry(t)
                self._push(sim.tele_due, idx, TELEMETRY)
            elif stream == HEARTBEAT:
                beat = self._hb[idx]
                outs = [] if sim.silent(t) else [_Out(t, [sim.heartbeat(t)], "status:heartbeat")]
                jitter = max(1, beat // 50)
                self._push(t + max(1, beat + sim.rng.randint(-jitter, 0)), idx, HEARTBEAT)
            elif stream == EVENT:
                outs, nxt = sim.event(t)
                if sim.silent(t):
                    outs = []
                if nxt is not None:
                    self._push(nxt, idx, EVENT)
            else:
                item = pending.pop(seq)
                outs = [self._extra(sim, item, t)]
            for out in outs:
                if out.when > t:  # events follow their measurement a second later
                    self._push(
                        out.when, idx, EXTRA, _Deferred(out.readings, out.label, out.scenario)
                    )
                    continue
                readings = out.readings
                if len(readings) == 1:
                    enc = formats.encode(sim.d, readings[0])
                else:
                    enc = formats.encode_batch(sim.d, readings)
                yield Scheduled(
                    clock.real_ns(t),
                    enc.topic,
                    enc.payload,
                    sim.d.family,
                    out.label,
                    enc.adapter,
                    enc.points,
                    enc.status_points,
                    enc.lines,
                    None,
                    out.scenario,
                    sim.d.device_id,
                    t,
                )

    @staticmethod
    def _extra(sim: _Sim, item: Extra | Raw | _Deferred, t: int) -> _Out:
        if isinstance(item, _Deferred):
            readings = [
                r if r.time_ns == t * NS else replace(r, time_ns=t * NS) for r in item.readings
            ]
            return _Out(t, readings, item.label, item.scenario)
        assert isinstance(item, Extra)
        reading = sim.reading(t, item.channel, item.kind, item.values)
        label = item.kind if item.channel is Channel.EVENT else f"{item.channel.value}:{item.kind}"
        scenario = item.label.split(":", 1)[0]
        return _Out(t, [reading], label if scenario != "hostile" else item.label, scenario)
