"""Devices with their full locations, and their liveness (R1.3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table, bindparam, func, or_, select, update

from devices.info import DeviceInfo
from devices.places import location_of
from gateway.registry._models import Device
from gateway.registry.database import Database
from gateway.registry.places import names_along
from gateway.registry.queries import under
from gateway.registry.records import DeviceDetail, DeviceFilter, DeviceState, Liveness


class DeviceRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, device_id: str) -> DeviceInfo | None:
        with self._db.reading() as s:
            row = s.execute(_DEVICE_INFO.where(Device.id == device_id)).one_or_none()
        return None if row is None else _device_info(row)

    def all(self) -> list[DeviceInfo]:
        """Every device with its full location, in one query (the place key holds the chain)."""
        with self._db.reading() as s:
            rows = s.execute(_DEVICE_INFO.order_by(Device.id)).all()
        return [_device_info(row) for row in rows]

    def count(self) -> int:
        with self._db.reading() as s:
            return s.scalar(select(func.count()).select_from(Device)) or 0

    def detail(self, device_id: str) -> DeviceDetail | None:
        with self._db.reading() as s:
            row = s.execute(
                _DEVICE_INFO.add_columns(Device.online, Device.last_seen_ns).where(
                    Device.id == device_id
                )
            ).one_or_none()
            if row is None:
                return None
            place_names = names_along(s, row.place_id)
        return DeviceDetail(
            info=_device_info(row),
            place_names=place_names,
            liveness=Liveness(row.online, row.last_seen_ns),
            gate_approved=row.gate_approved,
        )

    def search(
        self, where: DeviceFilter, *, offset: int = 0, limit: int = 100
    ) -> tuple[list[DeviceState], int]:
        """One page of the devices `where` selects, by id, and how many it selects in all."""
        conditions = _conditions(where)
        with self._db.reading() as s:
            total = s.scalar(select(func.count()).select_from(Device).where(*conditions)) or 0
            rows = s.execute(
                _DEVICE_INFO.add_columns(Device.online, Device.last_seen_ns)
                .where(*conditions)
                .order_by(Device.id)
                .offset(offset)
                .limit(limit)
            ).all()
        states = [DeviceState(_device_info(r), Liveness(r.online, r.last_seen_ns)) for r in rows]
        return states, total

    def states(self, places: Sequence[str]) -> list[tuple[str, str, str, bool | None, int | None]]:
        """(id, family, place key, online, last seen) of every device in `places`: the light
        rows a status summary counts."""
        with self._db.reading() as s:
            rows = s.execute(
                select(
                    Device.id, Device.family, Device.place_id, Device.online, Device.last_seen_ns
                ).where(under(Device.place_id, places))
            ).all()
        return [(r[0], r[1].value, r[2], r[3], r[4]) for r in rows]

    def gate_approved(self, device_id: str) -> bool:
        """False for unknown devices: identity matching needs a recorded approval."""
        with self._db.reading() as s:
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
        with self._db.writing() as s:
            s.connection().execute(stmt, params)

    def last_seen(self, device_ids: Sequence[str]) -> dict[str, int]:
        """device id → last seen (ns), for those of `device_ids` seen at all."""
        out: dict[str, int] = {}
        with self._db.reading() as s:
            for start in range(0, len(device_ids), 500):  # bound the IN list
                chunk = device_ids[start : start + 500]
                rows = s.execute(
                    select(Device.id, Device.last_seen_ns).where(
                        Device.id.in_(chunk), Device.last_seen_ns.is_not(None)
                    )
                ).all()
                out.update({r[0]: r[1] for r in rows if r[1] is not None})
        return out

    def liveness(self, device_id: str) -> Liveness | None:
        with self._db.reading() as s:
            row = s.execute(
                select(Device.online, Device.last_seen_ns).where(Device.id == device_id)
            ).one_or_none()
        return None if row is None else Liveness(row.online, row.last_seen_ns)


_DEVICE_INFO = select(
    Device.id,
    Device.family,
    Device.adapter,
    Device.vendor,
    Device.place_id,
    Device.household_id,
    Device.power,
    Device.installed,
    Device.gate_approved,
)


def _conditions(where: DeviceFilter) -> list[ColumnElement[bool]]:
    out = [under(Device.place_id, where.places)]
    if where.place:
        out.append(under(Device.place_id, [where.place]))
    if where.family is not None:
        out.append(Device.family == where.family)
    if where.vendor is not None:
        out.append(Device.vendor == where.vendor)
    if where.online is True:
        out.append(Device.online.is_(True))
    elif where.online is False:
        out.append(or_(Device.online.is_(False), Device.online.is_(None)))
    if where.ids is not None:
        out.append(Device.id.in_(where.ids))
    if where.seen_before_ns is not None:
        out.append(Device.last_seen_ns < where.seen_before_ns)
    if where.seen_after_ns is not None:
        out.append(Device.last_seen_ns >= where.seen_after_ns)
    return out


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
        gate_approved=bool(row.gate_approved),
    )


__all__ = ["DeviceRepository"]
