"""What the registry holds, counted in one read transaction (for `registry stats` and screens)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from devices.places import LEVELS
from gateway.registry._models import Base, Device, HouseholdRow, MemberRow, Place, ResidentRow
from gateway.registry.database import Database
from gateway.registry.records import RegistryCounts


def registry_counts(db: Database) -> RegistryCounts:
    with db.reading() as s:

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
            residents=count(model=ResidentRow),
            residents_face_consent=count(ResidentRow.face_consent.is_(True), model=ResidentRow),
        )


__all__ = ["registry_counts"]
