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

The parts: `schema` (the entries, `FleetFile`, `Problem`, the rules for values and rows),
`yaml_file` (a community in YAML) and `csv_file` (devices, members or residents in CSV);
`parse_file` picks one by the file's extension.
"""

from __future__ import annotations

from pathlib import Path

from gateway.registry.fleet.csv_file import (
    DEVICE_COLUMNS,
    DEVICE_OPTIONAL_COLUMNS,
    MEMBER_COLUMNS,
    MEMBER_OPTIONAL_COLUMNS,
    RESIDENT_COLUMNS,
    RESIDENT_OPTIONAL_COLUMNS,
    parse_csv,
)
from gateway.registry.fleet.schema import (
    CST,
    NAME_MAX,
    PLACE_KEYS,
    TARGET_MAX,
    DeviceEntry,
    FileKind,
    FleetFile,
    HouseholdEntry,
    MemberEntry,
    PlaceEntry,
    PlaceRef,
    Problem,
    ResidentEntry,
    normalise_id_number,
    parse_channel,
    parse_date,
    parse_instant_ns,
)
from gateway.registry.fleet.yaml_file import LineDict, LineList, parse_yaml


def decode_text(raw: bytes, notices: list[Problem]) -> str:
    """UTF-8 (with or without BOM); Excel in China saves CSV as GBK, so fall back to GB18030."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        notices.append(Problem(1, "file is not UTF-8; read it as GB18030 (GBK)"))
        return raw.decode("gb18030", errors="replace")


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


__all__ = [
    "CST",
    "DEVICE_COLUMNS",
    "DEVICE_OPTIONAL_COLUMNS",
    "MEMBER_COLUMNS",
    "MEMBER_OPTIONAL_COLUMNS",
    "NAME_MAX",
    "PLACE_KEYS",
    "RESIDENT_COLUMNS",
    "RESIDENT_OPTIONAL_COLUMNS",
    "TARGET_MAX",
    "DeviceEntry",
    "FileKind",
    "FleetFile",
    "HouseholdEntry",
    "LineDict",
    "LineList",
    "MemberEntry",
    "PlaceEntry",
    "PlaceRef",
    "Problem",
    "ResidentEntry",
    "decode_text",
    "normalise_id_number",
    "parse_channel",
    "parse_csv",
    "parse_date",
    "parse_file",
    "parse_instant_ns",
    "parse_yaml",
]
