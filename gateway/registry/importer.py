"""Importing a fleet file into the registry: validate everything, then write in one transaction.

Nothing is written unless the whole file is good: a file with one bad row is refused with a
list of every problem, because a half-imported community routes alerts to the wrong people.
Re-importing a file is an upsert by id (places by key): rows that did not change are not
touched, liveness is never touched, and members' scopes are replaced only inside the
communities the file speaks for (a street-office member may cover several communities, each
imported from its own file). Nothing is deleted: a device missing from the file stays.

Consent (R3.3): a file may withdraw face consent at any time, but may not grant it over a
withdrawal the resident made directly (`Registry.set_face_consent`) unless the file's
``face_consent_at`` is later; such rows are kept withdrawn and reported as notices.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from devices.errors import ConfigError
from gateway.registry.fleet_file import (
    DeviceEntry,
    FileKind,
    FleetFile,
    HouseholdEntry,
    MemberEntry,
    PlaceEntry,
    PlaceRef,
    Problem,
    parse_file,
)
from gateway.registry.models import (
    Base,
    ConsentSource,
    Device,
    HouseholdRow,
    MemberChannel,
    MemberRow,
    MemberScope,
    Place,
)
from gateway.registry.records import (
    KEY_SEP,
    ROLE_SCOPE_LEVELS,
    PlaceLevel,
    Role,
    level_of,
)
from gateway.registry.store import Registry, chunks


class FleetFileError(ConfigError):
    """The file was refused; `problems` lists every bad row, sorted by line."""

    def __init__(self, path: Path, problems: Sequence[Problem]) -> None:
        super().__init__(f"{path}: {len(problems)} problem(s), nothing imported")
        self.path = path
        self.problems = list(problems)


@dataclass(slots=True)
class Tally:
    total: int = 0
    new: int = 0
    updated: int = 0

    def __str__(self) -> str:
        return f"{self.total} ({self.new} new, {self.updated} updated)"


@dataclass(slots=True)
class ImportReport:
    path: Path
    kind: FileKind
    dry_run: bool
    places: Tally = field(default_factory=Tally)
    households: Tally = field(default_factory=Tally)
    devices: Tally = field(default_factory=Tally)
    members: Tally = field(default_factory=Tally)
    notices: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        verb = "checked (dry run, nothing written)" if self.dry_run else "imported"
        return (
            f"{verb} {self.path.name} in {self.seconds:.2f} s: places {self.places}, "
            f"households {self.households}, devices {self.devices}, members {self.members}"
        )


def import_file(
    registry: Registry, path: Path, *, dry_run: bool = False, now_ns: int | None = None
) -> ImportReport:
    """Validate `path` against itself and the registry, then upsert it in one transaction.

    Raises FleetFileError (every problem, nothing written) or OSError if it cannot be read.
    """
    started = time.perf_counter()
    fleet = parse_file(path)
    report = ImportReport(path, fleet.kind, dry_run, notices=list(fleet.notices))
    with registry.writing(commit=not dry_run) as s:
        resolved = _resolve(s, fleet)  # also for a file with bad rows: report every problem
        if fleet.problems:
            raise FleetFileError(path, sorted(fleet.problems))
        now = time.time_ns() if now_ns is None else now_ns
        report.places = _write_places(s, fleet.places)
        report.households = _write_households(s, fleet.households, resolved, now, report)
        report.devices = _write_devices(s, fleet.devices, resolved)
        report.members = _write_members(s, fleet.members, resolved, fleet.communities)
    report.seconds = time.perf_counter() - started
    return report


# -- references -----------------------------------------------------------------------------


class _Unresolved(Exception):
    pass


@dataclass(slots=True)
class _Resolved:
    household_place: dict[str, str] = field(default_factory=dict)  # household id → room key
    device_place: dict[str, str] = field(default_factory=dict)
    member_scopes: dict[str, list[str]] = field(default_factory=dict)


class _PlaceIndex:
    """Known place keys (file ∪ registry) and, for finding a building's grid, its code."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = set(keys)
        self.buildings: dict[tuple[str, str], list[str]] = defaultdict(list)
        for key in self.keys:
            parts = key.split(KEY_SEP)
            if len(parts) == 3:
                self.buildings[parts[0], parts[2]].append(key)

    def resolve(self, ref: PlaceRef) -> str:
        key = ref.community
        if key not in self.keys:
            raise _Unresolved(f"unknown community {ref.community}")
        if ref.grid:
            key = f"{key}{KEY_SEP}{ref.grid}"
            if key not in self.keys:
                raise _Unresolved(f"unknown grid {ref.grid} in community {ref.community}")
        if ref.building:
            if ref.grid:
                key = f"{key}{KEY_SEP}{ref.building}"
                if key not in self.keys:
                    raise _Unresolved(f"unknown building {ref.building} in grid {ref.grid}")
            else:
                found = sorted(self.buildings.get((ref.community, ref.building), ()))
                if not found:
                    raise _Unresolved(f"unknown building {ref.building}")
                if len(found) > 1:
                    grids = ", ".join(k.split(KEY_SEP)[1] for k in found)
                    raise _Unresolved(f"building {ref.building} is in grids {grids}: give grid")
                key = found[0]
        for level, code in ((PlaceLevel.UNIT, ref.unit), (PlaceLevel.ROOM, ref.room)):
            if code:
                key = f"{key}{KEY_SEP}{code}"
                if key not in self.keys:
                    raise _Unresolved(f"unknown {level.value} {code} ({ref.describe()})")
        return key


