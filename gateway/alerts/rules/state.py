"""What several rule families share: where a condition is reported, which devices hold it,
and the cap on every store.

Places: a condition is about its device's place cut to the rule's level (`unit` for household
devices, so the unit head is responsible; `building` for gates). A location that stops short of
the level (a community gate has no building) is cut at its deepest known part. Several devices
may hold one condition at one place (two flats of a unit with gas); the place's condition is as
severe as its worst device and clears only when the last device is back to normal.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, replace
from typing import Any, TypeAlias

from devices.location import Location
from devices.places import PlaceLevel, place_at, place_key
from gateway.alerts.model import Condition, Severity

HouseholdLookup: TypeAlias = Callable[[str], tuple[str, bool] | None]
"""device id → (the household's subject reference — a pseudonym, never the registry id —, elder
living alone), or None if the device serves no household."""


def capped(store: MutableMapping[Any, Any], cap: int) -> None:
    """The oldest entries go first once a store passes its cap (a safety valve only)."""
    while len(store) > cap:
        del store[next(iter(store))]


# -- places ----------------------------------------------------------------------------------


_DEPTH = {
    PlaceLevel.COMMUNITY: 1,
    PlaceLevel.GRID: 2,
    PlaceLevel.BUILDING: 3,
    PlaceLevel.UNIT: 4,
    PlaceLevel.ROOM: 5,
}
_LEVEL_AT = {depth: level for level, depth in _DEPTH.items()}


@dataclass(frozen=True, slots=True)
class Where:
    """Where a device's condition is reported: its place cut to the rule's level."""

    location: Location
    level: PlaceLevel
    place: str


_CUTS: dict[tuple[Location, PlaceLevel], Where] = {}
_CUTS_MAX = 100_000  # places repeat per device: every reading would otherwise rebuild them


def cut(location: Location, level: PlaceLevel) -> Where:
    """Cut to `level`, or to the deepest known part when the location stops short of it."""
    where = _CUTS.get((location, level))
    if where is None:
        parts = (
            location.community, location.grid, location.building, location.unit, location.room
        )  # fmt: skip
        known = next((i for i, p in enumerate(parts) if not p), len(parts))
        chosen = _LEVEL_AT[max(1, min(_DEPTH[level], known))]
        where = Where(place_at(location, chosen), chosen, place_key(location, chosen))
        if len(_CUTS) >= _CUTS_MAX:
            _CUTS.clear()
        _CUTS[(location, level)] = where
    return where


# -- who holds a condition -------------------------------------------------------------------


class Holds:
    """The devices holding each auto-clearing condition at its place, one store for every
    family of one engine: (rule id, place) → device → severity."""

    __slots__ = ("_held", "_max")

    def __init__(self, max_states: int) -> None:
        self._held: dict[tuple[str, str], dict[str, Severity]] = {}
        self._max = max_states

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, proto: Condition) -> Condition:
        """Record that `proto.device_id` holds the condition at its place; the place's
        condition is as severe as its worst device. Only auto-clearing conditions need it."""
        if not proto.auto_clear:
            return proto
        held = self._held.setdefault((proto.rule_id, proto.place), {})
        held[proto.device_id] = proto.severity
        capped(self._held, self._max)
        worst = min(held.values())
        return replace(proto, severity=worst, detail={**proto.detail, "devices": len(held)})

    def release(self, proto: Condition) -> list[Condition]:
        """The device is back to normal; the place clears when it was the last one."""
        key = (proto.rule_id, proto.place)
        held = self._held.get(key)
        severity = None if held is None else held.pop(proto.device_id, None)
        if held is None or severity is None or held:
            return []
        del self._held[key]
        detail = {**proto.detail, "devices": 0}
        return [replace(proto, active=False, severity=severity, detail=detail)]
