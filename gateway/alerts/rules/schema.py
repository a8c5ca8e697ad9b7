"""The rules file (`gateway/alerts/rules.yaml` is the shipped default, documenting each field):
pydantic models checked strictly, then the checks the models alone cannot make.

Rule types::

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

A new rule kind is a model here (added to `RuleIn` and `Rule`, its tags to `_TAGS`) and its
evaluation in the family module that owns it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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
from devices.families import EVENT_KINDS, Family
from devices.models import FAMILY_DATA
from devices.places import PlaceLevel
from gateway.alerts.model import Severity

DEFAULT_RULES = "rules.yaml"  # a resource of the package gateway.alerts, not of this module


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
        span = night_span_min(self.start, self.end)
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


def night_span_min(start: str, end: str) -> int:
    s = int(start[:2]) * 60 + int(start[3:])
    e = int(end[:2]) * 60 + int(end[3:])
    return (e - s) % 1440