def _resolve(s: Session, fleet: FleetFile) -> _Resolved:
    """Turn every reference into a key, adding a problem for each that fails."""
    out = _Resolved()
    problems = fleet.problems
    communities = fleet.communities | {ref.community for _, ref, _ in fleet.extra_refs}
    stored = s.scalars(select(Place.id).where(Place.community.in_(sorted(communities))))
    places = _PlaceIndex([*stored, *(p.key for p in fleet.places)])

    def resolve(what: str, ref: PlaceRef) -> str | None:
        try:
            return places.resolve(ref)
        except _Unresolved as exc:
            problems.append(Problem(ref.line, f"{what}: {exc}"))
            return None

    for h in fleet.households:
        if (key := resolve(f"household {h.id}", h.place)) is not None:
            out.household_place[h.id] = key

    wanted = {d.household for d in fleet.devices if d.household} - out.household_place.keys()
    stored_households = {h.id for h in fleet.households}
    for part in chunks(sorted(wanted - stored_households)):
        stmt = select(HouseholdRow.id, HouseholdRow.place_id).where(HouseholdRow.id.in_(part))
        out.household_place.update((hid, room) for hid, room in s.execute(stmt))
    for d in fleet.devices:
        key = resolve(f"device {d.id}", d.place)
        if key is None:
            continue
        if d.household:
            if d.household in fleet.broken_households or (
                d.household in stored_households and d.household not in out.household_place
            ):
                continue  # the household's own row is already reported
            room = out.household_place.get(d.household)
            if room is None:
                problems.append(
                    Problem(d.line, f"device {d.id}: household {d.household} not found")
                )
                continue
            if room != key and not room.startswith(key + KEY_SEP):
                problems.append(
                    Problem(
                        d.line,
                        f"device {d.id}: placed at {key} but household {d.household} is in {room}",
                    )
                )
                continue
        out.device_place[d.id] = key

    def scope_fits(what: str, role: Role, key: str, line: int) -> bool:
        allowed = ROLE_SCOPE_LEVELS[role]
        if level_of(key) in allowed:
            return True
        levels = " or ".join(sorted(level.value for level in allowed))
        problems.append(
            Problem(
                line,
                f"{what}: a {role.value} is responsible for a {levels}, "
                f"not a {level_of(key).value} ({key})",
            )
        )
        return False

    for m in fleet.members:
        keys: list[str] = []
        for ref in m.scopes:
            key = resolve(f"member {m.id}", ref)
            fits = key is not None and scope_fits(f"member {m.id}", m.role, key, ref.line)
            if fits and key is not None and key not in keys:
                keys.append(key)
        out.member_scopes[m.id] = keys
    for what, ref, role in fleet.extra_refs:
        key = resolve(what, ref)
        if key is not None and role is not None:
            scope_fits(what, role, key, ref.line)
    return out


