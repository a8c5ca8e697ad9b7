"""Alert rules (R5.2): a strictly checked rules file and a pure engine that turns de-identified
readings and liveness events into `Condition`s.

Rule types (the shipped default is `gateway/alerts/rules.yaml`, which documents each field)::

    threshold      a field past set points, each with a severity and a minimum duration;
                   clears when back past the set point ∓ hysteresis (no flapping)
    time_at_level  a field at or above levels for a time (CO, EN 50291: 300 ppm 3 min …)
    event          event kinds (and boolean telemetry flags) of a family; never auto-clear:
                   a fall stays open until a person resolves it
    absence        check: offline (liveness, severity by family) | elder_water (an elder living
                   alone whose water meter shows < 0.01 m³ in 12 h)
    anomaly        check: night_flow (water in every half hour of the night: a leak) |
                   daily_use (> 2 m³ a day) | overload (power above a limit for a while)
    composite      check: building_fire (members in ≥ 2 units of one building → one
                   building-level incident; members carry `incident_of`) | vital_signs (SpO2
                   low together with an abnormal heart rate)

Time: nothing here reads a clock. A reading's own `time_ns` drives every duration (the
simulator runs accelerated and in the past), and `RuleEngine.tick(now_ns)` must be on that same
timeline — the caller passes the newest reading time it has seen, not the wall clock.

Places: a condition is about its device's place cut to the rule's level (`unit` for household
devices, so the unit head is responsible; `building` for gates). A location that stops short of
the level (a community gate has no building) is cut at its deepest known part. Several devices
may hold one condition at one place (two flats of a unit with gas); the place's condition is as
severe as its worst device and clears only when the last device is back to normal.

State is in memory and bounded: a device's threshold or duration state exists only while
something is pending or active, a place's only while a device holds its condition; meter
baselines (one small record per water/electricity meter) are swept when a meter falls silent.
After a restart the engine knows nothing: auto-clearing alerts still open in the alert store
are not cleared by it until their devices report again and cross their thresholds anew.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, TypeAlias, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    model_validator,
)

from devices.config_file import invalid, load_mapping, read_text, validation_problems
from devices.families import EVENT_KINDS, Channel, Family
from devices.info import DeviceInfo
from devices.liveness import LivenessEvent
from devices.location import Location
from devices.models import FAMILY_DATA
from devices.places import PlaceLevel, place_at, place_key
from devices.reading import Reading
from gateway.alerts.model import Condition, Severity
from privacy.operators import PSEUDONYM_PATTERN

NS = 1_000_000_000
DAY_NS = 86_400 * NS
DEFAULT_RULES = "rules.yaml"
DEFAULT_MAX_STATES = 200_000  # per store: a safety valve far above a 3000-household community
_SWEEP_EVERY_NS = 3600 * NS
_METER_SILENT_NS = 2 * DAY_NS  # a meter silent this long loses its baselines
_EPS = 1e-9

HouseholdLookup: TypeAlias = Callable[[str], tuple[str, bool] | None]
"""device id → (the household's subject reference — a pseudonym, never the registry id —, elder
living alone), or None if the device serves no household."""


# -- the file, as pydantic models ----------------------------------------------------------

_NAME = r"^[a-z][a-z0-9_]{0,63}$"
_SEVERITY_WORDS: dict[str, Severity] = {
    **{s.name: s for s in Severity},
    **{s.colour: s for s in Severity},
}


def _severity(value: Any) -> Any:
    """``I``–``IV`` or the warning colour (``red`` … ``blue``); numbers are ambiguous."""
    if isinstance(value, Severity):
        return value
    if isinstance(value, str) and value.strip() in _SEVERITY_WORDS:
        return _SEVERITY_WORDS[value.strip()]
    raise ValueError(f"severity must be I, II, III or IV (or red … blue), not {value!r}")


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


SeverityIn = Annotated[Severity, BeforeValidator(_severity)]
Name = Annotated[str, Strict(), Field(pattern=_NAME)]
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
NonNeg = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]
Families = Annotated[tuple[Family, ...], BeforeValidator(_one_or_many), Field(min_length=1)]
ClockTime = Annotated[str, Strict(), Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
UtcOffset = Annotated[float, Strict(), Field(ge=-12, le=14)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Bound(_Model):
    """Exactly one of ``above`` (>), ``at_or_above`` (≥), ``below`` (<), ``at_or_below`` (≤)."""

    above: Number | None = None
    at_or_above: Number | None = None
    below: Number | None = None
    at_or_below: Number | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Bound:
        given = [op for op in _OPS if getattr(self, op) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(_OPS)} (got {len(given)})")
        return self

    @property
    def op(self) -> str:
        return next(op for op in _OPS if getattr(self, op) is not None)

    @property
    def value(self) -> float:
        found: float = getattr(self, self.op)
        return found


_OPS = ("above", "at_or_above", "below", "at_or_below")


class ThresholdLevel(Bound):
    severity: SeverityIn
    min_duration_s: NonNeg = 0.0


class _Rule(_Model):
    id: Name
    key: Name | None = None  # the condition key (one open alert per place and key); default: id
    kind: Name | None = None  # the human-facing kind; default: key
    level: PlaceLevel = PlaceLevel.UNIT

    @property
    def condition_key(self) -> str:
        return self.key or self.id

    @property
    def condition_kind(self) -> str:
        return self.kind or self.condition_key


class ThresholdRule(_Rule):
    type: Literal["threshold"]
    family: Family
    field: Annotated[str, Strict()]
    levels: list[ThresholdLevel] = Field(min_length=1, max_length=16)
    hysteresis: NonNeg = 0.0
    auto_clear: bool = True


class TimeLevel(_Model):
    at_least: Positive
    minutes: Positive
    severity: SeverityIn


class TimeAtLevelRule(_Rule):
    type: Literal["time_at_level"]
    family: Family
    field: Annotated[str, Strict()]
    levels: list[TimeLevel] = Field(min_length=1, max_length=16)
    hysteresis: NonNeg = 0.0
    auto_clear: bool = True


class When(Bound):
    field: Annotated[str, Strict()]


class EventRule(_Rule):
    type: Literal["event"]
    family: Families
    kinds: dict[Annotated[str, Strict()], SeverityIn] = Field(default_factory=dict)
    flags: dict[Annotated[str, Strict()], SeverityIn] = Field(default_factory=dict)
    when: When | None = None  # an extra test on the event's value (absent value: the event counts)
    auto_clear: Literal[False] = False  # an event stays open until a person resolves it

    @model_validator(mode="after")
    def _something_to_match(self) -> EventRule:
        if not self.kinds and not self.flags:
            raise ValueError("an event rule needs kinds or flags")
        return self


class OfflineRule(_Rule):
    type: Literal["absence"]
    check: Literal["offline"]
    severity: dict[Family, SeverityIn] = Field(min_length=1)  # families not named: no alert
    auto_clear: bool = True


class ElderWaterRule(_Rule):
    type: Literal["absence"]
    check: Literal["elder_water"]
    window_h: Annotated[float, Strict(), Field(gt=0, le=168)] = 12.0
    min_use_m3: Positive = 0.01
    severity: SeverityIn
    auto_clear: bool = True


class NightFlowRule(_Rule):
    type: Literal["anomaly"]
    check: Literal["night_flow"]
    start: ClockTime = "00:00"
    end: ClockTime = "05:00"
    slot_min: Annotated[int, Strict(), Field(ge=1, le=720)] = 30
    utc_offset_h: UtcOffset = 8.0  # China Standard Time, no daylight saving
    max_gap_s: Positive = 5400.0  # a longer gap between readings tells nothing about a slot
    severity: SeverityIn
    auto_clear: bool = True

    @model_validator(mode="after")
    def _slots_fit(self) -> NightFlowRule:
        span = _night_span_min(self.start, self.end)
        if span == 0:
            raise ValueError("start and end must differ")
        if span % self.slot_min:
            raise ValueError(f"the night ({span} min) is not whole {self.slot_min}-min slots")
        return self


class DailyUseRule(_Rule):
    type: Literal["anomaly"]
    check: Literal["daily_use"]
    limit_m3: Positive = 2.0
    utc_offset_h: UtcOffset = 8.0
    max_gap_s: Positive = 3600.0  # the day's baseline: a reading at most this long before 00:00
    severity: SeverityIn
    auto_clear: bool = False


class OverloadRule(_Rule):
    type: Literal["anomaly"]
    check: Literal["overload"]
    limit_kw: Positive = 10.0
    min_duration_s: NonNeg = 300.0
    hysteresis: NonNeg = 0.0
    severity: SeverityIn
    auto_clear: bool = True


class BuildingFireRule(_Rule):
    type: Literal["composite"]
    check: Literal["building_fire"]
    level: PlaceLevel = PlaceLevel.BUILDING
    members: list[Name] = Field(min_length=1)  # ids of the rules whose conditions count
    min_units: Annotated[int, Strict(), Field(ge=2, le=1000)] = 2
    window_s: Positive = 600.0
    severity: SeverityIn = Severity.I
    auto_clear: bool = False

    @model_validator(mode="after")
    def _at_building(self) -> BuildingFireRule:
        if self.level is not PlaceLevel.BUILDING:
            raise ValueError("a building fire is at level: building")
        return self


class VitalSignsRule(_Rule):
    type: Literal["composite"]
    check: Literal["vital_signs"]
    spo2_below: Positive = 92.0
    hr_below: Positive = 50.0
    hr_above: Positive = 120.0
    window_s: Positive = 120.0  # both abnormal within this span
    spo2_hysteresis: NonNeg = 1.0
    hr_hysteresis: NonNeg = 3.0
    severity: SeverityIn = Severity.I
    auto_clear: bool = True

    @model_validator(mode="after")
    def _band(self) -> VitalSignsRule:
        if self.hr_below >= self.hr_above:
            raise ValueError("hr_below must be below hr_above")
        return self


AbsenceRule = Annotated[OfflineRule | ElderWaterRule, Field(discriminator="check")]
AnomalyRule = Annotated[NightFlowRule | DailyUseRule | OverloadRule, Field(discriminator="check")]
CompositeRule = Annotated[BuildingFireRule | VitalSignsRule, Field(discriminator="check")]
RuleIn = Annotated[
    ThresholdRule | TimeAtLevelRule | EventRule | AbsenceRule | AnomalyRule | CompositeRule,
    Field(discriminator="type"),
]
Rule: TypeAlias = (
    ThresholdRule
    | TimeAtLevelRule
    | EventRule
    | OfflineRule
    | ElderWaterRule
    | NightFlowRule
    | DailyUseRule
    | OverloadRule
    | BuildingFireRule
    | VitalSignsRule
)
_TAGS = frozenset(
    {"threshold", "time_at_level", "event", "absence", "anomaly", "composite",
     "offline", "elder_water", "night_flow", "daily_use", "overload", "building_fire",
     "vital_signs"}
)  # fmt: skip


class RulesFile(_Model):
    version: Literal[1]
    rules: list[RuleIn] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class RuleSet:
    source: str
    rules: tuple[Rule, ...]

    def get(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)


# -- loading -------------------------------------------------------------------------------


WHAT = "alert rules"


def default_rules_text() -> str:
    return resources.files("gateway.alerts").joinpath(DEFAULT_RULES).read_text(encoding="utf-8")


def load_rules(path: Path | None = None) -> RuleSet:
    """The rules in `path`, or the shipped default; any problem refuses them all (ConfigError)."""
    if path is None:
        return parse_rules(default_rules_text(), source="gateway/alerts/rules.yaml (default)")
    return parse_rules(read_text(path, WHAT), source=str(path))


def parse_rules(text: str, source: str = "<rules>") -> RuleSet:
    """Pure: text → checked rules. Every problem is reported with its path, at once."""
    raw = load_mapping(text, source, WHAT, "version: 1 and rules")
    try:
        parsed = RulesFile.model_validate(raw)
    except ValidationError as exc:
        problems = validation_problems(exc, where=lambda loc: _where(raw, tuple(loc)))
        raise invalid(WHAT, source, problems) from None
    problems = _check(parsed.rules)
    if problems:
        raise invalid(WHAT, source, problems)
    return RuleSet(source, tuple(parsed.rules))


def _where(raw: Mapping[str, Any], loc: tuple[int | str, ...]) -> str:
    """``rules[3] (gas_lel).levels[0].severity``: the path as the file's author reads it."""
    parts: list[str] = []
    rest = list(loc)
    if len(rest) >= 2 and rest[0] == "rules" and isinstance(rest[1], int):
        index = rest[1]
        rules = raw.get("rules")
        rule_id = None
        if isinstance(rules, list) and index < len(rules) and isinstance(rules[index], dict):
            rule_id = rules[index].get("id")
        parts.append(f"rules[{index}]" + (f" ({rule_id})" if isinstance(rule_id, str) else ""))
        rest = rest[2:]
        while rest and rest[0] in _TAGS:  # the discriminators pydantic puts in the path
            rest = rest[1:]
    for p in rest:
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1]}[{p}]"] if parts else [f"[{p}]"]
        else:
            parts.append(str(p))
    return ".".join(parts) or "(top)"


