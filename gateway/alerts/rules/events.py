"""Event rules: event kinds (and boolean telemetry flags) of a family. Stateless, and never
auto-clearing: a fall stays open until a person resolves it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from devices.families import Channel, Family
from devices.reading import Reading
from gateway.alerts.model import Condition, Severity
from gateway.alerts.rules.plans import EventPlan, compare, number
from gateway.alerts.rules.schema import EventRule, Rule
from gateway.alerts.rules.state import cut


def event_plans(rules: Iterable[Rule]) -> dict[Family, EventPlan]:
    """Each family's event rules, in file order, indexed by kind and flag."""
    by_family: dict[Family, list[EventRule]] = {}
    for rule in rules:
        if isinstance(rule, EventRule):
            for family in rule.family:
                by_family.setdefault(family, []).append(rule)
    return {f: EventPlan.of(family_rules) for f, family_rules in by_family.items()}


def event_condition(rule: EventRule, reading: Reading, subject: str) -> Condition | None:
    """The condition `reading` raises under `rule` (a candidate from its family's plan)."""
    values = reading.values
    severity: Severity | None = None
    detail: dict[str, Any] = {}
    if reading.channel is Channel.EVENT and reading.kind in rule.kinds:
        severity = rule.kinds[reading.kind]
        detail["event"] = reading.kind
        when = rule.when
        if when is not None:
            measured = number(values, when.field)
            if measured is not None and not compare(when.op, measured, when.value):
                return None
    for flag, flag_severity in rule.flags.items():
        if values.get(flag) is True and (severity is None or flag_severity < severity):
            severity = flag_severity
            detail.setdefault("flag", flag)
    if severity is None:
        return None
    value = number(values, rule.when.field) if rule.when is not None else None
    door = values.get("door")
    if reading.family is Family.ACCESS and isinstance(door, str):
        detail["door"] = door  # a gate's or zone's name (non-personal, kept by privacy)
    where = cut(reading.location, rule.level)
    return Condition(
        rule.id, rule.condition_key, rule.condition_kind, severity, where.location,
        where.level, reading.time_ns, True, reading.device_id, subject, value, detail,
        auto_clear=False,
    )  # fmt: skip
