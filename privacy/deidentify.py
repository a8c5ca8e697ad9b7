"""The hot-path applier of the privacy policy (R3.1–R3.3): one reading in, its de-identified
copy out, before anything is stored, alerted on or logged.

The policy is compiled once into a table per family (field → steps), so a reading costs a
dict lookup per field; a reading made only of kept fields (meters, detectors) returns as is.
Nothing derived from a raw value is cached between calls: a cache of pseudonyms would be a
lookup table of raw identifiers in memory.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from devices.families import Channel, Family
from devices.info import DeviceInfo
from devices.reading import Reading
from privacy import operators as ops
from privacy.keys import KeyRing
from privacy.operators import IdentifierKind
from privacy.policy import STATUS, FamilyPolicy, FieldPolicy, Policy

log = logging.getLogger(__name__)

# A step turns a field's value into one output value, or None when it cannot (an age band
# from an invalid ID number).
Step = Callable[[Any, Reading], Any]
FaceConsent = Callable[[str], bool]

_FACE = "face"
_ID_NUMBER = IdentifierKind.ID_NUMBER.value
_REASONS = {"pseudonymise": "pseudonymised", "mask": "masked", "generalise": "generalised"}


def _no_consent(pseudonym: str) -> bool:
    return False


@dataclass(slots=True, frozen=True)
class _Table:
    """One family's compiled policy."""

    plans: Mapping[str, tuple[tuple[str, str | None, Step], ...]]  # field → (output, reason, fn)
    anonymous: Mapping[str, tuple[tuple[str, str | None, Step], ...]]  # identity steps removed
    kept: frozenset[str]  # fields whose only action is keep
    identity: frozenset[str]  # fields with outputs derived from their value (not kept as is)
    coarse_location: bool
    coarse_time: bool
    consent: bool  # access: face events need approval + consent for identity outputs

    @property
    def fast(self) -> bool:
        return not (self.coarse_location or self.coarse_time)


