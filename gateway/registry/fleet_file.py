"""Reading the fleet file a property firm hands over (R1.2): YAML for a whole community, CSV
for a list of devices, grid members or residents. The format is described in docs/fleet-file.md.

Parsing never stops at the first mistake: every row is checked and every problem is kept with
its line number, so the firm can fix the whole file in one round. References between rows
(place codes, households) are checked by `importer`, which also sees the registry's contents.

Problems name the row (its line, and its id once the id itself is accepted) and the field, but
never echo a refused value, names, ID numbers, phone numbers or webhook URLs. Ids, codes and
names holding a personal identifier (a phone number as a device id, a room named after a
person) are refused: the rules are in `gateway.registry.identifiers`.
Residents' ID numbers live only in `ResidentEntry` (kept out of its repr): the importer turns
them into pseudonyms and the raw number is never stored.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import yaml

from devices.families import Family
from devices.places import KEY_SEP, LEVELS, PlaceLevel
from gateway.registry.identifiers import (
    id_problem,
    place_name_problem,
    shown_field_name,
    text_problem,
)
from gateway.registry.records import ChannelKind, ContactChannel, Power, Role

try:  # libyaml parses ~10x faster; the pure-Python loader behaves the same
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

NAME_MAX = 128
TARGET_MAX = 512
# Dates without a time of day (consent dates) are midnight in China Standard Time.
CST = timezone(timedelta(hours=8))
DEVICE_COLUMNS = (
    "device_id", "family", "adapter", "vendor", "community", "grid", "building", "unit", "room",
    "household", "power", "installed",
)  # fmt: skip
DEVICE_OPTIONAL_COLUMNS = ("gate_approved",)
MEMBER_COLUMNS = ("member_id", "name", "role", "community", "grid", "building", "unit", "channels")
MEMBER_OPTIONAL_COLUMNS = ("active",)
RESIDENT_COLUMNS = ("resident_id", "household", "id_number", "face_consent")
RESIDENT_OPTIONAL_COLUMNS = ("face_consent_at",)
PLACE_KEYS = ("community", "grid", "building", "unit", "room")

# GB 11643-1999 resident ID number: 6-digit region, birth date, 3-digit sequence, ISO 7064
# MOD 11-2 check character.
_ID_NUMBER = re.compile(r"\d{17}[\dX]")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_DATE = re.compile(r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})")
_PHONE = re.compile(r"\+?[0-9]{5,15}")
_APP_TARGET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/+=-]{0,255}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TRUE = {"true", "yes", "1", "y", "是"}
_FALSE = {"false", "no", "0", "n", "否"}
_FAMILIES = {f.value: f for f in Family}
_ROLES = {r.value: r for r in Role}
_KINDS = {k.value: k for k in ChannelKind}
_POWERS = {p.value: p for p in Power}

FileKind = Literal["yaml", "devices_csv", "members_csv", "residents_csv"]
E = TypeVar("E")


@dataclass(slots=True, frozen=True, order=True)
class Problem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(slots=True, frozen=True)
class PlaceRef:
    """A place as a row names it: codes, some of which may be omitted (the grid of a building
    whose code is unique in the community). The importer turns it into a key."""

    community: str
    grid: str = ""
    building: str = ""
    unit: str = ""
    room: str = ""
    line: int = 0

    def describe(self) -> str:
        return ", ".join(f"{k} {v}" for k in PLACE_KEYS if (v := getattr(self, k)))


@dataclass(slots=True, frozen=True)
class PlaceEntry:
    key: str
    level: PlaceLevel
    code: str
    name: str
    street: str
    line: int

    @property
    def parent(self) -> str | None:
        return self.key.rpartition(KEY_SEP)[0] or None


@dataclass(slots=True, frozen=True)
class HouseholdEntry:
    id: str
    place: PlaceRef
    elder_alone: bool
    face_consent: bool | None  # None: the file says nothing, keep what is recorded
    face_consent_ns: int | None
    line: int


@dataclass(slots=True, frozen=True)
class DeviceEntry:
    id: str
    family: Family
    adapter: str
    vendor: str
    place: PlaceRef
    household: str
    power: Power
    installed: date | None
    gate_approved: bool | None  # None: a CSV without the column, keep what is recorded
    line: int


@dataclass(slots=True, frozen=True)
class ResidentEntry:
    id: str
    household: str
    id_number: str = field(repr=False)  # raw: pseudonymised by the importer, never stored
    face_consent: bool | None  # None: the file says nothing, keep what is recorded
    face_consent_ns: int | None
    line: int


@dataclass(slots=True, frozen=True)
class MemberEntry:
    id: str
    name: str
    role: Role
    active: bool
    scopes: tuple[PlaceRef, ...]
    channels: tuple[ContactChannel, ...]
    line: int


@dataclass(slots=True)
class FleetFile:
    kind: FileKind
    places: list[PlaceEntry] = field(default_factory=list)
    households: list[HouseholdEntry] = field(default_factory=list)
    devices: list[DeviceEntry] = field(default_factory=list)
    members: list[MemberEntry] = field(default_factory=list)
    residents: list[ResidentEntry] = field(default_factory=list)
    # The communities this file speaks for: members' scopes there are replaced by the file's.
    communities: set[str] = field(default_factory=set)
    # Households whose own row is bad: devices naming them are not reported a second time.
    broken_households: set[str] = field(default_factory=set)
    # Household references of resident rows already refused: (what, household id, line).
    extra_household_refs: list[tuple[str, str, int]] = field(default_factory=list)
    # Place references of rows already refused for another reason: still checked, so that one
    # round of fixes is enough. (what, reference, role whose scope level to check)
    extra_refs: list[tuple[str, PlaceRef, Role | None]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notices: list[Problem] = field(default_factory=list)


# -- YAML with line numbers -----------------------------------------------------------------


class LineDict(dict[str, Any]):
    line: int = 0


class LineList(list[Any]):
    line: int = 0


_STR_TAG = "tag:yaml.org,2002:str"
_BOOLS = "yes Yes YES no No NO true True TRUE false False FALSE on On ON off Off OFF"
_PLAIN_TAGS = {
    **dict.fromkeys(("", "~", "null", "Null", "NULL"), "tag:yaml.org,2002:null"),
    **dict.fromkeys(_BOOLS.split(), "tag:yaml.org,2002:bool"),
    "<<": "tag:yaml.org,2002:merge",
}


class _LineLoader(_BaseLoader):
    """Safe loader that remembers where each mapping and list starts and flags duplicate keys.

    Plain scalars are text unless they are null or a boolean: YAML 1.1 reads ``0101`` as
    octal 65 and a bad date (``2024-13-01``) as a load error, and neither may cost a leading
    zero or the whole report. (A dict lookup is also 5x faster than the stock regex resolver,
    which dominated loading a 13 000-device file.)
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.problems: list[Problem] = []

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode and implicit[0]:
            return _PLAIN_TAGS.get(value, _STR_TAG)
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call,no-any-return]


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> Iterable[LineDict]:
    data = LineDict()
    data.line = node.start_mark.line + 1
    yield data
    seen: dict[str, int] = {}
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
            line = key_node.start_mark.line + 1
            if key_node.value in seen:
                loader.problems.append(
                    Problem(line, f"{_key_words(key_node.value)} appears twice in one mapping")
                )
            seen[key_node.value] = line
    data.update(loader.construct_mapping(node, deep=True))  # type: ignore[arg-type]