def _field_kind(family: Family, name: str) -> str | None:
    """``number``, ``bool`` or ``other`` for a canonical field of `family`; None if unknown."""
    info = FAMILY_DATA[family].model_fields.get(name)
    if info is None:
        return None
    annotation = info.annotation
    args = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    types = {a for a in args if a is not NoneType}
    if types == {bool}:
        return "bool"
    if types and types <= {int, float}:
        return "number"
    return "other"


def _check(rules: Iterable[Rule]) -> list[str]:
    """What the models alone cannot see: names, fields and kinds that must exist."""
    problems: list[str] = []
    rules = list(rules)
    by_id: dict[str, Rule] = {}
    keys: dict[str, str] = {}
    for i, rule in enumerate(rules):
        at = f"rules[{i}] ({rule.id})"
        if rule.id in by_id:
            problems.append(f"{at}.id: {rule.id!r} is used twice")
        by_id.setdefault(rule.id, rule)
        key = rule.condition_key
        if key in keys and keys[key] != rule.id:
            problems.append(
                f"{at}.key: {key!r} is also the key of rule {keys[key]!r}"
                " (one would clear or merge the other's alerts)"
            )
        keys.setdefault(key, rule.id)
        if isinstance(rule, ThresholdRule | TimeAtLevelRule):
            kind = _field_kind(rule.family, rule.field)
            if kind != "number":
                what = "not a field" if kind is None else "not a number field"
                problems.append(f"{at}.field: {rule.field!r} is {what} of family {rule.family}")
        if isinstance(rule, ThresholdRule):
            problems += _check_levels(at, rule)
        if isinstance(rule, TimeAtLevelRule):
            ppm = [lvl.at_least for lvl in rule.levels]
            if len(set(ppm)) != len(ppm):
                problems.append(f"{at}.levels: two levels at the same value")
        if isinstance(rule, EventRule):
            names = ", ".join(rule.family)
            for kind_name in rule.kinds:
                if not any(kind_name in {k.value for k in EVENT_KINDS[f]} for f in rule.family):
                    problems.append(f"{at}.kinds: {kind_name!r} is not an event of {names}")
            for flag in rule.flags:
                if not any(_field_kind(f, flag) == "bool" for f in rule.family):
                    problems.append(f"{at}.flags: {flag!r} is not a true/false field of {names}")
            if rule.when is not None and not any(
                _field_kind(f, rule.when.field) == "number" for f in rule.family
            ):
                problems.append(
                    f"{at}.when.field: {rule.when.field!r} is not a number field of {names}"
                )
    for i, rule in enumerate(rules):
        if not isinstance(rule, BuildingFireRule):
            continue
        for j, member_id in enumerate(rule.members):
            at = f"rules[{i}] ({rule.id}).members[{j}]"
            member = by_id.get(member_id)
            if member is None:
                problems.append(f"{at}: no rule {member_id!r}")
            elif not isinstance(member, ThresholdRule | TimeAtLevelRule | EventRule):
                problems.append(
                    f"{at}: {member_id!r} is not a threshold, time_at_level or event rule"
                )
            elif member.level not in (PlaceLevel.UNIT, PlaceLevel.ROOM):
                problems.append(f"{at}: {member_id!r} must be at unit or room level to count units")
    return problems


