"""The rule engine: routes de-identified readings, liveness events and ticks to the rule
families (one module each) and composes their conditions.

Time: nothing here reads a clock. A reading's own `time_ns` drives every duration (the
simulator runs accelerated and in the past), and `RuleEngine.tick(now_ns)` must be on that same
timeline — the caller passes the newest reading time it has seen, not the wall clock.

State is in memory and bounded: a device's threshold or duration state exists only while
something is pending or active, a place's only while a device holds its condition; meter
baselines (one small record per water/electricity meter) are swept when a meter falls silent.
After a restart the engine knows nothing: auto-clearing alerts still open in the alert store
are not cleared by it until their devices report again and cross their thresholds anew.

The hot path: `on_reading` makes the same per-family dict lookups it made when the engine was
one class and calls the family's method per rule, so a quiet reading still costs two
comparisons per threshold rule of its family. (A family method called through its object costs
less than one stored as a bound method, on CPython 3.11.) A new family is one more routed call
here.
"""

from __future__ import annotations

from devices.families import Channel, Family
from devices.info import DeviceInfo
from devices.liveness import LivenessEvent
from devices.reading import Reading
from gateway.alerts.model import Condition
from gateway.alerts.rules.absence import Absence
from gateway.alerts.rules.composites import BuildingFires
from gateway.alerts.rules.events import event_condition, event_plans
from gateway.alerts.rules.meters import Meters
from gateway.alerts.rules.plans import DAY_NS, NS, number
from gateway.alerts.rules.schema import RuleSet
from gateway.alerts.rules.state import Holds, HouseholdLookup, cut
from gateway.alerts.rules.thresholds import Thresholds, TimesAtLevel
from gateway.alerts.rules.vitals import Vitals
from privacy.operators import PSEUDONYM_PATTERN

DEFAULT_MAX_STATES = 200_000  # per store: a safety valve far above a 3000-household community
_SWEEP_EVERY_NS = 3600 * NS
_METER_SILENT_NS = 2 * DAY_NS  # a meter silent this long loses its baselines


class RuleEngine:
    """Readings and liveness events in, `Condition`s out; pure, single-threaded, in memory.

    Active conditions repeat on every reading that still meets them (the alert engine dedups);
    clears (`active=False`) come once, only from auto-clearing rules, when the last device
    holding a condition at a place is back to normal.
    """

    def __init__(
        self,
        ruleset: RuleSet,
        *,
        households: HouseholdLookup | None = None,
        max_states: int = DEFAULT_MAX_STATES,
    ) -> None:
        self.ruleset = ruleset
        rules = ruleset.rules
        self._holds = holds = Holds(max_states)  # one store: a place's devices, any family
        self._threshold_family = Thresholds(rules, holds, max_states)
        self._timed_family = TimesAtLevel(rules, holds, max_states)
        self._meter_family = Meters(rules, holds, max_states)
        self._absence_family = Absence(rules, holds, max_states, households)
        self._vital_family = Vitals(rules, holds, max_states)
        self._fire_family = BuildingFires(rules, max_states)
        self._next_sweep_ns: int | None = None
        # The indexes `on_reading` looks up per reading, as attributes of the engine.
        self._thresholds = self._threshold_family.by_family
        self._timed = self._timed_family.by_family
        self._event_plans = event_plans(rules)
        self._watch_elder_water = self._absence_family.watches_water
        self._vitals = self._vital_family.rules
        self._fire_of = self._fire_family.fire_of

    # -- inputs ------------------------------------------------------------------------------

    def on_reading(self, reading: Reading, device: DeviceInfo | None) -> list[Condition]:
        """Conditions a de-identified reading starts, repeats or ends."""
        out: list[Condition] = []
        if reading.channel is Channel.STATUS:
            return out  # liveness comes through `on_liveness`
        t, values = reading.time_ns, reading.values
        subject = self._subject(reading, device)
        for rule in self._thresholds.get(reading.family, ()):
            value = number(values, rule.field)
            if value is not None:
                out += self._threshold_family.reading(
                    rule, reading.device_id, reading.location, subject, value, t
                )
        for timed in self._timed.get(reading.family, ()):
            value = number(values, timed.field)
            if value is not None:
                where = cut(reading.location, timed.level)
                out += self._timed_family.reading(
                    timed, reading.device_id, where, subject, value, t
                )
        plan = self._event_plans.get(reading.family)
        if plan is not None:
            for event_rule in plan.candidates(reading):
                found = event_condition(event_rule, reading, subject)
                if found is not None:
                    out.append(found)
        if reading.family is Family.METER:
            water = number(values, "water_m3")
            if water is not None:
                out += self._meter_family.water(reading, water)
                if self._watch_elder_water:
                    out += self._absence_family.water(reading, water)
        if reading.family is Family.ELDER and self._vitals:
            for vitals in self._vitals:
                out += self._vital_family.reading(vitals, reading, subject)
        if self._fire_of and out:
            out = self._fire_family.compose(out, t)
        return out

    def on_liveness(self, event: LivenessEvent, device: DeviceInfo | None) -> list[Condition]:
        """A device went offline (its place's `offline` condition) or came back."""
        return self._absence_family.on_liveness(event)

    def tick(self, now_ns: int) -> list[Condition]:
        """Time-driven rules at `now_ns`, which must be on the readings' timeline (the newest
        reading time seen), never the wall clock: minimum durations and times at level that
        have run out (the last value is taken to persist), nights that have ended, fire
        incidents whose window has passed. (Elders' water windows are judged on readings only:
        see `absence`.)"""
        out: list[Condition] = []
        out += self._threshold_family.tick(now_ns)
        out += self._timed_family.tick(now_ns)
        out += self._meter_family.tick(now_ns)
        out += self._fire_family.tick(now_ns)
        if self._next_sweep_ns is None or now_ns >= self._next_sweep_ns:
            self._sweep(now_ns)
            self._next_sweep_ns = now_ns + _SWEEP_EVERY_NS
        if self._fire_of and out:
            out = self._fire_family.compose(out, now_ns)
        return out

    def state_size(self) -> int:
        """Entries held across all stores (for tests and a metrics gauge)."""
        return (
            self._threshold_family.state_size() + self._timed_family.state_size()
            + self._absence_family.state_size() + self._meter_family.state_size()
            + self._vital_family.state_size() + self._fire_family.state_size() + len(self._holds)
        )  # fmt: skip

    # -- helpers -----------------------------------------------------------------------------

    def _subject(self, reading: Reading, device: DeviceInfo | None) -> str:
        """A pseudonymous subject (`k1:…`): an access event's `resident_ref`. Household ids
        are not pseudonyms; the device id already leads a responder to the flat."""
        if reading.family is Family.ACCESS:
            ref = reading.values.get("resident_ref")
            return ref if isinstance(ref, str) and PSEUDONYM_PATTERN.fullmatch(ref) else ""
        return ""

    def _sweep(self, now: int) -> None:
        """Forget meters silent for days (nothing pending); they start afresh if they return."""
        horizon = now - _METER_SILENT_NS
        self._meter_family.sweep(horizon)
        self._absence_family.sweep(horizon)
        self._vital_family.sweep(horizon)