def _construct_seq(loader: _LineLoader, node: yaml.SequenceNode) -> Iterable[LineList]:
    data = LineList()
    data.line = node.start_mark.line + 1
    yield data
    data.extend(loader.construct_sequence(node, deep=True))


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def _line(value: Any, default: int) -> int:
    return getattr(value, "line", default) or default


def _key_words(key: object) -> str:
    """``key 'colour'``, or ``key (not shown: not a plain field name)`` for a key that may be
    data (a name or number put where a field name belongs)."""
    shown = shown_field_name(key)
    return f"key {shown}" if shown else "key (not shown: not a plain field name)"


_YAML_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def _yaml_problem(text: str) -> str:
    """PyYAML's problem text without quoted input longer than four characters (a single
    character such as ``'\\t'`` is kept: it says what is wrong and cannot identify anyone)."""
    return _YAML_QUOTED.sub(lambda m: m.group() if len(m.group()) <= 6 else "'…'", text)


# -- field checks shared by YAML and CSV rows ---------------------------------------------


class _Fields:
    """One row: typed reads that record a problem and return a harmless fallback."""

    def __init__(
        self,
        data: Mapping[str, Any],
        line: int,
        what: str,
        problems: list[Problem],
        allowed: Iterable[str] = (),
    ) -> None:
        self.data = data
        self.line = line
        self.what = what
        self.problems = problems
        self.ok = True
        self.id_column = "id"  # a CSV's column for the key "id" (device_id …), named in problems
        if allowed:
            allowed_set = set(allowed)
            for key in data:
                if key not in allowed_set:
                    self.problem(f"unknown {_key_words(key)}")

    def problem(self, message: str) -> None:
        self.problems.append(Problem(self.line, f"{self.what}: {message}"))
        self.ok = False

    def raw(self, key: str) -> Any:
        value = self.data.get(key)
        return None if value == "" else value

    def text(self, key: str, *, required: bool = True, limit: int = NAME_MAX) -> str:
        value = self.raw(key)
        key = self.id_column if key == "id" else key
        if value is None:
            if required:
                self.problem(f"missing {key}")
            return ""
        if not isinstance(value, str):
            self.problem(f"{key} must be text")
            return ""
        value = value.strip()
        if required and not value:
            self.problem(f"missing {key}")
        elif len(value) > limit:
            self.problem(f"{key} is longer than {limit} characters")
        elif _CONTROL.search(value):
            self.problem(f"{key} contains control characters")
        else:
            return value
        return ""

    def ident(self, key: str, *, required: bool = True) -> str:
        """An id or code: topic-safe and holding no personal identifier (never echoed)."""
        value = self.text(key, required=required)
        why = id_problem(value) if value else None
        if why is not None:
            self.problem(f"bad {self.id_column if key == 'id' else key}: {why}")
            return ""
        return value

    def name(
        self, key: str, *, required: bool = True, limit: int = NAME_MAX, place: bool = True
    ) -> str:
        """Display text: a place's name (`place`), else a member's name or a vendor; refused
        (never echoed) when it holds a personal identifier, see `gateway.registry.identifiers`."""
        value = self.text(key, required=required, limit=limit)
        why = (place_name_problem if place else text_problem)(value) if value else None
        if why is not None:
            self.problem(f"{key} {why}")
            return ""
        return value

    def flag(self, key: str) -> bool | None:
        value = self.raw(key)
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        self.problem(f"{key} must be true or false")
        return None

    def choice(self, key: str, options: Mapping[str, E], what: str) -> E | None:
        value = self.text(key)
        if not value:
            return None
        found = options.get(value.lower())
        if found is None:  # the value is not echoed: a name or number may sit in any column
            self.problem(f"unknown {what} (expected one of {', '.join(options)})")
        return found

    def day(self, key: str) -> date | None:
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, str):
            parsed = parse_date(value)
            if parsed is not None:
                return parsed
        self.problem(f"bad date in {key}: expected YYYY-MM-DD")
        return None

    def instant_ns(self, key: str) -> int | None:
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, str):
            parsed = parse_instant_ns(value)
            if parsed is not None:
                return parsed
        self.problem(f"bad time in {key}: expected YYYY-MM-DD or an ISO time with UTC offset")
        return None

    def place(
        self, community: str, *, fixed_community: bool, need: PlaceLevel | None = None
    ) -> PlaceRef | None:
        """The place codes of this row; `fixed_community` when the file has one community."""
        before = len(self.problems)
        codes = {k: self.ident(k, required=False) for k in PLACE_KEYS}
        if len(self.problems) > before:
            return None
        if fixed_community:
            given = codes["community"]
            if given and given != community:
                self.problem(f"community {given} is not this file's community {community}")
                return None
            if not any(codes.values()):
                self.problem("no place: give community, grid, building, unit or room codes")
                return None
            codes["community"] = community
        elif not codes["community"]:
            self.problem("missing community")
            return None
        # The grid may be left out (the importer finds the building); nothing else may.
        for outer, inner in (("building", "unit"), ("unit", "room")):
            if codes[inner] and not codes[outer]:
                self.problem(f"{inner} {codes[inner]} given without its {outer}")
                return None
        if need is not None and not codes[need.value]:
            self.problem(f"missing {need.value}")
            return None
        return PlaceRef(line=self.line, **codes)