def _check_levels(at: str, rule: ThresholdRule) -> list[str]:
    problems: list[str] = []
    seen: set[tuple[str, float]] = set()
    for j, level in enumerate(rule.levels):
        if (level.op, level.value) in seen:
            problems.append(f"{at}.levels[{j}]: the same set point twice")
        seen.add((level.op, level.value))
    if rule.hysteresis:
        uppers = sorted(lvl.value for lvl in rule.levels if lvl.op in ("above", "at_or_above"))
        lowers = sorted(lvl.value for lvl in rule.levels if lvl.op in ("below", "at_or_below"))
        if uppers and lowers and max(lowers) + rule.hysteresis > min(uppers) - rule.hysteresis:
            problems.append(f"{at}.hysteresis: the low and high bands overlap once widened")
    return problems


def _night_span_min(start: str, end: str) -> int:
    s = int(start[:2]) * 60 + int(start[3:])
    e = int(end[:2]) * 60 + int(end[3:])
    return (e - s) % 1440


# -- compiled forms --------------------------------------------------------------------------


def _compare(op: str, value: float, limit: float) -> bool:
    if op == "above":
        return value > limit
    if op == "at_or_above":
        return value >= limit
    if op == "below":
        return value < limit
    return value <= limit


@dataclass(frozen=True, slots=True)
class _Level:
    op: str
    limit: float
    severity: Severity
    min_ns: int

    def enters(self, value: float) -> bool:
        return _compare(self.op, value, self.limit)

    def holds(self, value: float, hysteresis: float) -> bool:
        """Still on: not yet back past the set point by the hysteresis."""
        upper = self.op in ("above", "at_or_above")
        return _compare(self.op, value, self.limit + (-hysteresis if upper else hysteresis))


@dataclass(frozen=True, slots=True)
class _Threshold:
    """A threshold rule, or an overload anomaly (the same logic on power_kw)."""

    id: str
    key: str
    kind: str
    family: Family
    field: str
    level: PlaceLevel
    levels: tuple[_Level, ...]
    hysteresis: float
    auto_clear: bool
    # No level can be entered strictly between these: the common, quiet reading is rejected
    # with two comparisons instead of a test per level.
    quiet_above: float = -math.inf
    quiet_below: float = math.inf


