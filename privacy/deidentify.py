"""The hot-path applier of the privacy policy (R3.1–R3.3): one reading in, its de-identified
copy out, before anything is stored, alerted on or logged.

The policy is compiled once into a table per family (field → steps), so a reading costs a
dict lookup per field; a reading made only of kept fields (meters, detectors) returns as is,
and so does one whose free text (door, fault, firmware) its text rules allow as it is.
Nothing derived from a raw value is cached between calls: a cache of pseudonyms would be a
lookup table of raw identifiers in memory. The one memory kept is of free-text values a rule
*allowed* (door names and firmware versions repeat on every message): those are stored
verbatim anyway; a refused value is never remembered.
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
from privacy.policy import STATUS, FamilyPolicy, FieldPolicy, Policy, TextRule

log = logging.getLogger(__name__)

# A step turns a field's value into one output value, or None when it cannot (an age band
# from an invalid ID number) or must not (free text its rule refuses).
Step = Callable[[Any, Reading], Any]
# (output field, reason counted when made, step, reason counted when the step gives None)
Plan = tuple[tuple[str, str | None, Step, str], ...]
FaceConsent = Callable[[str], bool]
# (field, value) → what the registry knows it as: a face terminal's employee number → the
# pseudonym of the resident's ID number; a plate → its pseudonym if it is a resident's
# registered vehicle. None: the registry does not know it.
Resolver = Callable[[str, str], str | None]

_FACE = "face"
_ID_NUMBER = IdentifierKind.ID_NUMBER.value
_REASONS = {
    "pseudonymise": "pseudonymised",
    "mask": "masked",
    "generalise": "generalised",
    "resolve": "resolved",
}
_EMPLOYEE_NO = "employee_no"
NOT_DERIVABLE = "not_derivable"
TEXT_DROPPED = "text_dropped"  # free text its rule refused, dropped
TEXT_SCRUBBED = "text_scrubbed"  # free text its rule refused, stored with parts redacted
MAX_ALLOWED_TEXTS = 4096  # remembered allowed values per free-text field


def _nobody(field: str, value: str) -> str | None:
    return None


def _no_consent(pseudonym: str) -> bool:
    return False


class _TextCheck:
    """A free-text field's rule, with the values it has allowed remembered (they repeat)."""

    __slots__ = ("allowed", "counts", "rule")

    def __init__(self, rule: TextRule, counts: Counter[str]) -> None:
        self.rule = rule
        self.counts = counts
        self.allowed: set[str] = set()

    def allows(self, value: object) -> bool:
        if type(value) is not str:  # a number or a list in a text field: not text, not kept
            return False
        if value in self.allowed:
            return True
        if not self.rule.allows(value):
            return False
        if len(self.allowed) >= MAX_ALLOWED_TEXTS:
            self.allowed.clear()
        self.allowed.add(value)
        return True

    def step(self, value: Any, reading: Reading) -> str | None:
        if not isinstance(value, str):
            return None
        if self.allows(value):
            return value
        stored = self.rule.refused(value)
        if stored is not None and stored != value:
            self.counts[TEXT_SCRUBBED] += 1
        return stored


