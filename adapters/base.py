"""What every adapter is, and helpers they share. Adapters are pure: bytes in, readings out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pydantic import ValidationError

from devices.errors import RejectedInput
from devices.reading import RECEIVE_TIME, Reading

__all__ = ["MAX_PAYLOAD_BYTES", "RECEIVE_TIME", "Adapter", "check_size", "rejection_from"]

# Larger payloads are refused before parsing (R8): no device reading needs more.
MAX_PAYLOAD_BYTES = 64 * 1024


class Adapter(Protocol):
    """A vendor codec. `decode` raises only `RejectedInput`, whatever the bytes.

    An adapter is a module (or an object) with `name` and `decode`. A module that takes
    options from the routes file (bit layouts, units, gas type …) also has
    ``configure(**options) -> Adapter``; the registry calls it when a route gives options.
    """

    name: str

    def decode(self, topic: str, payload: bytes) -> list[Reading]: ...


def check_size(payload: bytes, limit: int = MAX_PAYLOAD_BYTES) -> None:
    if len(payload) > limit:
        raise RejectedInput("oversize", f"payload of {len(payload)} bytes exceeds {limit}")


_REASONS = {
    "json_invalid": "not_json",
    "json_type": "not_json",
    "missing": "missing_field",
    "model_type": "wrong_type",
    "model_attributes_type": "wrong_type",
    "greater_than": "out_of_range",
    "greater_than_equal": "out_of_range",
    "less_than": "out_of_range",
    "less_than_equal": "out_of_range",
    "finite_number": "out_of_range",
    "string_too_long": "too_long",
    "enum": "bad_value",
    "literal_error": "bad_value",
}


def rejection_from(exc: ValidationError) -> RejectedInput:
    """Turn pydantic's error into a reason code and a detail that names fields, not values.

    pydantic's own message embeds the input value, which may be personal data, so it is
    rebuilt here from the error types and locations only.
    """
    errors = exc.errors(include_input=False, include_url=False, include_context=False)
    first = errors[0]
    reason = _REASONS.get(first["type"])
    if reason is None:
        reason = "wrong_type" if first["type"].endswith(("_type", "_parsing")) else "bad_value"
    parts: Sequence[str] = [
        f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['type']}" for e in errors[:5]
    ]
    return RejectedInput(reason, "; ".join(parts))
