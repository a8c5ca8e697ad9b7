"""Households, residents, the pseudonym vault and face consent (R3.3), and the gateway's
in-memory cache of that consent.

Residents are kept without names or ID numbers: a resident is known by the pseudonyms of
their ID number (one per key of the ring, see `PseudonymRow`), which is all an access event
carries once the privacy layer has run. A resident's own consent change is written to the
audit log (R3.6) inside its transaction, so a change whose audit record could not be written
is rolled back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Generic, Protocol, TypeVar

from sqlalchemy import func, select

from devices.places import location_of
from gateway.registry._models import (
    ConsentSource,
    HouseholdRow,
    PseudonymRow,
    ResidentRow,
    VehicleRow,
)
from gateway.registry.database import Database
from gateway.registry.records import Household, Resident
from privacy.audit import AuditAction
from privacy.keys import KeyRing
from privacy.operators import pseudonymise

T = TypeVar("T")

# Told which pseudonyms' consent changed (False also for pseudonyms that no longer exist).
ConsentListener = Callable[[Mapping[str, bool]], None]


class HouseholdRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def all(self) -> list[Household]:
        with self._db.reading() as s:
            rows = s.scalars(select(HouseholdRow).order_by(HouseholdRow.id)).all()
            return [_household(r) for r in rows]

    def get(self, household_id: str) -> Household | None:
        with self._db.reading() as s:
            row = s.get(HouseholdRow, household_id)
            return None if row is None else _household(row)

    def face_consent(self, household_id: str) -> bool:
        """False unless consent is recorded: unknown households get anonymous events only."""
        with self._db.reading() as s:
            return bool(
                s.scalar(select(HouseholdRow.face_consent).where(HouseholdRow.id == household_id))
            )

    def set_face_consent(self, household_id: str, consent: bool, at_ns: int) -> bool:
        """Record a resident's own grant or withdrawal; returns the consent now in force.

        A withdrawal applies at once, whatever its timestamp. A grant older than the last
        recorded change is ignored (a late message must not undo a newer withdrawal).
        The caller writes the audit record (R3.6). Raises KeyError for an unknown household.
        """
        with self._db.writing() as s:
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

    def consented(self) -> frozenset[str]:
        """Snapshot for a hot-path cache; refresh it after every `set_face_consent`."""
        with self._db.reading() as s:
            return frozenset(
                s.scalars(select(HouseholdRow.id).where(HouseholdRow.face_consent.is_(True)))
            )


class ResidentRepository:
    """Residents, the pseudonym vault, and residents' face consent with its listeners."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._consent_listeners: list[ConsentListener] = []

    def get(self, resident_id: str) -> Resident | None:
        with self._db.reading() as s:
            row = s.get(ResidentRow, resident_id)
            return None if row is None else _resident(row)

    def all(self, household_id: str | None = None) -> list[Resident]:
        with self._db.reading() as s:
            stmt = select(ResidentRow).order_by(ResidentRow.id)
            if household_id is not None:
                stmt = stmt.where(ResidentRow.household_id == household_id)
            return [_resident(r) for r in s.scalars(stmt)]

    def for_pseudonym(self, pseudonym: str) -> Resident | None:
        """The resident behind a pseudonym. This *is* re-identification: only
        `gateway.registry.reident.ReidentService` calls it, under a grant, and audits the call."""
        with self._db.reading() as s:
            row = s.scalar(
                select(ResidentRow)
                .join(PseudonymRow, PseudonymRow.resident_id == ResidentRow.id)
                .where(PseudonymRow.pseudonym == pseudonym)
            )
            return None if row is None else _resident(row)

    def face_consent_by_pseudonym(self, pseudonym: str) -> bool:
        """False unless a registered resident with this pseudonym has consent in force."""
        with self._db.reading() as s:
            return bool(
                s.scalar(
                    select(ResidentRow.face_consent)
                    .join(PseudonymRow, PseudonymRow.resident_id == ResidentRow.id)
                    .where(PseudonymRow.pseudonym == pseudonym)
                )
            )

    def consent_snapshot(self) -> dict[str, bool]:
        """Pseudonym (under every key) → face consent, for the gateway's hot-path cache.

        Keep the cache current with `add_consent_listener`; a pseudonym missing from the
        snapshot has no consent.
        """
        with self._db.reading() as s:
            rows = s.execute(
                select(PseudonymRow.pseudonym, ResidentRow.face_consent).join(
                    ResidentRow, ResidentRow.id == PseudonymRow.resident_id
                )
            )
            return {p: bool(c) for p, c in rows}

    def pseudonyms_of(self, resident_id: str) -> dict[str, str]:
        """Key id → pseudonym of one resident (for tests and key-rotation reports)."""
        with self._db.reading() as s:
            rows = s.execute(
                select(PseudonymRow.kid, PseudonymRow.pseudonym).where(
                    PseudonymRow.resident_id == resident_id
                )
            )
            return {key: value for key, value in rows}

    def resident_pseudonyms(self, kid: str) -> dict[str, str]:
        """Resident id → the pseudonym of their ID number under key `kid`."""
        with self._db.reading() as s:
            rows = s.execute(
                select(PseudonymRow.resident_id, PseudonymRow.pseudonym).where(
                    PseudonymRow.kid == kid
                )
            )
            return {resident: pseudonym for resident, pseudonym in rows}

    def vehicle_pseudonyms(self, kid: str) -> frozenset[str]:
        """The plate pseudonyms under key `kid` of every resident's registered vehicle."""
        with self._db.reading() as s:
            return frozenset(s.scalars(select(VehicleRow.pseudonym).where(VehicleRow.kid == kid)))

    def vault_kids(self) -> dict[str, int]:
        """Key id → number of vault rows made with it."""
        with self._db.reading() as s:
            rows = s.execute(select(PseudonymRow.kid, func.count()).group_by(PseudonymRow.kid))
            return {key: value for key, value in rows}

    def add_consent_listener(self, listener: ConsentListener) -> None:
        """Call `listener` after every committed consent change, so that a cache of
        `consent_snapshot` applies a withdrawal to the very next event."""
        self._consent_listeners.append(listener)

    def notify_consent(self, changes: Mapping[str, bool]) -> None:
        if changes:
            for listener in list(self._consent_listeners):
                listener(changes)

    def set_face_consent(
        self, resident_id: str, consent: bool, at_ns: int, actor: str, reason: str
    ) -> bool:
        """Record a resident's own grant or withdrawal (through the API); returns the consent
        now in force, and writes a ``consent_change`` audit record either way.

        A withdrawal applies at once, whatever its timestamp. A grant older than the last
        recorded change is ignored (a late message must not undo a newer withdrawal).
        Raises KeyError for an unknown resident, ValueError for an empty reason.
        """
        if not reason.strip():
            raise ValueError("a consent change needs a reason")
        audit = self._db.require_audit()
        with self._db.writing() as s:
            row = s.get(ResidentRow, resident_id)
            if row is None:
                raise KeyError(resident_id)
            before = row.face_consent
            stale_grant = (
                consent and row.face_consent_ns is not None and at_ns < row.face_consent_ns
            )
            if not stale_grant:
                row.face_consent = consent
                row.face_consent_ns = at_ns
                row.face_consent_source = ConsentSource.DIRECT
            in_force = row.face_consent
            pseudonyms = list(
                s.scalars(
                    select(PseudonymRow.pseudonym).where(PseudonymRow.resident_id == resident_id)
                )
            )
            s.flush()
            audit.append(
                actor,
                AuditAction.CONSENT_CHANGE,
                resident_id,
                {
                    "source": "direct",
                    "household": row.household_id,
                    "requested": consent,
                    "before": before,
                    "in_force": in_force,
                    "ignored_as_stale": stale_grant,
                    "at_ns": at_ns,
                    "reason": reason.strip(),
                },
            )
        self.notify_consent(dict.fromkeys(pseudonyms, in_force))
        return in_force


