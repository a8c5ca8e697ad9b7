"""Meter anomalies on the water total: `night_flow` (the total rose in every slot of the night:
a leak) and `daily_use` (more than a limit in a local day). The third anomaly, `overload`, is a
threshold on `power_kw` and is evaluated with the thresholds (`plans.compile_threshold`).

Baselines are one small record per meter, swept when the meter falls silent for days.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from devices.location import Location
from devices.reading import Reading
from gateway.alerts.model import Condition
from gateway.alerts.rules.plans import DAY_NS, EPS, NightPlan, night_plan, ns
from gateway.alerts.rules.schema import DailyUseRule, NightFlowRule, Rule
from gateway.alerts.rules.state import Holds, Where, capped, cut


@dataclass(slots=True)
class _Night:
    where: Where
    last_ns: int
    last_m3: float
    night_start: int | None = None  # the night being watched (its start, ns)
    mask: int = 0  # slots of that night in which the total rose
    active: bool = False


@dataclass(slots=True)
class _Daily:
    where: Where
    last_ns: int
    last_m3: float
    day: int  # local day number
    base_m3: float
    active: bool = False


class Meters:
    """Night-flow and daily-use rules; state per (rule id, water meter id)."""

    def __init__(self, rules: Iterable[Rule], holds: Holds, max_states: int) -> None:
        self._nights: list[NightFlowRule] = []
        self._dailies: list[DailyUseRule] = []
        for rule in rules:
            if isinstance(rule, NightFlowRule):
                self._nights.append(rule)
            elif isinstance(rule, DailyUseRule):
                self._dailies.append(rule)
        self._night_by_id = {r.id: r for r in self._nights}
        self._daily_by_id = {r.id: r for r in self._dailies}
        self._night_plans: dict[str, NightPlan] = {r.id: night_plan(r) for r in self._nights}
        self._holds = holds
        self._max = max_states
        self._n_state: dict[tuple[str, str], _Night] = {}
        self._n_due: dict[int, set[tuple[str, str]]] = {}  # when a night is decided → states
        self._d_state: dict[tuple[str, str], _Daily] = {}

    def state_size(self) -> int:
        return len(self._n_state) + len(self._n_due) + len(self._d_state)

    def water(self, reading: Reading, total: float) -> list[Condition]:
        """A water meter's total (m³)."""
        out: list[Condition] = []
        device_id, t = reading.device_id, reading.time_ns
        for night in self._nights:
            out += self._night(night, device_id, reading.location, t, total)
        for daily in self._dailies:
            out += self._daily(daily, device_id, reading.location, t, total)
        return out

    def tick(self, now: int) -> list[Condition]:
        return self._tick_nights(now)

    def sweep(self, horizon: int) -> None:
        """Forget meters silent since `horizon` with nothing pending."""
        for n_key, night in list(self._n_state.items()):
            if night.last_ns < horizon and not night.active and night.night_start is None:
                del self._n_state[n_key]
        for d_key, daily in list(self._d_state.items()):
            pending = daily.active and self._daily_by_id[d_key[0]].auto_clear
            if daily.last_ns < horizon and not pending:
                del self._d_state[d_key]

    # -- night flow --------------------------------------------------------------------------

    def _night_of(self, rule: NightFlowRule, t: int) -> int | None:
        """The start of the night containing `t`, or None outside the night."""
        plan = self._night_plans[rule.id]
        local = t + plan.offset_ns
        midnight = local - local % DAY_NS
        for day in (midnight, midnight - DAY_NS):
            begin = day + plan.start_ns
            if begin <= local < begin + plan.span_ns:
                return begin - plan.offset_ns
        return None

    def _night(
        self, rule: NightFlowRule, device_id: str, location: Location, t: int, total: float
    ) -> list[Condition]:
        key = (rule.id, device_id)
        plan = self._night_plans[rule.id]
        st = self._n_state.get(key)
        out: list[Condition] = []
        if st is None:
            st = _Night(cut(location, rule.level), t, total)
            self._n_state[key] = st
            capped(self._n_state, self._max)
            rose = False
        elif t <= st.last_ns:
            return out
        else:
            rose = total - st.last_m3 > EPS and t - st.last_ns <= plan.grace_ns
        prev_t = st.last_ns
        st.where, st.last_ns, st.last_m3 = cut(location, rule.level), t, total
        if st.night_start is not None:  # the watched night gets its share of the interval first
            if rose:
                st.mask |= plan.wet_slots(st.night_start, prev_t, t)
            if t >= st.night_start + plan.span_ns:
                out += self._close_night(rule, device_id, st)
        begin = self._night_of(rule, t)
        if begin is not None and st.night_start != begin:
            st.night_start, st.mask = begin, 0
            self._n_due.setdefault(begin + plan.span_ns + plan.grace_ns, set()).add(key)
            if rose:
                st.mask |= plan.wet_slots(begin, prev_t, t)
        return out

    def _close_night(self, rule: NightFlowRule, device_id: str, st: _Night) -> list[Condition]:
        begin = st.night_start
        assert begin is not None
        plan = self._night_plans[rule.id]
        wet = bin(st.mask).count("1")
        due_at = begin + plan.span_ns + plan.grace_ns
        due = self._n_due.get(due_at)
        if due is not None:
            due.discard((rule.id, device_id))
            if not due:
                del self._n_due[due_at]
        st.night_start, st.mask = None, 0
        proto = Condition(
            rule.id, rule.condition_key, rule.condition_kind, rule.severity, st.where.location,
            st.where.level, begin + plan.span_ns, True, device_id, "", float(wet),
            {"window": f"{rule.start}-{rule.end}", "slots": plan.slots, "slots_with_flow": wet},
            rule.auto_clear,
        )  # fmt: skip
        if wet == plan.slots:
            st.active = True
            return [self._holds.hold(proto)]
        if st.active:
            st.active = False
            return self._holds.release(proto)
        return []

    def _tick_nights(self, now: int) -> list[Condition]:
        """Nights whose meters have not reported since the night ended (plus the longest gap
        that still counts); a reading after the night's end decides it sooner."""
        out: list[Condition] = []
        for due_at in sorted(d for d in self._n_due if d <= now):
            for key in sorted(self._n_due.get(due_at, ())):
                st = self._n_state.get(key)
                rule = self._night_by_id[key[0]]
                if st is not None and st.night_start is not None:
                    out += self._close_night(rule, key[1], st)
            self._n_due.pop(due_at, None)
        return out

    # -- daily use ---------------------------------------------------------------------------

    def _daily(
        self, rule: DailyUseRule, device_id: str, location: Location, t: int, total: float
    ) -> list[Condition]:
        key = (rule.id, device_id)
        offset = ns(rule.utc_offset_h * 3600)
        day = (t + offset) // DAY_NS
        st = self._d_state.get(key)
        out: list[Condition] = []
        where = cut(location, rule.level)
        proto = Condition(
            rule.id, rule.condition_key, rule.condition_kind, rule.severity, where.location,
            where.level, t, True, device_id, "", None, {"limit_m3": rule.limit_m3},
            rule.auto_clear,
        )  # fmt: skip
        if st is None:
            st = _Daily(where, t, total, day, total)
            self._d_state[key] = st
            capped(self._d_state, self._max)
        elif t <= st.last_ns:
            return out
        elif day != st.day:
            midnight = day * DAY_NS - offset
            close = midnight - st.last_ns <= ns(rule.max_gap_s)
            st.base_m3 = st.last_m3 if close else total
            st.day = day
            if st.active:
                st.active = False
                out += self._holds.release(replace(proto, at_ns=midnight))
        st.where, st.last_ns, st.last_m3 = where, t, total
        if total < st.base_m3:
            st.base_m3 = total  # a new meter, or a reset
        used = total - st.base_m3
        if used > rule.limit_m3:
            st.active = True
            out.append(self._holds.hold(replace(proto, value=round(used, 6))))
        return out