def normalise_id_number(text: str) -> str | None:
    """The canonical form (trimmed, upper-case X) of a valid resident ID number, else None.

    Pseudonyms are made from this form, so a ``x`` typed in a spreadsheet and the ``X`` a
    gate reads from the card give the same pseudonym.
    """
    value = text.strip().upper()
    if _ID_NUMBER.fullmatch(value) is None:
        return None
    try:
        date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return None
    total = sum(int(d) * w for d, w in zip(value[:17], _ID_WEIGHTS, strict=True))
    return value if _ID_CHECK[total % 11] == value[17] else None


def parse_date(text: str) -> date | None:
    m = _DATE.fullmatch(text.strip())
    if m is None:
        return None
    try:
        return date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return None


def parse_instant_ns(text: str) -> int | None:
    day = parse_date(text)
    if day is not None:
        moment = datetime(day.year, day.month, day.day, tzinfo=CST)
    else:
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            return None
        if moment.tzinfo is None:
            return None
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def parse_channel(kind_text: str, target: str) -> ContactChannel | str:
    """A contact channel, or why it is refused (without echoing the target: it is personal)."""
    kind = _KINDS.get(kind_text.strip().lower())
    target = target.strip()
    if kind is None:
        return f"unknown channel kind (expected {', '.join(_KINDS)})"
    if not target:
        return f"{kind} channel without a target"
    if len(target) > TARGET_MAX or _CONTROL.search(target):
        return f"{kind} target is too long or contains control characters"
    if kind is ChannelKind.MQTT:
        if any(c in target for c in "+#") or target.startswith("$"):
            return "mqtt target must be a topic to publish to: no wildcards, no leading $"
    elif kind is ChannelKind.WEBHOOK:
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.hostname or " " in target:
            return "webhook target is not an http(s) URL"
    elif kind is ChannelKind.SMS:
        target = re.sub(r"[\s-]", "", target)
        if not _PHONE.fullmatch(target):
            return "sms target is not a phone number (digits, optional leading +)"
    elif not _APP_TARGET.fullmatch(target):
        return "app target has characters outside A-Z a-z 0-9 _ . : @ / + = -"
    return ContactChannel(kind, target)


