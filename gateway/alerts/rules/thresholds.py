"""Threshold rules (set points with minimum durations and hysteresis; an overload anomaly is one
on `power_kw`) and time-at-level rules (a field at or above levels for a time: CO).

A device's state exists only while something is pending or active: a quiet reading from a
device with no state is rejected before any state is made.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from devices.families import Family
from devices.location import Location
from gateway.alerts.model import Condition, Severity
from gateway.alerts.rules.plans import NS, Threshold, compile_threshold, ns
from gateway.alerts.rules.schema import OverloadRule, Rule, ThresholdRule, TimeAtLevelRule
from gateway.alerts.rules.state import Holds, Where, capped, cut


@dataclass(slots=True)
class _ThresholdState:
    where: Where
    subject: str
    since: list[int | None]  # per level: first reading of the current run past its set point
    active: list[bool]
    last_ns: int
    value: float
    reported: bool = False  # an active condition went out, so the end is a clear


@dataclass(slots=True)
class _TimeState:
    where: Where
    subject: str
    since: list[int | None]  # per level: first reading of the current run at/above it
    last_ns: int
    value: float
    alarmed: Severity | None = None  # held at the worst level reached until the field falls


class Thresholds:
    """Threshold and overload rules; state per (rule id, device id)."""

    def __init__(self, rules: Iterable[Rule], holds: Holds, max_states: int) -> None:
        self.by_family: dict[Family, list[Threshold]] = {}
        self.by_id: dict[str, Threshold] = {}
        for rule in rules:
            if isinstance(rule, ThresholdRule | OverloadRule):
                compiled = compile_threshold(rule)
                self.by_family.setdefault(compiled.family, []).append(compiled)
                self.by_id[compiled.id] = compiled
        self._holds = holds
        self._max = max_states
        self._state: dict[tuple[str, str], _ThresholdState] = {}

    def state_size(self) -> int:
        return len(self._state)

    def reading(
        self, rule: Threshold, device_id: str, at: Location, subject: str, value: float, t: int
    ) -> list[Condition]:
        key = (rule.id, device_id)
        st = self._state.get(key)
        if st is None:
            if rule.quiet_above < value < rule.quiet_below:
                return []  # the common case: normal, and nothing to end
            if not any(level.enters(value) for level in rule.levels):
                return []
            where = cut(at, rule.level)
            n = len(rule.levels)
            st = _ThresholdState(where, subject, [None] * n, [False] * n, t, value)
            self._state[key] = st
            capped(self._state, self._max)
        elif t < st.last_ns:
            return []  # an older reading (redelivered, or a late batch) changes nothing
        st.last_ns, st.value = t, value
        if not st.reported:
            st.where, st.subject = cut(at, rule.level), subject
        for i, level in enumerate(rule.levels):
            if st.active[i]:
                if not level.holds(value, rule.hysteresis):
                    st.active[i], st.since[i] = False, None
            elif level.enters(value):
                since = st.since[i]
                if since is None:
                    since = st.since[i] = t
                if t - since >= level.min_ns:
                    st.active[i] = True
            else:
                st.since[i] = None
        return self._report(rule, device_id, st, t)

    def _report(
        self, rule: Threshold, device_id: str, st: _ThresholdState, t: int
    ) -> list[Condition]:
        on = [lvl for lvl, active in zip(rule.levels, st.active, strict=True) if active]
        worst = min(on, key=lambda lvl: lvl.severity) if on else None
        detail: dict[str, Any] = {"field": rule.field}
        if worst is not None:
            detail |= {worst.op: worst.limit, "min_duration_s": worst.min_ns / NS}
        proto = Condition(
            rule.id, rule.key, rule.kind, worst.severity if worst else Severity.IV,
            st.where.location, st.where.level, t, True, device_id, st.subject, st.value,
            detail, rule.auto_clear,
        )  # fmt: skip
        out: list[Condition] = []
        if worst is not None:
            st.reported = True
            out.append(self._holds.hold(proto))
        elif st.reported:
            st.reported = False
            out += self._holds.release(proto)
        if worst is None and all(s is None for s in st.since):
            self._state.pop((rule.id, device_id), None)
        return out

    def tick(self, now: int) -> list[Condition]:
        """Minimum durations that have run out (the last value is taken to persist)."""
        out: list[Condition] = []
        for (rule_id, device_id), st in list(self._state.items()):
            rule = self.by_id[rule_id]
            changed = False
            for i, level in enumerate(rule.levels):
                since = st.since[i]
                if not st.active[i] and since is not None and now - since >= level.min_ns:
                    st.active[i] = changed = True
            if changed:
                out += self._report(rule, device_id, st, now)
        return out


class TimesAtLevel:
    """Time-at-level rules; state per (rule id, device id)."""

    def __init__(self, rules: Iterable[Rule], holds: Holds, max_states: int) -> None:
        self.by_family: dict[Family, list[TimeAtLevelRule]] = {}
        self.by_id: dict[str, TimeAtLevelRule] = {}
        for rule in rules:
            if isinstance(rule, TimeAtLevelRule):
                self.by_family.setdefault(rule.family, []).append(rule)
                self.by_id[rule.id] = rule
        self._holds = holds
        self._max = max_states
        self._state: dict[tuple[str, str], _TimeState] = {}

    def state_size(self) -> int:
        return len(self._state)

    def reading(
        self,
        rule: TimeAtLevelRule,
        device_id: str,
        where: Where,
        subject: str,
        value: float,
        t: int,
    ) -> list[Condition]:
        key = (rule.id, device_id)
        st = self._state.get(key)
        if st is None:
            if not any(value >= lvl.at_least for lvl in rule.levels):
                return []
            st = _TimeState(where, subject, [None] * len(rule.levels), t, value)
            self._state[key] = st
            capped(self._state, self._max)
        elif t < st.last_ns:
            return []
        st.last_ns, st.value = t, value
        if st.alarmed is None:
            st.where, st.subject = where, subject
        for i, lvl in enumerate(rule.levels):
            if value >= lvl.at_least:
                if st.since[i] is None:
                    st.since[i] = t
            else:
                st.since[i] = None
        return self._report(rule, device_id, st, t, ended=self._ended(rule, st))

    def _ended(self, rule: TimeAtLevelRule, st: _TimeState) -> bool:
        lowest = min(lvl.at_least for lvl in rule.levels)
        return st.alarmed is not None and st.value < lowest - rule.hysteresis

    def _report(
        self, rule: TimeAtLevelRule, device_id: str, st: _TimeState, t: int, *, ended: bool
    ) -> list[Condition]:
        reached = [
            lvl
            for lvl, since in zip(rule.levels, st.since, strict=True)
            if since is not None and t - since >= ns(lvl.minutes * 60)
        ]
        proto = Condition(
            rule.id, rule.condition_key, rule.condition_kind, st.alarmed or Severity.IV,
            st.where.location, st.where.level, t, True, device_id, st.subject, st.value,
            {"field": rule.field}, rule.auto_clear,
        )  # fmt: skip
        out: list[Condition] = []
        if ended:
            st.alarmed = None
            out += self._holds.release(proto)
        elif reached or st.alarmed is not None:
            worst = min([lvl.severity for lvl in reached] + ([st.alarmed] if st.alarmed else []))
            st.alarmed = worst
            top = min(reached, key=lambda lvl: lvl.severity) if reached else None
            detail = dict(proto.detail)
            if top is not None:
                detail |= {"at_least": top.at_least, "minutes": top.minutes}
            out.append(self._holds.hold(replace(proto, severity=worst, detail=detail)))
        if st.alarmed is None and all(s is None for s in st.since):
            self._state.pop((rule.id, device_id), None)
        return out

    def tick(self, now: int) -> list[Condition]:
        """Times at level that have run out (the last value is taken to persist)."""
        out: list[Condition] = []
        for (rule_id, device_id), st in list(self._state.items()):
            rule = self.by_id[rule_id]
            due = any(
                since is not None
                and now - since >= ns(lvl.minutes * 60)
                and (st.alarmed is None or lvl.severity < st.alarmed)
                for lvl, since in zip(rule.levels, st.since, strict=True)
            )
            if due:
                out += self._report(rule, device_id, st, now, ended=False)
        return out
