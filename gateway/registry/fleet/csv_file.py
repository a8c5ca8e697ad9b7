"""Fleet files in CSV (docs/fleet-file.md): a list of devices, grid members or residents, told
apart by the header; every problem with its line.
"""

from __future__ import annotations

import csv
import io

from gateway.registry.fleet.schema import (
    _ROLES,
    FleetFile,
    MemberEntry,
    Problem,
    _channel_from_text,
    _device,
    _Fields,
    _Ids,
    _resident,
    _ResidentIds,
)
from gateway.registry.identifiers import shown_field_name
from gateway.registry.records import ContactChannel

DEVICE_COLUMNS = (
    "device_id", "family", "adapter", "vendor", "community", "grid", "building", "unit", "room",
    "household", "power", "installed",
)  # fmt: skip
DEVICE_OPTIONAL_COLUMNS = ("gate_approved",)
MEMBER_COLUMNS = ("member_id", "name", "role", "community", "grid", "building", "unit", "channels")
MEMBER_OPTIONAL_COLUMNS = ("active",)
RESIDENT_COLUMNS = ("resident_id", "household", "id_number", "face_consent")
RESIDENT_OPTIONAL_COLUMNS = ("face_consent_at", "plate")


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