def _channel_from_text(item: str) -> ContactChannel | str:
    kind, sep, target = item.partition(":")
    if not sep:
        return "channel must be written kind:target (e.g. mqtt:gridgate/alerts/member/m001)"
    return parse_channel(kind, target)


class _Ids:
    """Duplicate-id detection with a pointer to the first occurrence."""

    def __init__(self, what: str, problems: list[Problem]) -> None:
        self.what = what
        self.problems = problems
        self.first: dict[str, int] = {}

    def fresh(self, ident: str, line: int) -> bool:
        if ident in self.first:
            self.problems.append(
                Problem(line, f"duplicate {self.what} {ident} (first at line {self.first[ident]})")
            )
            return False
        self.first[ident] = line
        return True


class _ResidentIds(_Ids):
    """Duplicate resident ids, and one person listed twice (the same ID number)."""

    def __init__(self, what: str, problems: list[Problem]) -> None:
        super().__init__(what, problems)
        self.numbers: dict[str, tuple[str, int]] = {}


# -- rows common to YAML and CSV ------------------------------------------------------------


def _device(
    f: _Fields, out: FleetFile, community: str, fixed_community: bool, gate_default: bool | None
) -> DeviceEntry | None:
    device_id = f.ident("id")
    f.what = f"device {device_id}" if device_id else f.what
    family = f.choice("family", _FAMILIES, "family")
    adapter = f.ident("adapter")
    vendor = f.name("vendor", limit=64, place=False)
    power = f.choice("power", _POWERS, "power")
    installed = f.day("installed")
    household = f.ident("household", required=False)
    gate = f.flag("gate_approved")
    place = f.place(community, fixed_community=fixed_community)
    if family is Family.ELDER and not household and f.ok:
        f.problem("an elder device needs the household it serves")
    if gate and family is not None and family is not Family.ACCESS:
        f.problem("gate_approved applies only to access devices")
    if not f.ok or family is None or power is None or place is None:
        if place is not None:
            out.extra_refs.append((f.what, place, None))
        return None
    return DeviceEntry(
        id=device_id,
        family=family,
        adapter=adapter,
        vendor=vendor,
        place=place,
        household=household,
        power=power,
        installed=installed,
        gate_approved=gate if gate is not None else gate_default,
        line=f.line,
    )


