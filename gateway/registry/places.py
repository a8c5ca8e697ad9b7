"""Places: the community → grid → building → unit → room tree, and place keys (see `records`)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from devices.location import Location
from devices.places import KEY_SEP, LEVELS, ancestor_keys, location_key
from gateway.registry._models import Place
from gateway.registry.database import Database
from gateway.registry.records import PlaceNode


class PlaceRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def tree(self) -> list[PlaceNode]:
        """Every community with its grids, buildings, units and rooms, children sorted by code."""
        with self._db.reading() as s:
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

    def exists(self, key: str) -> bool:
        with self._db.reading() as s:
            return s.get(Place, key) is not None

    def names(self, key: str) -> tuple[str, ...]:
        """Display names from the community down to the place `key` ("" where unknown)."""
        with self._db.reading() as s:
            return names_along(s, key)


def names_along(s: Session, key: str) -> tuple[str, ...]:
    """Display names of `key` and the places enclosing it, community first ("" where unknown)."""
    keys = ancestor_keys(key)
    names = dict(s.execute(select(Place.id, Place.name).where(Place.id.in_(keys))).all())
    return tuple(names.get(k, "") for k in keys)


def key_of(s: Session, location: Location) -> str | None:
    """The place key of `location`; one that skips a level (building without grid) is
    resolved through the registry when its codes are unambiguous."""
    return location_key(location) or _resolve_gapped(s, location)


def _resolve_gapped(s: Session, location: Location) -> str | None:
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


__all__ = ["PlaceRepository", "key_of", "names_along"]
