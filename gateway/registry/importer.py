"""Importing a fleet file into the registry: validate everything, then write in one transaction.

Nothing is written unless the whole file is good: a file with one bad row is refused with a
list of every problem, because a half-imported community routes alerts to the wrong people.
Re-importing a file is an upsert by id (places by key): rows that did not change are not
touched, liveness is never touched, and members' scopes are replaced only inside the
communities the file speaks for (a street-office member may cover several communities, each
imported from its own file). Nothing is deleted: a device missing from the file stays.

Consent (R3.3): a file may withdraw face consent at any time, but may not grant it over a
withdrawal the resident made directly (`Registry.set_face_consent`,
`Registry.set_resident_face_consent`) unless the file's ``face_consent_at`` is later; such rows
are kept withdrawn and reported as notices.

After the checks, places with devices where an alert would reach no member (nobody
responsible, or nobody holding the roles the routing policy tells first) are reported as
`ImportReport.warnings` (`gateway.registry.coverage`): the import goes ahead, the firm learns
that a building's gas alarm would wake nobody before it goes off.

Residents (``residents:`` or a residents CSV) carry ID numbers, which are never stored: for
every key of the `KeyRing` the importer stores the number's pseudonym in the vault
(`PseudonymRow`). A new key in the ring (a rotation) adds rows on the next import or
`rekey_file`; rows made with older keys stay, so older pseudonyms keep matching. Consent
changes and vault growth are written to the registry's audit log when one is attached.
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
from devices.places import KEY_SEP, PlaceLevel
from gateway.registry._models import (
    Base,
    ConsentSource,
    Device,
    HouseholdRow,
    MemberChannel,
    MemberRow,
    MemberScope,
    Place,
    PseudonymRow,
    ResidentRow,
    VehicleRow,
)
from gateway.registry.coverage import Audience, uncovered_places
from gateway.registry.fleet import (
    DeviceEntry,
    FileKind,
    FleetFile,
    HouseholdEntry,
    MemberEntry,
    PlaceEntry,
    PlaceRef,
    Problem,
    ResidentEntry,
    parse_file,
)
from gateway.registry.identifiers import shown_id, shown_key
from gateway.registry.queries import chunks
from gateway.registry.records import ROLE_SCOPE_LEVELS, Role, level_of
from gateway.registry.store import Registry
from privacy.audit import AuditAction
from privacy.keys import KeyRing
from privacy.operators import pseudonymise

ID_NUMBER_KIND = "id_number"  # the `pseudonymise` kind access events use for ID numbers
PLATE_KIND = "plate"  # … and for vehicle plates
NEEDS_KEYRING = "need the pseudonym key ring"  # in the problem a file with residents gets


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
    residents: Tally = field(default_factory=Tally)
    vault: VaultChange | None = None
    notices: list[Problem] = field(default_factory=list)
    # places with devices where an alert would reach no member (at most MAX_WARNINGS + 1)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    audited: bool = False  # consent and vault changes went to the audit log

    def summary(self) -> str:
        verb = "checked (dry run, nothing written)" if self.dry_run else "imported"
        text = (
            f"{verb} {self.path.name} in {self.seconds:.2f} s: places {self.places}, "
            f"households {self.households}, devices {self.devices}, members {self.members}"
        )
        if self.residents.total:
            text += f", residents {self.residents}"
        if self.vault is not None:
            text += f"; {self.vault}"
        return text


@dataclass(slots=True)
class VaultChange:
    """What an import or rekey did to the pseudonym vault."""

    kids: tuple[str, ...]  # the ring's key ids, current first
    rows_added: int = 0
    rows_removed: int = 0  # a resident's ID number was corrected: old pseudonyms dropped
    rotated: list[str] = field(default_factory=list)  # kids newly added for known residents
    # pseudonym → consent to tell the gateway's caches (False: gone or withdrawn)
    consent_changes: dict[str, bool] = field(default_factory=dict, repr=False)

    def __str__(self) -> str:
        text = f"pseudonym vault +{self.rows_added} rows under {', '.join(self.kids)}"
        if self.rows_removed:
            text += f", {self.rows_removed} replaced"
        return text


@dataclass(slots=True)
class RekeyReport:
    path: Path
    residents: int
    vault: VaultChange
    dry_run: bool
    seconds: float = 0.0

    def summary(self) -> str:
        verb = "checked (dry run, nothing written)" if self.dry_run else "rekeyed"
        return (
            f"{verb} {self.path.name} in {self.seconds:.2f} s: residents {self.residents}; "
            f"{self.vault}"
        )


def import_file(
    registry: Registry,
    path: Path,
    *,
    dry_run: bool = False,
    now_ns: int | None = None,
    keyring: KeyRing | None = None,
    actor: str = "fleet-import",
    audiences: Sequence[Audience] = (),
) -> ImportReport:
    """Validate `path` against itself and the registry, then upsert it in one transaction.

    `keyring` is needed when the file lists residents (their ID numbers become pseudonyms).
    `audiences` (from the routing policy: which alerts go first to which roles) add to the
    warnings the places where nobody holds those roles; without, only places where nobody at
    all is responsible are warned about.
    Raises FleetFileError (every problem, nothing written) or OSError if it cannot be read.
    """
    started = time.perf_counter()
    fleet = parse_file(path)
    report = ImportReport(path, fleet.kind, dry_run, notices=list(fleet.notices))
    if fleet.residents and keyring is None:
        fleet.problems.append(_needs_keyring(fleet))
    with registry.writing(commit=not dry_run) as s:
        resolved = _resolve(s, fleet)  # also for a file with bad rows: report every problem
        wanted = _vault_wanted(s, fleet, keyring) if keyring is not None else {}
        if fleet.problems:
            raise FleetFileError(path, sorted(fleet.problems))
        now = time.time_ns() if now_ns is None else now_ns
        report.places = _write_places(s, fleet.places)
        report.households = _write_households(s, fleet.households, resolved, now, report)
        report.devices = _write_devices(s, fleet.devices, resolved)
        report.members = _write_members(s, fleet.members, resolved, fleet.communities)
        communities = fleet.communities | {
            key.split(KEY_SEP, 1)[0] for key in resolved.device_place.values()
        }
        report.warnings = uncovered_places(s, communities, audiences)
        if fleet.residents and keyring is not None:
            report.residents, consent = _write_residents(s, fleet.residents, now, report)
            report.vault = _write_vault(s, wanted, keyring.kids, prune=True)
            _write_vehicles(s, fleet.residents, keyring, prune=True)
            report.vault.consent_changes = _current_consent(s, report.vault, wanted) | {
                p: c for p, c in report.vault.consent_changes.items() if not c
            }
            if registry.audit is not None and not dry_run:
                s.flush()
                _audit_import(registry, actor, path, report, consent)
                report.audited = True
    if not dry_run and report.vault is not None:
        registry.notify_consent(report.vault.consent_changes)
    report.seconds = time.perf_counter() - started
    return report


def rekey_file(
    registry: Registry,
    path: Path,
    keyring: KeyRing,
    *,
    dry_run: bool = False,
    actor: str = "fleet-import",
) -> RekeyReport:
    """After a key rotation: add every listed resident's pseudonym under each key of the ring.

    Only the vault changes (no consent, no places), nothing is removed, and every resident
    must already be registered. The ID numbers come from the fleet file because the registry
    never had them. Raises FleetFileError or OSError like `import_file`.
    """
    started = time.perf_counter()
    fleet = parse_file(path)
    if not fleet.residents and not fleet.problems:
        fleet.problems.append(Problem(1, "no residents in this file: nothing to rekey"))
    with registry.writing(commit=not dry_run) as s:
        known: set[str] = set()
        for part in chunks(sorted({r.id for r in fleet.residents})):
            known.update(s.scalars(select(ResidentRow.id).where(ResidentRow.id.in_(part))))
        for r in fleet.residents:
            if r.id not in known:
                fleet.problems.append(
                    Problem(r.line, f"resident {r.id}: not registered (import the file first)")
                )
        wanted = _vault_wanted(s, fleet, keyring)
        if fleet.problems:
            raise FleetFileError(path, sorted(fleet.problems))
        vault = _write_vault(s, wanted, keyring.kids, prune=False)
        _write_vehicles(s, fleet.residents, keyring, prune=False)
        vault.consent_changes = _current_consent(s, vault, wanted)
        if registry.audit is not None and not dry_run and vault.rows_added:
            s.flush()
            registry.audit.append(
                actor,
                AuditAction.KEY_ROTATION,
                "resident-vault",
                {
                    "file": path.name,
                    "kids": list(vault.kids),
                    "new_kids": vault.rotated,
                    "rows_added": vault.rows_added,
                    "residents": len(wanted),
                },
            )
    if not dry_run:
        registry.notify_consent(vault.consent_changes)
    return RekeyReport(path, len(wanted), vault, dry_run, time.perf_counter() - started)


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
                if len(found) > 1:  # registered keys: a registry from before the checks
                    grids = ", ".join(shown_id(k.split(KEY_SEP)[1]) for k in found)
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
                        f"device {d.id}: placed at {shown_key(key)} but household {d.household}"
                        f" is in {shown_key(room)}",
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
                f"not a {level_of(key).value} ({shown_key(key)})",
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

    refs = [(f"resident {r.id}", r.household, r.line) for r in fleet.residents]
    refs += fleet.extra_household_refs
    in_file = {h.id for h in fleet.households} | fleet.broken_households
    registered: set[str] = set()
    for part in chunks(sorted({h for _, h, _ in refs} - in_file)):
        registered.update(s.scalars(select(HouseholdRow.id).where(HouseholdRow.id.in_(part))))
    for what, household, line in refs:
        if household not in in_file and household not in registered:
            problems.append(Problem(line, f"{what}: household {household} not found"))
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
        consent = _merge_consent(e, None if old is None else (old[2], old[3], old[4]), now_ns,
                                 report)  # fmt: skip
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
    e: HouseholdEntry | ResidentEntry,
    stored: tuple[bool, int | None, ConsentSource] | None,
    now_ns: int,
    report: ImportReport,
) -> tuple[bool, int | None, ConsentSource]:
    """(consent, when, source) after this row; see the module docstring for the rule."""
    what = f"{'household' if isinstance(e, HouseholdEntry) else 'resident'} {e.id}"
    at = e.face_consent_ns if e.face_consent_ns is not None else now_ns
    if stored is None:
        if e.face_consent is None:
            return False, None, ConsentSource.IMPORT
        return e.face_consent, at, ConsentSource.IMPORT
    if e.face_consent is None or e.face_consent == stored[0]:
        return stored
    if not e.face_consent:
        if stored[2] is ConsentSource.DIRECT:
            report.notices.append(
                Problem(e.line, f"{what}: the file withdraws face consent that was "
                        "granted directly; withdrawn")
            )  # fmt: skip
        return False, at, ConsentSource.IMPORT
    newer = e.face_consent_ns is not None and (stored[1] is None or e.face_consent_ns > stored[1])
    if stored[2] is ConsentSource.DIRECT and not newer:
        report.notices.append(
            Problem(e.line, f"{what}: the file grants face consent but the resident "
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


# -- residents and the pseudonym vault ------------------------------------------------------


def _needs_keyring(fleet: FleetFile) -> Problem:
    return Problem(
        fleet.residents[0].line,
        f"residents: {len(fleet.residents)} resident(s) with ID numbers {NEEDS_KEYRING}"
        " to be imported (GRIDGATE_PSEUDONYM_KEYS or GRIDGATE_PSEUDONYM_KEY_FILE; create"
        " one with `python -m privacy.keys generate FILE`); ID numbers are never stored as such",
    )


def _vault_wanted(s: Session, fleet: FleetFile, keyring: KeyRing) -> dict[str, dict[str, str]]:
    """Resident id → key id → pseudonym; a problem for a person registered under another id."""
    wanted = {
        r.id: {kid: pseudonymise(r.id_number, ID_NUMBER_KIND, keyring, kid) for kid in keyring.kids}
        for r in fleet.residents
    }
    owner: dict[str, str] = {}
    every = sorted(p for by_kid in wanted.values() for p in by_kid.values())
    for part in chunks(every):
        stmt = select(PseudonymRow.pseudonym, PseudonymRow.resident_id).where(
            PseudonymRow.pseudonym.in_(part)
        )
        owner.update((ps, rid) for ps, rid in s.execute(stmt))
    for r in fleet.residents:
        others = sorted({owner[p] for p in wanted[r.id].values() if owner.get(p, r.id) != r.id})
        if others:
            fleet.problems.append(
                Problem(r.line, f"resident {r.id}: the same person (ID number) is registered as"
                        f" resident {shown_id(others[0])}; one person, one resident")
            )  # fmt: skip
    return wanted


_RESIDENT_COLUMNS = ("household_id", "face_consent", "face_consent_ns", "face_consent_source")


def _write_residents(
    s: Session, entries: Sequence[ResidentEntry], now_ns: int, report: ImportReport
) -> tuple[Tally, dict[str, list[str]]]:
    """Upsert residents (consent merged as for households); which consents changed how."""
    existing = _existing(s, ResidentRow, _RESIDENT_COLUMNS, (e.id for e in entries))
    rows = []
    changed: dict[str, list[str]] = {
        "granted": [],
        "withdrawn": [],
        "new_with": [],
        "new_without": [],
    }
    for e in entries:
        old = existing.get(e.id)
        stored = None if old is None else (old[1], old[2], old[3])
        consent = _merge_consent(e, stored, now_ns, report)
        if old is None:
            changed["new_with" if consent[0] else "new_without"].append(e.id)
        elif consent[0] != old[1]:
            changed["granted" if consent[0] else "withdrawn"].append(e.id)
        rows.append(
            dict(zip(("id", *_RESIDENT_COLUMNS), (e.id, e.household, *consent), strict=True))
        )
    return _upsert(s, ResidentRow, rows, _RESIDENT_COLUMNS, existing), changed


def _write_vehicles(
    s: Session, entries: Sequence[ResidentEntry], keyring: KeyRing, *, prune: bool
) -> None:
    """Each listed resident's vehicle as its plate's pseudonym under every key of the ring;
    with `prune` (an import), a resident's rows are replaced by what the file says now."""
    residents = sorted({e.id for e in entries})
    if prune:
        for part in chunks(residents):
            s.execute(
                delete(VehicleRow)
                .where(VehicleRow.resident_id.in_(part))
                .execution_options(synchronize_session=False)
            )
    rows = [
        {"pseudonym": pseudonymise(e.plate, PLATE_KIND, keyring, kid), "resident_id": e.id,
         "kid": kid}
        for e in entries
        if e.plate
        for kid in keyring.kids
    ]  # fmt: skip
    have: set[str] = set()
    for part in chunks(sorted({r["pseudonym"] for r in rows})):
        have.update(s.scalars(select(VehicleRow.pseudonym).where(VehicleRow.pseudonym.in_(part))))
    rows = [r for r in rows if r["pseudonym"] not in have]
    unique = list({r["pseudonym"]: r for r in rows}.values())  # one car, two owners: the first
    if unique:
        s.execute(insert(VehicleRow), unique)


