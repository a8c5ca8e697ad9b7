"""The place vocabulary, one of each: the levels of the grid hierarchy (R5.1) and the keys that
name a place (``xf/g01/b03/u2``). The registry stores places under these keys, alerts are
about them, routing walks up them."""

from __future__ import annotations

from enum import StrEnum

from devices.location import Location

KEY_SEP = "/"


class PlaceLevel(StrEnum):
    """Levels of the grid hierarchy, outermost first."""

    COMMUNITY = "community"
    GRID = "grid"
    BUILDING = "building"
    UNIT = "unit"
    ROOM = "room"

    @property
    def depth(self) -> int:
        """1 for a community … 5 for a room: the number of codes in a key of this level."""
        return LEVELS.index(self) + 1


LEVELS: tuple[PlaceLevel, ...] = tuple(PlaceLevel)


def location_parts(location: Location) -> tuple[str, str, str, str, str]:
    """The five codes, outermost first (in the order of `LEVELS`)."""
    return (location.community, location.grid, location.building, location.unit, location.room)


def place_key(location: Location, level: PlaceLevel) -> str:
    """The key of `location` cut to `level`: ``xf/g01/b03/u2`` for a unit, etc."""
    return KEY_SEP.join(location_parts(location)[: level.depth])


def place_at(location: Location, level: PlaceLevel) -> Location:
    """The location cut to `level` (a building alert does not name a room)."""
    keep = level.depth
    return Location(*(p if i < keep else "" for i, p in enumerate(location_parts(location))))


def location_key(location: Location) -> str | None:
    """The key of the place a location names, or None if it skips a level (grid unknown …)."""
    parts = location_parts(location)
    depth = 0
    while depth < len(parts) and parts[depth]:
        depth += 1
    if depth == 0 or any(parts[depth:]):
        return None
    return KEY_SEP.join(parts[:depth])


def location_of(key: str) -> Location:
    """The location a place key names."""
    parts = key.split(KEY_SEP)
    parts += [""] * (len(LEVELS) - len(parts))
    return Location(*parts)


def ancestor_keys(key: str) -> list[str]:
    """The key itself and every enclosing place's key, outermost first."""
    parts = key.split(KEY_SEP)
    return [KEY_SEP.join(parts[: i + 1]) for i in range(len(parts))]


__all__ = [
    "KEY_SEP",
    "LEVELS",
    "PlaceLevel",
    "ancestor_keys",
    "location_key",
    "location_of",
    "location_parts",
    "place_at",
    "place_key",
]