def _resident(f: _Fields, out: FleetFile, ids: _ResidentIds) -> None:
    rid = f.ident("id")
    f.what = f"resident {rid}" if rid else f.what
    household = f.ident("household")
    raw = f.raw("id_number")
    number: str | None = None
    if raw is None:
        f.problem("missing id_number")
    elif not isinstance(raw, str):
        f.problem("id_number must be text (quote it)")
    else:
        number = normalise_id_number(raw)
        if number is None:  # never echo the value: it is personal data
            f.problem(
                "id_number is not a valid resident ID number (18 characters, birth date and"
                " check digit per GB 11643; a spreadsheet may have turned it into 1.1E+17)"
            )
    consent = f.flag("face_consent")
    consent_ns = f.instant_ns("face_consent_at")
    if consent_ns is not None and consent is None:
        f.problem("face_consent_at without face_consent")
    if number is not None:
        first = ids.numbers.get(number)
        if first is not None:
            f.problem(f"same ID number as resident {first[0]} (line {first[1]}): one person,"
                      " one resident row")  # fmt: skip
        else:
            ids.numbers[number] = (rid or f.what, f.line)
    if f.ok and number is not None and ids.fresh(rid, f.line):
        out.residents.append(ResidentEntry(rid, household, number, consent, consent_ns, f.line))
    elif household:
        out.extra_household_refs.append((f.what, household, f.line))


# -- YAML -----------------------------------------------------------------------------------

_TOP_KEYS = ("version", "community", "grids", "households", "devices", "members", "residents")
_DEVICE_KEYS = (
    "id", "family", "adapter", "vendor", "power", "installed", "household", "gate_approved",
    *PLACE_KEYS,
)  # fmt: skip
_HOUSEHOLD_KEYS = ("id", "elder_alone", "face_consent", "face_consent_at", *PLACE_KEYS)
_MEMBER_KEYS = ("id", "name", "role", "active", "scope", "channels")
_RESIDENT_KEYS = ("id", "household", "id_number", "face_consent", "face_consent_at")


def parse_yaml(text: str) -> FleetFile:
    out = FleetFile("yaml")
    loader = _LineLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        out.problems.append(Problem(line, f"not valid YAML: {_yaml_problem(exc.problem or '')}"))
        return out
    except yaml.YAMLError as exc:
        out.problems.append(Problem(1, f"not valid YAML: {_yaml_problem(str(exc))}"))
        return out
    finally:
        loader.dispose()
    out.problems.extend(loader.problems)
    if not isinstance(data, dict):
        out.problems.append(Problem(1, "a fleet file is a mapping with community, grids, …"))
        return out
    top = _Fields(data, 1, "file", out.problems, _TOP_KEYS)
    version = top.raw("version")
    if version is not None and str(version) != "1":
        top.problem("unsupported version (this gridgate reads version 1)")
    community = _yaml_places(data, out)
    if community is None:
        return out
    out.communities.add(community)
    for key, parse in (
        ("households", _yaml_household),
        ("devices", _yaml_device),
        ("members", _yaml_member),
        ("residents", _yaml_resident),
    ):
        rows = data.get(key) or []
        if not isinstance(rows, list):
            out.problems.append(Problem(_line(rows, 1), f"{key} must be a list"))
            continue
        ids = (_ResidentIds if key == "residents" else _Ids)(f"{key.rstrip('s')} id", out.problems)
        for i, row in enumerate(rows, 1):
            line = _line(row, _line(rows, 1))
            if not isinstance(row, dict):
                out.problems.append(Problem(line, f"{key} item {i} must be a mapping"))
                continue
            parse(row, line, f"{key.rstrip('s')} #{i}", community, out, ids)
    return out


def _yaml_places(data: Mapping[str, Any], out: FleetFile) -> str | None:
    """Places from the nested community → grids → buildings → units → rooms; the community code."""
    raw = data.get("community")
    if not isinstance(raw, dict):
        out.problems.append(Problem(_line(raw, 1), "missing community: {code, name, street}"))
        return None
    f = _Fields(raw, _line(raw, 1), "community", out.problems, ("code", "name", "street"))
    code, name, street = f.ident("code"), f.name("name"), f.name("street", required=False)
    if not code:
        return None  # a refused name or street is reported, and the rest is still checked
    out.places.append(PlaceEntry(code, PlaceLevel.COMMUNITY, code, name, street, f.line))
    _yaml_children(raw_children=data.get("grids"), parent=code, depth=1, out=out, line=1)
    return code


