"""The per-field privacy policy file (R3.1, R3.7): what becomes of every canonical field.

Shape (the shipped default is `privacy/policy.yaml`; docs/privacy.md explains each choice)::

    version: 1
    coarse_time_s: 900          # bucket of `time: coarse`
    age_on: event_date          # or a fixed date (YYYY-MM-DD) for reproducible exports
    position_decimals: 2        # `generalise {to: coarse_position}`: 2 ≈ 1 km
    retention: {access: 30d, elder: 90d, safety: 1y, meter: 3y, device_status: 90d, liveness: 1y}
    families:
      access:                   # access, safety, meter, elder, and status (status channel)
        location: coarse        # keep | coarse (room → "")
        time: exact             # exact | coarse
        fields:
          id_number:
            class: direct_identifier     # must agree with devices.models
            actions:
              - pseudonymise: {as: resident_ref}
              - generalise: {to: age_band, as: age_band}
          person_name: {class: direct_identifier, actions: [drop]}
          door:
            class: non_personal
            actions: [keep]
            text: {allow: pattern, pattern: "...", otherwise: drop}   # free text: see below

It is an allow-list: a field the policy does not name is dropped. Everything is checked at
load time — unknown keys, fields, classes and operators, an action a class may not have
(``keep`` of an ID number, anything but ``drop`` of a face), clashing outputs — and every
problem is reported with its path in one `ConfigError`: a privacy policy must not half-load.

Free text. A string field whose model type is plain `str` (a door name, a fault text, a
firmware version) is whatever the device wrote, and devices write names, phones, ID numbers
and plates into such fields. A kept free-text field must therefore have a `text` rule::

    text: {allow: pattern, pattern: REGEX, otherwise: drop|scrub}
    text: {allow: enum, values: [a, b, ...], otherwise: drop|scrub}

A value is kept as it is only if the whole value matches `pattern` (or is one of `values`)
*and* holds nothing identifier-shaped (`holds_identifier`); any other value is dropped, or with
``otherwise: scrub`` kept with every identifier-shaped part replaced by ``<redacted>``
(`scrub_text`). `otherwise` defaults to drop. Non-ASCII text counts as personal (names,
plates) except for the characters a pattern admits on purpose (a deployment's door-name
vocabulary). Fields with a closed set of values in the model (Literal, enums) are validated
by the model already and need no rule, though they may have one.
"""

from __future__ import annotations

import re
import types
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

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
from devices.families import Family
from devices.models import FAMILY_DATA, DataClass, FamilyData, StatusData, field_classes
from privacy.identifiers import IdentifierShape, find_identifier
from privacy.operators import MASKS, PLATE_PROVINCES, IdentifierKind
from privacy.redact import REDACTED

STATUS = "status"  # the policy's name for the status channel, shared by every family
FAMILY_KEYS: tuple[str, ...] = (*(f.value for f in Family), STATUS)
MODELS: dict[str, type[FamilyData]] = {
    **{f.value: model for f, model in FAMILY_DATA.items()},
    STATUS: StatusData,
}
MEASUREMENTS = ("access", "safety", "meter", "elder", "device_status", "liveness")

Operator = Literal["keep", "drop", "pseudonymise", "mask", "generalise", "resolve"]
OPERATORS: tuple[str, ...] = ("keep", "drop", "pseudonymise", "mask", "generalise", "resolve")
Generaliser = Literal["age_band", "gender", "coarse_position", "coarse_time"]

