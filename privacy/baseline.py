"""The baseline de-identification applied on the hot path until a policy file is configured.

It is an allow-list built from the canonical models: a field is kept only if its family's
model declares it and its data class is not a direct identifier, a biometric or raw
coordinates. Everything else — names, ID numbers, phones, plates, face data, and any field a
vendor firmware adds — is dropped and counted. The policy-file layer (R3.1) refines "drop"
into pseudonymise / mask / generalise per field.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from devices.families import Channel, Family
from devices.models import FAMILY_DATA, DataClass, StatusData, field_classes
from devices.reading import Reading

_DROPPED_CLASSES = {DataClass.DIRECT_IDENTIFIER, DataClass.BIOMETRIC}
_DROPPED_FIELDS = {"latitude", "longitude"}  # whereabouts: kept only as inside_geofence


def _allowed(classes: Mapping[str, DataClass]) -> frozenset[str]:
    return frozenset(
        name
        for name, cls in classes.items()
        if cls not in _DROPPED_CLASSES and name not in _DROPPED_FIELDS
    )


class BaselinePrivacy:
    """Drops every field that is not an allowed canonical field; counts what it dropped.

    Counts are by reason (``personal`` / ``unknown``), never by value.
    """

    def __init__(self, dropped: Counter[str] | None = None) -> None:
        self._allowed: dict[Family, frozenset[str]] = {
            family: _allowed(field_classes(model)) for family, model in FAMILY_DATA.items()
        }
        self._known: dict[Family, frozenset[str]] = {
            family: frozenset(model.model_fields) for family, model in FAMILY_DATA.items()
        }
        self._status_allowed = _allowed(field_classes(StatusData))
        self._status_known = frozenset(StatusData.model_fields)
        self.dropped: Counter[str] = dropped if dropped is not None else Counter()

    def apply(self, reading: Reading) -> Reading:
        if reading.channel is Channel.STATUS:
            allowed, known = self._status_allowed, self._status_known
        else:
            allowed, known = self._allowed[reading.family], self._known[reading.family]
        values = reading.values
        if allowed.issuperset(values):
            return reading
        kept: dict[str, Any] = {}
        for key, value in values.items():
            if key in allowed:
                kept[key] = value
            else:
                self.dropped["personal" if key in known else "unknown"] += 1
        return reading.with_values(kept)