def _write_vault(
    s: Session, wanted: dict[str, dict[str, str]], kids: Sequence[str], *, prune: bool
) -> VaultChange:
    """Make the vault hold `wanted`; with `prune`, a resident whose pseudonyms differ (an ID
    number corrected in the file) loses all old rows, including those of retired keys."""
    change = VaultChange(tuple(kids))
    have: dict[str, dict[str, str]] = defaultdict(dict)
    for part in chunks(sorted(wanted)):
        stmt = select(PseudonymRow.resident_id, PseudonymRow.kid, PseudonymRow.pseudonym).where(
            PseudonymRow.resident_id.in_(part)
        )
        for rid, kid, pseudonym in s.execute(stmt):
            have[rid][kid] = pseudonym
    stale: list[str] = []
    new_rows: list[dict[str, str]] = []
    rotated: set[str] = set()
    for rid, by_kid in wanted.items():
        old = have.get(rid, {})
        if prune and any(old.get(kid, p) != p for kid, p in by_kid.items()):
            stale.append(rid)
            change.rows_removed += len(old)
            change.consent_changes.update(dict.fromkeys(old.values(), False))
            old = {}
        for kid, pseudonym in by_kid.items():
            if kid not in old:
                new_rows.append({"pseudonym": pseudonym, "resident_id": rid, "kid": kid})
                if rid in have and rid not in stale:
                    rotated.add(kid)
    for part in chunks(stale):
        s.execute(
            delete(PseudonymRow)
            .where(PseudonymRow.resident_id.in_(part))
            .execution_options(synchronize_session=False)
        )
    if new_rows:
        s.execute(insert(PseudonymRow), new_rows)
    change.rows_added = len(new_rows)
    change.rotated = [k for k in kids if k in rotated]
    return change