# Which operators each class of data may have. Direct identifiers are never kept; biometrics
# are only ever dropped (a keyed hash of a face image identifies nothing and protects nothing).
ALLOWED_OPERATORS: dict[DataClass, frozenset[str]] = {
    DataClass.NON_PERSONAL: frozenset({"keep", "drop"}),
    DataClass.QUASI_IDENTIFIER: frozenset({"keep", "drop", "pseudonymise"}),
    DataClass.DIRECT_IDENTIFIER: frozenset(
        {"drop", "pseudonymise", "mask", "generalise", "resolve"}
    ),
    DataClass.BIOMETRIC: frozenset({"drop"}),
    DataClass.HEALTH: frozenset({"keep", "drop"}),
    DataClass.WHEREABOUTS: frozenset({"keep", "drop", "generalise"}),
}
# Which fields each generaliser can read.
GENERALISER_FIELDS: dict[str, frozenset[str]] = {
    "age_band": frozenset({IdentifierKind.ID_NUMBER.value}),
    "gender": frozenset({IdentifierKind.ID_NUMBER.value}),
    "coarse_position": frozenset({"latitude", "longitude"}),
}
_PSEUDONYMISABLE = frozenset(k.value for k in IdentifierKind)
# Fields `resolve` can read: a number a device knows a resident by, which the registry maps to
# the resident (as the pseudonym of their ID number, like every resident_ref).
RESOLVABLE = frozenset({"employee_no", "plate"})
OUTPUT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}", flags=re.ASCII)
# Names the storage layer writes itself, or uses as tags: an output must not shadow them.
RESERVED_OUTPUTS = frozenset(
    {"schema", "room", "time", "device", "kind", "community", "grid", "building", "unit"}
)
_DURATION = re.compile(r"(\d{1,5})([hdwy])", flags=re.ASCII)
_UNIT_S = {"h": 3600, "d": 86_400, "w": 7 * 86_400, "y": 365 * 86_400}

StrictInt = Annotated[int, Strict()]
StrictStr = Annotated[str, Strict()]


# -- the file, as pydantic models ----------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)


def _action_shape(value: Any) -> Any:
    """``keep`` / ``drop``, or a one-key mapping ``{pseudonymise|mask|generalise: {...}}``."""
    if isinstance(value, str):
        if value in ("keep", "drop"):
            return {"op": value}
        if value in OPERATORS:
            raise ValueError(f"{value} needs options, e.g. {{{value}: {{as: <output field>}}}}")
        raise ValueError(f"unknown operator {value!r}; expected one of {', '.join(OPERATORS)}")
    if isinstance(value, dict) and len(value) == 1:
        ((op, options),) = value.items()
        if op not in OPERATORS:
            raise ValueError(f"unknown operator {op!r}; expected one of {', '.join(OPERATORS)}")
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise ValueError(f"the options of {op} must be a mapping, e.g. {{as: <output field>}}")
        if "op" in options:
            raise ValueError(f"unknown option 'op' of {op}")
        return {"op": op, **options}
    raise ValueError(
        "an action is 'keep', 'drop' or a one-key mapping such as {pseudonymise: {as: x}}"
    )


class ActionIn(_Model):
    op: Operator
    to: Generaliser | None = None
    output: StrictStr | None = Field(default=None, alias="as")

    @model_validator(mode="after")
    def _options_fit_operator(self) -> ActionIn:
        if self.op in ("keep", "drop"):
            if self.to is not None or self.output is not None:
                raise ValueError(f"{self.op} takes no options")
        elif self.output is None:
            raise ValueError(f"{self.op} needs 'as: <output field>'")
        if self.op == "generalise" and self.to is None:
            raise ValueError("generalise needs 'to: age_band|gender|coarse_position'")
        if self.op != "generalise" and self.to is not None:
            raise ValueError(f"'to' is an option of generalise, not of {self.op}")
        return self


MAX_PATTERN = 2000  # characters of a text rule's regular expression
MAX_ENUM = 1000  # values of a text rule's enum


class TextRuleIn(_Model):
    """``{allow: pattern|enum, pattern: REGEX, values: [...], otherwise: drop|scrub}``."""

    allow: Literal["pattern", "enum"]
    pattern: Annotated[StrictStr, Field(min_length=1, max_length=MAX_PATTERN)] | None = None
    values: Annotated[list[StrictStr], Field(min_length=1, max_length=MAX_ENUM)] | None = None
    otherwise: Literal["drop", "scrub"] = "drop"

    @model_validator(mode="after")
    def _options_fit_allow(self) -> TextRuleIn:
        if self.allow == "pattern":
            if self.pattern is None:
                raise ValueError("allow: pattern needs 'pattern: <regular expression>'")
            if self.values is not None:
                raise ValueError("'values' is an option of allow: enum, not of allow: pattern")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a regular expression: {exc}") from None
        else:
            if self.values is None:
                raise ValueError("allow: enum needs 'values: [...]'")
            if self.pattern is not None:
                raise ValueError("'pattern' is an option of allow: pattern, not of allow: enum")
        return self


class FieldPolicyIn(_Model):
    data_class: DataClass = Field(alias="class")
    actions: list[Annotated[ActionIn, BeforeValidator(_action_shape)]]
    text: TextRuleIn | None = None