# -- writing --------------------------------------------------------------------------------


def _existing(
    s: Session, model: type[Base], columns: Sequence[str], ids: Iterable[str]
) -> dict[str, tuple[Any, ...]]:
    """Stored values of `columns` for those of `ids` that exist (chunked IN queries)."""
    table = model.__table__
    pk = table.c["id"]
    cols = [table.c[c] for c in columns]
    found: dict[str, tuple[Any, ...]] = {}
    for part in chunks(sorted(set(ids))):
        for row in s.execute(select(pk, *cols).where(pk.in_(part))):
            found[row[0]] = tuple(row[1:])
    return found


def _upsert(
    s: Session,
    model: type[Base],
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    existing: dict[str, tuple[Any, ...]],
) -> Tally:
    """Insert rows whose id is new; update those whose `columns` differ; leave the rest."""
    new = [r for r in rows if r["id"] not in existing]
    changed = [
        r for r in rows if r["id"] in existing and tuple(r[c] for c in columns) != existing[r["id"]]
    ]
    if new:
        s.execute(insert(model), new)
    if changed:
        s.execute(update(model), changed)
    return Tally(len(rows), len(new), len(changed))


_PLACE_COLUMNS = ("name", "street")


def _write_places(s: Session, entries: Sequence[PlaceEntry]) -> Tally:
    existing = _existing(s, Place, _PLACE_COLUMNS, (e.key for e in entries))
    rows = [
        {
            "id": e.key,
            "parent_id": e.parent,
            "community": e.key.split(KEY_SEP, 1)[0],
            "level": e.level,
            "code": e.code,
            "name": e.name,
            "street": e.street,
        }
        for e in sorted(entries, key=lambda e: e.key.count(KEY_SEP))  # parents first
    ]
    return _upsert(s, Place, rows, _PLACE_COLUMNS, existing)


_HOUSEHOLD_COLUMNS = (
    "place_id", "elder_alone", "face_consent", "face_consent_ns", "face_consent_source",
)  # fmt: skip


def _write_households(
    s: Session,
    entries: Sequence[HouseholdEntry],
    resolved: _Resolved,
    now_ns: int,
    report: ImportReport,
) -> Tally:
    existing = _existing(s, HouseholdRow, _HOUSEHOLD_COLUMNS, (e.id for e in entries))
    rows = []
    for e in entries:
        old = existing.get(e.id)
        consent = _merge_consent(e, old, now_ns, report)
        rows.append(
            dict(
                zip(
                    ("id", *_HOUSEHOLD_COLUMNS),
                    (e.id, resolved.household_place[e.id], e.elder_alone, *consent),
                    strict=True,
                )
            )
        )
    return _upsert(s, HouseholdRow, rows, _HOUSEHOLD_COLUMNS, existing)


def _merge_consent(
    e: HouseholdEntry, old: tuple[Any, ...] | None, now_ns: int, report: ImportReport
) -> tuple[bool, int | None, ConsentSource]:
    """(consent, when, source) after this row; see the module docstring for the rule."""
    at = e.face_consent_ns if e.face_consent_ns is not None else now_ns
    if old is None:
        if e.face_consent is None:
            return False, None, ConsentSource.IMPORT
        return e.face_consent, at, ConsentSource.IMPORT
    stored: tuple[bool, int | None, ConsentSource] = (old[2], old[3], old[4])
    if e.face_consent is None or e.face_consent == stored[0]:
        return stored
    if not e.face_consent:
        if stored[2] is ConsentSource.DIRECT:
            report.notices.append(
                Problem(e.line, f"household {e.id}: the file withdraws face consent that was "
                        "granted directly; withdrawn")
            )  # fmt: skip
        return False, at, ConsentSource.IMPORT
    newer = e.face_consent_ns is not None and (stored[1] is None or e.face_consent_ns > stored[1])
    if stored[2] is ConsentSource.DIRECT and not newer:
        report.notices.append(
            Problem(e.line, f"household {e.id}: the file grants face consent but the resident "
                    "withdrew it later; kept withdrawn (give a later face_consent_at to override)")
        )  # fmt: skip
        return stored
    return True, at, ConsentSource.IMPORT