_CHILD_LIST = {PlaceLevel.GRID: "buildings", PlaceLevel.BUILDING: "units", PlaceLevel.UNIT: "rooms"}


def _yaml_children(raw_children: Any, parent: str, depth: int, out: FleetFile, line: int) -> None:
    level = LEVELS[depth]
    list_key = "grids" if level is PlaceLevel.GRID else _CHILD_LIST[LEVELS[depth - 1]]
    if raw_children is None:
        return
    if not isinstance(raw_children, list):
        out.problems.append(Problem(_line(raw_children, line), f"{list_key} must be a list"))
        return
    line = _line(raw_children, line)
    seen = _Ids(f"{level.value} code", out.problems)
    for item in raw_children:
        if level is PlaceLevel.ROOM and isinstance(item, str):
            item = {"code": item}  # rooms: ["0101", "0102"]
        if not isinstance(item, dict):
            out.problems.append(Problem(line, f"each of {list_key} must be a mapping"))
            continue
        item_line = _line(item, line)
        child_key = _CHILD_LIST.get(level)
        allowed = ("code", "name", child_key) if child_key else ("code", "name")
        f = _Fields(item, item_line, f"{level.value} under {parent}", out.problems, allowed)
        code = f.ident("code")
        f.what = f"{level.value} {parent}{KEY_SEP}{code}" if code else f.what
        name = f.name("name", required=level is not PlaceLevel.ROOM) or code
        if not code or not seen.fresh(code, item_line):
            continue  # a place with a bad name is kept, so its rows are still checked
        key = f"{parent}{KEY_SEP}{code}"
        out.places.append(PlaceEntry(key, level, code, name, "", item_line))
        if child_key:
            _yaml_children(item.get(child_key), key, depth + 1, out, item_line)


def _yaml_household(
    row: Mapping[str, Any], line: int, what: str, community: str, out: FleetFile, ids: _Ids
) -> None:
    f = _Fields(row, line, what, out.problems, _HOUSEHOLD_KEYS)
    hid = f.ident("id")
    f.what = f"household {hid}" if hid else what
    elder_alone = f.flag("elder_alone")
    consent = f.flag("face_consent")
    consent_ns = f.instant_ns("face_consent_at")
    if consent_ns is not None and consent is None:
        f.problem("face_consent_at without face_consent")
    place = f.place(community, fixed_community=True, need=PlaceLevel.ROOM)
    if f.ok and place is not None and ids.fresh(hid, line):
        out.households.append(
            HouseholdEntry(hid, place, bool(elder_alone), consent, consent_ns, line)
        )
    else:
        if hid:
            out.broken_households.add(hid)
        if place is not None:
            out.extra_refs.append((f.what, place, None))


def _yaml_device(
    row: Mapping[str, Any], line: int, what: str, community: str, out: FleetFile, ids: _Ids
) -> None:
    f = _Fields(row, line, what, out.problems, _DEVICE_KEYS)
    entry = _device(f, out, community, fixed_community=True, gate_default=False)
    if entry is not None and ids.fresh(entry.id, line):
        out.devices.append(entry)


def _yaml_member(
    row: Mapping[str, Any], line: int, what: str, community: str, out: FleetFile, ids: _Ids
) -> None:
    f = _Fields(row, line, what, out.problems, _MEMBER_KEYS)
    mid = f.ident("id")
    f.what = f"member {mid}" if mid else what
    name = f.name("name", limit=64, place=False)
    role = f.choice("role", _ROLES, "role")
    active = f.flag("active")
    scopes: list[PlaceRef] = []
    raw_scopes = row.get("scope")
    if isinstance(raw_scopes, dict):
        raw_scopes = [raw_scopes]
    if not isinstance(raw_scopes, list) or not raw_scopes:
        f.problem("missing scope: a list of places like {building: b03, unit: u2}")
        raw_scopes = []
    for item in raw_scopes:
        if not isinstance(item, dict):
            f.problem("each scope must be a mapping of place codes")
            continue
        sf = _Fields(item, _line(item, line), f.what, out.problems, PLACE_KEYS)
        ref = sf.place(community, fixed_community=True)
        f.ok = f.ok and sf.ok
        if ref is not None:
            scopes.append(ref)
    channels = _yaml_channels(row.get("channels"), f)
    if active is not False and not channels and f.ok:
        f.problem("an active member needs at least one channel")
    if f.ok and role is not None and ids.fresh(mid, line):
        out.members.append(
            MemberEntry(mid, name, role, active is not False, tuple(scopes), channels, line)
        )
    else:
        out.extra_refs.extend((f.what, ref, role) for ref in scopes)