class FamilyPolicyIn(_Model):
    location: Literal["keep", "coarse"] = "keep"
    time: Literal["exact", "coarse"] = "exact"
    fields: dict[StrictStr, FieldPolicyIn]


class FamiliesIn(_Model):
    access: FamilyPolicyIn
    safety: FamilyPolicyIn
    meter: FamilyPolicyIn
    elder: FamilyPolicyIn
    status: FamilyPolicyIn


# No "forever": PIPL Art. 19 asks for the shortest necessary retention of personal data.
Duration = Annotated[StrictStr, Field(pattern=r"^\d{1,5}[hdwy]$")]


class RetentionIn(_Model):
    access: Duration
    safety: Duration
    meter: Duration
    elder: Duration
    device_status: Duration
    liveness: Duration


class PolicyIn(_Model):
    version: Literal[1]
    coarse_time_s: Annotated[StrictInt, Field(ge=1, le=31 * 86_400)] = 900
    age_on: Literal["event_date"] | date = "event_date"
    position_decimals: Annotated[StrictInt, Field(ge=0, le=6)] = 2
    retention: RetentionIn
    families: FamiliesIn


# -- the checked, compiled policy ----------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Action:
    op: str  # one of OPERATORS
    output: str | None = None  # the output field (keep: the field itself; drop: None)
    to: str | None = None  # the generaliser


@dataclass(slots=True, frozen=True)
class TextRule:
    """A free-text field's rule, compiled: which values are kept as they are, and what
    becomes of the others (``drop``: nothing; ``scrub``: `scrub_text`)."""

    allow: str  # pattern | enum
    otherwise: str  # drop | scrub
    pattern: re.Pattern[str] | None = None
    values: frozenset[str] = frozenset()

    def allows(self, value: str) -> bool:
        """Whether `value` is kept as it is. Enum values were checked when the policy loaded;
        a pattern only says what a value looks like, so its matches are checked too."""
        if self.pattern is None:
            return value in self.values
        return (
            len(value) <= MAX_TEXT
            and self.pattern.fullmatch(value) is not None
            and not holds_identifier(value)
        )

    def refused(self, value: str) -> str | None:
        """What is stored of a value `allows` refused: its scrubbed text, or None (dropped)."""
        if self.otherwise == "scrub" and len(value) <= MAX_TEXT:
            return scrub_text(value)
        return None

    def apply(self, value: str) -> str | None:
        """The value as stored: itself, scrubbed, or None (dropped)."""
        return value if self.allows(value) else self.refused(value)

    def describe(self) -> str:
        what = "matches its pattern" if self.pattern is not None else "is a listed value"
        return f"keep if it {what}, else {self.otherwise}"


@dataclass(slots=True, frozen=True)
class FieldPolicy:
    name: str
    data_class: DataClass
    actions: tuple[Action, ...]
    text: TextRule | None = None  # kept free text: what may be kept as it is

    @property
    def kept_only(self) -> bool:
        """Kept as it is, unchecked: the only action is keep and there is no text rule."""
        return self.text is None and tuple(a.op for a in self.actions) == ("keep",)


@dataclass(slots=True, frozen=True)
class FamilyPolicy:
    name: str  # a `FAMILY_KEYS` entry
    location: str  # keep | coarse
    time: str  # exact | coarse
    fields: Mapping[str, FieldPolicy]

    def outputs(self) -> dict[str, str]:
        """Every output field this family can store → the (first) input field it comes from."""
        out: dict[str, str] = {}
        for spec in self.fields.values():
            for action in spec.actions:
                if action.output is not None:
                    out.setdefault(action.output, spec.name)
        return out


@dataclass(slots=True, frozen=True)
class Retention:
    text: str  # as written: 30d, 12w, 1y
    seconds: int

    @property
    def influx(self) -> str:
        """An InfluxQL duration literal (InfluxQL has no years: 1y = 365d)."""
        if self.seconds % 86_400 == 0:
            return f"{self.seconds // 86_400}d"
        return f"{self.seconds // 3600}h"