def _current_consent(
    s: Session, vault: VaultChange, wanted: dict[str, dict[str, str]]
) -> dict[str, bool]:
    """Every listed resident's pseudonyms with the consent now in force (for caches)."""
    consent: dict[str, bool] = {}
    for part in chunks(sorted(wanted)):
        stmt = select(ResidentRow.id, ResidentRow.face_consent).where(ResidentRow.id.in_(part))
        for rid, value in s.execute(stmt):
            consent.update(dict.fromkeys(wanted[rid].values(), bool(value)))
    return consent


def _audit_import(
    registry: Registry,
    actor: str,
    path: Path,
    report: ImportReport,
    consent: dict[str, list[str]],
) -> None:
    audit = registry.require_audit()
    if any(consent.values()):
        audit.append(
            actor,
            AuditAction.CONSENT_CHANGE,
            "fleet-import",
            {
                "source": "import",
                "file": path.name,
                "granted": consent["granted"],
                "withdrawn": consent["withdrawn"],
                "new_residents_with_consent": len(consent["new_with"]),
                "new_residents_without_consent": len(consent["new_without"]),
            },
        )
    vault = report.vault
    if vault is not None and (vault.rotated or vault.rows_removed):
        audit.append(
            actor,
            AuditAction.KEY_ROTATION,
            "resident-vault",
            {
                "file": path.name,
                "kids": list(vault.kids),
                "new_kids": vault.rotated,
                "rows_added": vault.rows_added,
                "rows_replaced": vault.rows_removed,
            },
        )