def _yaml_resident(
    row: Mapping[str, Any], line: int, what: str, community: str, out: FleetFile, ids: _Ids
) -> None:
    assert isinstance(ids, _ResidentIds)
    _resident(_Fields(row, line, what, out.problems, _RESIDENT_KEYS), out, ids)


def _yaml_channels(raw: Any, f: _Fields) -> tuple[ContactChannel, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        f.problem("channels must be a list")
        return ()
    found: list[ContactChannel] = []
    for i, item in enumerate(raw, 1):
        if isinstance(item, dict):
            cf = _Fields(item, _line(item, f.line), f.what, f.problems, ("kind", "target"))
            kind, target = cf.raw("kind"), cf.raw("target")
            if not isinstance(kind, str) or not isinstance(target, str):
                cf.problem(f"channel {i}: needs kind and target as text")
                f.ok = False
                continue
            parsed = parse_channel(kind, target)
        elif isinstance(item, str):
            parsed = _channel_from_text(item)
        else:
            parsed = "channel must be {kind, target} or kind:target"
        if isinstance(parsed, str):
            f.problem(f"channel {i}: {parsed}")
        elif parsed not in found:
            found.append(parsed)
    return tuple(found)


# -- CSV ------------------------------------------------------------------------------------


def decode_text(raw: bytes, notices: list[Problem]) -> str:
    """UTF-8 (with or without BOM); Excel in China saves CSV as GBK, so fall back to GB18030."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        notices.append(Problem(1, "file is not UTF-8; read it as GB18030 (GBK)"))
        return raw.decode("gb18030", errors="replace")


def parse_csv(text: str) -> FleetFile:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    header_line = 1
    previous_end = 0
    problems: list[Problem] = []
    rows: list[tuple[int, list[str]]] = []
    try:
        for record in reader:
            start, previous_end = previous_end + 1, reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if header is None:
                header, header_line = [c.strip().lower() for c in record], start
            else:
                rows.append((start, record))
    except csv.Error as exc:
        problems.append(Problem(reader.line_num, f"not valid CSV: {exc}"))
    if header is None:
        out = FleetFile("devices_csv", problems=problems)
        out.problems.append(Problem(1, "empty file: no CSV header"))
        return out
    required: tuple[str, ...]
    optional: tuple[str, ...]
    if "device_id" in header:
        out = FleetFile("devices_csv", problems=problems)
        required, optional = DEVICE_COLUMNS, DEVICE_OPTIONAL_COLUMNS
    elif "member_id" in header:
        out = FleetFile("members_csv", problems=problems)
        required, optional = MEMBER_COLUMNS, MEMBER_OPTIONAL_COLUMNS
    elif "resident_id" in header:
        out = FleetFile("residents_csv", problems=problems)
        required, optional = RESIDENT_COLUMNS, RESIDENT_OPTIONAL_COLUMNS
    else:
        return FleetFile(
            "devices_csv",
            problems=[
                *problems,
                Problem(
                    header_line,
                    "unrecognised CSV header: a devices CSV starts with "
                    f"{','.join(DEVICE_COLUMNS)}; a members CSV with {','.join(MEMBER_COLUMNS)};"
                    f" a residents CSV with {','.join(RESIDENT_COLUMNS)}",
                ),
            ],
        )
    missing = [c for c in required if c not in header]
    unknown = [c for c in header if c not in required and c not in optional]
    repeated = sorted({c for c in header if header.count(c) > 1})
    for what, cols in (("missing", missing), ("unknown", unknown), ("repeated", repeated)):
        if cols:
            word = "column" if len(cols) == 1 else "columns"
            # Header cells are named only when they are plain field names: a file without
            # its header row has data there.
            shown = [c for c in cols if what == "missing" or shown_field_name(c) is not None]
            names = ", ".join(shown)
            if len(shown) < len(cols):
                names += f"{', ' if shown else ''}{len(cols) - len(shown)} not shown (not plain"
                names += " field names)"
            out.problems.append(Problem(header_line, f"{what} {word} {names}"))
    if missing or unknown or repeated:
        return out
    records: list[tuple[int, dict[str, str]]] = []
    for line, record in rows:
        if len(record) != len(header):
            out.problems.append(
                Problem(line, f"expected {len(header)} fields, found {len(record)}")
            )
            continue
        records.append((line, dict(zip(header, record, strict=True))))
    if out.kind == "devices_csv":
        _csv_devices(records, out, has_gate="gate_approved" in header)
    elif out.kind == "members_csv":
        _csv_members(records, out)
    else:
        _csv_residents(records, out)
    return out


def _csv_devices(records: list[tuple[int, dict[str, str]]], out: FleetFile, has_gate: bool) -> None:
    ids = _Ids("device id", out.problems)
    for line, record in records:
        record["id"] = record.pop("device_id")
        f = _Fields(record, line, f"row {line}", out.problems)
        f.id_column = "device_id"
        entry = _device(f, out, "", False, gate_default=False if has_gate else None)
        if entry is not None and ids.fresh(entry.id, line):
            out.devices.append(entry)
            out.communities.add(entry.place.community)


def _csv_members(records: list[tuple[int, dict[str, str]]], out: FleetFile) -> None:
    """One row per (member, scope): rows of one member repeat name and role; channels merge."""
    merged: dict[str, MemberEntry] = {}
    for line, record in records:
        record["id"] = record.pop("member_id")
        f = _Fields(record, line, f"row {line}", out.problems)
        f.id_column = "member_id"
        mid = f.ident("id")
        f.what = f"member {mid}" if mid else f.what
        name = f.name("name", limit=64, place=False)
        role = f.choice("role", _ROLES, "role")
        active = f.flag("active")
        scope = f.place("", fixed_community=False)
        channels: list[ContactChannel] = []
        for i, item in enumerate(x for x in record["channels"].split(";") if x.strip()):
            parsed = _channel_from_text(item)
            if isinstance(parsed, str):
                f.problem(f"channel {i + 1}: {parsed}")
            else:
                channels.append(parsed)
        if not f.ok or role is None or scope is None:
            if scope is not None:
                out.extra_refs.append((f.what, scope, role))
            continue
        out.communities.add(scope.community)
        first = merged.get(mid)
        if first is None:
            merged[mid] = MemberEntry(
                mid, name, role, active is not False, (scope,), tuple(channels), line
            )
            continue
        if (name, role, active is not False) != (first.name, first.role, first.active):
            f.problem(f"name, role or active differ from this member's row at line {first.line}")
            continue
        more = tuple(c for c in channels if c not in first.channels)
        merged[mid] = MemberEntry(
            mid, name, role, first.active, (*first.scopes, scope), first.channels + more,
            first.line,
        )  # fmt: skip
    for entry in merged.values():
        if entry.active and not entry.channels:
            out.problems.append(
                Problem(entry.line, f"member {entry.id}: an active member needs a channel")
            )
        else:
            out.members.append(entry)


def _csv_residents(records: list[tuple[int, dict[str, str]]], out: FleetFile) -> None:
    ids = _ResidentIds("resident id", out.problems)
    for line, record in records:
        record["id"] = record.pop("resident_id")
        f = _Fields(record, line, f"row {line}", out.problems)
        f.id_column = "resident_id"
        _resident(f, out, ids)


# -- entry point ----------------------------------------------------------------------------


def parse_file(path: Path) -> FleetFile:
    """Parse by extension: .yaml/.yml is a community, .csv is devices, members or residents
    (told apart by the header)."""
    suffix = path.suffix.lower()
    notices: list[Problem] = []
    if suffix not in (".yaml", ".yml", ".csv"):
        return FleetFile("yaml", problems=[Problem(0, "expected a .yaml, .yml or .csv file")])
    text = decode_text(path.read_bytes(), notices)
    out = parse_yaml(text) if suffix in (".yaml", ".yml") else parse_csv(text)
    out.notices[:0] = notices
    out.problems.sort()
    return out