def _compile_threshold(rule: ThresholdRule | OverloadRule) -> _Threshold:
    if isinstance(rule, OverloadRule):
        levels: tuple[_Level, ...] = (
            _Level("above", rule.limit_kw, rule.severity, _ns(rule.min_duration_s)),
        )
        family, name = Family.METER, "power_kw"
    else:
        levels = tuple(
            _Level(lvl.op, lvl.value, lvl.severity, _ns(lvl.min_duration_s)) for lvl in rule.levels
        )
        family, name = rule.family, rule.field
    uppers = [lvl.limit for lvl in levels if lvl.op in ("above", "at_or_above")]
    lowers = [lvl.limit for lvl in levels if lvl.op in ("below", "at_or_below")]
    return _Threshold(
        rule.id, rule.condition_key, rule.condition_kind, family, name, rule.level, levels,
        rule.hysteresis, rule.auto_clear, max(lowers, default=-math.inf),
        min(uppers, default=math.inf),
    )  # fmt: skip


def _ns(seconds: float) -> int:
    return round(seconds * NS)


def _number(values: Mapping[str, Any], name: str) -> float | None:
    value = values.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


_DEPTH = {
    PlaceLevel.COMMUNITY: 1,
    PlaceLevel.GRID: 2,
    PlaceLevel.BUILDING: 3,
    PlaceLevel.UNIT: 4,
    PlaceLevel.ROOM: 5,
}
_LEVEL_AT = {depth: level for level, depth in _DEPTH.items()}


@dataclass(frozen=True, slots=True)
class _EventPlan:
    """A family's event rules indexed by event kind and by flag, so a reading is tested only
    against rules that name its kind or one of its true flags (most readings: none)."""

    rules: tuple[EventRule, ...]
    by_kind: Mapping[str, frozenset[int]]  # kind → positions in `rules`
    by_flag: tuple[tuple[str, frozenset[int]], ...]

    @classmethod
    def of(cls, rules: Sequence[EventRule]) -> _EventPlan:
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


@dataclass(frozen=True, slots=True)
class _Where:
    """Where a device's condition is reported: its place cut to the rule's level."""

    location: Location
    level: PlaceLevel
    place: str


_CUTS: dict[tuple[Location, PlaceLevel], _Where] = {}
_CUTS_MAX = 100_000  # places repeat per device: every reading would otherwise rebuild them


def _cut(location: Location, level: PlaceLevel) -> _Where:
    """Cut to `level`, or to the deepest known part when the location stops short of it."""
    where = _CUTS.get((location, level))
    if where is None:
        parts = (
            location.community, location.grid, location.building, location.unit, location.room
        )  # fmt: skip
        known = next((i for i, p in enumerate(parts) if not p), len(parts))
        chosen = _LEVEL_AT[max(1, min(_DEPTH[level], known))]
        where = _Where(place_at(location, chosen), chosen, place_key(location, chosen))
        if len(_CUTS) >= _CUTS_MAX:
            _CUTS.clear()
        _CUTS[(location, level)] = where
    return where


@dataclass(frozen=True, slots=True)
class _NightPlan:
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


