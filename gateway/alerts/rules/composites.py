"""The `building_fire` composite: conditions of its member rules (threshold, time-at-level or
event rules at unit or room level: smoke, heat) in at least `min_units` units of one building
within a window make one building-level incident. The incident goes out before its members,
and members carry `incident_of`, so the alert engine groups them under it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from devices.location import Location
from devices.places import PlaceLevel, place_at, place_key
from gateway.alerts.model import Condition
from gateway.alerts.rules.plans import ns
from gateway.alerts.rules.schema import BuildingFireRule, Rule
from gateway.alerts.rules.state import capped


@dataclass(slots=True)
class _Fire:
    location: Location  # the building
    units: dict[str, int] = field(default_factory=dict)  # unit → last member activity
    members: dict[tuple[str, str], Condition] = field(default_factory=dict)  # (place, device)
    formed: bool = False


class BuildingFires:
    """Building-fire rules over the other rules' conditions; state per (rule id, building)."""

    def __init__(self, rules: Iterable[Rule], max_states: int) -> None:
        self.fire_of: dict[str, list[BuildingFireRule]] = {}  # member rule id → fire rules
        self._by_id: dict[str, BuildingFireRule] = {}
        for rule in rules:
            if isinstance(rule, BuildingFireRule):
                self._by_id[rule.id] = rule
                for member in rule.members:
                    self.fire_of.setdefault(member, []).append(rule)
        self._max = max_states
        self._state: dict[tuple[str, str], _Fire] = {}

    def state_size(self) -> int:
        return len(self._state)

    def compose(self, conditions: list[Condition], t: int) -> list[Condition]:
        """Members of a building fire: count units, raise the incident, tag the members.

        The incident goes first, so the alert engine knows it before a member names it."""
        heads: list[Condition] = []
        members: list[Condition] = []
        for cond in conditions:
            for rule in self.fire_of.get(cond.rule_id, ()):
                new, cond = self._member(rule, cond, t)
                heads += new
            members.append(cond)
        return heads + members

    def _member(
        self, rule: BuildingFireRule, cond: Condition, t: int
    ) -> tuple[list[Condition], Condition]:
        loc = cond.location
        if not loc.building or not loc.unit:
            return [], cond
        building = place_key(loc, PlaceLevel.BUILDING)
        key = (rule.id, building)
        st = self._state.get(key)
        if st is None:
            if not cond.active:
                return [], cond
            st = self._state[key] = _Fire(place_at(loc, PlaceLevel.BUILDING))
            capped(self._state, self._max)
        tag = {"incident_place": building}
        if cond.active:
            st.units[loc.unit] = t
            st.members[(cond.place, cond.device_id)] = cond
        self._prune(rule, st, t)
        if not st.formed and len(st.units) < rule.min_units:
            return [], cond  # once formed, the incident lasts until its units all go quiet
        incident = Condition(
            rule.id, rule.condition_key, rule.condition_kind, rule.severity,
            st.location, PlaceLevel.BUILDING, t, True, "", "",
            float(len(st.units)),
            {"units": sorted(st.units), "devices": len(st.members), "window_s": rule.window_s},
            rule.auto_clear,
        )  # fmt: skip
        me = replace(cond, incident_of=rule.condition_key, detail={**cond.detail, **tag})
        out = [incident]
        if not st.formed:  # members raised before the incident now join it
            st.formed = True
            out += [
                replace(m, incident_of=rule.condition_key, at_ns=t, detail={**m.detail, **tag})
                for k, m in st.members.items()
                if k != (cond.place, cond.device_id)
            ]
        return out, me

    def _prune(self, rule: BuildingFireRule, st: _Fire, t: int) -> None:
        window = ns(rule.window_s)
        for unit in [u for u, last in st.units.items() if t - last > window]:
            del st.units[unit]
        for k in [k for k, m in st.members.items() if m.location.unit not in st.units]:
            del st.members[k]

    def tick(self, now: int) -> list[Condition]:
        """Incidents whose window has passed with no member activity: forgotten, and cleared
        if their rule auto-clears."""
        out: list[Condition] = []
        for (rule_id, building), st in list(self._state.items()):
            rule = self._by_id[rule_id]
            self._prune(rule, st, now)
            if st.units:
                continue
            del self._state[(rule_id, building)]
            if st.formed and rule.auto_clear:
                out.append(
                    Condition(
                        rule.id,
                        rule.condition_key,
                        rule.condition_kind,
                        rule.severity,
                        st.location,
                        PlaceLevel.BUILDING,
                        now,
                        False,
                        "",
                        "",
                        0.0,
                        {"units": []},
                        True,
                    )
                )
        return out