@dataclass(slots=True, frozen=True)
class _Table:
    """One family's compiled policy."""

    plans: Mapping[str, Plan]  # field → steps
    anonymous: Mapping[str, Plan]  # identity steps removed
    kept: frozenset[str]  # fields whose only action is keep, unchecked
    checked: frozenset[str]  # `kept` and the kept free-text fields
    texts: tuple[tuple[str, _TextCheck], ...]  # the kept free-text fields and their rules
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
        resolve: Resolver = _nobody,
        counts: Counter[str] | None = None,
    ) -> None:
        self.policy = policy
        self.keyring = keyring
        self.face_consent = face_consent
        self.resolve = resolve
        self.counts: Counter[str] = counts if counts is not None else Counter()
        tables = {key: self._compile(family) for key, family in policy.families.items()}
        self._status = tables[STATUS]
        self._tables: dict[Family, _Table] = {family: tables[family.value] for family in Family}

    # -- the hot path ----------------------------------------------------------------------

    def apply(self, reading: Reading, device: DeviceInfo | None = None) -> Reading:
        """The reading with only what the policy allows; the same object if that is all."""
        table = self._status if reading.channel is Channel.STATUS else self._tables[reading.family]
        values = reading.values
        if table.fast or not (table.coarse_time or reading.location.room):
            if table.kept.issuperset(values):
                return reading
            if table.checked.issuperset(values):  # and free text: allowed as it is?
                for name, check in table.texts:
                    value = values.get(name)
                    if value is None or (type(value) is str and value in check.allowed):
                        continue
                    if not check.allows(value):
                        break
                else:
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
            for output, reason, step, missing in steps:
                result = step(value, reading)
                if result is None:
                    counts[missing] += 1
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
        number = _text(values.get(_EMPLOYEE_NO))
        try:
            if id_number is not None:
                pseudonym: str | None = ops.pseudonymise(id_number, _ID_NUMBER, self.keyring)
            else:
                pseudonym = None if number is None else self.resolve(_EMPLOYEE_NO, number)
            if pseudonym is None:
                return False  # consent is recorded per resident: nobody known, no identity
            return bool(self.face_consent(pseudonym))
        except Exception as exc:  # fail closed: an unreachable registry means no consent
            self.counts["consent_error"] += 1
            log.warning(
                "face consent check failed (%s): event stored anonymously", type(exc).__name__
            )
            return False

    # -- compiling the policy ----------------------------------------------------------------

    def _compile(self, family: FamilyPolicy) -> _Table:
        plans: dict[str, Plan] = {}
        anonymous: dict[str, Plan] = {}
        texts: dict[str, _TextCheck] = {}
        for name, spec in family.fields.items():
            if spec.text is not None:
                texts[name] = _TextCheck(spec.text, self.counts)
            steps = tuple(self._step(spec, i, texts.get(name)) for i in range(len(spec.actions)))
            plans[name] = tuple(s for s in steps if s is not None)
            anonymous[name] = tuple(s for s in plans[name] if s[1] is None)  # keep only
        kept = frozenset(name for name, spec in family.fields.items() if spec.kept_only)
        identity = frozenset(name for name in plans if plans[name] != anonymous[name])
        return _Table(
            plans=plans,
            anonymous=anonymous,
            kept=kept,
            checked=kept | texts.keys(),
            texts=tuple(texts.items()),
            identity=identity,
            coarse_location=family.location == "coarse",
            coarse_time=family.time == "coarse",
            consent=family.name == Family.ACCESS.value,
        )

    def _step(
        self, spec: FieldPolicy, index: int, text: _TextCheck | None
    ) -> tuple[str, str | None, Step, str] | None:
        action = spec.actions[index]
        if action.op == "drop":
            return None
        output = action.output or spec.name
        if action.op == "keep":
            if text is not None:  # free text: kept only as its rule allows
                return (output, None, text.step, TEXT_DROPPED)
            return (output, None, _keep, NOT_DERIVABLE)
        derive = self._derive(spec.name, action.op, action.to or "")
        return (output, _REASONS[action.op], derive, NOT_DERIVABLE)

    def _derive(self, kind: str, op: str, to: str) -> Step:
        if op == "resolve":

            def resolve(value: Any, reading: Reading) -> str | None:
                text = _text(value)
                return None if text is None else self.resolve(kind, text)

            return resolve
        if op == "pseudonymise":
            keyring = self.keyring

            def pseudonymise(value: Any, reading: Reading) -> str | None:
                text = _text(value)
                return None if text is None else ops.pseudonymise(text, kind, keyring)

            return pseudonymise
        if op == "mask":
            mask = ops.MASKS[IdentifierKind(kind)]

            def masked(value: Any, reading: Reading) -> str | None:
                text = _text(value)
                return None if text is None else mask(text)

            return masked
        return self._generaliser(to)

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