class Deidentifier:
    """Applies a `Policy` to readings; counts what it did by reason, never by value.

    `face_consent(pseudonym)` answers whether the resident whose ID number has that pseudonym
    (current key) consented to face recognition; it is asked on every face event, so a
    withdrawal takes effect with the next reading.
    """

    def __init__(
        self,
        policy: Policy,
        keyring: KeyRing,
        *,
        face_consent: FaceConsent = _no_consent,
        counts: Counter[str] | None = None,
    ) -> None:
        self.policy = policy
        self.keyring = keyring
        self.face_consent = face_consent
        self.counts: Counter[str] = counts if counts is not None else Counter()
        tables = {key: self._compile(family) for key, family in policy.families.items()}
        self._status = tables[STATUS]
        self._tables: dict[Family, _Table] = {family: tables[family.value] for family in Family}

    # -- the hot path ----------------------------------------------------------------------

    def apply(self, reading: Reading, device: DeviceInfo | None = None) -> Reading:
        """The reading with only what the policy allows; the same object if that is all."""
        table = self._status if reading.channel is Channel.STATUS else self._tables[reading.family]
        values = reading.values
        if table.kept.issuperset(values) and (
            table.fast or not (table.coarse_time or reading.location.room)
        ):
            return reading
        counts = self.counts
        plans = table.plans
        if (
            table.consent
            and values.get("method") == _FACE
            and not table.identity.isdisjoint(values)
            and not self._face_identity_allowed(values, device)
        ):
            plans = table.anonymous
            counts["anonymous_face"] += 1
        out: dict[str, Any] = {}
        for key, value in values.items():
            steps = plans.get(key)
            if steps is None:
                counts["unknown"] += 1
                continue
            if not steps:
                counts["dropped"] += 1
                continue
            if value is None:
                continue
            for output, reason, step in steps:
                result = step(value, reading)
                if result is None:
                    counts["not_derivable"] += 1
                    continue
                out[output] = result
                if reason is not None:
                    counts[reason] += 1
        location = reading.location
        if table.coarse_location and location.room:
            location = ops.coarse_location(location)
        time_ns = reading.time_ns
        if table.coarse_time:
            time_ns = ops.coarse_time(time_ns, self.policy.coarse_time_s)
        return Reading(
            reading.device_id,
            reading.family,
            reading.channel,
            reading.kind,
            time_ns,
            location,
            out,
            reading.schema_version,
        )

    def _face_identity_allowed(self, values: Mapping[str, Any], device: DeviceInfo | None) -> bool:
        """R3.3: the gate's installation approved by the owners AND the resident's consent."""
        if device is None or not device.gate_approved:
            return False
        id_number = _text(values.get(_ID_NUMBER))
        if id_number is None:
            return False  # consent is recorded per resident: no ID, no identity
        pseudonym = ops.pseudonymise(id_number, _ID_NUMBER, self.keyring)
        try:
            return bool(self.face_consent(pseudonym))
        except Exception as exc:  # fail closed: an unreachable registry means no consent
            self.counts["consent_error"] += 1
            log.warning(
                "face consent check failed (%s): event stored anonymously", type(exc).__name__
            )
            return False

    # -- compiling the policy ----------------------------------------------------------------

    def _compile(self, family: FamilyPolicy) -> _Table:
        plans: dict[str, tuple[tuple[str, str | None, Step], ...]] = {}
        anonymous: dict[str, tuple[tuple[str, str | None, Step], ...]] = {}
        for name, spec in family.fields.items():
            steps = tuple(self._step(spec, i) for i in range(len(spec.actions)))
            plans[name] = tuple(s for s in steps if s is not None)
            anonymous[name] = tuple(s for s in plans[name] if s[1] is None)  # keep only
        kept = frozenset(name for name, spec in family.fields.items() if spec.kept_only)
        identity = frozenset(name for name in plans if plans[name] != anonymous[name])
        return _Table(
            plans=plans,
            anonymous=anonymous,
            kept=kept,
            identity=identity,
            coarse_location=family.location == "coarse",
            coarse_time=family.time == "coarse",
            consent=family.name == Family.ACCESS.value,
        )

    def _step(self, spec: FieldPolicy, index: int) -> tuple[str, str | None, Step] | None:
        action = spec.actions[index]
        if action.op == "drop":
            return None
        output = action.output or spec.name
        if action.op == "keep":
            return (output, None, _keep)
        reason = _REASONS[action.op]
        kind = spec.name
        if action.op == "pseudonymise":
            keyring = self.keyring

            def pseudonymise(value: Any, reading: Reading) -> str | None:
                text = _text(value)
                return None if text is None else ops.pseudonymise(text, kind, keyring)

            return (output, reason, pseudonymise)
        if action.op == "mask":
            mask = ops.MASKS[IdentifierKind(kind)]

            def masked(value: Any, reading: Reading) -> str | None:
                text = _text(value)
                return None if text is None else mask(text)

            return (output, reason, masked)
        return (output, reason, self._generaliser(action.to or ""))

    def _generaliser(self, to: str) -> Step:
        fixed_day: date | None = self.policy.age_on
        decimals = self.policy.position_decimals
        if to == "age_band":

            def age_band(value: Any, reading: Reading) -> str | None:
                text = _text(value)
                if text is None:
                    return None
                day = fixed_day or ops.event_date(reading.time_ns)
                return ops.age_band(text, day)

            return age_band
        if to == "gender":

            def gender(value: Any, reading: Reading) -> str | None:
                text = _text(value)
                return None if text is None else ops.gender(text)

            return gender
        if to == "coarse_position":

            def coarse_position(value: Any, reading: Reading) -> float | None:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    return None
                return ops.coarse_position(float(value), decimals)

            return coarse_position
        raise ValueError(f"no generaliser {to!r}")  # the policy loader rules this out


def _keep(value: Any, reading: Reading) -> Any:
    return value


def _text(value: Any) -> str | None:
    """An identifier as text; numbers too (a vendor may send an ID or card number as one)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None
