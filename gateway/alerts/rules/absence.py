"""Absence rules: `offline` (from liveness events; severity by family) and `elder_water` (an
elder living alone whose water meter shows less than `min_use_m3` in `window_h` hours).

The elder's water baselines are one small record per meter, swept when the meter falls silent;
silence itself is the offline rule's business, not this one's. An elder's window is judged only
when the meter reports, never by the clock between readings: that would have to assume the gap
since the last reading dry, and with a 15-minute meter it raised and cleared a low-water elder's
alert over and over (each next reading showed the water the guess had not seen).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace

from devices.families import Family
from devices.liveness import LivenessEvent
from devices.location import Location
from devices.reading import Reading
from gateway.alerts.model import Condition
from gateway.alerts.rules.plans import EPS, NS, ns
from gateway.alerts.rules.schema import ElderWaterRule, OfflineRule, Rule
from gateway.alerts.rules.state import Holds, HouseholdLookup, Where, capped, cut


@dataclass(slots=True)
class _ElderWater:
    household: str  # the household's subject reference (a pseudonym)
    where: Where
    first_ns: int
    latest_ns: int
    latest_m3: float
    history: deque[tuple[int, float]]  # (time, total), ≥ 10 min apart: the 12 h baselines
    fired_m3: float | None = None  # the total when the rule fired


class Absence:
    """Offline and elder-water rules; elder state per (rule id, water meter id)."""

    def __init__(
        self,
        rules: Iterable[Rule],
        holds: Holds,
        max_states: int,
        households: HouseholdLookup | None,
    ) -> None:
        self._offline: list[OfflineRule] = []
        self._elder: list[ElderWaterRule] = []
        for rule in rules:
            if isinstance(rule, OfflineRule):
                self._offline.append(rule)
            elif isinstance(rule, ElderWaterRule):
                self._elder.append(rule)
        self._holds = holds
        self._max = max_states
        self._households = households
        self._state: dict[tuple[str, str], _ElderWater] = {}
        # water readings concern this family only with elder rules and a household directory
        self.watches_water = bool(self._elder) and households is not None

    def state_size(self) -> int:
        return len(self._state)

    def _household_ref(self, device_id: str) -> str:
        """The pseudonymous subject of the household a device serves ("" if none)."""
        if self._households is None:
            return ""
        found = self._households(device_id)
        return "" if found is None else found[0]

    # -- offline -----------------------------------------------------------------------------

    def on_liveness(self, event: LivenessEvent) -> list[Condition]:
        out: list[Condition] = []
        for rule in self._offline:
            severity = rule.severity.get(event.family)
            if severity is None:
                continue
            where = cut(event.location, rule.level)
            subject = self._household_ref(event.device_id) if event.family is Family.ELDER else ""
            proto = Condition(
                rule.id, rule.condition_key, rule.condition_kind, severity, where.location,
                where.level, event.at_ns, True, event.device_id, subject, None,
                {"reason": event.reason, "family": event.family.value}, rule.auto_clear,
            )  # fmt: skip
            if not event.online:
                out.append(self._holds.hold(proto))
            else:
                out += self._holds.release(proto)
        return out

    # -- elder water -------------------------------------------------------------------------

    def water(self, reading: Reading, total: float) -> list[Condition]:
        """A water meter's total (m³), if the meter serves an elder living alone."""
        out: list[Condition] = []
        device_id, t = reading.device_id, reading.time_ns
        if self._elder and self._households is not None:
            found = self._households(device_id)
            if found is not None and found[1]:
                for elder in self._elder:
                    out += self._elder_reading(
                        elder, device_id, reading.location, found[0], t, total
                    )
        return out

    def _elder_reading(
        self,
        rule: ElderWaterRule,
        device_id: str,
        location: Location,
        household: str,
        t: int,
        total: float,
    ) -> list[Condition]:
        key = (rule.id, device_id)
        st = self._state.get(key)
        if st is None:
            where = cut(location, rule.level)
            st = _ElderWater(household, where, t, t, total, deque([(t, total)]))
            self._state[key] = st
            capped(self._state, self._max)
            return []
        if t < st.latest_ns:
            return []
        if total < st.latest_m3 - EPS:  # a new meter, or a reset: start again
            st.history.clear()
            st.first_ns = t
            st.fired_m3 = total if st.fired_m3 is not None else None
        st.household, st.where = household, cut(location, rule.level)
        st.latest_ns, st.latest_m3 = t, total
        if not st.history or t - st.history[-1][0] >= 600 * NS:
            st.history.append((t, total))
        return self._elder_eval(rule, device_id, st, t)

    def _elder_eval(
        self, rule: ElderWaterRule, device_id: str, st: _ElderWater, now: int
    ) -> list[Condition]:
        window = ns(rule.window_h * 3600)
        while len(st.history) >= 2 and st.history[1][0] <= now - window:
            st.history.popleft()  # keep the newest entry at or before the window's start
        proto = Condition(
            rule.id, rule.condition_key, rule.condition_kind, rule.severity, st.where.location,
            st.where.level, now, True, device_id, st.household, None,
            {"window_h": rule.window_h, "min_use_m3": rule.min_use_m3}, rule.auto_clear,
        )  # fmt: skip
        if st.fired_m3 is not None:
            if st.latest_m3 - st.fired_m3 >= rule.min_use_m3 - EPS:
                st.fired_m3 = None
                return self._holds.release(proto)
            return [self._holds.hold(replace(proto, value=st.latest_m3 - st.fired_m3))]
        if now - st.first_ns < window or not st.history:
            return []
        used = st.latest_m3 - st.history[0][1]
        if used >= rule.min_use_m3 - EPS:
            return []
        st.fired_m3 = st.latest_m3
        return [self._holds.hold(replace(proto, value=round(used, 6)))]

    def sweep(self, horizon: int) -> None:
        """Forget meters silent since `horizon` with nothing pending."""
        for e_key, elder in list(self._state.items()):
            if elder.latest_ns < horizon and elder.fired_m3 is None:
                del self._state[e_key]
