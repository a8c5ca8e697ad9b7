"""The device and grid-member registry (R1.2, R3.3, R5.1) over any SQLAlchemy database.

SQLite is the default (one file, WAL so readers never wait for the importer); a PostgreSQL URL
lets several gateway processes share one registry. Every method opens and ends its own
transaction, so a `Registry` can be shared by the gateway's components.

`Registry` is the one entry point: it opens the database and answers through repositories,
each over its own tables (`places`, `devices`, `members` with users' privacy roles,
`residents` with households, the pseudonym vault and consent). Its methods are one-line
delegations to them and return frozen values (`records`), never ORM rows: the tables
(`_models`) are private to `gateway.registry`. The repositories are not public attributes
(`registry.members` and `registry.residents` are already methods): one way to ask.

Changes that touch personal data (consent, privacy roles) are written to the audit log (R3.6)
inside the registry transaction, so a change whose audit record could not be written is
rolled back.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from devices.info import DeviceInfo
from devices.location import Location
from gateway.registry._models import Base
from gateway.registry.counts import registry_counts
from gateway.registry.database import AuditSink, Database
from gateway.registry.devices import DeviceRepository
from gateway.registry.members import MemberRepository, UserRoleRepository
from gateway.registry.places import PlaceRepository
from gateway.registry.records import (
    AccessRole,
    DeviceDetail,
    DeviceFilter,
    DeviceState,
    Household,
    Liveness,
    Member,
    PlaceNode,
    RegistryCounts,
    Resident,
    Role,
)
from gateway.registry.residents import (
    ConsentCache,
    ConsentListener,
    HouseholdRepository,
    ResidentRepository,
)

SQLITE_BUSY_TIMEOUT_MS = 10_000


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

    def __init__(self, engine: Engine, *, audit: AuditSink | None = None) -> None:
        self._db = Database(engine, audit=audit)
        self._places = PlaceRepository(self._db)
        self._devices = DeviceRepository(self._db)
        self._members = MemberRepository(self._db)
        self._roles = UserRoleRepository(self._db)
        self._households = HouseholdRepository(self._db)
        self._residents = ResidentRepository(self._db)

    @classmethod
    def open(cls, url: str, *, audit: AuditSink | None = None) -> Registry:
        """Connect, tune SQLite, and create missing tables (existing ones are left as they are)."""
        parsed = make_url(url)
        is_sqlite = parsed.get_backend_name() == "sqlite"
        on_disk = parsed.database not in (None, "", ":memory:")
        if is_sqlite and on_disk and not str(parsed.database).startswith("file:"):
            Path(str(parsed.database)).parent.mkdir(parents=True, exist_ok=True)
        # Errors name the statement but not its parameters: those are names, ids and contact
        # targets, and an error message ends up on a terminal or in a log (R3.2).
        engine = create_engine(parsed, hide_parameters=True)
        if is_sqlite:
            _sqlite_tuning(engine)
        Base.metadata.create_all(engine)
        return cls(engine, audit=audit)

    @property
    def engine(self) -> Engine:
        return self._db.engine

    @property
    def audit(self) -> AuditSink | None:
        return self._db.audit

    @audit.setter
    def audit(self, audit: AuditSink | None) -> None:
        self._db.audit = audit

    def require_audit(self) -> AuditSink:
        """The audit log; changes to personal data are refused without one (R3.6)."""
        return self._db.require_audit()

    def close(self) -> None:
        self._db.engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def reading(self) -> AbstractContextManager[Session]:
        return self._db.reading()

    def writing(self, *, commit: bool = True) -> AbstractContextManager[Session]:
        """One write transaction: committed if the block ends normally (and `commit`), else
        rolled back. ``commit=False`` is a dry run that sees its own writes."""
        return self._db.writing(commit=commit)

    # -- places (`places.PlaceRepository`) --------------------------------------------------

    def place_tree(self) -> list[PlaceNode]:
        return self._places.tree()

    def place_exists(self, key: str) -> bool:
        return self._places.exists(key)

    def place_names(self, key: str) -> tuple[str, ...]:
        """Display names from the community down to the place `key` ("" where unknown)."""
        return self._places.names(key)

    def counts(self) -> RegistryCounts:
        """Everything the registry holds, counted (`counts.registry_counts`)."""
        return registry_counts(self._db)

    # -- devices and liveness (`devices.DeviceRepository`) ----------------------------------

    def device(self, device_id: str) -> DeviceInfo | None:
        return self._devices.get(device_id)

    def all_devices(self) -> list[DeviceInfo]:
        return self._devices.all()

    def device_count(self) -> int:
        return self._devices.count()

    def device_detail(self, device_id: str) -> DeviceDetail | None:
        return self._devices.detail(device_id)

    def find_devices(
        self, where: DeviceFilter, *, offset: int = 0, limit: int = 100
    ) -> tuple[list[DeviceState], int]:
        return self._devices.search(where, offset=offset, limit=limit)

    def device_states(
        self, places: Sequence[str]
    ) -> list[tuple[str, str, str, bool | None, int | None]]:
        return self._devices.states(places)

    def gate_approved(self, device_id: str) -> bool:
        return self._devices.gate_approved(device_id)

    def set_liveness(self, updates: Sequence[tuple[str, bool, int]]) -> None:
        self._devices.set_liveness(updates)

    def liveness(self, device_id: str) -> Liveness | None:
        return self._devices.liveness(device_id)

    def last_seen(self, device_ids: Sequence[str]) -> dict[str, int]:
        return self._devices.last_seen(device_ids)

    # -- members (`members.MemberRepository`) -----------------------------------------------

    def members_for(
        self, location: Location, roles: Collection[Role] | None = None
    ) -> list[Member]:
        return self._members.responsible_for(location, roles)

    def members_within(
        self, location: Location, roles: Collection[Role] | None = None
    ) -> list[Member]:
        return self._members.within(location, roles)

    def member(self, member_id: str) -> Member | None:
        return self._members.get(member_id)

    def members(self) -> list[Member]:
        return self._members.all()

    # -- privacy roles (`members.UserRoleRepository`) ---------------------------------------

    def has_role(self, user_id: str, role: AccessRole) -> bool:
        return self._roles.has(user_id, role)

    def users_with_role(self, role: AccessRole) -> list[str]:
        return self._roles.users_with(role)

    def grant_role(self, user_id: str, role: AccessRole, *, actor: str, at_ns: int) -> bool:
        return self._roles.grant(user_id, role, actor=actor, at_ns=at_ns)

    def revoke_role(self, user_id: str, role: AccessRole, *, actor: str) -> bool:
        return self._roles.revoke(user_id, role, actor=actor)

    # -- households (`residents.HouseholdRepository`) ---------------------------------------

    def households(self) -> list[Household]:
        return self._households.all()

    def household(self, household_id: str) -> Household | None:
        return self._households.get(household_id)

    def face_consent(self, household_id: str) -> bool:
        return self._households.face_consent(household_id)

    def set_face_consent(self, household_id: str, consent: bool, at_ns: int) -> bool:
        return self._households.set_face_consent(household_id, consent, at_ns)

    def consented_households(self) -> frozenset[str]:
        return self._households.consented()

    # -- residents, the pseudonym vault and consent (`residents.ResidentRepository`) --------

    def resident(self, resident_id: str) -> Resident | None:
        return self._residents.get(resident_id)

    def residents(self, household_id: str | None = None) -> list[Resident]:
        return self._residents.all(household_id)

    def resident_for_pseudonym(self, pseudonym: str) -> Resident | None:
        return self._residents.for_pseudonym(pseudonym)

    def face_consent_by_pseudonym(self, pseudonym: str) -> bool:
        return self._residents.face_consent_by_pseudonym(pseudonym)

    def consent_snapshot(self) -> dict[str, bool]:
        return self._residents.consent_snapshot()

    def pseudonyms_of(self, resident_id: str) -> dict[str, str]:
        return self._residents.pseudonyms_of(resident_id)

    def resident_pseudonyms(self, kid: str) -> dict[str, str]:
        return self._residents.resident_pseudonyms(kid)

    def vehicle_pseudonyms(self, kid: str) -> frozenset[str]:
        return self._residents.vehicle_pseudonyms(kid)

    def vault_kids(self) -> dict[str, int]:
        return self._residents.vault_kids()

    def add_consent_listener(self, listener: ConsentListener) -> None:
        self._residents.add_consent_listener(listener)

    def notify_consent(self, changes: Mapping[str, bool]) -> None:
        self._residents.notify_consent(changes)

    def set_resident_face_consent(
        self, resident_id: str, consent: bool, at_ns: int, actor: str, reason: str
    ) -> bool:
        return self._residents.set_face_consent(resident_id, consent, at_ns, actor, reason)


__all__ = ["AuditSink", "ConsentCache", "ConsentListener", "Registry"]
