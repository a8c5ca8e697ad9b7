"""The device and grid-member registry (R1.2, R3.3, R5.1) over any SQLAlchemy database.

SQLite is the default (one file, WAL so readers never wait for the importer); a PostgreSQL URL
lets several gateway processes share one registry. Every method opens and ends its own
transaction, so a `Registry` can be shared by the gateway's components.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import (
    Engine,
    Table,
    bindparam,
    create_engine,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from devices.info import DeviceInfo
from devices.location import Location
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
    LEVELS,
    ContactChannel,
    DeviceDetail,
    Household,
    Liveness,
    Member,
    PlaceNode,
    RegistryCounts,
    Role,
    ancestor_keys,
    location_of,
    place_key,
)

SQLITE_BUSY_TIMEOUT_MS = 10_000
# Stay well below SQLite's bound-parameter limit in IN (...) lists.
IN_CHUNK = 500
_ROLE_ORDER = {role: i for i, role in enumerate(Role)}
T = TypeVar("T")


def chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _sqlite_tuning(engine: Engine) -> None:
    """WAL, enforced foreign keys, a busy timeout, and real transactions.

    pysqlite by default starts a transaction only at the first write, so an importer's
    validating reads would not be isolated; here the driver's own handling is switched off and
    every transaction begins explicitly. Write transactions ask for ``BEGIN IMMEDIATE``: a
    deferred transaction that reads and then writes fails at once (SQLITE_BUSY, no retry) if
    another writer committed in between.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")  # durable across crashes of the process in WAL
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("gridgate_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Registry:
    """Devices, places, households and grid members; returns frozen values, never ORM rows."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @classmethod
    def open(cls, url: str) -> Registry:
        """Connect, tune SQLite, and create missing tables (existing ones are left as they are)."""
        parsed = make_url(url)
        is_sqlite = parsed.get_backend_name() == "sqlite"
        on_disk = parsed.database not in (None, "", ":memory:")
        if is_sqlite and on_disk and not str(parsed.database).startswith("file:"):
            Path(str(parsed.database)).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed)
        if is_sqlite:
            _sqlite_tuning(engine)
        Base.metadata.create_all(engine)
        return cls(engine)

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with Session(self._engine) as session:
            yield session

    @contextmanager
    def writing(self, *, commit: bool = True) -> Iterator[Session]:
        """One write transaction: committed if the block ends normally (and `commit`), else
        rolled back. ``commit=False`` is a dry run that sees its own writes."""
        with Session(self._engine) as session:
            session.connection(execution_options={"gridgate_write": True})
            yield session
            if commit:
                session.commit()
            else:
                session.rollback()

    # -- devices ----------------------------------------------------------------------------

    def device(self, device_id: str) -> DeviceInfo | None:
        with self.reading() as s:
            row = s.execute(_DEVICE_INFO.where(Device.id == device_id)).one_or_none()
        return None if row is None else _device_info(row)

    def all_devices(self) -> list[DeviceInfo]:
        """Every device with its full location, in one query (the place key holds the chain)."""
        with self.reading() as s:
            rows = s.execute(_DEVICE_INFO.order_by(Device.id)).all()
        return [_device_info(row) for row in rows]

    def device_count(self) -> int:
        with self.reading() as s:
            return s.scalar(select(func.count()).select_from(Device)) or 0

    def device_detail(self, device_id: str) -> DeviceDetail | None:
        with self.reading() as s:
            row = s.execute(
                _DEVICE_INFO.add_columns(
                    Device.online, Device.last_seen_ns, Device.gate_approved
                ).where(Device.id == device_id)
            ).one_or_none()
            if row is None:
                return None
            keys = ancestor_keys(row.place_id)
            names = dict(s.execute(select(Place.id, Place.name).where(Place.id.in_(keys))).all())
        return DeviceDetail(
            info=_device_info(row),
            place_names=tuple(names.get(k, "") for k in keys),
            liveness=Liveness(row.online, row.last_seen_ns),
            gate_approved=row.gate_approved,
        )

    def gate_approved(self, device_id: str) -> bool:
        """False for unknown devices: identity matching needs a recorded approval."""
        with self.reading() as s:
            return bool(s.scalar(select(Device.gate_approved).where(Device.id == device_id)))

    # -- liveness (R1.3) --------------------------------------------------------------------

    def set_liveness(self, updates: Sequence[tuple[str, bool, int]]) -> None:
        """Record (device_id, online, last_seen_ns) for many devices in one transaction.

        An update older than what is stored is ignored, so batches that arrive out of order
        (two gateway processes, a retried batch) never move a device back in time. Unknown
        device ids are ignored: the gateway rejects spoofed ids before they get here.
        """
        if not updates:
            return
        table = Device.__table__
        assert isinstance(table, Table)
        stmt = (
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .where(or_(table.c.last_seen_ns.is_(None), table.c.last_seen_ns <= bindparam("b_ns")))
            .values(online=bindparam("b_online"), last_seen_ns=bindparam("b_ns"))
        )
        params = [{"b_id": d, "b_online": bool(o), "b_ns": int(t)} for d, o, t in updates]
        with self.writing() as s:
            s.connection().execute(stmt, params)

    def liveness(self, device_id: str) -> Liveness | None:
        with self.reading() as s:
            row = s.execute(
                select(Device.online, Device.last_seen_ns).where(Device.id == device_id)
            ).one_or_none()
        return None if row is None else Liveness(row.online, row.last_seen_ns)

    # -- members (R5.1, R5.3) ---------------------------------------------------------------

    def members_for(
        self, location: Location, roles: Collection[Role] | None = None
    ) -> list[Member]:
        """Active members responsible for `location`: scoped to it or to a place enclosing it.

        Listed innermost first (the unit head before the building head before the grid's
        workers before the community's desks), then by role and id: the order in which an
        alert is escalated. A location that skips a level (building without grid) is
        resolved through the registry when its codes are unambiguous.
        """
        with self.reading() as s:
            key = place_key(location) or self._resolve_gapped(s, location)
            if key is None:
                return []
            keys = ancestor_keys(key)
            depth = {k: i for i, k in enumerate(keys)}
            stmt = (
                select(MemberScope.member_id, MemberScope.place_id)
                .join(MemberRow, MemberRow.id == MemberScope.member_id)
                .where(MemberScope.place_id.in_(keys), MemberRow.active.is_(True))
            )
            if roles is not None:
                stmt = stmt.where(MemberRow.role.in_(list(roles)))
            innermost: dict[str, int] = {}
            for member_id, place_id in s.execute(stmt):
                innermost[member_id] = max(innermost.get(member_id, -1), depth[place_id])
            members = self._load_members(s, list(innermost))
        members.sort(key=lambda m: (-innermost[m.id], _ROLE_ORDER[m.role], m.id))
        return members

    def member(self, member_id: str) -> Member | None:
        with self.reading() as s:
            found = self._load_members(s, [member_id])
        return found[0] if found else None

    def members(self) -> list[Member]:
        with self.reading() as s:
            ids = list(s.scalars(select(MemberRow.id).order_by(MemberRow.id)))
            return self._load_members(s, ids)

    def _load_members(self, s: Session, ids: Sequence[str]) -> list[Member]:
        rows: list[MemberRow] = []
        scopes: dict[str, list[Location]] = defaultdict(list)
        channels: dict[str, list[ContactChannel]] = defaultdict(list)
        for part in chunks(ids):
            rows.extend(s.scalars(select(MemberRow).where(MemberRow.id.in_(part))))
            for mid, pid in s.execute(
                select(MemberScope.member_id, MemberScope.place_id)
                .where(MemberScope.member_id.in_(part))
                .order_by(MemberScope.place_id)
            ):
                scopes[mid].append(location_of(pid))
            for mid, kind, target in s.execute(
                select(MemberChannel.member_id, MemberChannel.kind, MemberChannel.target)
                .where(MemberChannel.member_id.in_(part))
                .order_by(MemberChannel.id)
            ):
                channels[mid].append(ContactChannel(kind, target))
        out = [
            Member(r.id, r.name, r.role, r.active, tuple(scopes[r.id]), tuple(channels[r.id]))
            for r in rows
        ]
        out.sort(key=lambda m: m.id)
        return out

    def _resolve_gapped(self, s: Session, location: Location) -> str | None:
        """The one place whose key agrees with every non-empty level of `location`."""
        parts = (location.community, location.grid, location.building, location.unit, location.room)
        known = [i for i, p in enumerate(parts) if p]
        if not known or known[0] != 0:
            return None
        deepest = known[-1]
        candidates = s.scalars(
            select(Place.id).where(
                Place.community == location.community,
                Place.level == LEVELS[deepest],
                Place.code == parts[deepest],
            )
        )
        matches = [k for k in candidates if all(k.split(KEY_SEP)[i] == parts[i] for i in known)]
        return matches[0] if len(matches) == 1 else None

    # -- households and consent (R3.3) ------------------------------------------------------

    def households(self) -> list[Household]:
        with self.reading() as s:
            rows = s.scalars(select(HouseholdRow).order_by(HouseholdRow.id)).all()
            return [_household(r) for r in rows]

    def household(self, household_id: str) -> Household | None:
        with self.reading() as s:
            row = s.get(HouseholdRow, household_id)
            return None if row is None else _household(row)

    def face_consent(self, household_id: str) -> bool:
        """False unless consent is recorded: unknown households get anonymous events only."""
        with self.reading() as s:
            return bool(
                s.scalar(select(HouseholdRow.face_consent).where(HouseholdRow.id == household_id))
            )

    def set_face_consent(self, household_id: str, consent: bool, at_ns: int) -> bool:
        """Record a resident's own grant or withdrawal; returns the consent now in force.

        A withdrawal applies at once, whatever its timestamp. A grant older than the last
        recorded change is ignored (a late message must not undo a newer withdrawal).
        The caller writes the audit record (R3.6). Raises KeyError for an unknown household.
        """
        with self.writing() as s:
            row = s.get(HouseholdRow, household_id)
            if row is None:
                raise KeyError(household_id)
            stale_grant = (
                consent and row.face_consent_ns is not None and at_ns < row.face_consent_ns
            )
            if not stale_grant:
                row.face_consent = consent
                row.face_consent_ns = at_ns
                row.face_consent_source = ConsentSource.DIRECT
            return row.face_consent

    def consented_households(self) -> frozenset[str]:
        """Snapshot for a hot-path cache; refresh it after every `set_face_consent`."""
        with self.reading() as s:
            return frozenset(
                s.scalars(select(HouseholdRow.id).where(HouseholdRow.face_consent.is_(True)))
            )

    # -- places -----------------------------------------------------------------------------

    def place_tree(self) -> list[PlaceNode]:
        """Every community with its grids, buildings, units and rooms, children sorted by code."""
        with self.reading() as s:
            rows = s.execute(
                select(Place.id, Place.parent_id, Place.level, Place.code, Place.name)
            ).all()
        children: dict[str | None, list[Any]] = defaultdict(list)
        for row in rows:
            children[row.parent_id].append(row)

        def build(row: Any) -> PlaceNode:
            kids = sorted(children.get(row.id, ()), key=lambda r: r.code)
            return PlaceNode(row.id, row.level, row.code, row.name, tuple(build(k) for k in kids))

        return [build(r) for r in sorted(children.get(None, ()), key=lambda r: r.code)]

    def counts(self) -> RegistryCounts:
        with self.reading() as s:

            def grouped(column: Any) -> dict[str, int]:
                rows = s.execute(select(column, func.count()).group_by(column)).all()
                return {str(getattr(k, "value", k)): n for k, n in rows}

            def count(*where: Any, model: type[Base] = Device) -> int:
                return s.scalar(select(func.count()).select_from(model).where(*where)) or 0

            by_level = grouped(Place.level)
            by_family = grouped(Device.family)
            by_role = grouped(MemberRow.role)
            return RegistryCounts(
                places=sum(by_level.values()),
                households=count(model=HouseholdRow),
                devices=sum(by_family.values()),
                members=sum(by_role.values()),
                places_by_level={lv.value: by_level.get(lv.value, 0) for lv in LEVELS},
                devices_by_family=by_family,
                devices_online=count(Device.online.is_(True)),
                devices_offline=count(Device.online.is_(False)),
                members_by_role=by_role,
                elder_alone=count(HouseholdRow.elder_alone.is_(True), model=HouseholdRow),
                face_consent=count(HouseholdRow.face_consent.is_(True), model=HouseholdRow),
            )


_DEVICE_INFO = select(
    Device.id,
    Device.family,
    Device.adapter,
    Device.vendor,
    Device.place_id,
    Device.household_id,
    Device.power,
    Device.installed,
)


def _device_info(row: Any) -> DeviceInfo:
    return DeviceInfo(
        device_id=row.id,
        family=row.family,
        adapter=row.adapter,
        vendor=row.vendor,
        location=location_of(row.place_id),
        household=row.household_id or "",
        power=row.power.value,
        installed=row.installed,
    )


def _household(row: HouseholdRow) -> Household:
    return Household(
        id=row.id,
        location=location_of(row.place_id),
        elder_alone=row.elder_alone,
        face_consent=row.face_consent,
        face_consent_ns=row.face_consent_ns,
    )


__all__ = ["Registry"]