class ConsentFeed(Protocol):
    """What `ConsentCache` reads: a `Registry` (or its `ResidentRepository`)."""

    def consent_snapshot(self) -> dict[str, bool]: ...

    def add_consent_listener(self, listener: ConsentListener) -> None: ...


class ConsentCache:
    """`Registry.consent_snapshot` in memory, as the `face_consent(pseudonym)` callback of the
    privacy layer: a dict lookup per face event instead of a ~170 µs query.

    Changes made through this process's `Registry` (API, import) reach the cache before the
    call that made them returns, so a withdrawal applies to the next event. Changes made by
    another process reach it on the next reload, at most `max_age_s` later; a deployment that
    splits API and gateway into processes keeps `max_age_s` short or calls
    `Registry.face_consent_by_pseudonym` directly.
    """

    def __init__(
        self,
        registry: ConsentFeed,
        *,
        max_age_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._max_age_s = max_age_s
        self._clock = clock
        self._map: dict[str, bool] = {}
        self._loaded = 0.0
        self.reload()
        registry.add_consent_listener(self._apply)

    def __call__(self, pseudonym: str) -> bool:
        if self._clock() - self._loaded > self._max_age_s:
            self.reload()
        return self._map.get(pseudonym, False)

    def __len__(self) -> int:
        return len(self._map)

    def reload(self) -> None:
        loaded = self._clock()
        self._map = self._registry.consent_snapshot()
        self._loaded = loaded

    def _apply(self, changes: Mapping[str, bool]) -> None:
        updated = dict(self._map)  # copy-on-write: readers in other threads see old or new
        updated.update(changes)
        self._map = updated


def _resident(row: ResidentRow) -> Resident:
    return Resident(row.id, row.household_id, row.face_consent, row.face_consent_ns)


def _household(row: HouseholdRow) -> Household:
    return Household(
        id=row.id,
        location=location_of(row.place_id),
        elder_alone=row.elder_alone,
        face_consent=row.face_consent,
        face_consent_ns=row.face_consent_ns,
    )


__all__ = [
    "ConsentCache",
    "ConsentFeed",
    "ConsentListener",
    "HouseholdRepository",
    "ResidentRepository",
]


class Refreshed(Generic[T]):
    """What `load` returns, loaded again when it is older than `max_age_s`: a registry map a
    hot path reads per event without a query (an import or a rekey elsewhere shows then)."""

    def __init__(
        self,
        load: Callable[[], T],
        *,
        max_age_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._max_age_s = max_age_s
        self._clock = clock
        self._loaded = clock()
        self._value = load()

    def get(self) -> T:
        if self._clock() - self._loaded > self._max_age_s:
            self.reload()
        return self._value

    def reload(self) -> None:
        loaded = self._clock()
        self._value = self._load()
        self._loaded = loaded


class ResidentNumbers:
    """A face terminal's number for a person → the resident's pseudonym under the current key,
    as privacy's ``resolve`` of ``employee_no``.

    Terminals are enrolled with the registry's resident id as the person's number (Hikvision's
    employeeNo): no other list of who is who exists outside the registry. A number the registry
    does not know resolves to nothing; the event is stored without a resident reference."""

    def __init__(
        self,
        registry: ResidentPseudonyms,
        kid: str,
        *,
        max_age_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._map = Refreshed(
            lambda: registry.resident_pseudonyms(kid), max_age_s=max_age_s, clock=clock
        )

    def __call__(self, number: str) -> str | None:
        return self._map.get().get(number)

    def reload(self) -> None:
        self._map.reload()


class ResidentPseudonyms(Protocol):
    """What `ResidentNumbers` reads: a `Registry` (or its `ResidentRepository`)."""

    def resident_pseudonyms(self, kid: str) -> dict[str, str]: ...


class RegisteredVehicles:
    """A plate → its pseudonym if it is a resident's registered vehicle, else None: privacy's
    ``resolve`` of ``plate`` (a visitor's car is only masked)."""

    def __init__(
        self,
        registry: VehiclePseudonyms,
        keyring: KeyRing,
        *,
        max_age_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keyring = keyring
        self._known = Refreshed(
            lambda: registry.vehicle_pseudonyms(keyring.current), max_age_s=max_age_s, clock=clock
        )

    def __call__(self, plate: str) -> str | None:
        pseudonym = pseudonymise(plate, "plate", self._keyring)
        return pseudonym if pseudonym in self._known.get() else None

    def reload(self) -> None:
        self._known.reload()


class VehiclePseudonyms(Protocol):
    """What `RegisteredVehicles` reads: a `Registry` (or its `ResidentRepository`)."""

    def vehicle_pseudonyms(self, kid: str) -> frozenset[str]: ...