_DEVICE_COLUMNS = (
    "family", "adapter", "vendor", "place_id", "household_id", "power", "installed",
    "gate_approved",
)  # fmt: skip


def _write_devices(s: Session, entries: Sequence[DeviceEntry], resolved: _Resolved) -> Tally:
    existing = _existing(s, Device, _DEVICE_COLUMNS, (e.id for e in entries))
    rows = []
    for e in entries:
        gate = e.gate_approved
        if gate is None:  # a CSV without the column: keep what is recorded
            gate = bool(existing[e.id][-1]) if e.id in existing else False
        rows.append(
            {
                "id": e.id,
                "family": e.family,
                "adapter": e.adapter,
                "vendor": e.vendor,
                "place_id": resolved.device_place[e.id],
                "household_id": e.household or None,
                "power": e.power,
                "installed": e.installed,
                "gate_approved": gate,
            }
        )
    return _upsert(s, Device, rows, _DEVICE_COLUMNS, existing)


_MEMBER_COLUMNS = ("name", "role", "active")


def _write_members(
    s: Session, entries: Sequence[MemberEntry], resolved: _Resolved, communities: set[str]
) -> Tally:
    ids = [e.id for e in entries]
    existing = _existing(s, MemberRow, _MEMBER_COLUMNS, ids)
    in_file_communities = select(Place.id).where(Place.community.in_(sorted(communities)))
    old_scopes: dict[str, set[str]] = defaultdict(set)
    old_channels: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for part in chunks(ids):
        for mid, pid in s.execute(
            select(MemberScope.member_id, MemberScope.place_id).where(
                MemberScope.member_id.in_(part), MemberScope.place_id.in_(in_file_communities)
            )
        ):
            old_scopes[mid].add(pid)
        for mid, kind, target in s.execute(
            select(MemberChannel.member_id, MemberChannel.kind, MemberChannel.target)
            .where(MemberChannel.member_id.in_(part))
            .order_by(MemberChannel.id)
        ):
            old_channels[mid].append((kind, target))

    rows = [{"id": e.id, "name": e.name, "role": e.role, "active": e.active} for e in entries]
    tally = _upsert(s, MemberRow, rows, _MEMBER_COLUMNS, existing)
    new_scopes: list[dict[str, str]] = []
    new_channels: list[dict[str, Any]] = []
    rescoped: list[str] = []
    rechanneled: list[str] = []
    links_changed = 0
    for e in entries:
        scopes = resolved.member_scopes[e.id]
        channels = [(c.kind, c.target) for c in e.channels]
        scope_change = set(scopes) != old_scopes.get(e.id, set())
        channel_change = channels != old_channels.get(e.id, [])
        if scope_change:
            rescoped.append(e.id)
            new_scopes.extend({"member_id": e.id, "place_id": k} for k in scopes)
        if channel_change:
            rechanneled.append(e.id)
            new_channels.extend({"member_id": e.id, "kind": k, "target": t} for k, t in channels)
        row_change = e.id in existing and (e.name, e.role, e.active) != existing[e.id]
        if e.id in existing and not row_change and (scope_change or channel_change):
            links_changed += 1
    for part in chunks(rescoped):
        s.execute(
            delete(MemberScope)
            .where(MemberScope.member_id.in_(part), MemberScope.place_id.in_(in_file_communities))
            .execution_options(synchronize_session=False)
        )
    for part in chunks(rechanneled):
        s.execute(
            delete(MemberChannel)
            .where(MemberChannel.member_id.in_(part))
            .execution_options(synchronize_session=False)
        )
    if new_scopes:
        s.execute(insert(MemberScope), new_scopes)
    if new_channels:
        s.execute(insert(MemberChannel), new_channels)
    tally.updated += links_changed
    return tally