@dataclass(slots=True, frozen=True)
class Policy:
    source: str
    families: Mapping[str, FamilyPolicy]
    retention: Mapping[str, Retention]  # by measurement (MEASUREMENTS)
    coarse_time_s: int
    age_on: date | None  # None: the date of each event
    position_decimals: int

    def missing_fields(self) -> dict[str, list[str]]:
        """Canonical fields the policy does not name (they are dropped): by family.

        Loading allows it so that a new model field never stops a running deployment, but the
        shipped policy must have none (a unit test), and the gateway should warn at start.
        """
        out: dict[str, list[str]] = {}
        for key, model in MODELS.items():
            missing = [name for name in model.model_fields if name not in self.families[key].fields]
            if missing:
                out[key] = missing
        return out


# -- loading -------------------------------------------------------------------------------


WHAT = "privacy policy"


def default_policy_text() -> str:
    return resources.files("privacy").joinpath("policy.yaml").read_text(encoding="utf-8")


def load_policy(path: Path | None = None) -> Policy:
    """The policy in `path`, or the shipped default (`privacy/policy.yaml`)."""
    if path is None:
        return parse_policy(default_policy_text(), source="privacy/policy.yaml (default)")
    return parse_policy(read_text(path, WHAT), source=str(path))


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    raw = load_mapping(text, source, WHAT, "version: 1")
    try:
        parsed = PolicyIn.model_validate(raw)
    except ValidationError as exc:
        raise invalid(WHAT, source, validation_problems(exc)) from None
    problems: list[str] = []
    families: dict[str, FamilyPolicy] = {}
    for key in FAMILY_KEYS:
        family_in: FamilyPolicyIn = getattr(parsed.families, key)
        families[key] = _check_family(key, family_in, problems)
    retention = {name: _retention(getattr(parsed.retention, name)) for name in MEASUREMENTS}
    _check_retention(retention, problems)
    if problems:
        raise invalid(WHAT, source, problems)
    return Policy(
        source=source,
        families=families,
        retention=retention,
        coarse_time_s=parsed.coarse_time_s,
        age_on=None if parsed.age_on == "event_date" else parsed.age_on,
        position_decimals=parsed.position_decimals,
    )


def _check_family(key: str, family: FamilyPolicyIn, problems: list[str]) -> FamilyPolicy:
    classes = field_classes(MODELS[key])
    free_text = free_text_fields(MODELS[key])
    fields: dict[str, FieldPolicy] = {}
    outputs: dict[str, str] = {}
    for name, spec in family.fields.items():
        path = f"families.{key}.fields.{name}"
        if name not in classes:
            problems.append(
                f"{path}: {name!r} is not a canonical {key} field "
                f"(devices.models: {', '.join(classes)})"
            )
            continue
        if spec.data_class is not classes[name]:
            problems.append(
                f"{path}.class: {spec.data_class.value} disagrees with devices.models, "
                f"which classes {name} as {classes[name].value}"
            )
            continue
        actions = _check_actions(path, name, spec, problems)
        for action in actions:
            if action.output is None:
                continue
            _check_output(path, name, action, classes, outputs, problems)
            outputs.setdefault(action.output, name)
        kept = any(action.op == "keep" for action in actions)
        text = _check_text(path, name, spec.text, kept, MODELS[key], problems)
        if kept and text is None and name in free_text:
            problems.append(
                f"{path}: {name} is free text from the device; keeping it needs a text rule "
                f"(text: {{allow: pattern|enum, pattern: ..., values: [...], "
                f"otherwise: drop|scrub}})"
            )
        fields[name] = FieldPolicy(name, spec.data_class, actions, text)
    return FamilyPolicy(key, family.location, family.time, fields)


def _check_text(
    path: str,
    name: str,
    rule: TextRuleIn | None,
    kept: bool,
    model: type[FamilyData],
    problems: list[str],
) -> TextRule | None:
    if rule is None:
        return None
    where = f"{path}.text"
    if not kept:
        problems.append(f"{where}: a text rule says which values are kept; {name} is not kept")
        return None
    if not _is_text(model.model_fields[name].annotation):
        problems.append(f"{where}: {name} is not a text field")
        return None
    if rule.pattern is not None:
        return TextRule(rule.allow, rule.otherwise, pattern=re.compile(rule.pattern))
    values = rule.values or []
    for i, value in enumerate(values):
        if holds_identifier(value):  # the policy is no place for a resident's phone either
            problems.append(f"{where}.values.{i}: looks like a personal identifier")
    if len(set(values)) != len(values):
        problems.append(f"{where}.values: a value is listed twice")
    return TextRule(rule.allow, rule.otherwise, values=frozenset(values))