def _plan(rule: NightFlowRule) -> _NightPlan:
    span = _night_span_min(rule.start, rule.end) * 60 * NS
    slot = rule.slot_min * 60 * NS
    start = (int(rule.start[:2]) * 60 + int(rule.start[3:])) * 60 * NS
    offset = _ns(rule.utc_offset_h * 3600)
    return _NightPlan(offset, start, span, slot, span // slot, _ns(rule.max_gap_s))


# -- per-device and per-place state ----------------------------------------------------------


@dataclass(slots=True)
class _ThresholdState:
    where: _Where
    subject: str
    since: list[int | None]  # per level: first reading of the current run past its set point
    active: list[bool]
    last_ns: int
    value: float
    reported: bool = False  # an active condition went out, so the end is a clear


@dataclass(slots=True)
class _TimeState:
    where: _Where
    subject: str
    since: list[int | None]  # per level: first reading of the current run at/above it
    last_ns: int
    value: float
    alarmed: Severity | None = None  # held at the worst level reached until the field falls


@dataclass(slots=True)
class _ElderWater:
    household: str  # the household's subject reference (a pseudonym)
    where: _Where
    first_ns: int
    latest_ns: int
    latest_m3: float
    history: deque[tuple[int, float]]  # (time, total), ≥ 10 min apart: the 12 h baselines
    fired_m3: float | None = None  # the total when the rule fired


@dataclass(slots=True)
class _Night:
    where: _Where
    last_ns: int
    last_m3: float
    night_start: int | None = None  # the night being watched (its start, ns)
    mask: int = 0  # slots of that night in which the total rose
    active: bool = False


@dataclass(slots=True)
class _Daily:
    where: _Where
    last_ns: int
    last_m3: float
    day: int  # local day number
    base_m3: float
    active: bool = False


@dataclass(slots=True)
class _Vitals:
    where: _Where
    subject: str
    last_ns: int
    spo2: tuple[int, float] | None = None  # last low SpO2 within the window
    hr: tuple[int, float] | None = None  # last abnormal heart rate within the window
    active: bool = False


@dataclass(slots=True)
class _Fire:
    location: Location  # the building
    units: dict[str, int] = field(default_factory=dict)  # unit → last member activity
    members: dict[tuple[str, str], Condition] = field(default_factory=dict)  # (place, device)
    formed: bool = False


def _capped(store: MutableMapping[Any, Any], cap: int) -> None:
    """The oldest entries go first once a store passes its cap (a safety valve only)."""
    while len(store) > cap:
        del store[next(iter(store))]


# -- the engine ------------------------------------------------------------------------------


class RuleEngine:
    """Readings and liveness events in, `Condition`s out; pure, single-threaded, in memory.

    Active conditions repeat on every reading that still meets them (the alert engine dedups);
    clears (`active=False`) come once, only from auto-clearing rules, when the last device
    holding a condition at a place is back to normal.
    """

    def __init__(
        self,
        ruleset: RuleSet,
        *,
        households: HouseholdLookup | None = None,
        max_states: int = DEFAULT_MAX_STATES,
    ) -> None:
        self.ruleset = ruleset
        self._households = households
        self._max = max_states
        self._thresholds: dict[Family, list[_Threshold]] = {}
        self._threshold_by_id: dict[str, _Threshold] = {}
        self._timed: dict[Family, list[TimeAtLevelRule]] = {}
        self._timed_by_id: dict[str, TimeAtLevelRule] = {}
        self._events: dict[Family, list[EventRule]] = {}
        self._offline: list[OfflineRule] = []
        self._elder: list[ElderWaterRule] = []
        self._nights: list[NightFlowRule] = []
        self._dailies: list[DailyUseRule] = []
        self._fires: list[BuildingFireRule] = []
        self._fire_of: dict[str, list[BuildingFireRule]] = {}  # member rule id → fire rules
        self._vitals: list[VitalSignsRule] = []
        for rule in ruleset.rules:
            self._index(rule)
        self._night_plans = {r.id: _plan(r) for r in self._nights}
        self._event_plans = {f: _EventPlan.of(rules) for f, rules in self._events.items()}
        self._by_id: dict[str, Rule] = {r.id: r for r in ruleset.rules}
        # state: (rule id, device id) or (rule id, place) → …
        self._t_state: dict[tuple[str, str], _ThresholdState] = {}
        self._a_state: dict[tuple[str, str], _TimeState] = {}
        self._e_state: dict[tuple[str, str], _ElderWater] = {}
        self._n_state: dict[tuple[str, str], _Night] = {}
        self._n_due: dict[int, set[tuple[str, str]]] = {}  # when a night is decided → states
        self._d_state: dict[tuple[str, str], _Daily] = {}
        self._v_state: dict[tuple[str, str], _Vitals] = {}
        self._f_state: dict[tuple[str, str], _Fire] = {}  # (rule id, building place)
        self._held: dict[tuple[str, str], dict[str, Severity]] = {}  # (rule id, place) → devices
        self._next_sweep_ns: int | None = None

    def _index(self, rule: Rule) -> None:
        if isinstance(rule, ThresholdRule | OverloadRule):
            compiled = _compile_threshold(rule)
            self._thresholds.setdefault(compiled.family, []).append(compiled)
            self._threshold_by_id[compiled.id] = compiled
        elif isinstance(rule, TimeAtLevelRule):
            self._timed.setdefault(rule.family, []).append(rule)
            self._timed_by_id[rule.id] = rule
        elif isinstance(rule, EventRule):
            for family in rule.family:
                self._events.setdefault(family, []).append(rule)
        elif isinstance(rule, OfflineRule):
            self._offline.append(rule)
        elif isinstance(rule, ElderWaterRule):
            self._elder.append(rule)
        elif isinstance(rule, NightFlowRule):
            self._nights.append(rule)
        elif isinstance(rule, DailyUseRule):
            self._dailies.append(rule)
        elif isinstance(rule, BuildingFireRule):
            self._fires.append(rule)
            for member in rule.members:
                self._fire_of.setdefault(member, []).append(rule)
        else:
            self._vitals.append(rule)

    # -- inputs ------------------------------------------------------------------------------

    def on_reading(self, reading: Reading, device: DeviceInfo | None) -> list[Condition]:
        """Conditions a de-identified reading starts, repeats or ends."""
        out: list[Condition] = []
        if reading.channel is Channel.STATUS:
            return out  # liveness comes through `on_liveness`
        t, values = reading.time_ns, reading.values
        subject = self._subject(reading, device)
        for rule in self._thresholds.get(reading.family, ()):
            value = _number(values, rule.field)
            if value is not None:
                out += self._threshold(rule, reading.device_id, reading.location, subject, value, t)
        for timed in self._timed.get(reading.family, ()):
            value = _number(values, timed.field)
            if value is not None:
                where = _cut(reading.location, timed.level)
                out += self._time_at_level(timed, reading.device_id, where, subject, value, t)
        plan = self._event_plans.get(reading.family)
        if plan is not None:
            for event_rule in plan.candidates(reading):
                found = self._event(event_rule, reading, subject)
                if found is not None:
                    out.append(found)
        if reading.family is Family.METER:
            water = _number(values, "water_m3")
            if water is not None:
                out += self._water(reading, water)
        if reading.family is Family.ELDER and self._vitals:
            for vitals in self._vitals:
                out += self._vital_signs(vitals, reading, subject)
        if self._fire_of and out:
            out = self._compose_fire(out, t)
        return out

    def on_liveness(self, event: LivenessEvent, device: DeviceInfo | None) -> list[Condition]:
        """A device went offline (its place's `offline` condition) or came back."""
        out: list[Condition] = []
        for rule in self._offline:
            severity = rule.severity.get(event.family)
            if severity is None:
                continue
            where = _cut(event.location, rule.level)
            subject = self._household_ref(event.device_id) if event.family is Family.ELDER else ""
            proto = Condition(
                rule.id, rule.condition_key, rule.condition_kind, severity, where.location,
                where.level, event.at_ns, True, event.device_id, subject, None,
                {"reason": event.reason, "family": event.family.value}, rule.auto_clear,
            )  # fmt: skip
            if not event.online:
                out.append(self._hold(proto))
            else:
                out += self._release(proto)
        return out

    def tick(self, now_ns: int) -> list[Condition]:
        """Time-driven rules at `now_ns`, which must be on the readings' timeline (the newest
        reading time seen), never the wall clock: minimum durations and times at level that
        have run out (the last value is taken to persist), nights that have ended, elders'
        12 hours without water, fire incidents whose window has passed."""
        out: list[Condition] = []
        out += self._tick_thresholds(now_ns)
        out += self._tick_timed(now_ns)
        out += self._tick_nights(now_ns)
        out += self._tick_elder(now_ns)
        out += self._tick_fires(now_ns)
        if self._next_sweep_ns is None or now_ns >= self._next_sweep_ns:
            self._sweep(now_ns)
            self._next_sweep_ns = now_ns + _SWEEP_EVERY_NS
        if self._fire_of and out:
            out = self._compose_fire(out, now_ns)
        return out

    def state_size(self) -> int:
        """Entries held across all stores (for tests and a metrics gauge)."""
        stores: tuple[Mapping[Any, Any], ...] = (
            self._t_state, self._a_state, self._e_state, self._n_state, self._n_due,
            self._d_state, self._v_state, self._f_state, self._held,
        )  # fmt: skip
        return sum(len(s) for s in stores)

    # -- helpers -----------------------------------------------------------------------------

    def _subject(self, reading: Reading, device: DeviceInfo | None) -> str:
        """A pseudonymous subject (`k1:…`): an access event's `resident_ref`. Household ids
        are not pseudonyms; the device id already leads a responder to the flat."""
        if reading.family is Family.ACCESS:
            ref = reading.values.get("resident_ref")
            return ref if isinstance(ref, str) and PSEUDONYM_PATTERN.fullmatch(ref) else ""
        return ""

    def _hold(self, proto: Condition) -> Condition:
        """Record that `proto.device_id` holds the condition at its place; the place's
        condition is as severe as its worst device. Only auto-clearing conditions need it."""
        if not proto.auto_clear:
            return proto
        held = self._held.setdefault((proto.rule_id, proto.place), {})
        held[proto.device_id] = proto.severity
        _capped(self._held, self._max)
        worst = min(held.values())
        return replace(proto, severity=worst, detail={**proto.detail, "devices": len(held)})

    def _release(self, proto: Condition) -> list[Condition]:
        """The device is back to normal; the place clears when it was the last one."""
        key = (proto.rule_id, proto.place)
        held = self._held.get(key)
        severity = None if held is None else held.pop(proto.device_id, None)
        if held is None or severity is None or held:
            return []
        del self._held[key]
        detail = {**proto.detail, "devices": 0}
        return [replace(proto, active=False, severity=severity, detail=detail)]

    # -- threshold ---------------------------------------------------------------------------

    def _threshold(
        self, rule: _Threshold, device_id: str, at: Location, subject: str, value: float, t: int
    ) -> list[Condition]:
        key = (rule.id, device_id)
        st = self._t_state.get(key)
        if st is None:
            if rule.quiet_above < value < rule.quiet_below:
                return []  # the common case: normal, and nothing to end
            if not any(level.enters(value) for level in rule.levels):
                return []
            where = _cut(at, rule.level)
            n = len(rule.levels)
            st = _ThresholdState(where, subject, [None] * n, [False] * n, t, value)
            self._t_state[key] = st
            _capped(self._t_state, self._max)
        elif t < st.last_ns:
            return []  # an older reading (redelivered, or a late batch) changes nothing
        st.last_ns, st.value = t, value
        if not st.reported:
            st.where, st.subject = _cut(at, rule.level), subject
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
        return self._threshold_report(rule, device_id, st, t)

    def _threshold_report(
        self, rule: _Threshold, device_id: str, st: _ThresholdState, t: int
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
            out.append(self._hold(proto))
        elif st.reported:
            st.reported = False
            out += self._release(proto)
        if worst is None and all(s is None for s in st.since):
            self._t_state.pop((rule.id, device_id), None)
        return out

    def _tick_thresholds(self, now: int) -> list[Condition]:
        out: list[Condition] = []
        for (rule_id, device_id), st in list(self._t_state.items()):
            rule = self._threshold_by_id[rule_id]
            changed = False
            for i, level in enumerate(rule.levels):
                since = st.since[i]
                if not st.active[i] and since is not None and now - since >= level.min_ns:
                    st.active[i] = changed = True
            if changed:
                out += self._threshold_report(rule, device_id, st, now)
        return out

    # -- time at level -----------------------------------------------------------------------

    def _time_at_level(
        self,
        rule: TimeAtLevelRule,
        device_id: str,
        where: _Where,
        subject: str,
        value: float,
        t: int,
    ) -> list[Condition]:
        key = (rule.id, device_id)
        st = self._a_state.get(key)
        if st is None:
            if not any(value >= lvl.at_least for lvl in rule.levels):
                return []
            st = _TimeState(where, subject, [None] * len(rule.levels), t, value)
            self._a_state[key] = st
            _capped(self._a_state, self._max)
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
        return self._time_report(rule, device_id, st, t, ended=self._time_ended(rule, st))

    def _time_ended(self, rule: TimeAtLevelRule, st: _TimeState) -> bool:
        lowest = min(lvl.at_least for lvl in rule.levels)
        return st.alarmed is not None and st.value < lowest - rule.hysteresis

    def _time_report(
        self, rule: TimeAtLevelRule, device_id: str, st: _TimeState, t: int, *, ended: bool
    ) -> list[Condition]:
        reached = [
            lvl
            for lvl, since in zip(rule.levels, st.since, strict=True)
            if since is not None and t - since >= _ns(lvl.minutes * 60)
        ]
        proto = Condition(
            rule.id, rule.condition_key, rule.condition_kind, st.alarmed or Severity.IV,
            st.where.location, st.where.level, t, True, device_id, st.subject, st.value,
            {"field": rule.field}, rule.auto_clear,
        )  # fmt: skip
        out: list[Condition] = []
        if ended:
            st.alarmed = None
            out += self._release(proto)
        elif reached or st.alarmed is not None:
            worst = min([lvl.severity for lvl in reached] + ([st.alarmed] if st.alarmed else []))
            st.alarmed = worst
            top = min(reached, key=lambda lvl: lvl.severity) if reached else None
            detail = dict(proto.detail)
            if top is not None:
                detail |= {"at_least": top.at_least, "minutes": top.minutes}
            out.append(self._hold(replace(proto, severity=worst, detail=detail)))
        if st.alarmed is None and all(s is None for s in st.since):
            self._a_state.pop((rule.id, device_id), None)
        return out

    def _tick_timed(self, now: int) -> list[Condition]:
        out: list[Condition] = []
        for (rule_id, device_id), st in list(self._a_state.items()):
            rule = self._timed_by_id[rule_id]
            due = any(
                since is not None
                and now - since >= _ns(lvl.minutes * 60)
                and (st.alarmed is None or lvl.severity < st.alarmed)
                for lvl, since in zip(rule.levels, st.since, strict=True)
            )
            if due:
                out += self._time_report(rule, device_id, st, now, ended=False)
        return out

    # -- events ------------------------------------------------------------------------------

    def _event(self, rule: EventRule, reading: Reading, subject: str) -> Condition | None:
        values = reading.values
        severity: Severity | None = None
        detail: dict[str, Any] = {}
        if reading.channel is Channel.EVENT and reading.kind in rule.kinds:
            severity = rule.kinds[reading.kind]
            detail["event"] = reading.kind
            when = rule.when
            if when is not None:
                measured = _number(values, when.field)
                if measured is not None and not _compare(when.op, measured, when.value):
                    return None
        for flag, flag_severity in rule.flags.items():
            if values.get(flag) is True and (severity is None or flag_severity < severity):
                severity = flag_severity
                detail.setdefault("flag", flag)
        if severity is None:
            return None
        value = _number(values, rule.when.field) if rule.when is not None else None
        door = values.get("door")
        if reading.family is Family.ACCESS and isinstance(door, str):
            detail["door"] = door  # a gate's or zone's name (non-personal, kept by privacy)
        where = _cut(reading.location, rule.level)
        return Condition(
            rule.id, rule.condition_key, rule.condition_kind, severity, where.location,
            where.level, reading.time_ns, True, reading.device_id, subject, value, detail,
            auto_clear=False,
        )  # fmt: skip

    # -- water meters ------------------------------------------------------------------------

    def _household_ref(self, device_id: str) -> str:
        """The pseudonymous subject of the household a device serves ("" if none)."""
        if self._households is None:
            return ""
        found = self._households(device_id)
        return "" if found is None else found[0]

    def _water(self, reading: Reading, total: float) -> list[Condition]:
        out: list[Condition] = []
        device_id, t = reading.device_id, reading.time_ns
        for night in self._nights:
            out += self._night(night, device_id, reading.location, t, total)
        for daily in self._dailies:
            out += self._daily(daily, device_id, reading.location, t, total)
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
        st = self._e_state.get(key)
        if st is None:
            where = _cut(location, rule.level)
            st = _ElderWater(household, where, t, t, total, deque([(t, total)]))
            self._e_state[key] = st
            _capped(self._e_state, self._max)
            return []
        if t < st.latest_ns:
            return []
        if total < st.latest_m3 - _EPS:  # a new meter, or a reset: start again
            st.history.clear()
            st.first_ns = t
            st.fired_m3 = total if st.fired_m3 is not None else None
        st.household, st.where = household, _cut(location, rule.level)
        st.latest_ns, st.latest_m3 = t, total
        if not st.history or t - st.history[-1][0] >= 600 * NS:
            st.history.append((t, total))
        return self._elder_eval(rule, device_id, st, t, repeat=True)

    def _elder_eval(
        self, rule: ElderWaterRule, device_id: str, st: _ElderWater, now: int, *, repeat: bool
    ) -> list[Condition]:
        window = _ns(rule.window_h * 3600)
        while len(st.history) >= 2 and st.history[1][0] <= now - window:
            st.history.popleft()  # keep the newest entry at or before the window's start
        proto = Condition(
            rule.id, rule.condition_key, rule.condition_kind, rule.severity, st.where.location,
            st.where.level, now, True, device_id, st.household, None,
            {"window_h": rule.window_h, "min_use_m3": rule.min_use_m3}, rule.auto_clear,
        )  # fmt: skip
        if st.fired_m3 is not None:
            if st.latest_m3 - st.fired_m3 >= rule.min_use_m3 - _EPS:
                st.fired_m3 = None
                return self._release(proto)
            if repeat:
                return [self._hold(replace(proto, value=st.latest_m3 - st.fired_m3))]
            return []
        watched_long_enough = now - st.first_ns >= window
        still_reporting = st.latest_ns > now - window  # silence is the offline rule's business
        if not (watched_long_enough and still_reporting and st.history):
            return []
        used = st.latest_m3 - st.history[0][1]
        if used >= rule.min_use_m3 - _EPS:
            return []
        st.fired_m3 = st.latest_m3
        return [self._hold(replace(proto, value=round(used, 6)))]

    def _tick_elder(self, now: int) -> list[Condition]:
        out: list[Condition] = []
        for (rule_id, device_id), st in list(self._e_state.items()):
            rule = self._by_id[rule_id]
            if now >= st.latest_ns and isinstance(rule, ElderWaterRule):
                out += self._elder_eval(rule, device_id, st, now, repeat=False)
        return out

    # night flow

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
            st = _Night(_cut(location, rule.level), t, total)
            self._n_state[key] = st
            _capped(self._n_state, self._max)
            rose = False
        elif t <= st.last_ns:
            return out
        else:
            rose = total - st.last_m3 > _EPS and t - st.last_ns <= plan.grace_ns
        prev_t = st.last_ns
        st.where, st.last_ns, st.last_m3 = _cut(location, rule.level), t, total
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
            return [self._hold(proto)]
        if st.active:
            st.active = False
            return self._release(proto)
        return []

    def _tick_nights(self, now: int) -> list[Condition]:
        """Nights whose meters have not reported since the night ended (plus the longest gap
        that still counts); a reading after the night's end decides it sooner."""
        out: list[Condition] = []
        for due_at in sorted(d for d in self._n_due if d <= now):
            for key in sorted(self._n_due.get(due_at, ())):
                st = self._n_state.get(key)
                rule = self._by_id[key[0]]
                if st is not None and st.night_start is not None:
                    assert isinstance(rule, NightFlowRule)
                    out += self._close_night(rule, key[1], st)
            self._n_due.pop(due_at, None)
        return out

    # daily use

    def _daily(
        self, rule: DailyUseRule, device_id: str, location: Location, t: int, total: float
    ) -> list[Condition]:
        key = (rule.id, device_id)
        offset = _ns(rule.utc_offset_h * 3600)
        day = (t + offset) // DAY_NS
        st = self._d_state.get(key)
        out: list[Condition] = []
        where = _cut(location, rule.level)
        proto = Condition(
            rule.id, rule.condition_key, rule.condition_kind, rule.severity, where.location,
            where.level, t, True, device_id, "", None, {"limit_m3": rule.limit_m3},
            rule.auto_clear,
        )  # fmt: skip
        if st is None:
            st = _Daily(where, t, total, day, total)
            self._d_state[key] = st
            _capped(self._d_state, self._max)
        elif t <= st.last_ns:
            return out
        elif day != st.day:
            midnight = day * DAY_NS - offset
            close = midnight - st.last_ns <= _ns(rule.max_gap_s)
            st.base_m3 = st.last_m3 if close else total
            st.day = day
            if st.active:
                st.active = False
                out += self._release(replace(proto, at_ns=midnight))
        st.where, st.last_ns, st.last_m3 = where, t, total
        if total < st.base_m3:
            st.base_m3 = total  # a new meter, or a reset
        used = total - st.base_m3
        if used > rule.limit_m3:
            st.active = True
            out.append(self._hold(replace(proto, value=round(used, 6))))
        return out

    # -- composites --------------------------------------------------------------------------

    def _vital_signs(self, rule: VitalSignsRule, reading: Reading, subject: str) -> list[Condition]:
        spo2 = _number(reading.values, "spo2_pct")
        hr = _number(reading.values, "heart_rate_bpm")
        if spo2 is None and hr is None:
            return []
        key = (rule.id, reading.device_id)
        t = reading.time_ns
        st = self._v_state.get(key)
        if st is not None and t < st.last_ns:
            return []
        active = st is not None and st.active
        low = spo2 is not None and spo2 < rule.spo2_below + (rule.spo2_hysteresis if active else 0)
        h = rule.hr_hysteresis if active else 0.0
        off = hr is not None and (hr < rule.hr_below + h or hr > rule.hr_above - h)
        if st is None:
            if not (low or off):
                return []
            st = _Vitals(_cut(reading.location, rule.level), subject, t)
            self._v_state[key] = st
            _capped(self._v_state, self._max)
        st.last_ns = t
        if spo2 is not None:
            st.spo2 = (t, spo2) if low else None
        if hr is not None:
            st.hr = (t, hr) if off else None
        window = _ns(rule.window_s)
        if st.spo2 is not None and t - st.spo2[0] > window:
            st.spo2 = None
        if st.hr is not None and t - st.hr[0] > window:
            st.hr = None
        if not st.active:
            st.where, st.subject = _cut(reading.location, rule.level), subject
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
            out.append(self._hold(proto))
        elif st.active:
            st.active = False
            out += self._release(proto)
        if not st.active and st.spo2 is None and st.hr is None:
            del self._v_state[key]
        return out

    def _compose_fire(self, conditions: list[Condition], t: int) -> list[Condition]:
        """Members of a building fire: count units, raise the incident, tag the members.

        The incident goes first, so the alert engine knows it before a member names it."""
        heads: list[Condition] = []
        members: list[Condition] = []
        for cond in conditions:
            for rule in self._fire_of.get(cond.rule_id, ()):
                new, cond = self._fire_member(rule, cond, t)
                heads += new
            members.append(cond)
        return heads + members

    def _fire_member(
        self, rule: BuildingFireRule, cond: Condition, t: int
    ) -> tuple[list[Condition], Condition]:
        loc = cond.location
        if not loc.building or not loc.unit:
            return [], cond
        building = place_key(loc, PlaceLevel.BUILDING)
        key = (rule.id, building)
        st = self._f_state.get(key)
        if st is None:
            if not cond.active:
                return [], cond
            st = self._f_state[key] = _Fire(place_at(loc, PlaceLevel.BUILDING))
            _capped(self._f_state, self._max)
        tag = {"incident_place": building}
        if cond.active:
            st.units[loc.unit] = t
            st.members[(cond.place, cond.device_id)] = cond
        self._prune_fire(rule, st, t)
        if not st.formed and len(st.units) < rule.min_units:
            return [], cond  # once formed, the incident lasts until its units all go quiet
        incident = Condition(
            rule.id, rule.condition_key, rule.condition_kind, rule.severity,
            st.location, PlaceLevel.BUILDING, t, True, "", "",
            float(len(st.units)),
            {"units": sorted(st.units), "devices": len(st.members), "window_s": rule.window_s},
            rule.auto_clear,
        )  # fmt: skip
        me = replace(cond, incident_of=rule.condition_key, detail={**cond.detail, **tag})
        out = [incident]
        if not st.formed:  # members raised before the incident now join it
            st.formed = True
            out += [
                replace(m, incident_of=rule.condition_key, at_ns=t, detail={**m.detail, **tag})
                for k, m in st.members.items()
                if k != (cond.place, cond.device_id)
            ]
        return out, me

    def _prune_fire(self, rule: BuildingFireRule, st: _Fire, t: int) -> None:
        window = _ns(rule.window_s)
        for unit in [u for u, last in st.units.items() if t - last > window]:
            del st.units[unit]
        for k in [k for k, m in st.members.items() if m.location.unit not in st.units]:
            del st.members[k]

    def _tick_fires(self, now: int) -> list[Condition]:
        out: list[Condition] = []
        for (rule_id, building), st in list(self._f_state.items()):
            rule = self._by_id[rule_id]
            assert isinstance(rule, BuildingFireRule)
            self._prune_fire(rule, st, now)
            if st.units:
                continue
            del self._f_state[(rule_id, building)]
            if st.formed and rule.auto_clear:
                out.append(
                    Condition(
                        rule.id,
                        rule.condition_key,
                        rule.condition_kind,
                        rule.severity,
                        st.location,
                        PlaceLevel.BUILDING,
                        now,
                        False,
                        "",
                        "",
                        0.0,
                        {"units": []},
                        True,
                    )
                )
        return out

    # -- housekeeping ------------------------------------------------------------------------

    def _sweep(self, now: int) -> None:
        """Forget meters silent for days (nothing pending); they start afresh if they return."""
        horizon = now - _METER_SILENT_NS
        for n_key, night in list(self._n_state.items()):
            if night.last_ns < horizon and not night.active and night.night_start is None:
                del self._n_state[n_key]
        for d_key, daily in list(self._d_state.items()):
            pending = daily.active and self._by_id[d_key[0]].auto_clear
            if daily.last_ns < horizon and not pending:
                del self._d_state[d_key]
        for e_key, elder in list(self._e_state.items()):
            if elder.latest_ns < horizon and elder.fired_m3 is None:
                del self._e_state[e_key]
        for v_key, vitals in list(self._v_state.items()):
            if vitals.last_ns < horizon and not vitals.active:
                del self._v_state[v_key]
