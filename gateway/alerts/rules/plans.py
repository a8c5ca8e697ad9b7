"""Compiled forms of the rules: what the hot path tests, prepared once per engine.

A reading's own `time_ns` is the only clock (see `engine`), so durations compile to
nanoseconds on that timeline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from devices.families import Channel, Family
from devices.places import PlaceLevel
from devices.reading import Reading
from gateway.alerts.model import Severity
from gateway.alerts.rules.schema import (
    EventRule,
    NightFlowRule,
    OverloadRule,
    ThresholdRule,
    night_span_min,
)

NS = 1_000_000_000
DAY_NS = 86_400 * NS
EPS = 1e-9  # m³: meter totals equal within this are equal


def ns(seconds: float) -> int:
    return round(seconds * NS)


def number(values: Mapping[str, Any], name: str) -> float | None:
    """A reading's field as a finite number, or None (absent, a bool, NaN, ∞)."""
    value = values.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    found = float(value)
    return found if math.isfinite(found) else None


def compare(op: str, value: float, limit: float) -> bool:
    if op == "above":
        return value > limit
    if op == "at_or_above":
        return value >= limit
    if op == "below":
        return value < limit
    return value <= limit


# -- thresholds ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Level:
    op: str
    limit: float
    severity: Severity
    min_ns: int

    def enters(self, value: float) -> bool:
        return compare(self.op, value, self.limit)

    def holds(self, value: float, hysteresis: float) -> bool:
        """Still on: not yet back past the set point by the hysteresis."""
        upper = self.op in ("above", "at_or_above")
        return compare(self.op, value, self.limit + (-hysteresis if upper else hysteresis))


@dataclass(frozen=True, slots=True)
class Threshold:
    """A threshold rule, or an overload anomaly (the same logic on power_kw)."""

    id: str
    key: str
    kind: str
    family: Family
    field: str
    level: PlaceLevel
    levels: tuple[Level, ...]
    hysteresis: float
    auto_clear: bool
    # No level can be entered strictly between these: the common, quiet reading is rejected
    # with two comparisons instead of a test per level.
    quiet_above: float = -math.inf
    quiet_below: float = math.inf


def compile_threshold(rule: ThresholdRule | OverloadRule) -> Threshold:
    if isinstance(rule, OverloadRule):
        levels: tuple[Level, ...] = (
            Level("above", rule.limit_kw, rule.severity, ns(rule.min_duration_s)),
        )
        family, name = Family.METER, "power_kw"
    else:
        levels = tuple(
            Level(lvl.op, lvl.value, lvl.severity, ns(lvl.min_duration_s)) for lvl in rule.levels
        )
        family, name = rule.family, rule.field
    uppers = [lvl.limit for lvl in levels if lvl.op in ("above", "at_or_above")]
    lowers = [lvl.limit for lvl in levels if lvl.op in ("below", "at_or_below")]
    return Threshold(
        rule.id, rule.condition_key, rule.condition_kind, family, name, rule.level, levels,
        rule.hysteresis, rule.auto_clear, max(lowers, default=-math.inf),
        min(uppers, default=math.inf),
    )  # fmt: skip


# -- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventPlan:
    """A family's event rules indexed by event kind and by flag, so a reading is tested only
    against rules that name its kind or one of its true flags (most readings: none)."""

    rules: tuple[EventRule, ...]
    by_kind: Mapping[str, frozenset[int]]  # kind → positions in `rules`
    by_flag: tuple[tuple[str, frozenset[int]], ...]

    @classmethod
    def of(cls, rules: Sequence[EventRule]) -> EventPlan:
        kinds: dict[str, set[int]] = {}
        flags: dict[str, set[int]] = {}
        for i, rule in enumerate(rules):
            for kind in rule.kinds:
                kinds.setdefault(kind, set()).add(i)
            for flag in rule.flags:
                flags.setdefault(flag, set()).add(i)
        return cls(
            tuple(rules),
            {k: frozenset(v) for k, v in kinds.items()},
            tuple((f, frozenset(v)) for f, v in flags.items()),
        )

    def candidates(self, reading: Reading) -> list[EventRule]:
        hit: frozenset[int] | set[int] = frozenset()
        if reading.channel is Channel.EVENT:
            hit = self.by_kind.get(reading.kind, hit)
        values = reading.values
        for flag, positions in self.by_flag:
            if values.get(flag) is True:
                hit = hit | positions
        if not hit:
            return []
        return [self.rules[i] for i in sorted(hit)]  # in file order, as without the index


# -- night flow ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NightPlan:
    offset_ns: int  # local time − UTC
    start_ns: int  # the night's start, after local midnight
    span_ns: int
    slot_ns: int
    slots: int
    grace_ns: int  # the longest gap between readings that still credits slots

    def wet_slots(self, begin: int, since: int, until: int) -> int:
        """Slots of the night starting at `begin` (a bit mask) credited with water that flowed
        somewhere in (since, until].

        The meter only says the total rose in the interval, so a slot gets the credit when it
        holds at least half of the interval (or half a slot, for a long interval): a reading
        just after a slot boundary proves nothing about the slot it falls in.
        """
        mask = 0
        need = min(until - since, self.slot_ns)
        first = max(0, (since - begin) // self.slot_ns)
        last = min(self.slots - 1, (until - begin) // self.slot_ns)
        for s in range(first, last + 1):
            start = begin + s * self.slot_ns
            overlap = min(until, start + self.slot_ns) - max(since, start)
            if overlap > 0 and 2 * overlap >= need:
                mask |= 1 << s
        return mask


def night_plan(rule: NightFlowRule) -> NightPlan:
    span = night_span_min(rule.start, rule.end) * 60 * NS
    slot = rule.slot_min * 60 * NS
    start = (int(rule.start[:2]) * 60 + int(rule.start[3:])) * 60 * NS
    offset = ns(rule.utc_offset_h * 3600)
    return NightPlan(offset, start, span, slot, span // slot, ns(rule.max_gap_s))
