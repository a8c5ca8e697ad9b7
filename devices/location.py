"""Where a device is, in the grid hierarchy: community → grid → building → unit → room."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class Location:
    """A place. Empty strings mean "not known / not applicable" (a community gate has no unit).

    `room` identifies a household, so it is never used as a storage tag (too many values, and
    it is personal once linked to a resident); the rest are low-cardinality tags.
    """

    community: str
    grid: str = ""
    building: str = ""
    unit: str = ""
    room: str = ""

    def tags(self) -> dict[str, str]:
        """Low-cardinality tags for storage and routing (room excluded on purpose)."""
        return {
            "community": self.community,
            "grid": self.grid,
            "building": self.building,
            "unit": self.unit,
        }

    def with_defaults(self, other: Location) -> Location:
        """Fill this location's empty parts from `other` (e.g. the registry's entry)."""
        return Location(
            community=self.community or other.community,
            grid=self.grid or other.grid,
            building=self.building or other.building,
            unit=self.unit or other.unit,
            room=self.room or other.room,
        )
