"""The `vital_signs` composite: an elder's SpO2 low together with an abnormal heart rate, both
within a window. Each alone is a threshold rule of its own; together they are critical.

A band's state exists only while one of the two is abnormal or the condition is active.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from devices.reading import Reading
from gateway.alerts.model import Condition
from gateway.alerts.rules.plans import ns, number
from gateway.alerts.rules.schema import Rule, VitalSignsRule
from gateway.alerts.rules.state import Holds, Where, capped, cut


@dataclass(slots=True)
class _Vitals:
    where: Where
    subject: str
    last_ns: int
    spo2: tuple[int, float] | None = None  # last low SpO2 within the window
    hr: tuple[int, float] | None = None  # last abnormal heart rate within the window
    active: bool = False


class Vitals:
    """Vital-signs rules on elder readings; state per (rule id, band id)."""

    def __init__(self, rules: Iterable[Rule], holds: Holds, max_states: int) -> None:
        self.rules = [r for r in rules if isinstance(r, VitalSignsRule)]
        self._holds = holds
        self._max = max_states
        self._state: dict[tuple[str, str], _Vitals] = {}

    def state_size(self) -> int:
        return len(self._state)

    def reading(self, rule: VitalSignsRule, reading: Reading, subject: str) -> list[Condition]:
        spo2 = number(reading.values, "spo2_pct")
        hr = number(reading.values, "heart_rate_bpm")
        if spo2 is None and hr is None:
            return []
        key = (rule.id, reading.device_id)
        t = reading.time_ns
        st = self._state.get(key)
        if st is not None and t < st.last_ns:
            return []
        active = st is not None and st.active
        low = spo2 is not None and spo2 < rule.spo2_below + (rule.spo2_hysteresis if active else 0)
        h = rule.hr_hysteresis if active else 0.0
        off = hr is not None and (hr < rule.hr_below + h or hr > rule.hr_above - h)
        if st is None:
            if not (low or off):
                return []
            st = _Vitals(cut(reading.location, rule.level), subject, t)
            self._state[key] = st
            capped(self._state, self._max)
        st.last_ns = t
        if spo2 is not None:
            st.spo2 = (t, spo2) if low else None
        if hr is not None:
            st.hr = (t, hr) if off else None
        window = ns(rule.window_s)
        if st.spo2 is not None and t - st.spo2[0] > window:
            st.spo2 = None
        if st.hr is not None and t - st.hr[0] > window:
            st.hr = None
        if not st.active:
            st.where, st.subject = cut(reading.location, rule.level), subject
        proto = Condition(
            rule.id, rule.condition_key, rule.condition_kind, rule.severity, st.where.location,
            st.where.level, t, True, reading.device_id, st.subject,
            st.spo2[1] if st.spo2 else spo2,
            {"spo2_below": rule.spo2_below, "hr_below": rule.hr_below, "hr_above": rule.hr_above},
            rule.auto_clear,
        )  # fmt: skip
        out: list[Condition] = []
        if st.spo2 is not None and st.hr is not None:
            st.active = True
            out.append(self._holds.hold(proto))
        elif st.active:
            st.active = False
            out += self._holds.release(proto)
        if not st.active and st.spo2 is None and st.hr is None:
            del self._state[key]
        return out

    def sweep(self, horizon: int) -> None:
        """Forget bands silent since `horizon` with nothing active."""
        for v_key, vitals in list(self._state.items()):
            if vitals.last_ns < horizon and not vitals.active:
                del self._state[v_key]
