"""What every adapter is, and helpers they share. Adapters are pure: bytes in, readings out."""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Protocol, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from devices.errors import RejectedInput
from devices.reading import RECEIVE_TIME, Reading

__all__ = [
    "KEY_PLACEHOLDER",
    "MAX_PAYLOAD_BYTES",
    "RECEIVE_TIME",
    "Adapter",
    "check_size",
    "rejection_from",
    "safe_location",
]

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


# A location element that is not one of the model's own names: a key the device chose (an
# unknown `loc` key, a dict key), which may be a name, a phone or an ID number.
KEY_PLACEHOLDER = "<key>"


def rejection_from(exc: ValidationError, model: type[BaseModel] | None = None) -> RejectedInput:
    """Turn pydantic's error into a reason code and a detail that names positions, never
    anything the device wrote.

    pydantic's own message embeds the input value, which may be personal data, so it is
    rebuilt here from the error types and locations only. A location may hold a *key* the
    device chose (``loc.<ID number>: extra_forbidden``), so each element is checked against
    `model` (the model that was validated): one of its declared field names (or aliases, or
    the label of a union member) stays, an index stays, anything else becomes `KEY_PLACEHOLDER`.
    Without `model` every named element is a placeholder.
    """
    errors = exc.errors(include_input=False, include_url=False, include_context=False)
    first = errors[0]
    reason = _REASONS.get(first["type"])
    if reason is None:
        reason = "wrong_type" if first["type"].endswith(("_type", "_parsing")) else "bad_value"
    parts: list[str] = []
    for e in errors[:5]:
        part = f"{safe_location(e['loc'], model) or 'payload'}: {e['type']}"
        if part not in parts:
            parts.append(part)
    return RejectedInput(reason, "; ".join(parts))


def safe_location(loc: Sequence[int | str], model: type[BaseModel] | None) -> str:
    """`loc` as ``a.b.0.c``, with every element the model does not declare at that position
    replaced by `KEY_PLACEHOLDER` (and union-member labels it cannot name left out).

    The walk follows the model's annotations position by position: a name is kept only where
    the type at that position is a model that declares it, so a device key that happens to
    equal a field name elsewhere is still a placeholder.
    """
    out: list[str] = []
    here: list[Any] = [model] if model is not None else []
    for element in loc:
        if isinstance(element, int) and not isinstance(element, bool):
            out.append(str(element))  # a list position: the device chose the order, not text
            here = [item for t in here for item in _items(t)]
            continue
        name = str(element)
        unions = [t for t in here if isinstance(t, _Union)]
        if unions:  # pydantic labels the member of a union it tried: schema text, not input
            members = [m for u in unions for m in u.members]
            labels = {_label(m) for m in members}
            if name in labels:
                out.append(name)
            here = [m for m in members if _label(m) == name] or members
            continue
        fields = [f for t in here for f in _field(t, name)]
        if fields:
            out.append(name)
            here = fields
        else:
            out.append(KEY_PLACEHOLDER)
            here = []  # beneath a device's key: nothing further is ours to name
    return ".".join(out)


class _Union:
    """A union of two or more non-None types (pydantic puts a member label in the location)."""

    __slots__ = ("members",)

    def __init__(self, members: Sequence[Any]) -> None:
        self.members = [_unwrap(m) for m in members]


def _unwrap(tp: Any) -> Any:
    """The type behind Annotated[...] and Optional[...]; a `_Union` for a real union."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
            continue
        if origin is Union or origin is types.UnionType:
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) == 1:
                tp = members[0]
                continue
            return _Union(members)
        return tp


def _field(tp: Any, name: str) -> list[Any]:
    """The (unwrapped) type of field `name` if `tp` is a model that declares it."""
    tp = _unwrap(tp)
    if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return []
    names = _declared(tp)
    field = names.get(name)
    return [] if field is None else [_unwrap(field)]


_DECLARED: dict[type[BaseModel], Mapping[str, Any]] = {}


def _declared(model: type[BaseModel]) -> Mapping[str, Any]:
    """A model's field names and aliases → annotations (models are few: cached)."""
    names = _DECLARED.get(model)
    if names is None:
        found: dict[str, Any] = {}
        for field_name, info in model.model_fields.items():
            found[field_name] = info.annotation
            for alias in (info.alias, info.validation_alias):
                if isinstance(alias, str):
                    found[alias] = info.annotation
        names = _DECLARED[model] = found
    return names


def _items(tp: Any) -> list[Any]:
    """The element type(s) of a list/tuple/set annotation (what an index points into)."""
    tp = _unwrap(tp)
    if isinstance(tp, _Union):
        return [item for m in tp.members for item in _items(m)]
    origin = get_origin(tp)
    if origin in (list, tuple, set, frozenset) or (
        isinstance(origin, type) and issubclass(origin, Sequence)
    ):
        return [_unwrap(a) for a in get_args(tp) if a is not Ellipsis]
    return []


def _label(tp: Any) -> str | None:
    """The label pydantic gives a union member in a location, where it is simply a name
    (``int``, ``datetime``, a model's class name); None for labels built from the schema
    (``literal['a','b']``, ``function-after[…]``), which are then left out."""
    return tp.__name__ if isinstance(tp, type) else None