def _annotation_members(annotation: Any) -> tuple[Any, ...]:
    """The types of an annotation, Optional and unions unpacked."""
    if get_origin(annotation) in (Union, types.UnionType):
        return tuple(a for a in get_args(annotation) if a is not type(None))
    return (annotation,)


def free_text_fields(model: type[FamilyData]) -> frozenset[str]:
    """The model's fields typed plain `str`: whatever the device wrote (door, fault, firmware,
    and the identifier fields, which are never kept as they are)."""
    return frozenset(
        name
        for name, info in model.model_fields.items()
        if str in _annotation_members(info.annotation)
    )


def _is_text(annotation: Any) -> bool:
    """A field a text rule can apply to: a string, a string enum or a Literal of strings."""
    for member in _annotation_members(annotation):
        if isinstance(member, type) and issubclass(member, str):  # str, StrEnum
            continue
        if get_origin(member) is Literal and all(isinstance(a, str) for a in get_args(member)):
            continue
        return False
    return True


def _check_actions(
    path: str, name: str, spec: FieldPolicyIn, problems: list[str]
) -> tuple[Action, ...]:
    ops = [a.op for a in spec.actions]
    if not ops:
        problems.append(f"{path}.actions: empty; write [drop] to drop the field")
        return ()
    if "drop" in ops and len(ops) > 1:
        problems.append(f"{path}.actions: drop cannot be combined with other actions")
    if ops.count("keep") > 1:
        problems.append(f"{path}.actions: keep appears twice")
    allowed = ALLOWED_OPERATORS[spec.data_class]
    out: list[Action] = []
    for i, action in enumerate(spec.actions):
        where = f"{path}.actions.{i}"
        if action.op not in allowed:
            problems.append(
                f"{where}: {action.op} is not allowed for {spec.data_class.value} data "
                f"(allowed: {', '.join(sorted(allowed))})"
            )
            continue
        if action.op == "pseudonymise" and name not in _PSEUDONYMISABLE:
            problems.append(f"{where}: {name} is not an identifier that can be pseudonymised")
            continue
        if action.op == "resolve" and name not in RESOLVABLE:
            problems.append(f"{where}: {name} is not a number the registry knows residents by")
            continue
        if action.op == "mask" and name not in MASKS:
            problems.append(f"{where}: there is no mask for {name}")
            continue
        if action.op == "generalise":
            to = action.to or ""
            if to == "coarse_time":
                problems.append(
                    f"{where}: coarse_time generalises the reading's time, not a field: "
                    f"set families.<family>.time: coarse"
                )
                continue
            if name not in GENERALISER_FIELDS.get(to, frozenset()):
                problems.append(f"{where}: {to} cannot be derived from {name}")
                continue
        output = name if action.op == "keep" else action.output
        out.append(Action(action.op, output, action.to))
    return tuple(out)


def _check_output(
    path: str,
    name: str,
    action: Action,
    classes: Mapping[str, DataClass],
    outputs: Mapping[str, str],
    problems: list[str],
) -> None:
    output = action.output or ""
    if action.op == "keep":
        pass
    elif not OUTPUT_NAME.fullmatch(output):
        problems.append(f"{path}: output {output!r} must match [a-z][a-z0-9_]{{0,63}}")
    elif output in RESERVED_OUTPUTS:
        problems.append(f"{path}: output {output!r} is a name storage uses itself")
    elif classes.get(output) in (DataClass.DIRECT_IDENTIFIER, DataClass.BIOMETRIC):
        problems.append(
            f"{path}: output {output!r} would look like the raw {output} field; "
            f"name it after what it is (e.g. {output}_masked)"
        )
    if output in outputs and not _same_resident(name, outputs[output]):
        problems.append(f"{path}: output {output!r} is also written by {outputs[output]}")


# An ID number's pseudonym and a terminal's resolved person number are the same thing (the
# resident's pseudonym): one event carries one or the other, so they may share an output.
_RESIDENT_SOURCES = frozenset({IdentifierKind.ID_NUMBER.value, "employee_no"})


def _same_resident(name: str, other: str) -> bool:
    return {name, other} <= _RESIDENT_SOURCES and name != other


def _retention(text: str) -> Retention:
    match = _DURATION.fullmatch(text)
    assert match is not None  # the model's pattern checked it
    return Retention(text, int(match.group(1)) * _UNIT_S[match.group(2)])


