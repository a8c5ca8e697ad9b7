"""A community's fleet file in YAML (docs/fleet-file.md): places nested from the community down
to rooms, then households, devices, members and residents, every problem with its line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from devices.places import KEY_SEP, LEVELS, PlaceLevel
from gateway.registry.fleet.schema import (
    _ROLES,
    PLACE_KEYS,
    FleetFile,
    HouseholdEntry,
    MemberEntry,
    PlaceEntry,
    PlaceRef,
    Problem,
    _channel_from_text,
    _device,
    _Fields,
    _Ids,
    _key_words,
    _resident,
    _ResidentIds,
    parse_channel,
)
from gateway.registry.records import ContactChannel

try:  # libyaml parses ~10x faster; the pure-Python loader behaves the same
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

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


_YAML_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def _yaml_problem(text: str) -> str:
    """PyYAML's problem text without quoted input longer than four characters (a single
    character such as ``'\\t'`` is kept: it says what is wrong and cannot identify anyone)."""
    return _YAML_QUOTED.sub(lambda m: m.group() if len(m.group()) <= 6 else "'…'", text)


# -- a community ----------------------------------------------------------------------------

_TOP_KEYS = ("version", "community", "grids", "households", "devices", "members", "residents")
_DEVICE_KEYS = (
    "id", "family", "adapter", "vendor", "power", "installed", "household", "gate_approved",
    *PLACE_KEYS,
)  # fmt: skip
_HOUSEHOLD_KEYS = ("id", "elder_alone", "face_consent", "face_consent_at", *PLACE_KEYS)
_MEMBER_KEYS = ("id", "name", "role", "active", "scope", "channels")
_RESIDENT_KEYS = ("id", "household", "id_number", "face_consent", "face_consent_at", "plate")


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
