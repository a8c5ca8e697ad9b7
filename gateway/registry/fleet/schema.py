"""The fleet file's content and the rules for its values, shared by the YAML and CSV readers.

The entries (`PlaceEntry`, `DeviceEntry`, …) are what a fleet file says once every row has
been checked; `FleetFile` collects them with every `Problem` found, each with its line number.
`_Fields` reads one row's fields, recording a problem and returning a harmless fallback for a
bad value, so a file is checked to its end; what a problem may say is in `gateway.registry.fleet`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from adapters.registry import REGISTERED_ADAPTERS
from devices.families import Family
from devices.places import KEY_SEP, PlaceLevel
from gateway.registry.identifiers import (
    id_problem,
    place_name_problem,
    shown_field_name,
    text_problem,
)
from gateway.registry.records import (
    DELIVERABLE_CHANNEL_KINDS,
    DELIVERABLE_TEXT,
    ChannelKind,
    ContactChannel,
    Power,
    Role,
)
from privacy.operators import is_plate

NAME_MAX = 128
TARGET_MAX = 512
# Dates without a time of day (consent dates) are midnight in China Standard Time.
CST = timezone(timedelta(hours=8))
PLACE_KEYS = ("community", "grid", "building", "unit", "room")

# GB 11643-1999 resident ID number: 6-digit region, birth date, 3-digit sequence, ISO 7064
# MOD 11-2 check character.
_ID_NUMBER = re.compile(r"\d{17}[\dX]")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_DATE = re.compile(r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TRUE = {"true", "yes", "1", "y", "是"}
_FALSE = {"false", "no", "0", "n", "否"}
_FAMILIES = {f.value: f for f in Family}
_ROLES = {r.value: r for r in Role}
_KINDS = {k.value: k for k in ChannelKind}
_DELIVERABLE = DELIVERABLE_TEXT
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
    # a registered vehicle's plate (raw, like the ID number: pseudonymised, never stored)
    plate: str | None = field(default=None, repr=False)


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


def _key_words(key: object) -> str:
    """``key 'colour'``, or ``key (not shown: not a plain field name)`` for a key that may be
    data (a name or number put where a field name belongs)."""
    shown = shown_field_name(key)
    return f"key {shown}" if shown else "key (not shown: not a plain field name)"


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
    """A contact channel, or why it is refused (without echoing the target: it is personal).

    Only kinds alert delivery sends on are accepted: an sms number would import and then
    never be sent a thing, and the member's alerts would be lost without a word."""
    kind = _KINDS.get(kind_text.strip().lower())
    target = target.strip()
    if kind is None:
        return f"unknown channel kind (expected {_DELIVERABLE})"
    if kind not in DELIVERABLE_CHANNEL_KINDS:
        return (
            f"{kind} channels cannot be delivered: gridgate sends alerts on {_DELIVERABLE}"
            " channels only"
        )
    if not target:
        return f"{kind} channel without a target"
    if len(target) > TARGET_MAX or _CONTROL.search(target):
        return f"{kind} target is too long or contains control characters"
    if kind is ChannelKind.MQTT:
        if any(c in target for c in "+#") or target.startswith("$"):
            return "mqtt target must be a topic to publish to: no wildcards, no leading $"
    elif kind is ChannelKind.WEBHOOK and not _is_http_url(target):
        return "webhook target is not an http(s) URL"
    return ContactChannel(kind, target)


def _is_http_url(text: str) -> bool:
    parts = urlsplit(text)
    try:
        _ = parts.port  # raises for a port that is not a number from 0 to 65535
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in text


def adapter_problem(name: str) -> str | None:
    """Why a device's adapter name is refused (no such adapter), suggesting the closest name;
    None if it is registered. A typo would otherwise import and every message of the device
    be decoded by nobody."""
    if name in REGISTERED_ADAPTERS:
        return None
    close = difflib.get_close_matches(name.lower(), REGISTERED_ADAPTERS, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"unknown adapter ({hint}adapters: {', '.join(REGISTERED_ADAPTERS)})"


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
    if adapter and (why := adapter_problem(adapter)) is not None:
        f.problem(why)
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
    plate = f.raw("plate")
    if plate == "":  # a CSV row without one
        plate = None
    if plate is not None and not (isinstance(plate, str) and is_plate(plate)):
        f.problem("plate is not a vehicle plate (a province, a letter and 5 or 6 characters)")
        plate = None
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
        out.residents.append(
            ResidentEntry(rid, household, number, consent, consent_ns, f.line, plate or None)
        )
    elif household:
        out.extra_household_refs.append((f.what, household, f.line))