def _check_retention(retention: Mapping[str, Retention], problems: list[str]) -> None:
    for name, r in retention.items():
        if r.seconds < 3600:
            problems.append(f"retention.{name}: InfluxDB keeps data at least 1h")
    meter = retention["meter"].seconds
    for sensitive in ("access", "elder"):  # R3.7: health and access shorter than meters
        if retention[sensitive].seconds >= meter:
            problems.append(
                f"retention.{sensitive}: must be shorter than retention.meter "
                f"({sensitive} data is more sensitive, R3.7)"
            )


# -- free text -----------------------------------------------------------------------------

# Free text needs no long numbers, so any number of this many digits or more — the length of
# the shortest identifier, a mobile number — counts as an identifier, even one the shared
# detector lets through in ids (a 15-digit IMEI, two numbers glued together).
LONG_NUMBER = 11
# Models bound free text to 64 characters; anything longer than this is dropped unchecked.
MAX_TEXT = 1024
SCRUBBED = REDACTED
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
# A number as free text spells it: digits with up to three other characters between them
# (``138 - 1234 - 5678``, ``110105 / 19491231 / 002X``), an ID number's X at the end.
_NUMBER = re.compile(r"\+?\d(?:[^0-9A-Za-z]{0,3}\d)*(?:[^0-9A-Za-z]{0,3}[Xx])?")
# A plate, separators and all (京 A·12345, 京A-D12345): province, letter, up to six more.
_PLATE = re.compile(
    rf"[{PLATE_PROVINCES}][\s\-·・.]{{0,2}}[A-Za-z][\s\-·・.]{{0,2}}"
    r"(?:[0-9A-Za-z](?:[\-·・.]?[0-9A-Za-z]){0,5})?"
)
# A word: letters, digits and characters outside ASCII. One with any of the latter in it (a
# name, an address) is replaced whole.
_WORD = re.compile(r"[0-9A-Za-z\x80-\U0010ffff]+")
_MARKS = re.compile(rf"{re.escape(SCRUBBED)}(?:\s*{re.escape(SCRUBBED)})+")
# Chinese numerals spell digits too (一三八…): read them as digits before looking for numbers.
_NUMERALS = str.maketrans(
    {c: str(i % 10) for i, c in enumerate("〇一二三四五六七八九零壹贰叁肆伍陆柒捌玖")}
)


def _fold(text: str) -> str:
    """NFKC (full-width digits and letters become ASCII) and Chinese numerals as digits."""
    text = unicodedata.normalize("NFKC", text)
    return text if text.isascii() else text.translate(_NUMERALS)


def _long_number(run: str) -> bool:
    # Every ID or mobile number has at least LONG_NUMBER digits: this includes the detector's
    # loose shapes, and spellings it does not join (138 - 1234 - 5678, digits among CJK).
    return sum(map(str.isdigit, run)) >= LONG_NUMBER


def _loose(text: str) -> bool:
    return find_identifier(text, loose=True) is not None


def holds_identifier(text: str) -> bool:
    """Whether free text holds an identifier-shaped part: an ID number or mobile number
    anywhere in it (the shared loose detector, `privacy.identifiers`), a plate, or any number
    of `LONG_NUMBER` digits or more. Characters outside ASCII are not counted against the text
    here (the rule's pattern decides which may appear), but digits among them are."""
    folded = _fold(text)
    if folded.isascii():
        if _loose(folded):
            return True
    else:
        if find_identifier(folded) is IdentifierShape.PLATE:
            return True
        if _loose(_NON_ASCII.sub("/", folded)):
            return True
    return any(_long_number(m.group()) for m in _NUMBER.finditer(folded))


def scrub_text(text: str) -> str:
    """`text` with every identifier-shaped part replaced by ``<redacted>``: plates, numbers
    that hold an identifier or have `LONG_NUMBER` digits, and every word with a character
    outside ASCII in it (names, addresses: non-ASCII text counts as personal)."""
    out = _PLATE.sub(SCRUBBED, _fold(text))
    out = _NUMBER.sub(lambda m: SCRUBBED if _long_number(m.group()) else m.group(), out)
    out = _WORD.sub(lambda m: m.group() if m.group().isascii() else SCRUBBED, out)
    return _MARKS.sub(SCRUBBED, out)
